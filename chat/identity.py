"""Who is asking: an ``Identity`` (a user name and a role), or ``None`` for a guest.

The pipeline's identity step (``chat.api.auth``) makes one from a credential; the access
policy (``chat.access``) and each stream's subscriber decide with it. Plain data: no IO.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["admin", "member", "bot"]
ROLES: tuple[Role, ...] = ("admin", "member", "bot")


@dataclass(frozen=True, slots=True)
class Identity:
    user: str
    role: Role = "member"
    # The rooms the credential reaches (a token or JWT scoped to rooms); None: every room.
    rooms: frozenset[str] | None = None
    # When the credential stops being valid (Unix seconds); None: never (a guest's name).
    expires_at: float | None = None
    # The hash of the service-issued token it came from, so that revoking it ends its streams;
    # None for a JWT (it cannot be revoked, only expire).
    token_hash: bytes | None = None
    # A guest name bound to a session (``POST /api/session`` without a password, in `open`
    # mode): it writes under that name, and is a guest for everything else (no private
    # rooms, owns nothing).
    guest: bool = False

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def reaches(self, room: str) -> bool:
        """Whether the credential's room scope covers ``room``."""
        return self.rooms is None or room in self.rooms
