"""An event: what happens in a room, as a JSON object and as its SSE frame (both encoded once).

``Event`` is what the store returns, the broker carries and the hubs fan out. Persisted events
have an ``id``; ephemeral ones (``typing``, ``presence``, ``reset``) do not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

import orjson

from chat import sse

FRAME_OF = attrgetter("frame")  # an event's SSE frame: ``map(FRAME_OF, events)`` runs in C

PERSISTED_TYPES = frozenset(
    {
        "message",
        "message.edited",
        "message.deleted",
        "reaction.added",
        "reaction.removed",
        "activity",
        "room.created",  # a room created by a signed-in user: `user` (its owner), `private`
        "member.added",  # `user`, `role`, `by` (chat.access follows these in id order)
        "member.removed",  # `user`, `role`, `by`
    }
)
EPHEMERAL_TYPES = frozenset({"typing", "presence", "reset", "notify", "position"})
EVENT_TYPES = PERSISTED_TYPES | EPHEMERAL_TYPES


@dataclass(slots=True, eq=False)
class Event:
    """Never changed once built (every subscriber shares it). Not ``frozen=True`` only because
    a frozen dataclass's ``__init__`` costs four times as much, per event
    (docs/design/performance.md)."""

    id: int | None
    type: str
    room: str
    payload: Mapping[str, Any]  # the flat event object, exactly as clients receive it
    json: bytes  # payload encoded once
    frame: bytes  # the SSE frame, encoded once

    @property
    def author(self) -> str | None:
        """Who the event is by: ``author`` of messages, ``actor`` of activity, ``user`` of
        typing and presence. The ``authors``/``exclude_authors`` filters test this."""
        p = self.payload
        who = p.get("author") or p.get("actor") or p.get("user")
        return who if isinstance(who, str) else None


class Run:
    """A run of persisted events of one room in id order (a batch's), pushed to many
    subscribers as one pending item: its frames are joined once, for all of them, not once per
    subscriber (a batch of 500 into a room read by ten streams)."""

    __slots__ = ("_chunk", "events", "first_id", "last_id", "size")

    def __init__(self, events: list[Event], first_id: int, last_id: int, size: int) -> None:
        self.events = events
        self.first_id = first_id
        self.last_id = last_id
        self.size = size  # the frames' bytes
        self._chunk: bytes | None = None

    @property
    def chunk(self) -> bytes:
        """Every frame of the run, joined (the first time it is asked for)."""
        chunk = self._chunk
        if chunk is None:
            chunk = self._chunk = b"".join([event.frame for event in self.events])
        return chunk

    def frames_after(self, last_id: int, frames: list[bytes]) -> tuple[int, int]:
        """Add to ``frames`` what a stream sent every id up to ``last_id`` gets of the run:
        the joined chunk when the whole run is new, else the frame of each newer event (a
        replay overlapped the run). Returns how many events, and the new last id."""
        if self.first_id > last_id:
            frames.append(self.chunk)
            return len(self.events), self.last_id
        count = 0
        for event in self.events:
            if event.id is not None and event.id > last_id:
                frames.append(event.frame)
                count += 1
                last_id = event.id
        return count, last_id


def now_rfc3339(when: datetime | None = None) -> str:
    """UTC with milliseconds: ``2026-11-21T20:52:49.123Z`` (now, or ``when``)."""
    when = datetime.now(UTC) if when is None else when.astimezone(UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def make_event(
    event_type: str,
    room: str,
    fields: Mapping[str, Any],
    *,
    event_id: int | None = None,
    created_at: str | None = None,
) -> Event:
    """Build an event: ``id`` (if persisted), ``type``, ``room``, ``created_at``, then fields
    (which never name the first four: every caller passes its own type's fields)."""
    payload: dict[str, Any] = {} if event_id is None else {"id": event_id}
    payload["type"] = event_type
    payload["room"] = room
    payload["created_at"] = created_at or now_rfc3339()
    payload.update(fields)
    # orjson leaves its output in a buffer of 4 KiB or more. An event lives on in subscribers'
    # queues and in the answer, so it keeps an exact-size copy (docs/design/performance.md).
    data = b"".join((orjson.dumps(payload), b""))
    frame = sse.event_frame(event_id, event_type, data)
    return Event(id=event_id, type=event_type, room=room, payload=payload, json=data, frame=frame)


def event_from_json(data: bytes) -> Event:
    """Rebuild an event from its stored JSON (the store keeps exactly what was sent)."""
    payload: Mapping[str, Any] = orjson.loads(data)
    found_id = payload.get("id")
    event_id = found_id if isinstance(found_id, int) else None
    event_type = str(payload["type"])
    frame = sse.event_frame(event_id, event_type, data)
    return Event(event_id, event_type, str(payload["room"]), payload, data, frame)
