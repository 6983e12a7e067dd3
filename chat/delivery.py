"""Delivery: how events reach one subscriber, as the bytes its stream writes.

The order of things is what makes resume gap-free:
1. subscribe to the hubs FIRST, so everything published from now on is queued;
2. replay from the store every matching event after the resume point, page by page;
3. then the live frames, skipping ids already sent.
An event committed during the replay is either read from the store or queued live (or
both: then its id is not above ``last_id`` any more and the live copy is skipped).

A subscriber that falls behind (its queue passed its byte bound and was dropped) goes back to
step 2 from the last id it was sent: catch-up from the store, then live again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from chat import access, sse
from chat.access import ReplayGate
from chat.config import Settings
from chat.events import Event, Run, make_event, now_rfc3339
from chat.filters import Filter
from chat.flusher import Flusher
from chat.identity import Identity
from chat.metrics import Metrics
from chat.presence import Presence
from chat.registry import Registry
from chat.states import ACTIVE, BEHIND, CLOSED, CONGESTED
from chat.store import Store
from chat.subscriber import Subscriber

FEED_TYPE = "notification"


def _feed_event(group: dict[str, Any]) -> bytes:
    """A group as its feed stream sends it: the group of the REST pages with the ``type`` and
    ``created_at`` (its latest update) that every event has (API.md, "Events")."""
    return orjson.dumps({"type": FEED_TYPE, **group, "created_at": group["latest_at"]})


@dataclass(frozen=True, slots=True)
class StreamRequest:
    rooms: tuple[str, ...] | None  # None: every room
    filter: Filter | None
    resume_from: str | None  # Last-Event-ID (or last_event_id), unparsed
    user: str | None = None
    identity: Identity | None = None  # who reads (None: a guest): private rooms follow it
    notify: str | None = None  # the user whose notifications it carries (``notify=1``, feeds)
    feed: bool = False  # a notification feed's stream (rooms is empty)
    present: tuple[str, ...] | None = None  # where ``user`` is present (None: ``rooms``)


def _room_of(sub: Subscriber) -> str:
    """The ``room`` of a stream's own events (``reset``, ``position``): its room, or ``*``."""
    rooms = sub.rooms
    return rooms[0] if rooms is not None and len(rooms) == 1 else "*"


class Delivery:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        registry: Registry,
        metrics: Metrics,
        presence: Presence,
    ) -> None:
        self.settings = settings
        self.store = store
        self.registry = registry
        self.metrics = metrics
        self.presence = presence
        self._hello = sse.hello(settings.retry_ms)
        self.flusher = Flusher(
            settings.coalesce_ms / 1000,
            settings.coalesce_max_ms / 1000,
            settings.coalesce_write_share,
            metrics,
        )

    def subscriber(self, request: StreamRequest) -> Subscriber:
        """The stream's subscriber; ``open`` registers it (closing it ends the stream)."""
        return Subscriber(
            request.rooms,
            request.filter,
            limit_bytes=self.settings.subscriber_buffer_bytes,
            user=request.user,
            flusher=self.flusher,
            identity=request.identity,
            notify=request.notify,
            feed=request.feed,
        )

    async def open(self, request: StreamRequest, sub: Subscriber) -> AsyncGenerator[bytes, None]:
        # Subscribing happens in the generator's body: a generator that never starts runs no
        # `finally`, so registering earlier could leak the subscriber (quart issue 218).
        self.registry.subscribe(sub)
        sub.last_id = self.registry.position
        sub.last_write = time.monotonic()
        self.metrics.streams_opened.inc()
        present = request.rooms if request.present is None else request.present
        if request.user is None or not present:
            present = ()
        try:
            for room in present:
                self.presence.connect(room, request.user)  # type: ignore[arg-type]
            yield self._hello
            if request.resume_from is not None:
                async for chunk in self._resume(sub, request.resume_from):
                    yield chunk
            loop = asyncio.get_running_loop()
            flusher = self.flusher
            flushed = False
            while (state := sub.state) is not CLOSED:
                sink = sub.sink
                if state is CONGESTED:  # a direct write filled the connection (chat.flusher)
                    assert sink is not None
                    await sink.drain()
                    sub.drained()
                    continue
                if state is BEHIND:
                    if sink is not None and sink.full():  # it was congested when it fell behind
                        await sink.drain()
                        if sub.state is not BEHIND:
                            continue
                    sub.state = ACTIVE  # from here on, live events queue again
                    self.metrics.catchups.inc()
                    async for chunk in self._replay(sub):
                        yield chunk
                    continue
                if sub.pending:
                    if not flushed and time.monotonic() - sub.last_write < flusher.window_s:
                        flusher.hold(sub)  # busy: more frames join this write
                        await sub.park(loop)
                        flushed = True
                        continue
                    flushed = False
                    chunk = self._live(sub, sub.take())
                    if chunk:
                        sub.last_write = time.monotonic()
                        yield chunk
                    continue
                if sub.ping_due:
                    sub.ping_due = False
                    sub.last_write = time.monotonic()
                    yield self._ping(sub)
                    continue
                await sub.wait(loop)
        finally:
            self.registry.unsubscribe(sub)
            for room in present:
                self.presence.disconnect(room, request.user)  # type: ignore[arg-type]

    def _ping(self, sub: Subscriber) -> bytes:
        """The heartbeat of an idle stream. A stream that skips events (a filter, or every room
        with private ones hidden) gets its resume point moved instead: a ``position`` event
        whose ``id:`` is the newest event dispatched here, all of which it has been sent or
        has passed over (nothing is pending when it is idle, and events are dispatched in id
        order). Else a client that resumes from the last event it matched would ask for a gap
        counted over every event since, and get ``reset`` after CHAT_REPLAY_LIMIT events it
        never wanted, losing the matches that came while it was away."""
        position = self.registry.position
        skips = sub.filter is not None or sub.rooms is None
        if not skips or sub.feed or position <= sub.last_id:
            return sse.PING
        sub.last_id = position
        data = orjson.dumps(
            {
                "type": "position",
                "room": _room_of(sub),
                "created_at": now_rfc3339(),
                "latest_id": position,
            }
        )
        return sse.event_frame(position, "position", data)

    def _live(self, sub: Subscriber, events: list[Event | Run]) -> bytes:
        chunk, count = sub.render(events)
        if count:
            self.metrics.wrote(count)
        return chunk

    async def _resume(self, sub: Subscriber, raw: str) -> AsyncIterator[bytes]:
        latest, pruned = await self.store.resume_bounds()
        point = int(raw) if raw.isascii() and raw.isdigit() else None
        if point is None or point > latest:
            yield self._reset(sub, latest, "unknown_resume_point")
            return
        if point < latest and not sub.feed and point < pruned:
            # retention (CHAT_RETENTION_DAYS) deleted events after it: not all are there
            yield self._reset(sub, latest, "expired")
            return
        sub.last_id = point
        limit = self.settings.replay_limit
        if sub.feed and sub.notify is not None:
            count = await self.store.count_notifications_after(sub.notify, point, limit + 1)
        else:
            count = await self.store.count_after(sub.rooms, point, limit + 1)
        if count > limit:
            yield self._reset(sub, latest, "gap_too_large")
            return
        async for chunk in self._replay(sub, pruned):
            yield chunk

    def _reset(self, sub: Subscriber, latest: int, reason: str) -> bytes:
        """Replay cannot cover the gap: tell the client to reload history, then go live."""
        sub.last_id = max(sub.last_id, latest)
        self.metrics.resets.inc()
        return make_event("reset", _room_of(sub), {"latest_id": latest, "reason": reason}).frame

    async def _gate(self, sub: Subscriber) -> ReplayGate | None:
        """The access rule for a replay from ``sub.last_id`` (None: nothing to hide)."""
        book = self.registry.access
        identity = sub.identity
        if (identity is not None and identity.is_admin) or not book.has_private():
            return None
        member_at = {}
        if identity is not None:
            member_at = await self.store.membership_at(identity.user, sub.last_id)
        return ReplayGate(identity, book, member_at)

    async def _replay(self, sub: Subscriber, pruned: int = 0) -> AsyncIterator[bytes]:
        """Every matching event after ``sub.last_id``, page by page. ``pruned``: the
        ``pruned_through`` the caller read. While retention may delete events (it is on here,
        or it ran on this database before), each page's read is followed by a look at
        ``pruned_through``: a prune that ran meanwhile may have deleted part of what the page
        should have held, and then the stream gets ``reset`` (``expired``) instead of a gap."""
        page = self.settings.replay_page_size
        if sub.feed:
            async for chunk in self._replay_feed(sub, page):
                yield chunk
            return
        gate = await self._gate(sub)
        identity = sub.identity
        user = None  # a scoped credential follows its rooms only
        if identity is not None and not identity.guest and identity.rooms is None:
            user = identity.user
        watch_pruned = pruned > 0 or self.settings.retention_days > 0
        while sub.state is not CLOSED:
            start = sub.last_id
            events = await self.store.events_after(sub.rooms, start, page, user)
            if watch_pruned and start < await self.store.pruned_through():
                yield self._reset(sub, await self.store.latest_id(), "expired")
                return
            if not events:
                return
            if gate is None:
                frames = [e.frame for e in events if sub.wants(e)]
            else:  # every event passes the gate, in order: it follows access events
                frames = [e.frame for e in events if gate.allows(e) and sub.wants(e)]
            last = events[-1].id
            assert last is not None
            sub.last_id = last
            if frames:
                yield self._replayed(sub, frames)
            if len(events) < page:
                return

    def _replayed(self, sub: Subscriber, frames: list[bytes]) -> bytes:
        """Frames read back from the store, as the chunk the stream writes (counted)."""
        self.metrics.replayed.inc(len(frames))
        self.metrics.wrote(len(frames))
        sub.last_write = time.monotonic()
        chunk = b"".join(frames)
        sub.events_sent += len(frames)
        sub.bytes_sent += len(chunk)
        return chunk

    async def _replay_feed(self, sub: Subscriber, page: int) -> AsyncIterator[bytes]:
        """A notification feed's stream: each group updated after ``last_id``, in its state
        now, oldest update first (the live path is this too: an event that concerns the user
        makes the stream read again, chat/registry.py)."""
        user = sub.notify
        assert user is not None
        # what the reader may not be shown (a guest reading a name's feed: its private
        # rooms), asked at every read: the name may have been invited since the stream opened
        hidden = access.hidden_rooms(sub.identity, user, self.registry.access)
        while sub.state is not CLOSED:
            found = await self.store.notifications_after(user, sub.last_id, page, hidden)
            if not found:
                return
            frames = [sse.event_frame(latest, FEED_TYPE, _feed_event(g)) for latest, g in found]
            sub.last_id = found[-1][0]
            yield self._replayed(sub, frames)
            if len(found) < page:
                return
