"""Rooms: create or update, read one, list all."""

from __future__ import annotations

from typing import Any

from quart import Blueprint
from quart_schema import document_response, validate_request

from chat.api.deps import services
from chat.errors import NotFound
from chat.models import Room, RoomIn, RoomList, check_room
from chat.store import writes

bp = Blueprint("rooms", __name__)


def _with_subscribers(room: dict[str, Any]) -> dict[str, Any]:
    room["subscribers"] = services().registry.count(room["name"])
    return room


@bp.put("/api/rooms/<room>")
@validate_request(RoomIn)
@document_response(Room, 201)
@document_response(Room, 200)
async def put(room: str, data: RoomIn) -> tuple[dict[str, Any], int]:
    """Create the room (201) or update its title (200)."""
    check_room(room)
    store = services().store
    created = await store.write(writes.put_room(room, data.title))
    found = await store.get_room(room)
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
    """Every room, sorted by name."""
    rooms = await services().store.list_rooms()
    return {"rooms": [_with_subscribers(room) for room in rooms]}
