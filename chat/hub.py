"""One room's subscribers, and the subscriber itself: the heart of fan-out.

``Hub.broadcast`` never awaits. For each matching subscriber the event's frame (encoded
once) is queued for the flusher, which writes it straight to the socket, or for the
stream's task:
- the stream's task is parked with nothing to do (``idle``) and its connection has a direct
  sink: the ``Flusher`` writes the frame in its next slice of writes (the next loop cycle)
  if the stream has been quiet for the coalescing window, or at its next tick if the stream
  wrote recently, so that a busy stream writes everything that arrived in the window at once;
- otherwise (replaying, draining, no sink) it is appended to the pending list and the task
  woken, which writes it in order after what it is doing.
A subscriber whose pending frames pass its byte bound is marked *behind*: its pending list
is dropped and it ignores live events until its stream has caught up from the store (see
docs/design/delivery.md). So a slow reader costs the publisher nothing beyond a check,
memory stays bounded, and nothing is lost, because everything dropped here is in the store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Protocol

from chat.events import Event
from chat.filters import Filter

if TYPE_CHECKING:
    from chat.metrics import Metrics

log = logging.getLogger(__name__)


class Sink(Protocol):
    """A stream's connection, written to directly (``chat.api.fast_streams.DirectWriter``)."""

    def write(self, chunk: bytes) -> bool:
        """Queue the chunk on the connection; False if the connection is gone."""

    def full(self) -> bool:
        """The connection's buffer is past its high-water mark: the client reads slowly."""

    async def drain(self) -> None:
        """Wait until the connection's buffer is below its mark again."""


class Subscriber:
    __slots__ = (
        "behind",
        "closed",
        "congested",
        "filter",
        "flusher",
        "holding",
        "idle",
        "last_id",
        "last_write",
        "limit_bytes",
        "metrics",
        "pending",
        "pending_bytes",
        "ping_due",
        "rooms",
        "sink",
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
        metrics: Metrics | None = None,
    ) -> None:
        self.rooms = rooms  # None: every room, including rooms created later
        self.filter = flt
        self.user = user
        self.limit_bytes = limit_bytes
        self.pending: list[Event] = []
        self.pending_bytes = 0
        self.waiter: asyncio.Future[None] | None = None
        self.behind = False  # pending overflowed: catch up from the store
        self.closed = False  # the server is ending this stream
        self.ping_due = False  # idle for a heartbeat period: send a comment
        self.holding = False  # the flusher will write it (tick or slice): pushes do not wake it
        self.last_write = 0.0  # when the stream last wrote (monotonic seconds)
        self.last_id = 0  # the largest persisted id this subscriber has been sent
        # Writing live frames straight to the socket from the flusher (see ``write_now``),
        # without waking the stream's task: possible when the stream has a sink, a flusher,
        # its task is parked with nothing to do (``idle``), and the connection is not
        # ``congested``.
        self.sink: Sink | None = None
        self.flusher = flusher
        self.metrics = metrics
        self.idle = False  # the stream's task is parked in ``wait`` with nothing to do
        self.congested = False  # a direct write filled the connection's buffer: drain first

    def wants(self, event: Event) -> bool:
        return self.filter is None or self.filter.matches(event)

    def push(self, event: Event) -> None:
        if self.behind or self.closed:
            return
        self.pending.append(event)
        self.pending_bytes += len(event.frame)
        self._pushed()

    def push_many(self, events: list[Event], size: int) -> None:
        """``push`` for a run of events at once (a batch's): ``size``, their frames' bytes."""
        if self.behind or self.closed:
            return
        self.pending.extend(events)
        self.pending_bytes += size
        self._pushed()

    def _pushed(self) -> None:
        if self.pending_bytes > self.limit_bytes:
            self.pending = []
            self.pending_bytes = 0
            self.behind = True
            self.wake()  # even while held: the task catches up from the store
            return
        if self.holding:
            return  # the flusher's tick or slice writes it, with whatever else arrives meanwhile
        if self.idle and self.sink is not None and self.flusher is not None:
            now = time.monotonic()
            if now - self.last_write < self.flusher.window_s:
                self.flusher.hold(self)  # busy: more frames join this write, at the tick
            else:
                self.flusher.soon(self)  # quiet: written in the next slice
            return
        self.wake()

    def render(self, events: list[Event]) -> tuple[bytes, int]:
        """The frames of these events this stream should write, as one chunk, and how many:
        ids already sent are skipped (replay and live overlap), and so is one's own typing."""
        frames = []
        last_id = self.last_id
        for event in events:
            if event.id is None:
                if event.type == "typing" and event.author == self.user:
                    continue  # one's own typing is for the others
                frames.append(event.frame)
            elif event.id > last_id:
                frames.append(event.frame)
                last_id = event.id
        self.last_id = last_id
        if not frames:
            return b"", 0
        return (frames[0] if len(frames) == 1 else b"".join(frames)), len(frames)

    def write_now(self, now: float) -> None:
        """Write what is pending straight to the sink, from the flusher's slice: the
        stream's task stays parked. Only while ``idle``: anything the task must do first
        (catch up, ping, close, drain) wakes it, and waking clears ``idle``. A full connection
        wakes the task to drain it (what arrives meanwhile queues, up to the byte bound); a
        connection that is gone, or whose write fails, ends the stream (the client resumes)."""
        sink = self.sink
        assert sink is not None
        chunk, count = self.render(self.take())
        if not count:
            return
        try:
            written = sink.write(chunk)
            full = written and sink.full()
        except Exception:  # the publisher and the other subscribers go on regardless
            log.exception("writing to a stream failed; ending it")
            written = full = False
        if not written:
            self.close()
            return
        self.last_write = now
        if self.metrics is not None:
            self.metrics.wrote(count)
        if full:
            self.congested = True
            self.wake()

    def take(self) -> list[Event]:
        """Everything pending, in arrival order; the list is the caller's now."""
        events = self.pending
        if events:
            self.pending = []
            self.pending_bytes = 0
        return events

    def wake(self) -> None:
        self.idle = False
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    @property
    def has_work(self) -> bool:
        return bool(self.pending) or self.behind or self.closed or self.ping_due or self.congested

    async def wait(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Park until something is pending (or the stream must catch up, ping or close).
        Pass the loop when calling often: on Python 3.11 ``get_running_loop`` makes a
        ``getpid`` system call each time (6% of a busy server's samples in py-spy)."""
        if not self.has_work:
            self.idle = True
            await self.park(loop)

    async def park(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Park until woken, pending frames or not (the flusher's tick, or a close)."""
        waiter = (loop or asyncio.get_running_loop()).create_future()
        self.waiter = waiter
        try:
            await waiter
        finally:
            self.idle = False
            if self.waiter is waiter:
                self.waiter = None

    def heartbeat_tick(self, now: float, idle_s: float) -> None:
        """A subscriber that wrote nothing for ``idle_s`` is due a keep-alive comment."""
        if now - self.last_write >= idle_s and not self.ping_due:
            self.ping_due = True
            self.wake()

    def close(self) -> None:
        self.closed = True
        self.holding = False
        self.wake()


# Streams written per loop cycle: 64 writes take about 0.5 ms (docs/design/performance.md).
SLICE = 64
# The load signal, smoothed over the 10 ms probes with this weight for the newest.
SMOOTHING = 0.3
# Saturated: the loop is idle less than this share of the time. At 200 msg/s into 500
# streams (the latency benchmark) it is idle 25-45% of the time; at full load, under 1%.
SATURATED = 0.05
# Keeping up: idle more than this; the window narrows back toward its base.
KEEPING_UP = 0.2
# When saturated, the window is steered so that writes take about this share of the time
# (``CHAT_COALESCE_WRITE_SHARE``). Measured at full load, 3 runs each: 0.15 against 0.25 gave
# 100 rooms x 10 streams 21.6-21.9k deliveries/s against 20.0-20.4k, with deliveries 19 ms
# late on average against 4 ms; fan-out 0.94-1.25M against 0.94-1.08M.
WRITE_SHARE = 0.15
# The most the window changes per probe (10 ms), either way.
MAX_STEP = 1.25
# The smallest widened window: below it, the window is its base (0 would stay 0 under any
# factor).
MIN_WIDENED_S = 0.001


class Flusher:
    """Coalesces the writes of busy streams, and writes in slices.

    A stream that wrote less than ``window_s`` ago and has new frames is held, and every held
    stream is written together at the next tick (``window_s`` after the first hold), so the
    frames that arrived meanwhile go out as one write per stream. A stream that has been
    quiet is written at once: the window opens only under load. Either way the writes go
    out ``SLICE`` streams per loop cycle, so a publisher's request, its commit and its answer
    wait behind one slice of writes, not behind hundreds.

    The window is ``base_s`` while the loop keeps up. While the loop is saturated (idle less
    than ``SATURATED`` of the time, as ``observe`` is told) the window is steered so that
    writing takes about ``write_share`` of the time, up to ``max_s``: a stream's writes per
    second go as one over the window, and every write saved is CPU for the publishers. An
    overloaded server delivers late anyway. While the loop is busy but not saturated the
    window only narrows (as far as the writes' share allows), and once the loop has time to
    spare (idle over ``KEEPING_UP``) it narrows back to its base.

    ``writing_s`` is fed by ``write_due`` and by the streams that write through their own
    task (no direct sink: HTTP/1.0, HTTP/2, another server)."""

    __slots__ = (
        "base_s",
        "due",
        "due_handle",
        "handle",
        "held",
        "idle",
        "max_s",
        "share",
        "window_s",
        "write_share",
        "writing_s",
    )

    def __init__(self, base_s: float, max_s: float = 0.0, write_share: float = WRITE_SHARE) -> None:
        self.base_s = base_s
        self.max_s = max(base_s, max_s)
        self.window_s = base_s
        self.write_share = write_share
        self.idle = 1.0  # smoothed: the fraction of the time the loop waits for I/O
        self.share = 0.0  # smoothed: the fraction of the time spent writing to streams
        self.writing_s = 0.0  # spent writing to streams since the last ``observe``
        self.held: list[Subscriber] = []  # written at the next tick
        self.handle: asyncio.TimerHandle | None = None  # the next tick
        self.due: list[Subscriber] = []  # written now, a slice per loop cycle
        self.due_handle: asyncio.Handle | None = None  # the next slice

    def observe(self, idle: float, elapsed_s: float) -> None:
        """Once per load probe: the loop was idle for the fraction ``idle`` of the last
        ``elapsed_s`` seconds (``chat.idle.IdleMeter``)."""
        if elapsed_s <= 0:
            return
        self.idle += (idle - self.idle) * SMOOTHING
        self.share += (self.writing_s / elapsed_s - self.share) * SMOOTHING
        self.writing_s = 0.0
        step = min(MAX_STEP, max(1 / MAX_STEP, self.share / self.write_share))
        if self.idle > KEEPING_UP:
            step = 1 / MAX_STEP  # time to spare: back toward the base
        elif self.idle >= SATURATED:
            step = min(1.0, step)  # busy but not saturated: narrow if writes allow, never widen
        window_s = self.window_s * step
        if window_s < MIN_WIDENED_S:  # a base window of 0 (CHAT_COALESCE_MS=0)
            window_s = MIN_WIDENED_S if step > 1 else 0.0  # would stay 0 under any factor
        self.window_s = min(self.max_s, max(self.base_s, window_s))

    def hold(self, sub: Subscriber) -> None:
        """Write ``sub`` at the next tick, with whatever else arrives for it meanwhile."""
        sub.holding = True
        self.held.append(sub)
        if self.handle is None:
            self.handle = asyncio.get_running_loop().call_later(self.window_s, self.flush)

    def soon(self, sub: Subscriber) -> None:
        """Write ``sub`` in the next slices, once the call that made it due has returned."""
        sub.holding = True
        self.due.append(sub)
        if self.due_handle is None:
            self.due_handle = asyncio.get_running_loop().call_soon(self.write_due)

    def flush(self) -> None:
        """The tick: every held stream is due."""
        self.handle = None
        self.due.extend(self.held)
        self.held = []
        if self.due_handle is None:
            self.write_due()

    def write_due(self) -> None:
        """Write one slice of the due streams; the next slice goes in the next loop cycle,
        after whatever I/O arrived meanwhile."""
        start = time.perf_counter()
        self.due_handle = None
        due = self.due
        if len(due) > SLICE:
            due, self.due = due[:SLICE], due[SLICE:]
            self.due_handle = asyncio.get_running_loop().call_soon(self.write_due)
        else:
            self.due = []
        now = time.monotonic()
        for sub in due:
            sub.holding = False
            if sub.idle and sub.sink is not None:
                sub.write_now(now)
            else:
                sub.wake()
        self.writing_s += time.perf_counter() - start


class Hub:
    """The subscribers of one room (or of every room, for ``rooms=*``)."""

    __slots__ = ("subscribers",)

    def __init__(self) -> None:
        self.subscribers: set[Subscriber] = set()

    def broadcast_many(self, events: list[Event], size: int) -> None:
        """``broadcast`` for a run of events (a batch's, all of this hub's room, in id order):
        one decision per subscriber instead of one per subscriber and event. ``size``: the
        frames' bytes."""
        for sub in self.subscribers:
            flt = sub.filter
            if flt is None:
                sub.push_many(events, size)
            else:
                wanted = [event for event in events if flt.matches(event)]
                if wanted:
                    sub.push_many(wanted, sum(len(event.frame) for event in wanted))

    def broadcast(self, event: Event) -> int:
        """Queue the event for every subscriber whose filter wants it; returns how many."""
        count = 0
        for sub in self.subscribers:
            if sub.filter is None or sub.filter.matches(event):  # Subscriber.wants, inlined
                sub.push(event)
                count += 1
        return count
