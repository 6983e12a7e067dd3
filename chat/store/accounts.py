"""Accounts, service-issued tokens and room members: their write operations (plain functions
of a ``Tx``, like ``chat.store.writes``); their reads are ``chat.store.account_reads``.
Passwords arrive here already hashed and tokens as their SHA-256: nothing secret is stored."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import orjson

from chat.access import MEMBER_ADDED, MEMBER_REMOVED, ROOM_CREATED, MemberRole
from chat.errors import Conflict, NotFound
from chat.events import Event
from chat.identity import Identity, Role
from chat.store import notify
from chat.store.account_reads import HOLDS_NAME
from chat.store.tx import Tx, WriteOp

T = TypeVar("T")


def add_user(name: str, password_hash: str, role: Role) -> WriteOp[None]:
    def op(tx: Tx) -> None:
        cur = tx.conn.execute(
            "INSERT INTO users (name, password_hash, role, created_at) VALUES (?,?,?,?) "
            "ON CONFLICT DO NOTHING",
            (name, password_hash, role, tx.now),
        )
        if cur.rowcount == 0:
            raise Conflict(f"an account named {name!r} exists")
        _revoke(tx, "\"user\" = ? AND kind = 'guest'", (name,))  # the name is the account's now

    return op


def set_password(name: str, password_hash: str) -> WriteOp[list[bytes]]:
    """Change the password and end every sign-in made with the old one (its tokens from
    ``tokens create`` stay); returns the revoked sessions' hashes."""

    def op(tx: Tx) -> list[bytes]:
        cur = tx.conn.execute(
            "UPDATE users SET password_hash = ? WHERE name = ?", (password_hash, name)
        )
        if cur.rowcount == 0:
            raise NotFound(f"no account named {name!r}")
        return _revoke(tx, "\"user\" = ? AND kind = 'session'", (name,))

    return op


def remove_user(name: str) -> WriteOp[list[bytes]]:
    """Remove the account and revoke every token of its name that still works; returns the
    hashes of those (not of those revoked or expired before)."""

    def op(tx: Tx) -> list[bytes]:
        if tx.conn.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount == 0:
            raise NotFound(f"no account named {name!r}")
        live = '"user" = ? AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)'
        return _revoke(tx, live, (name, tx.now))

    return op


def create_token(
    token_id: str,
    token_hash: bytes,
    user: str,
    role: Role,
    kind: str,
    rooms: Sequence[str] | None,
    expires_at: str | None,
) -> WriteOp[None]:
    def op(tx: Tx) -> None:
        # A guest session only for a free name, asked in the transaction: a token or account
        # made since the caller's check (its reserved names are up to 2 s old) wins.
        if kind == "guest" and tx.conn.execute(HOLDS_NAME, (user, user)).fetchone():
            raise Conflict(f"an account or a token holds the name {user!r}: sign in with it")
        scope = None if rooms is None else orjson.dumps(sorted(rooms)).decode()
        tx.conn.execute(
            'INSERT INTO tokens (id, hash, "user", role, kind, rooms, created_at, expires_at) '
            "VALUES (?,?,?,?,?,?,?,?)",
            (token_id, token_hash, user, role, kind, scope, tx.now, expires_at),
        )
        if kind != "guest":  # the name is the token's now, as an account's (add_user)
            _revoke(tx, "\"user\" = ? AND kind = 'guest'", (user,))

    return op


def revoke_token(token_id: str | None = None, token_hash: bytes | None = None) -> WriteOp[bytes]:
    """Revoke one token, by its id or its hash; returns its hash (404 if there is none)."""

    def op(tx: Tx) -> bytes:
        where, arg = ("id = ?", token_id) if token_id is not None else ("hash = ?", token_hash)
        revoked = _revoke(tx, where, (arg,))
        if not revoked:
            raise NotFound(f"no token {token_id!r}" if token_id else "no such token")
        return revoked[0]

    return op


def _revoke(tx: Tx, where: str, params: tuple[Any, ...]) -> list[bytes]:
    rows = tx.conn.execute(f"SELECT hash FROM tokens WHERE {where}", params).fetchall()
    tx.conn.execute(
        f"UPDATE tokens SET revoked_at = ? WHERE ({where}) AND revoked_at IS NULL",
        (tx.now, *params),
    )
    return [bytes(row[0]) for row in rows]


def create_room(
    name: str, title: str | None, private: bool | None, owner: str | None
) -> WriteOp[bool]:
    """Create the room (True) or update its title (False). A room created by a signed-in
    ``owner`` gets a ``room.created`` event, which makes the owner its first member. A room's
    privacy is chosen when it is created (409 to change it later)."""

    def op(tx: Tx) -> bool:
        row = tx.conn.execute("SELECT private FROM rooms WHERE name = ?", (name,)).fetchone()
        if row is not None:
            if private is not None and bool(row[0]) != private:
                raise Conflict(
                    f"room {name!r} is {'private' if row[0] else 'public'}: a room's "
                    "privacy is chosen when it is created"
                )
            if title is not None:
                tx.conn.execute("UPDATE rooms SET title = ? WHERE name = ?", (title, name))
            return False
        tx.conn.execute(
            "INSERT INTO rooms (name, title, created_at, private) VALUES (?, ?, ?, ?)",
            (name, title if title is not None else name, tx.now, int(bool(private))),
        )
        tx.rooms.add(name)
        for key in [key for key in tx.writers if key[0] == name]:
            del tx.writers[key]  # "not created yet, anyone may write" holds no more
        if owner is not None:
            fields = {"user": owner, "title": title or name, "private": bool(private)}
            tx.append(name, ROOM_CREATED, fields)
            _member_row(tx, name, owner, "owner")
        return True

    return op


def _member_row(tx: Tx, room: str, user: str, role: MemberRole) -> None:
    tx.flush()  # the event row first
    tx.conn.execute(
        'INSERT INTO members (room, "user", role, added_at) VALUES (?, ?, ?, ?) '
        'ON CONFLICT (room, "user") DO UPDATE SET role = excluded.role',
        (room, user, role, tx.now),
    )


def add_member(
    room: str, user: str, role: MemberRole, by: str
) -> WriteOp[tuple[bool, Event | None]]:
    """Add a member, or change a member's role: (whether newly added, the ``member.added``
    event, or None when nothing changed)."""

    def op(tx: Tx) -> tuple[bool, Event | None]:
        tx.ensure_room(room, create=False)
        row = tx.conn.execute(
            'SELECT role FROM members WHERE room = ? AND "user" = ?', (room, user)
        ).fetchone()
        if row is not None and row[0] == role:
            return False, None
        event = tx.append(room, MEMBER_ADDED, {"user": user, "role": role, "by": by})
        _member_row(tx, room, user, role)
        tx.writers.pop((room, user), None)  # what the batch knew of them is stale now
        return row is None, event

    return op


def remove_member(room: str, user: str, by: str) -> WriteOp[Event]:
    def op(tx: Tx) -> Event:
        tx.ensure_room(room, create=False)
        row = tx.conn.execute(
            'SELECT role FROM members WHERE room = ? AND "user" = ?', (room, user)
        ).fetchone()
        if row is None:
            raise NotFound(f"{user!r} is not a member of room {room!r}")
        event = tx.append(room, MEMBER_REMOVED, {"user": user, "role": row[0], "by": by})
        tx.flush()
        tx.conn.execute('DELETE FROM members WHERE room = ? AND "user" = ?', (room, user))
        tx.writers.pop((room, user), None)  # their later writes in the batch are asked again
        (private,) = tx.conn.execute("SELECT private FROM rooms WHERE name = ?", (room,)).fetchone()
        if private:  # a room they cannot read any more: its notifications leave their feed
            notify.forget_room(tx, user, room)
        return event

    return op


def guarded(room: str, identity: Identity | None, op: WriteOp[T]) -> WriteOp[T]:
    """``op``, run only if the identity may write into the room as the store has it at this
    commit: a private room takes its members' and admins' writes. The pipeline checked the
    same against this process's book; this closes the gap while another process's change
    (a removal) is on its way here."""
    if identity is not None and identity.is_admin:
        return op
    user = None if identity is None or identity.guest else identity.user

    def run(tx: Tx) -> T:
        if not tx.may_write(room, user):
            raise NotFound(f"no room {room!r}")
        return op(tx)

    return run
