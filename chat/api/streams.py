"""Server-Sent Event streams: one room, or several rooms (or every room) on one connection.

``stream_request`` is the one definition of how a stream request is read and checked. Two
callers use it: the Quart routes below (which also document the streams in /docs), and
``chat.api.fast_streams``, which serves the same GETs straight on ASGI in production."""

from __future__ import annotations

from collections.abc import Mapping

from quart import Blueprint, Response, request
from quart_schema import document_querystring

from chat.api.deps import Services, require_room, services
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


def stream_rooms(room: str | None, args: Mapping[str, str]) -> tuple[str, ...] | None:
    """The rooms of ``/api/rooms/{room}/events`` (``room``) or ``/api/events?rooms=``."""
    if room is not None:
        return (check_room(room),)
    raw = args.get("rooms")
    if raw is None:
        raise InvalidQuery("`rooms` is required: a comma-separated list, or *")
    if raw.strip() == "*":
        return None
    names = split_list(raw, "rooms")
    if not names:
        raise InvalidQuery("`rooms` names no room")
    if len(names) > MAX_ROOMS:
        raise InvalidQuery(f"at most {MAX_ROOMS} rooms on one stream")
    return tuple(dict.fromkeys(check_room(name) for name in names))


async def stream_request(
    svc: Services, room: str | None, args: Mapping[str, str], last_event_id: str
) -> StreamRequest:
    """Check a stream request (400/404/503 as ChatError) and say what it asks for."""
    if svc.shutting_down:
        raise Unavailable("the server is shutting down; reconnect in a moment")
    if len(svc.registry.subscribers) >= svc.settings.max_streams:
        raise Unavailable("too many open streams on this server", retry_after_s=5)
    rooms = stream_rooms(room, args)
    for name in rooms or ():
        await require_room(name, svc)
    flt = parse_filter(args)
    resume = last_event_id.strip() or (args.get("last_event_id", "").strip() or None)
    user = args.get("user", "").strip() or None
    if user is not None and len(user) > MAX_NAME_CHARS:
        raise InvalidQuery(f"`user` is longer than {MAX_NAME_CHARS} characters")
    return StreamRequest(rooms, flt, resume, user)


async def _stream(room: str | None) -> Response:
    svc = services()
    wanted = await stream_request(svc, room, request.args, request.headers.get("Last-Event-ID", ""))
    body = svc.streams.open(wanted, svc.streams.subscriber(wanted))
    response = Response(body, headers=SSE_HEADERS)
    response.timeout = None  # Quart would end the stream after RESPONSE_TIMEOUT otherwise
    return response


@bp.get("/api/rooms/<room>/events")
@document_querystring(StreamQuery)
async def room_events(room: str) -> Response:
    """The room's events as `text/event-stream`; resume with `Last-Event-ID`."""
    return await _stream(room)


@bp.get("/api/events")
@document_querystring(MultiStreamQuery)
async def events() -> Response:
    """Several rooms on one stream (`rooms=a,b`), or every room (`rooms=*`)."""
    return await _stream(None)
