"""Rooms: create or update, read one, list all; a room's members."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response
from quart_schema import document_response, validate_querystring, validate_request

from chat import access
from chat.api.deps import identity, no_content, services
from chat.errors import NotFound
from chat.filters import user_name
from chat.models import (
    Member,
    MemberIn,
    MemberList,
    Room,
    RoomIn,
    RoomList,
    RoomListQuery,
)
from chat.rules import check_room
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


# Reads of the store for one page, at most: rooms the store shows but the access book hides
# (a membership changing meanwhile, a token's room scope) make a read come back short.
ROOM_PAGE_READS = 5


@bp.get("/api/rooms")
@validate_querystring(RoomListQuery)
@document_response(RoomList)
async def list_rooms(query_args: RoomListQuery) -> dict[str, Any]:
    """The rooms the caller may see, sorted by name, a page at a time: up to `limit` (default
    200) rooms whose names sort after `after`; `has_more` says whether more follow, and `next`
    is the `after` of the next page. Private rooms the caller may not see are left out, and
    a page is full all the same."""
    svc = services()
    who = identity()
    limit = query_args.limit
    cursor, exhausted = query_args.after or "", False
    page: list[dict[str, Any]] = []
    everything = who is not None and not who.guest and who.is_admin
    for _ in range(ROOM_PAGE_READS):
        want = limit + 1 - len(page)  # one more than the page: whether more follow
        rows = await svc.store.list_rooms(
            cursor,
            want,
            member=None if who is None or who.guest else who.user,
            every_private=everything,
            only=None if who is None else who.rooms,
        )
        shown = set(access.visible(who, (room["name"] for room in rows), svc.book))
        page.extend(room for room in rows if room["name"] in shown)
        exhausted = len(rows) < want
        if rows:
            cursor = rows[-1]["name"]
        if exhausted or len(page) > limit:
            break
    if len(page) > limit:
        page = page[:limit]
        has_more, after = True, page[-1]["name"]
    elif exhausted:
        has_more, after = False, None
    else:  # the reads ran out first: the next page starts after the last room read, which the
        # store shows the caller (never a private room of others), so nothing is given away
        has_more, after = True, cursor
    return {
        "rooms": [_with_subscribers(room) for room in page],
        "has_more": has_more,
        "next": after,
    }


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
    return no_content()
