"""Pydantic models of the notification feed (API.md, "Notifications"): its query string, the
body that marks groups read, and the response shapes. The rest of the edge is ``chat.models``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from chat.models import Body
from chat.rules import Cursor, EventId


class NotificationGroup(BaseModel):
    id: int = Field(description="the id of the group's first event: stable, unique in the feed")
    kind: Literal["mention", "reply", "reaction", "activity", "membership"]
    room: str
    message_id: int | None = Field(
        None, description="mention: the mentioning message; reply, reaction: the user's message"
    )
    emoji: str | None = Field(None, description="reaction: the emoji")
    verb: str | None = Field(None, description="activity: its verb")
    object: str | None = Field(None, description="activity: its object")
    actors: list[str] = Field(description="the three newest distinct actors, newest first")
    actor_count: int = Field(description="distinct actors")
    count: int = Field(description="events in the group")
    first_at: str
    latest_at: str
    latest_event_id: int = Field(description="the group's newest event: its place in the feed")
    unread: bool = Field(description="latest_event_id is above the user's read mark")
    summary: str = Field(description='"alice, bob and 3 others reacted 👍 to your message"')


class NotificationPage(BaseModel):
    groups: list[NotificationGroup]
    has_more: bool


class NotificationQuery(BaseModel):
    before: EventId | None = Field(None, description="Only groups whose latest_event_id is below.")
    limit: Annotated[int, Field(ge=1, le=200)] = 50


class NotificationsUnread(BaseModel):
    unread: int = Field(description="unread groups")


class NotificationsReadIn(Body):
    until: Cursor = Field(
        description="Groups whose latest_event_id is at most this are read; the mark never "
        "moves backwards, nor past the newest event."
    )


class NotificationsRead(BaseModel):
    read_until: int
    unread: int
