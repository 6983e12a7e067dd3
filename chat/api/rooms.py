"""Rooms: create or update, read one, list all; a room's members."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response
from quart_schema import document_response, validate_request

from chat import access
from chat.api.deps import identity, services
from chat.errors import NotFound
from chat.filters import user_name
from chat.models import Member, MemberIn, MemberList, Room, RoomIn, RoomList, check_room
from chat.store import accounts

bp = Blueprint("rooms", __name__)


def _with_subscribers(room: dict[str, Any]) -> dict[str, Any]:
    room["subscribers"] = services().registry.count(room["name"])
    return room


@bp.put("/api/rooms/<room>")
@validate_request(RoomIn)
@document_response(Room, 201)
@document_response(Room, 200)
async def put(room: str, data: RoomIn) -> tuple[dict[str, Any], int]:
    """Create the room (201) or update its title (200). A signed-in creator becomes the
    room's owner; `private: true` makes a room only its members see (it needs a signed-in
    creator, and is chosen at creation: 409 to change it later). Updating a room with an
    owner is for its owners and admins."""
    check_room(room)
    who = identity()
    svc = services()
    if data.private:
        access.check_private_create(who)
    if data.title is not None and access.is_owned(room, svc.book):
        access.may_manage(who, room, svc.book)  # renaming is for its owners
    owner = access.owner(who)
    created = await svc.store.write(accounts.create_room(room, data.title, data.private, owner))
    found = await svc.store.get_room(room)
    assert found is not None
    return _with_subscribers(found), 201 if created else 200


@bp.get("/api/rooms/<room>")
@document_response(Room)
async def get(room: str) -> dict[str, Any]:
    """One room, with its newest event id and its number of subscribers."""
    check_room(room)
    found = await services().store.get_room(room)
    if found is None:
        raise NotFound(f"no room {room!r}")
    return _with_subscribers(found)


@bp.get("/api/rooms")
@document_response(RoomList)
async def list_rooms() -> dict[str, Any]:
    """Every room the caller may see, sorted by name."""
    svc = services()
    rooms = await svc.store.list_rooms()
    shown = set(access.visible(identity(), (room["name"] for room in rooms), svc.book))
    return {"rooms": [_with_subscribers(room) for room in rooms if room["name"] in shown]}


async def _existing(room: str) -> None:
    check_room(room)
    if await services().store.get_room(room) is None:
        raise NotFound(f"no room {room!r}")


@bp.get("/api/rooms/<string:room>/members")
@document_response(MemberList)
async def members(room: str) -> dict[str, Any]:
    """The room's members and owners, sorted by name."""
    await _existing(room)
    return {"members": await services().store.members(room)}


@bp.put("/api/rooms/<string:room>/members/<string:user>")
@validate_request(MemberIn)
@document_response(Member, 201)
@document_response(Member, 200)
async def add_member(room: str, user: str, data: MemberIn) -> tuple[dict[str, Any], int]:
    """Invite a user, or change a member's role (owners and admins): 201 when added, 200
    when already a member. A `member.added` event follows in the room. A `user` that is no
    user name (README, "The API") is 400 `invalid_query`."""
    await _existing(room)
    user = user_name(user, "user", "path")
    who = identity()
    svc = services()
    access.may_manage(who, room, svc.book)
    assert who is not None
    added, _ = await svc.store.write(accounts.add_member(room, user, data.role, who.user))
    return {"user": user, "role": data.role}, 201 if added else 200


@bp.delete("/api/rooms/<string:room>/members/<string:user>")
async def remove_member(room: str, user: str) -> Response:
    """Remove a member (owners and admins), or leave (the member itself): 204. A
    `member.removed` event follows in the room; the removed member's streams get it, and
    nothing of a private room after it."""
    await _existing(room)
    user = user_name(user, "user", "path")
    who = identity()
    svc = services()
    access.may_remove(who, room, user, svc.book)
    assert who is not None
    await svc.store.write(accounts.remove_member(room, user, who.user))
    return Response(status=204)
