"""Pydantic models of the HTTP edge: request bodies and query strings (validated), and the
response shapes (documented in /openapi.json). One definition of each field; the rules the
fields follow are ``chat.rules``'."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from chat.rules import (
    ActivityData,
    Cursor,
    Emoji,
    EventId,
    Name,
    ObjectText,
    SearchText,
    Summary,
    Text,
    Title,
    Verb,
    room_cursor,
)


class Body(BaseModel):
    """A request body: strict types, unknown fields ignored."""

    model_config = ConfigDict(strict=True, extra="ignore")


class RoomIn(Body):
    title: Title | None = None
    private: bool | None = Field(
        None, description="Only members see a private room (chosen when it is created)."
    )


MAYBE_YOU = "May be left out: the signed-in user is filled in; when given it must be that user."


class MessageIn(Body):
    author: Name | None = Field(None, description=MAYBE_YOU)
    text: Text
    reply_to: EventId | None = None


class EditIn(Body):
    author: Name | None = Field(None, description=MAYBE_YOU)
    text: Text


class AuthorIn(Body):
    author: Name | None = Field(None, description=MAYBE_YOU)


class ReactionIn(Body):
    author: Name | None = Field(None, description=MAYBE_YOU)
    emoji: Emoji


class ActivityIn(Body):
    actor: Name | None = Field(
        None, description=MAYBE_YOU + " Bots and admins may name another actor."
    )
    verb: Verb
    object: ObjectText
    summary: Summary | None = None
    data: ActivityData | None = None

    def fields(self, actor: str) -> dict[str, Any]:
        """The activity event's fields (``actor`` as decided by ``chat.access.author``),
        optional ones only when given."""
        return {"actor": actor, **self.model_dump(exclude_none=True, exclude={"actor"})}


class TypingIn(Body):
    user: Name | None = Field(None, description=MAYBE_YOU)


class ReadIn(Body):
    user: Name | None = Field(None, description=MAYBE_YOU)
    last_read_id: Cursor = Field(
        description="The newest id read; a larger id than the room's newest event's stores "
        "that event's. The marker never moves backwards."
    )


class IdempotencyHeaders(BaseModel):
    idempotency_key: str | None = Field(
        None,
        description="Makes retries safe: the same key in the same room returns the first "
        "answer (200, Idempotent-Replayed: true) and posts nothing; with another body, 409.",
    )


class HistoryQuery(BaseModel):
    before: EventId | None = Field(None, description="Only messages with a smaller id.")
    after: Cursor | None = Field(None, description="Only messages with a larger id.")
    limit: Annotated[int, Field(ge=1, le=200)] = 50
    q: SearchText | None = Field(
        None,
        description="Full-text search: every word must appear (the last as a prefix); the "
        "matching messages, paged as history is.",
    )


class StreamQuery(BaseModel):
    """The per-subscriber filter and resume point (all optional; lists are comma-separated)."""

    types: str | None = Field(None, description="Only these event types, e.g. message,activity")
    authors: str | None = Field(None, description="Only events by these authors (or actors)")
    exclude_authors: str | None = Field(None, description="Never events by these authors")
    mentions: str | None = Field(None, description="Only messages mentioning @name")
    user: str | None = Field(None, description="Who is connected (for presence)")
    last_event_id: str | None = Field(
        None, description="Resume after this id (the Last-Event-ID header wins)"
    )


class MultiStreamQuery(StreamQuery):
    rooms: str = Field(description="Comma-separated room names, or * for every room")


class Room(BaseModel):
    name: str
    title: str
    created_at: str
    last_event_id: int = Field(description="The newest event's id in the room, 0 if none.")
    subscribers: int = Field(description="Open streams following the room on this process.")
    private: bool = Field(False, description="Only members see it.")


class RoomList(BaseModel):
    rooms: list[Room]
    has_more: bool = Field(False, description="More rooms follow: ask again with `after=next`.")
    next: str | None = Field(
        None, description="The `after` of the next page (the page's last room), or null."
    )


ROOM_PAGE_MAX = 1000


class RoomListQuery(BaseModel):
    after: Annotated[str, Field(max_length=64), AfterValidator(room_cursor)] | None = Field(
        None, description="Only rooms whose name sorts after this one: the previous page's `next`."
    )
    limit: Annotated[int, Field(ge=1, le=ROOM_PAGE_MAX)] = 200


class MessageEvent(BaseModel):
    id: int
    type: Literal["message"]
    room: str
    created_at: str
    author: str
    text: str
    reply_to: int | None = None
    reply_to_author: str | None = Field(
        None, description="with reply_to: that message's author (whom the reply notifies)"
    )


class HistoryMessage(MessageEvent):
    reply_to_deleted: bool | None = Field(
        None, description="true when the message it replies to was deleted since (else absent)"
    )
    edited_at: str | None = None
    reactions: dict[str, list[str]] = Field(description="emoji -> the authors who reacted")


class EventOut(BaseModel):
    """Any stored event: `id`, `type`, `room`, `created_at` and the type's own fields."""

    model_config = ConfigDict(extra="allow")
    id: int
    type: str
    room: str
    created_at: str


class PresentUsers(BaseModel):
    """Who is in a room now (the answer of GET /api/rooms/{room}/presence)."""

    users: list[str]


class Unread(BaseModel):
    rooms: dict[str, int] = Field(description="room -> messages after the user's read marker")
    last_id: int = Field(
        description="the newest event id these counts include: of the messages a stream "
        "delivers meanwhile, add only those with a larger id"
    )


class History(BaseModel):
    messages: list[HistoryMessage]
    has_more: bool


class Status(BaseModel):
    status: str


class ActivityQuery(BaseModel):
    before: EventId | None = Field(None, description="Only items with a smaller id.")
    limit: Annotated[int, Field(ge=1, le=200)] = 50


class ActivityPage(BaseModel):
    items: list[EventOut]
    has_more: bool


BATCH_MAX = 500


class MessageBatchIn(Body):
    messages: Annotated[list[MessageIn], Field(min_length=1, max_length=BATCH_MAX)]


class ActivityBatchIn(Body):
    items: Annotated[list[ActivityIn], Field(min_length=1, max_length=BATCH_MAX)]


class EventBatch(BaseModel):
    events: list[EventOut]


class MemberIn(Body):
    role: Literal["member", "owner"] = "member"


class Member(BaseModel):
    user: str
    role: Literal["member", "owner"]


class MemberList(BaseModel):
    members: list[Member]


class SessionIn(Body):
    user: Name
    password: Annotated[str, Field(min_length=1, max_length=1024)] | None = Field(
        None, description="The account's password; left out in `open` mode: a guest name."
    )


class Session(BaseModel):
    user: str
    role: Literal["admin", "member", "bot"]
    guest: bool = Field(
        False,
        description="A guest name (signed in without a password, `open` mode): it writes "
        "under the name, and is a guest for private rooms.",
    )


class SessionOut(Session):
    token: str = Field(description="Also set as the HttpOnly `chat_session` cookie.")
    expires_at: str


class SessionOptions(BaseModel):
    auth: Literal["open", "required"] = Field(
        description="`open`: guests may read and post under a name; `required`: sign in first."
    )
    max_rooms_per_stream: int = Field(
        description="The most rooms one stream's `rooms=` may name (CHAT_MAX_ROOMS_PER_STREAM, "
        "0: no limit); a client that follows more asks for `rooms=*`."
    )
