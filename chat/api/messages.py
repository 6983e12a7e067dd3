"""Messages: batches, history and search, edit, delete, reactions (a single message's POST
is a plain route: chat/api/post_message.py)."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response
from quart_schema import (
    document_headers,
    document_request,
    document_response,
    validate_querystring,
    validate_request,
)

from chat import access
from chat.api.deps import (
    commit_event,
    event_response,
    identity,
    optional_body,
    services,
    write_as,
    write_in,
    writes_as,
)
from chat.errors import NotFound
from chat.models import (
    AuthorIn,
    EditIn,
    EventBatch,
    EventOut,
    History,
    HistoryQuery,
    IdempotencyHeaders,
    MessageBatchIn,
    ReactionIn,
)
from chat.rules import MAX_ID, check_room
from chat.store import writes

bp = Blueprint("messages", __name__)


def known_id(room: str, message_id: int) -> None:
    """A path's message id outside the store's range is a message no room has."""
    if not 1 <= message_id <= MAX_ID:
        raise NotFound(f"no message {message_id} in room {room!r}")


# `<string:room>` where a second placeholder follows: quart-schema's path pattern would
# otherwise read `<room>/messages/<id:message_id>` as one placeholder in /openapi.json.


@bp.post("/api/rooms/<room>/messages/batch")
@validate_request(MessageBatchIn)
@document_headers(IdempotencyHeaders)
@document_response(EventBatch, 201)
async def post_batch(room: str, data: MessageBatchIn) -> Response:
    """1-500 messages in one transaction, all or none (422 names the failing item's index):
    201 `{"events": [...]}` with consecutive ids in the given order, each broadcast as if
    posted alone. An `Idempotency-Key` covers the whole batch."""
    check_room(room)
    create = services().settings.auto_create_rooms
    authors = writes_as((m.author for m in data.messages), "messages")
    ops = [
        writes.post_message(room, author, m.text, m.reply_to, create_room=create, index=False)
        for author, m in zip(authors, data.messages, strict=True)
    ]
    op = writes.batch("messages", ops, writes.index_messages)

    def body() -> object:
        items = [
            {**m.model_dump(), "author": a} for a, m in zip(authors, data.messages, strict=True)
        ]
        return {"messages": items}

    return await commit_event(room, body, op)


@bp.get("/api/rooms/<room>/messages")
@validate_querystring(HistoryQuery)
@document_response(History)
async def history(room: str, query_args: HistoryQuery) -> dict[str, Any]:
    """Messages ascending by id, edits applied, deleted ones left out. Neither cursor: the
    newest page; `before`: the page just older; `after`: the page just newer; `has_more`:
    more lie beyond. `q`: full-text search, the matching messages alone, paged the same way."""
    check_room(room)
    store = services().store
    if await store.get_room(room) is None:
        raise NotFound(f"no room {room!r}")
    q = query_args
    messages, has_more = await store.history(
        room, before=q.before, after=q.after, limit=q.limit, q=q.q
    )
    return {"messages": messages, "has_more": has_more}


@bp.patch("/api/rooms/<string:room>/messages/<id:message_id>")
@validate_request(EditIn)
@document_response(EventOut)
async def edit(room: str, message_id: int, data: EditIn) -> Response:
    """Edit one's own message: 200 with the `message.edited` event (403 if not the author,
    404 if the message is unknown or deleted)."""
    check_room(room)
    known_id(room, message_id)
    op = writes.edit_message(room, message_id, write_as(data.author), data.text)
    return event_response((await write_in(room, op)).json, 200)


@bp.delete("/api/rooms/<string:room>/messages/<id:message_id>")
@document_request(AuthorIn)
@document_response(EventOut)
async def delete(room: str, message_id: int) -> Response:
    """Delete one's own message, or (the room's owners and admins) anyone's: 200 with the
    `message.deleted` event, whose `author` is who deleted it. Signed in, the body may be
    left out."""
    check_room(room)
    known_id(room, message_id)
    data = await optional_body(AuthorIn)
    who = identity()
    svc = services()
    moderator = access.may_delete(who, room, svc.book)
    op = writes.delete_message(room, message_id, write_as(data.author), moderator=moderator)
    return event_response((await write_in(room, op)).json, 200)


@bp.post("/api/rooms/<string:room>/messages/<id:message_id>/reactions")
@validate_request(ReactionIn)
@document_headers(IdempotencyHeaders)
@document_response(EventOut, 201)
async def react(room: str, message_id: int, data: ReactionIn) -> Response:
    """React: 201 with `reaction.added`; the same author and emoji twice is 409."""
    check_room(room)
    known_id(room, message_id)
    author = write_as(data.author)
    op = writes.add_reaction(room, message_id, author, data.emoji)
    return await commit_event(room, {"author": author, "emoji": data.emoji}, writes.event_json(op))


@bp.delete("/api/rooms/<string:room>/messages/<id:message_id>/reactions")
@validate_request(ReactionIn)
@document_response(EventOut)
async def unreact(room: str, message_id: int, data: ReactionIn) -> Response:
    """Take a reaction back: 200 with `reaction.removed` (404 if there was none)."""
    check_room(room)
    known_id(room, message_id)
    author = write_as(data.author)
    op = writes.remove_reaction(room, message_id, author, data.emoji)
    return event_response((await write_in(room, op)).json, 200)
