"""Activity items, typing, presence, read markers and unread counts."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response
from quart_schema import (
    document_headers,
    document_response,
    validate_querystring,
    validate_request,
)

from chat import access
from chat.api.deps import commit_event, identity, require_room, services, write_as, write_in
from chat.errors import NotFound
from chat.events import make_event
from chat.filters import user_name
from chat.limits import refuse
from chat.models import (
    ActivityBatchIn,
    ActivityIn,
    ActivityPage,
    ActivityQuery,
    EventBatch,
    EventOut,
    IdempotencyHeaders,
    PresentUsers,
    ReadIn,
    TypingIn,
    Unread,
    check_room,
)
from chat.store import writes

bp = Blueprint("activity", __name__)


@bp.post("/api/rooms/<room>/activity")
@validate_request(ActivityIn)
@document_headers(IdempotencyHeaders)
@document_response(EventOut, 201)
async def post_activity(room: str, data: ActivityIn) -> Response:
    """An activity item from a bot or service ("ci built main #412"): 201 `activity` event."""
    check_room(room)
    create = services().settings.auto_create_rooms
    fields = data.fields(write_as(data.actor, "actor"))
    op = writes.post_activity(room, fields, create_room=create)
    return await commit_event(room, fields, writes.event_json(op))


@bp.post("/api/rooms/<room>/activity/batch")
@validate_request(ActivityBatchIn)
@document_headers(IdempotencyHeaders)
@document_response(EventBatch, 201)
async def post_activity_batch(room: str, data: ActivityBatchIn) -> Response:
    """1-500 activity items in one transaction, all or none: 201 `{"events": [...]}` with
    consecutive ids in the given order, each broadcast as if posted alone."""
    check_room(room)
    create = services().settings.auto_create_rooms
    items = [item.fields(write_as(item.actor, "actor")) for item in data.items]
    ops = [writes.post_activity(room, fields, create_room=create) for fields in items]
    return await commit_event(room, items, writes.batch("items", ops))


@bp.get("/api/rooms/<room>/activity")
@validate_querystring(ActivityQuery)
@document_response(ActivityPage)
async def activity_history(room: str, query_args: ActivityQuery) -> dict[str, Any]:
    """Activity items, ascending by id: the newest page, or with `before` the page just older;
    `has_more` says whether older ones exist."""
    check_room(room)
    svc = services()
    if await svc.store.get_room(room) is None:
        raise NotFound(f"no room {room!r}")
    items, has_more = await svc.store.activity(
        room, before=query_args.before, limit=query_args.limit
    )
    return {"items": items, "has_more": has_more}


@bp.post("/api/rooms/<room>/typing")
@validate_request(TypingIn)
async def typing(room: str, data: TypingIn) -> tuple[dict[str, Any], int]:
    """202; the room's subscribers get an ephemeral `typing` event (no id, never stored).
    At most one per user and room per `CHAT_TYPING_INTERVAL_SECONDS`: more is 429."""
    check_room(room)
    svc = services()
    await require_room(room)
    user = write_as(data.user, "user")
    taken = await svc.buckets.take(svc.typing, f"{room}\n{user}")
    if not taken.ok:  # one per user and room per interval: a bucket of one
        raise refuse(svc.typing, taken, "typing events for this room")
    svc.broker.publish([make_event("typing", room, {"user": user})])
    return {"status": "accepted"}, 202


@bp.get("/api/rooms/<room>/presence")
@document_response(PresentUsers)
async def presence(room: str) -> dict[str, Any]:
    """Users connected to the room now (streams opened with `user=`), sorted."""
    check_room(room)
    await require_room(room)
    return {"users": await services().presence.users(room)}


@bp.put("/api/rooms/<room>/read")
@validate_request(ReadIn)
async def mark_read(room: str, data: ReadIn) -> Response:
    """Move the user's read marker (never backwards, and never past the room's newest
    event: a larger id stores that event's): 204."""
    check_room(room)
    user = write_as(data.user, "user")
    await write_in(room, writes.mark_read(room, user, data.last_read_id))
    return Response(status=204)


@bp.get("/api/users/<user>/unread")
@document_response(Unread)
async def unread(user: str) -> dict[str, Any]:
    """Messages after the user's read marker, for each room where the user has one and may
    read. Signed in: one's own counts (admins: anyone's). A `user` that is no user name
    (README, "The API") is 400 `invalid_query`."""
    user = user_name(user, "user", "path")
    who = identity()
    access.check_unread(who, user)
    svc = services()
    rooms, last_id = await svc.store.unread(user)
    shown = access.unread_rooms(who, user, rooms, svc.book)
    return {"rooms": {room: rooms[room] for room in shown}, "last_id": last_id}
