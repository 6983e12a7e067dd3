"""Server-Sent Event streams: one room, or several rooms (or every room) on one connection."""

from __future__ import annotations

from quart import Blueprint, Response, request
from quart_schema import document_querystring

from chat.api.deps import require_room, services
from chat.errors import InvalidQuery, Unavailable
from chat.filters import MAX_NAME_CHARS, parse_filter, split_list
from chat.models import MultiStreamQuery, StreamQuery, check_room
from chat.stream import StreamRequest

bp = Blueprint("streams", __name__)

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
MAX_ROOMS = 100


async def _stream(rooms: tuple[str, ...] | None) -> Response:
    svc = services()
    if svc.shutting_down:
        raise Unavailable("the server is shutting down; reconnect in a moment")
    if len(svc.registry.subscribers) >= svc.settings.max_streams:
        raise Unavailable("too many open streams on this server", retry_after_s=5)
    for room in rooms or ():
        await require_room(room)
    args = request.args
    flt = parse_filter(args)
    header = request.headers.get("Last-Event-ID", "").strip()
    resume = header or (args.get("last_event_id", "").strip() or None)
    user = args.get("user", "").strip() or None
    if user is not None and len(user) > MAX_NAME_CHARS:
        raise InvalidQuery(f"`user` is longer than {MAX_NAME_CHARS} characters")
    body = svc.streams.open(StreamRequest(rooms, flt, resume, user))
    response = Response(body, headers=SSE_HEADERS)
    response.timeout = None  # Quart would end the stream after RESPONSE_TIMEOUT otherwise
    return response


@bp.get("/api/rooms/<room>/events")
@document_querystring(StreamQuery)
async def room_events(room: str) -> Response:
    """The room's events as `text/event-stream`; resume with `Last-Event-ID`."""
    return await _stream((check_room(room),))


@bp.get("/api/events")
@document_querystring(MultiStreamQuery)
async def events() -> Response:
    """Several rooms on one stream (`rooms=a,b`), or every room (`rooms=*`)."""
    raw = request.args.get("rooms")
    if raw is None:
        raise InvalidQuery("`rooms` is required: a comma-separated list, or *")
    if raw.strip() == "*":
        return await _stream(None)
    names = split_list(raw, "rooms")
    if not names:
        raise InvalidQuery("`rooms` names no room")
    if len(names) > MAX_ROOMS:
        raise InvalidQuery(f"at most {MAX_ROOMS} rooms on one stream")
    return await _stream(tuple(dict.fromkeys(check_room(name) for name in names)))
