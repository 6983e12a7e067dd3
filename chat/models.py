"""Pydantic models of the HTTP edge: request bodies and query strings (validated), and the
response shapes (documented in /openapi.json). One definition of each field."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from chat.errors import InvalidRoom

ROOM_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def check_room(name: str) -> str:
    """Room names: ``^[a-z0-9][a-z0-9._-]{0,63}$``; anything else is 400 invalid_room."""
    if ROOM_NAME.fullmatch(name) is None:
        raise InvalidRoom(
            f"invalid room name {name[:80]!r}: use 1-64 of a-z 0-9 . _ - "
            "(starting with a letter or digit)"
        )
    return name


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


Name = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_not_blank)]
Text = Annotated[str, Field(min_length=1, max_length=4000), AfterValidator(_not_blank)]
EventId = Annotated[int, Field(ge=1)]


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class RoomIn(_Body):
    title: Annotated[str, Field(max_length=200)] | None = None


class MessageIn(_Body):
    author: Name
    text: Text
    reply_to: EventId | None = None


class HistoryQuery(BaseModel):
    before: EventId | None = Field(None, description="Only messages with a smaller id.")
    after: Annotated[int, Field(ge=0)] | None = Field(
        None, description="Only messages with a larger id."
    )
    limit: Annotated[int, Field(ge=1, le=200)] = 50


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


class RoomList(BaseModel):
    rooms: list[Room]


class MessageEvent(BaseModel):
    id: int
    type: Literal["message"]
    room: str
    created_at: str
    author: str
    text: str
    reply_to: int | None = None
    edited_at: str | None = None


class History(BaseModel):
    messages: list[MessageEvent]
    has_more: bool


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: list[object]


class ErrorBody(BaseModel):
    error: ErrorDetail


class Status(BaseModel):
    status: str
