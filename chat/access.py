"""Who may do what: the one module of access policy (ACCESS.md), plain code, no IO.

- ``AccessBook``: which rooms are private and who the members (and owners) of each room are,
  as of the last event applied. Every process builds it from the store at start-up and then
  follows the room events in id order (``apply``), so access changes exactly where the
  ``room.created`` / ``member.added`` / ``member.removed`` events stand in the log.
- the decisions: ``check_room`` (may this identity reach the room at all: a private room is
  a 404 to a non-member), ``author`` (the name a write is made under), ``may_delete``,
  ``may_manage``, ``may_remove``, ``check_unread``;
- ``ReplayGate``: the same rule applied event by event to events read back from the store.

``None`` as an identity is a guest (``CHAT_AUTH=open``, no credential).
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from chat.errors import Forbidden, NotFound, Unauthorized, ValidationFailed
from chat.events import Event
from chat.identity import Identity

MemberRole = Literal["member", "owner"]
ROOM_CREATED = "room.created"
MEMBER_ADDED = "member.added"
MEMBER_REMOVED = "member.removed"
ACCESS_EVENTS = frozenset({ROOM_CREATED, MEMBER_ADDED, MEMBER_REMOVED})


@dataclass(slots=True)
class RoomAccess:
    private: bool = False
    members: dict[str, MemberRole] = field(default_factory=dict)  # user -> role


class AccessBook:
    """Rooms that are private or have members; a room absent here is public and ownerless
    (a guest's, or one created by posting into it)."""

    __slots__ = ("rooms",)

    def __init__(self) -> None:
        self.rooms: dict[str, RoomAccess] = {}

    def load(self, private: Iterable[str], members: Iterable[tuple[str, str, MemberRole]]) -> None:
        """The store's state: private room names, and (room, user, role) rows."""
        self.rooms.clear()
        for room in private:
            self.rooms[room] = RoomAccess(private=True)
        for room, user, role in members:
            self.rooms.setdefault(room, RoomAccess()).members[user] = role

    def get(self, room: str) -> RoomAccess | None:
        return self.rooms.get(room)

    def has_private(self) -> bool:
        return any(access.private for access in self.rooms.values())

    def is_private(self, room: str) -> bool:
        found = self.rooms.get(room)
        return found is not None and found.private

    def apply(self, event: Event) -> None:
        """Follow one access event (others are ignored). Applying events in id order from any
        earlier state ends in the right state: each sets what it names outright."""
        kind = event.type
        if kind not in ACCESS_EVENTS:
            return
        p = event.payload
        user = str(p.get("user", ""))
        room = self.rooms.setdefault(event.room, RoomAccess())
        if kind == ROOM_CREATED:
            room.private = bool(p.get("private"))
            room.members[user] = "owner"
        elif kind == MEMBER_ADDED:
            room.members[user] = "owner" if p.get("role") == "owner" else "member"
        else:
            room.members.pop(user, None)
            if not room.private and not room.members:
                del self.rooms[event.room]


def reads(identity: Identity | None, access: RoomAccess | None) -> bool:
    """Whether the identity may see a room with this access (its scope aside)."""
    if access is None or not access.private:
        return True
    if identity is None or identity.guest:
        return False
    return identity.is_admin or identity.user in access.members


def check_room(identity: Identity | None, room: str, book: AccessBook) -> None:
    """Let the identity reach the room, or raise: a private room it may not read does not
    exist (404); a room outside its credential's scope is 403."""
    if identity is not None and not identity.reaches(room):  # first: it says nothing of the room
        raise Forbidden(f"this credential does not reach room {room!r}")
    if not reads(identity, book.get(room)):
        raise NotFound(f"no room {room!r}")


def visible(identity: Identity | None, rooms: Iterable[str], book: AccessBook) -> list[str]:
    """Those of ``rooms`` the identity may see, in their order."""
    return [
        room
        for room in rooms
        if reads(identity, book.get(room)) and (identity is None or identity.reaches(room))
    ]


def check_private_create(identity: Identity | None) -> None:
    if identity is None or identity.guest:
        raise Unauthorized("a private room needs an owner signed in with an account or token")


def author(
    identity: Identity | None,
    given: str | None,
    name: str = "author",
    reserved: Container[str] = (),
) -> str:
    """The name a write is made under: the identity's user. A given ``author`` / ``user`` /
    ``actor`` must be that user (403), except an ``actor`` named by a bot or an admin. A
    guest must name itself (422), and not with a ``reserved`` name: one that an account or
    a token holds (403: it signs in to write under it)."""
    if identity is None:
        if given is None:
            msg = f"`{name}` is required without a signed-in identity"
            raise ValidationFailed(msg, [{"loc": [name], "field": name, "msg": msg}])
        if given in reserved:
            raise Forbidden(f"{given!r} belongs to an account or a token: sign in to write as it")
        return given
    if given is None or given == identity.user:
        return identity.user
    if name == "actor" and identity.role in ("bot", "admin"):
        return given
    raise Forbidden(f"`{name}` must be you ({identity.user!r}), not {given!r}")


def is_owner(identity: Identity | None, room: str, book: AccessBook) -> bool:
    if identity is None or identity.guest:
        return False
    access = book.get(room)
    return access is not None and access.members.get(identity.user) == "owner"


def may_delete(identity: Identity | None, room: str, book: AccessBook) -> bool:
    """Whether the identity may delete others' messages in the room (moderation): the room's
    owners and admins. Everyone may delete their own."""
    return identity is not None and (identity.is_admin or is_owner(identity, room, book))


def is_owned(room: str, book: AccessBook) -> bool:
    access = book.get(room)
    return access is not None and "owner" in access.members.values()


def owner(identity: Identity | None) -> str | None:
    """Who becomes the owner of a room this identity creates: none for a guest."""
    return None if identity is None or identity.guest else identity.user


def may_manage(identity: Identity | None, room: str, book: AccessBook) -> None:
    """Add members or change roles: the room's owners and admins (403 otherwise)."""
    if identity is None or identity.guest:
        raise Unauthorized("managing members needs an account or a token")
    if not (identity.is_admin or is_owner(identity, room, book)):
        raise Forbidden(f"only the owners of room {room!r} and admins manage its members")


def may_remove(identity: Identity | None, room: str, user: str, book: AccessBook) -> None:
    """Remove a member: owners and admins, or the member leaving."""
    if identity is not None and not identity.guest and identity.user == user:
        return
    may_manage(identity, room, book)


def check_unread(identity: Identity | None, user: str, what: str = "unread counts") -> None:
    """A user's unread counts are that user's or an admin's to read; a guest asks for any
    name it declares (as before identities)."""
    if identity is None or identity.guest:
        return
    if identity.user != user and not identity.is_admin:
        raise Forbidden(f"only {user!r} and admins read {user!r}'s {what}")


def check_feed(identity: Identity | None, user: str) -> None:
    """A notification feed (API.md, "Notifications") is read as unread counts are; a
    credential scoped to some rooms reads none (its feed would span every room)."""
    check_unread(identity, user, "notifications")
    if identity is not None and identity.rooms is not None:
        raise Forbidden("a credential scoped to rooms does not read notification feeds")


def hidden_rooms(identity: Identity | None, user: str, book: AccessBook) -> list[str]:
    """The private rooms of ``user``'s feed the asker may not be shown: none for the user or
    an admin; for a guest asking for a name, every private room that name is a member of."""
    if identity is not None and not identity.guest and (identity.is_admin or identity.user == user):
        return []
    return sorted(
        room
        for room, access in book.rooms.items()
        if access.private and user in access.members and not reads(identity, access)
    )


def hears(
    identity: Identity | None, user: str, room: str, access: RoomAccess | None, *, added: bool
) -> bool:
    """Whether a ``notify=1`` stream of ``identity`` gets the hint that an event of ``room``
    concerns ``user``: ``user`` may read the room (the store notifies no one else; ``added``:
    the event is the one that makes them a member), and the stream may see the room (in its
    credential's scope; a private room: the user's own stream, or an admin's)."""
    if identity is not None and not identity.reaches(room):
        return False
    if access is None or not access.private:
        return True
    if not added and user not in access.members:
        return False
    return (
        identity is not None and not identity.guest and (identity.user == user or identity.is_admin)
    )


def check_mark(identity: Identity | None, user: str, held: bool, hidden: bool) -> None:
    """Who may move a feed's read mark, besides ``check_feed``: a guest only for a name that
    no account or token holds (``held``), as for a guest's writes (``author``), and that has
    no private room the guest cannot see."""
    if (identity is None or identity.guest) and (held or hidden):
        raise Forbidden(
            f"{user!r} belongs to an account or a token: sign in as {user!r} to mark its feed"
        )


def unread_rooms(
    identity: Identity | None, user: str, rooms: Iterable[str], book: AccessBook
) -> list[str]:
    """The rooms of ``user``'s unread counts the asker is shown: those ``user`` may read now
    and the asker may see too (a guest asking for anyone's: public rooms only)."""
    shown = visible(Identity(user), rooms, book)
    if identity is None or not identity.is_admin:
        return visible(identity, shown, book)
    return [room for room in shown if identity.reaches(room)]


class ReplayGate:
    """The access rule for events read back from the store (replay and catch-up), applied
    event by event: what a live stream would have got at each event. ``member_at`` is the
    user's membership, per private room, as of the replay's starting point."""

    __slots__ = ("book", "identity", "member")

    def __init__(
        self, identity: Identity | None, book: AccessBook, member_at: Mapping[str, bool]
    ) -> None:
        self.identity = identity
        self.book = book
        self.member = dict(member_at)

    def allows(self, event: Event) -> bool:
        if not self.book.is_private(event.room):
            return True
        identity = self.identity
        if identity is None or identity.guest:
            return False
        if identity.is_admin:
            return True
        kind = event.type
        if kind in ACCESS_EVENTS and event.payload.get("user") == identity.user:
            was = self.member.get(event.room, False)
            self.member[event.room] = kind != MEMBER_REMOVED
            return True if kind != MEMBER_REMOVED else was
        return self.member.get(event.room, False)
