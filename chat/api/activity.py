"""Activity items, typing, presence, read markers and unread counts."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError
from quart import Blueprint, Response, request
from quart_schema import (
    document_headers,
    document_request,
    document_response,
    validate_querystring,
    validate_request,
)

from chat import access, activitystreams
from chat.api.deps import (
    commit_event,
    identity,
    no_content,
    require_room,
    services,
    write_as,
    write_in,
    writes_as,
)
from chat.api.envelope import field_errors
from chat.errors import NotFound, ValidationFailed
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
)
from chat.rules import MAX_ID, check_room
from chat.store import writes

bp = Blueprint("activity", __name__)


AS2_HEADERS = {"Content-Type": activitystreams.AS2_MEDIA_TYPE, "Vary": "Accept"}
# A page of AS2 history finds its `prev` (the page just newer) by reading the room's events
# after it, at most this many (in chunks): past that, `prev` is the newest page.
NEWER_SCAN_EVENTS, NEWER_SCAN_CHUNK = 2000, 500


def base_url() -> str:
    """This service as the request addressed it: the prefix of every AS2 id."""
    return request.host_url.rstrip("/")


def as2_answer(document: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(document), status=status, headers=AS2_HEADERS)


@bp.post("/api/rooms/<room>/activity")
@document_request(ActivityIn)
@document_headers(IdempotencyHeaders)
@document_response(EventOut, 201)
async def post_activity(room: str) -> Response:
    """An activity item from a bot or service ("ci built main #412"): 201 `activity` event.
    The body may also be an Activity Streams 2.0 activity (docs/activitystreams.md); with
    `Accept: application/activity+json`, the answer is the event as AS2."""
    check_room(room)
    body = await request.get_json(force=True)
    if activitystreams.is_as2(body, request.headers.get("Content-Type")):
        data = ActivityIn.model_validate(activitystreams.as2_to_activity(body, base_url()))
    else:
        try:
            data = ActivityIn.model_validate(body)
        except ValidationError as error:
            raise ValidationFailed(
                "the body does not match the schema", field_errors(error)
            ) from None
    create = services().settings.auto_create_rooms
    fields = data.fields(write_as(data.actor, "actor"))
    op = writes.post_activity(room, fields, create_room=create)
    answer = await commit_event(room, fields, writes.event_json(op))
    if not activitystreams.wants_as2(request.headers.get("Accept")):
        return answer
    event = orjson.loads(await answer.get_data())
    as2 = as2_answer(activitystreams.activity_to_as2(event, base_url()), answer.status_code)
    if "Idempotent-Replayed" in answer.headers:
        as2.headers["Idempotent-Replayed"] = answer.headers["Idempotent-Replayed"]
    return as2


@bp.post("/api/rooms/<room>/activity/batch")
@validate_request(ActivityBatchIn)
@document_headers(IdempotencyHeaders)
@document_response(EventBatch, 201)
async def post_activity_batch(room: str, data: ActivityBatchIn) -> Response:
    """1-500 activity items in one transaction, all or none: 201 `{"events": [...]}` with
    consecutive ids in the given order, each broadcast as if posted alone."""
    check_room(room)
    create = services().settings.auto_create_rooms
    actors = writes_as((item.actor for item in data.items), "items", "actor")
    items = [item.fields(actor) for item, actor in zip(data.items, actors, strict=True)]
    ops = [writes.post_activity(room, fields, create_room=create) for fields in items]
    return await commit_event(room, items, writes.batch("items", ops))


@bp.get("/api/rooms/<room>/activity")
@validate_querystring(ActivityQuery)
@document_response(ActivityPage)
async def activity_history(
    room: str, query_args: ActivityQuery
) -> tuple[dict[str, Any], int, dict[str, str]] | Response:
    """Activity items, ascending by id: the newest page, or with `before` the page just older;
    `has_more` says whether older ones exist. With `Accept: application/activity+json` (or
    `application/ld+json; profile="https://www.w3.org/ns/activitystreams"`): the page as an
    AS2 `OrderedCollectionPage`, newest first (docs/activitystreams.md)."""
    check_room(room)
    svc = services()
    if await svc.store.get_room(room) is None:
        raise NotFound(f"no room {room!r}")
    before, limit = query_args.before, query_args.limit
    items, has_more = await svc.store.activity(room, before=before, limit=limit)
    if not activitystreams.wants_as2(request.headers.get("Accept")):
        return {"items": items, "has_more": has_more}, 200, {"Vary": "Accept"}
    newer = None if before is None else await _newer_page(room, before, limit)
    page = activitystreams.activity_page(
        items, has_more, base_url(), room, before, limit, newer_before=newer
    )
    return as2_answer(page)


async def _newer_page(room: str, before: int, limit: int) -> int | None:
    """The `before` cursor of the page just newer than the page below `before`: the
    `limit` activity items from `before` up, or None (the newest page) when there are no
    more than `limit` of them, or when they lie beyond NEWER_SCAN_EVENTS events."""
    store, found, after = services().store, [], before - 1
    for _ in range(NEWER_SCAN_EVENTS // NEWER_SCAN_CHUNK):
        events = await store.events_after((room,), after, NEWER_SCAN_CHUNK)
        found += [e.id for e in events if e.type == "activity" and e.id is not None]
        if len(found) > limit:  # the cursor the page just newer's `next` names
            return found[limit]
        if len(events) < NEWER_SCAN_CHUNK or events[-1].id is None:
            return None
        after = events[-1].id
    return found[limit - 1] + 1 if len(found) >= limit else None


@bp.get("/api/rooms/<string:room>/activity/<int:event_id>")
@document_response(EventOut)
async def activity_item(
    room: str, event_id: int
) -> tuple[dict[str, Any], int, dict[str, str]] | Response:
    """One activity item (the `id` of its AS2 form): the stored `activity` event, or as AS2
    with `Accept: application/activity+json`; 404 when the room has no such item."""
    check_room(room)
    svc = services()
    if await svc.store.get_room(room) is None:
        raise NotFound(f"no room {room!r}")
    items: list[dict[str, Any]] = []
    if event_id < MAX_ID:  # the store's integers end at MAX_ID
        items, _ = await svc.store.activity(room, before=event_id + 1, limit=1)
    if not items or items[0]["id"] != event_id:
        raise NotFound(f"no activity item {event_id} in room {room!r}")
    if activitystreams.wants_as2(request.headers.get("Accept")):
        return as2_answer(activitystreams.activity_to_as2(items[0], base_url()))
    return items[0], 200, {"Vary": "Accept"}


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
    return no_content()


@bp.get("/api/users/<user>/unread")
@document_response(Unread)
async def unread(user: str) -> dict[str, Any]:
    """Messages of others after the user's read marker (what the user wrote, anywhere, is
    read), for each room where the user has one and may read. Signed in: one's own counts
    (admins: anyone's). A `user` that is no user name (README, "The API") is 400
    `invalid_query`."""
    user = user_name(user, "user", "path")
    who = identity()
    access.check_unread(who, user)
    svc = services()
    rooms, last_id = await svc.store.unread(user)
    shown = access.unread_rooms(who, user, rooms, svc.book)
    return {"rooms": {room: rooms[room] for room in shown}, "last_id": last_id}
