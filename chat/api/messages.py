"""Messages: post one, read the history."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response
from quart_schema import document_response, validate_querystring, validate_request

from chat.api.deps import services
from chat.errors import NotFound
from chat.models import History, HistoryQuery, MessageEvent, MessageIn, check_room
from chat.store import post_message

bp = Blueprint("messages", __name__)


def event_response(body: bytes, status: int) -> Response:
    """The stored event's JSON, byte for byte what subscribers receive."""
    return Response(body, status=status, content_type="application/json")


@bp.post("/api/rooms/<room>/messages")
@validate_request(MessageIn)
@document_response(MessageEvent, 201)
async def post(room: str, data: MessageIn) -> Response:
    """Post a message: 201 with the stored `message` event once it is committed."""
    check_room(room)
    svc = services()
    event = await svc.store.write(
        post_message(
            room, data.author, data.text, data.reply_to, create_room=svc.settings.auto_create_rooms
        )
    )
    return event_response(event.json, 201)


@bp.get("/api/rooms/<room>/messages")
@validate_querystring(HistoryQuery)
@document_response(History)
async def history(room: str, query_args: HistoryQuery) -> dict[str, Any]:
    """Messages ascending by id. Neither cursor: the newest page; `before`: the page just
    older; `after`: the page just newer. `has_more` says whether more lie beyond it."""
    check_room(room)
    store = services().store
    if await store.get_room(room) is None:
        raise NotFound(f"no room {room!r}")
    messages, has_more = await store.history(
        room, before=query_args.before, after=query_args.after, limit=query_args.limit
    )
    return {"messages": messages, "has_more": has_more}
