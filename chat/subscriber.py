"""One stream's subscriber: its pending frames and its state (``chat.states``: the table of
states and what moves it between them), changed by plain method calls. A push never awaits;
the flusher (``chat.flusher``) does the socket writes; this module only renders frames and
changes state."""

from __future__ import annotations

import asyncio
import math
import time
from typing import TYPE_CHECKING

from chat.events import FRAME_OF, Event, Run
from chat.filters import Filter
from chat.identity import Identity
from chat.states import ACTIVE, BEHIND, CLOSED, CONGESTED, DIRECT, GROUPED, HELD, IDLE

if TYPE_CHECKING:
    from chat.flusher import Flusher, Sink
    from chat.hub import Hub


class Subscriber:
    __slots__ = (
        "bytes_sent",
        "ended_by",
        "ends_at",
        "events_sent",
        "feed",
        "filter",
        "flusher",
        "hub",
        "identity",
        "last_id",
        "last_write",
        "limit_bytes",
        "notify",
        "pending",
        "pending_bytes",
        "ping_due",
        "rooms",
        "sink",
        "state",
        "user",
        "waiter",
    )

    def __init__(
        self,
        rooms: tuple[str, ...] | None,
        flt: Filter | None = None,
        *,
        limit_bytes: int = 1 << 20,
        user: str | None = None,
        flusher: Flusher | None = None,
        identity: Identity | None = None,
        notify: str | None = None,
        feed: bool = False,
    ) -> None:
        self.rooms = rooms  # None: every room, including rooms created later
        self.filter = flt
        self.user = user
        self.identity = identity  # who reads: access to private rooms (chat.access)
        # The user whose notifications it follows (API.md, "Notifications"): a ``feed``
        # stream (no rooms) replays that user's groups from the store each time one may have
        # changed; a room stream with ``notify=1`` gets a ``notify`` hint among its events.
        self.notify = notify
        self.feed = feed
        self.limit_bytes = limit_bytes
        self.pending: list[Event | Run] = []
        self.pending_bytes = 0
        self.waiter: asyncio.Future[None] | None = None
        self.state = ACTIVE
        self.ping_due = False  # idle for a heartbeat period: send a comment
        self.last_write = 0.0  # when the stream last wrote (monotonic seconds)
        self.last_id = 0  # the largest persisted id this subscriber has been sent
        # With both, live frames can be written by the flusher while the task stays parked.
        self.sink: Sink | None = None
        self.flusher = flusher
        # The hub of its one room, whose group it joins while idle (``chat.hub``): set by the
        # registry for an unfiltered stream of one room, else None.
        self.hub: Hub | None = None
        self.ended_by = ""  # why it was closed, by the first closer (ACCESS.md, Logs)
        self.ends_at = math.inf  # its lifetime's end (monotonic s; CHAT_STREAM_MAX_SECONDS)
        self.events_sent = 0  # event frames, and their bytes, sent to the client
        self.bytes_sent = 0

    def wants(self, event: Event) -> bool:
        return self.filter is None or self.filter.matches(event)

    def push(self, event: Event) -> None:
        state = self.state
        if state is GROUPED:  # pushed to from another path than its room's group
            self.ungroup()
            state = self.state
        if state is BEHIND or state is CLOSED:
            return
        self.pending.append(event)
        self.pending_bytes += len(event.frame)
        if self.pending_bytes > self.limit_bytes:
            self.fall_behind()
        elif state is IDLE:
            flusher = self.flusher
            if flusher is not None and not flusher.window_s and self.sink is not None:
                flusher.soon(self)  # ``_schedule`` of a quiet stream, inlined (once per stream)
            else:
                self._schedule()
        elif state is ACTIVE and self.waiter is not None:
            self.wake()  # parked by a caller of ``park`` that did not hold it first

    def push_many(self, events: list[Event] | Run, size: int) -> None:
        """``push`` for several events at once (a batch's, or those of it a filter wants), or
        for a ``Run``: ``size``, their frames' bytes."""
        state = self.state
        if state is GROUPED:
            self.ungroup()
            state = self.state
        if state is BEHIND or state is CLOSED:
            return
        if isinstance(events, Run):
            self.pending.append(events)
        else:
            self.pending.extend(events)
        self.pending_bytes += size
        if self.pending_bytes > self.limit_bytes:
            self.fall_behind()
        elif state is IDLE:
            self._schedule()
        elif state is ACTIVE and self.waiter is not None:
            self.wake()

    def _schedule(self) -> None:
        """The first frame for a parked task: the flusher writes it, or the task is woken."""
        flusher = self.flusher
        if self.sink is None or flusher is None:
            self.wake()
            return
        window_s = flusher.window_s  # 0 unless set or widened: no clock read per push then
        if window_s and time.monotonic() - self.last_write < window_s:
            flusher.hold(self)  # busy: more frames join this write, at the tick
        else:
            flusher.soon(self)  # quiet: written in the next slice

    def ungroup(self) -> None:
        """GROUPED -> IDLE: out of its room's group, with the group's events not written to it
        yet pending (so handed to the flusher, or past its bound: BEHIND)."""
        missed = self._leave_group()
        self.state = IDLE
        if missed:
            self.push_many(missed, sum(map(len, map(FRAME_OF, missed))))

    def _leave_group(self) -> list[Event]:
        hub = self.hub
        assert hub is not None  # a grouped subscriber is in its room's hub
        return hub.leave(self)

    def fall_behind(self) -> None:
        """Drop what is pending: the task catches up from the store, even while queued in the
        flusher (``Registry.resync_all`` too, when a dispatch failed half way)."""
        if self.state is GROUPED:
            self._leave_group()  # what it missed is dropped too: the store has it
        self.pending = []
        self.pending_bytes = 0
        if self.state is not CLOSED:
            self.state = BEHIND
        self.wake()

    def hand_over(self) -> None:
        """The flusher has queued it: from now on pushes only append. It writes for a task
        parked idle with a sink (DIRECT), and wakes any other (HELD)."""
        state = self.state
        if state is IDLE:
            self.state = DIRECT if self.sink is not None else HELD
        elif state is ACTIVE:
            self.state = HELD

    def release(self) -> None:
        """The flusher's turn came for a subscriber it will not write for: wake the task."""
        state = self.state
        if state is HELD or state is DIRECT:
            self.state = ACTIVE
        if state is not IDLE and state is not GROUPED:  # a parked task with nothing to do
            self.wake()

    def collect(self) -> tuple[bytes, int]:
        """For the flusher's write: DIRECT -> IDLE, and everything pending as one chunk."""
        self.state = IDLE
        pending = self.pending
        if len(pending) == 1:  # the common case, ``render`` of one new event inlined
            event = pending[0]
            if isinstance(event, Event) and event.id is not None and event.id > self.last_id:
                self.pending = []
                self.pending_bytes = 0
                self.last_id = event.id
                frame = event.frame
                self.events_sent += 1
                self.bytes_sent += len(frame)
                return frame, 1
        return self.render(self.take())

    def congest(self) -> None:
        """A write left the connection's buffer past its mark: the task drains it first (a
        stream behind drains before it replays; a closed one ends)."""
        if self.state is BEHIND or self.state is CLOSED:
            return
        self.state = CONGESTED
        self.wake()

    def drained(self) -> None:
        if self.state is CONGESTED:  # else it fell behind or closed meanwhile: that stays
            self.state = ACTIVE

    def render(self, events: list[Event | Run]) -> tuple[bytes, int]:
        """The frames of these events this stream should write, as one chunk, and how many
        events: ids already sent are skipped (replay and live overlap), and so is one's own
        typing. A run wholly past the last id sent goes as its joined frames."""
        frames: list[bytes] = []
        count = 0
        last_id = self.last_id
        for item in events:
            if isinstance(item, Run):
                sent, last_id = item.frames_after(last_id, frames)
                count += sent
            elif item.id is None:
                if item.type == "typing" and item.author == self.user:
                    continue  # one's own typing is for the others
                frames.append(item.frame)
                count += 1
            elif item.id > last_id:
                frames.append(item.frame)
                count += 1
                last_id = item.id
        self.last_id = last_id
        if not frames:
            return b"", 0
        chunk = frames[0] if len(frames) == 1 else b"".join(frames)
        self.events_sent += count
        self.bytes_sent += len(chunk)
        return chunk, count

    def take(self) -> list[Event | Run]:
        """Everything pending, in arrival order; the list is the caller's now."""
        events = self.pending
        if events:
            self.pending = []
            self.pending_bytes = 0
        return events

    def wake(self) -> None:
        """Resolve the parked task's waiter; a parked state becomes its awake counterpart."""
        state = self.state
        if state is GROUPED:
            self.ungroup()
            state = self.state
        if state is IDLE:
            self.state = ACTIVE
        elif state is DIRECT:
            self.state = HELD  # still queued in the flusher, which now wakes instead of writing
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    @property
    def has_work(self) -> bool:
        state = self.state
        return (
            bool(self.pending)
            or self.ping_due
            or state is BEHIND
            or state is CLOSED
            or state is CONGESTED
        )

    async def wait(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Park until something is pending (or the stream must catch up, ping or close).
        Pass the loop when calling often: on Python 3.11 ``get_running_loop`` makes a
        ``getpid`` system call each time (docs/design/performance.md)."""
        if self.has_work:
            return
        state = self.state
        if state is ACTIVE:
            self.state = IDLE
            if self.hub is not None:
                self.hub.join(self)
        elif state is HELD and self.sink is not None:
            self.state = DIRECT  # still queued in the flusher, which now writes for it
        await self.park(loop)

    async def park(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Park until woken, pending frames or not (the flusher's tick, or a close)."""
        waiter = (loop or asyncio.get_running_loop()).create_future()
        self.waiter = waiter
        try:
            await waiter
        finally:
            state = self.state
            if state is GROUPED:  # cancelled while parked in its group
                self.ungroup()
                state = self.state
            if state is IDLE:  # cancelled while parked: nobody woke it
                self.state = ACTIVE
            elif state is DIRECT:
                self.state = HELD
            if self.waiter is waiter:
                self.waiter = None

    def heartbeat_tick(self, now: float, idle_s: float) -> None:
        """A subscriber that wrote nothing for ``idle_s`` is due a keep-alive comment; one
        past its lifetime is closed (the client resumes)."""
        if now >= self.ends_at:
            self.close("lifetime")
        elif now - self.last_write >= idle_s and not self.ping_due:
            self.ping_due = True
            self.wake()

    def close(self, reason: str = "server") -> None:
        """End the stream; ``reason`` names why in its log line and metrics (the first
        closer's: client_closed, dead_peer, lifetime, shutdown, credential_expired, ...)."""
        if not self.ended_by:
            self.ended_by = reason
        if self.state is GROUPED:
            self._leave_group()  # what it missed is not for a closed stream
        self.state = CLOSED
        self.wake()
