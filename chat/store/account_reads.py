"""The reads of accounts, service-issued tokens and room members (``AccountReads``, a part
of ``Store``); their writes are in ``chat.store.accounts``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import orjson

from chat.access import MEMBER_ADDED, MEMBER_REMOVED, ROOM_CREATED, MemberRole
from chat.identity import Role

ACCESS_TYPES = (
    "(" + " OR ".join(f"type = '{t}'" for t in (ROOM_CREATED, MEMBER_ADDED, MEMBER_REMOVED)) + ")"
)
"""The access events' types, spelt as the partial index ``events_access`` says them, in its
order: SQLite uses that index only for a query whose condition implies the index's, and as
comparisons (not an IN list) the index costs nothing to keep (migrations/0010)."""

# Whether an account or a live non-guest token holds a name (the name, twice).
HOLDS_NAME = (
    'SELECT 1 FROM users WHERE name = ? UNION ALL SELECT 1 FROM tokens WHERE "user" = ? '
    "AND kind != 'guest' AND revoked_at IS NULL LIMIT 1"
)


@dataclass(frozen=True, slots=True)
class TokenRow:
    id: str
    user: str
    role: Role
    kind: str
    rooms: frozenset[str] | None
    created_at: str
    expires_at: str | None
    revoked_at: str | None

    @property
    def expires_s(self) -> float | None:
        """``expires_at`` as Unix seconds."""
        return None if self.expires_at is None else unix_s(self.expires_at)


def unix_s(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339).timestamp()


class AccountReads:
    """The reads of accounts, tokens and members; ``Reads._rows`` runs them."""

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        raise NotImplementedError

    async def password_hash(self, name: str) -> tuple[str, Role] | None:
        rows = await self._rows("SELECT password_hash, role FROM users WHERE name = ?", (name,))
        return (str(rows[0][0]), cast(Role, rows[0][1])) if rows else None

    async def holds_name(self, name: str) -> bool:
        """Whether an account or a live non-guest token holds ``name`` (``reserved_names``
        for one name, as of now)."""
        return bool(await self._rows(HOLDS_NAME, (name, name)))

    async def reserved_names(self) -> list[str]:
        """Names a guest may not write under: accounts, and users of live non-guest tokens."""
        rows = await self._rows(
            'SELECT name FROM users UNION SELECT "user" FROM tokens '
            "WHERE kind != 'guest' AND revoked_at IS NULL"
        )
        return [str(row[0]) for row in rows]

    async def users(self) -> list[dict[str, Any]]:
        rows = await self._rows(
            "SELECT name, role, created_at FROM users ORDER BY name COLLATE BINARY"
        )
        return [{"user": r[0], "role": r[1], "created_at": r[2]} for r in rows]

    async def token(self, token_hash: bytes) -> TokenRow | None:
        rows = await self._rows(_TOKEN_SQL + " WHERE hash = ?", (token_hash,))
        return _token(rows[0]) if rows else None

    async def tokens(self) -> list[TokenRow]:
        return [_token(row) for row in await self._rows(_TOKEN_SQL + " ORDER BY created_at, id")]

    async def revoked_since(self, when: str) -> list[bytes]:
        """Hashes of the tokens revoked at or after ``when`` (RFC 3339)."""
        rows = await self._rows("SELECT hash FROM tokens WHERE revoked_at >= ?", (when,))
        return [bytes(row[0]) for row in rows]

    async def access_state(self) -> tuple[int, list[str], list[tuple[str, str, MemberRole]]]:
        """(the newest event id, private rooms, members) for ``AccessBook.load``, in one
        statement: one snapshot, exactly as of that id."""
        rows = await self._rows(
            "SELECT 0, CAST(coalesce(max(id), 0) AS TEXT), NULL, NULL FROM events "
            "UNION ALL SELECT 1, name, NULL, NULL FROM rooms WHERE private = 1 "
            'UNION ALL SELECT 2, room, "user", role FROM members'
        )
        top = next(int(r[1]) for r in rows if r[0] == 0)
        private = [str(r[1]) for r in rows if r[0] == 1]
        members = [(str(r[1]), str(r[2]), cast(MemberRole, r[3])) for r in rows if r[0] == 2]
        return top, private, members

    async def members(self, room: str) -> list[dict[str, str]]:
        rows = await self._rows(
            'SELECT "user", role FROM members WHERE room = ? ORDER BY "user" COLLATE BINARY',
            (room,),
        )
        return [{"user": r[0], "role": r[1]} for r in rows]

    async def membership_at(self, user: str, point: int) -> dict[str, bool]:
        """Per room, whether ``user`` was a member as of event ``point`` (rooms with no
        access event of the user up to there are absent: not a member)."""
        rows = await self._rows(
            "SELECT room, type FROM events WHERE author = ? AND id <= ? "
            f"AND {ACCESS_TYPES} ORDER BY id",
            (user, point),
        )
        return {str(room): kind != MEMBER_REMOVED for room, kind in rows}


_TOKEN_SQL = 'SELECT id, "user", role, kind, rooms, created_at, expires_at, revoked_at FROM tokens'


def _token(row: Sequence[Any]) -> TokenRow:
    rooms = None if row[4] is None else frozenset(orjson.loads(row[4]))
    return TokenRow(str(row[0]), str(row[1]), cast(Role, row[2]), str(row[3]), rooms, *row[5:8])
