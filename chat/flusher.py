"""The flusher: where live frames meet the socket, and how long writes are held under load.

A subscriber the flusher has queued (``chat.subscriber``: DIRECT or HELD) is handled in a
slice of writes, ``SLICE`` subscribers per loop cycle: a DIRECT one (its task parked idle, its
connection a ``Sink``) is written here, straight to the sink, its task left parked; a HELD one
is woken, and its task writes. This module is the IO edge of fan-out: the subscriber renders
and changes state, the flusher writes.

The coalescing window: a stream that wrote less than ``window_s`` ago is held until the next
tick, so frames that arrive meanwhile go out in the same write; a quiet stream goes out in the
next slice. ``observe`` steers the window with the loop's load.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Protocol

from chat.states import DIRECT, GROUPED
from chat.subscriber import Subscriber

if TYPE_CHECKING:
    from chat.hub import Hub
    from chat.metrics import Metrics

log = logging.getLogger(__name__)

# Streams written per loop cycle, and as many members of rooms' groups (chat.hub): a request's
# read, commit and answer wait behind one slice of writes, never behind a pass of hundreds; and
# under load, what arrives while a pass goes on is written in the next as one chunk
# (docs/design/performance.md).
SLICE = 64
# The load signal, smoothed over the 10 ms probes with this weight for the newest.
SMOOTHING = 0.3
# Saturated: the loop is idle less than this share of the time. A loop that keeps up, even at
# a steady moderate load, idles well above it (docs/design/performance.md).
SATURATED = 0.05
# Keeping up: idle more than this; the window narrows back toward its base.
KEEPING_UP = 0.2
# When saturated, the window is steered so that writes take about this share of the time
# (``CHAT_COALESCE_WRITE_SHARE``): a smaller share accepts more publishes and delivers them
# later (docs/design/performance.md).
WRITE_SHARE = 0.15
# The most the window changes per probe (10 ms), either way.
MAX_STEP = 1.25
# The smallest widened window: below it, the window is its base (0 would stay 0 under any
# factor).
MIN_WIDENED_S = 0.001


class Sink(Protocol):
    """A stream's connection, written to directly (``chat.api.transport.TransportWriter``)."""

    def write(self, chunk: bytes) -> bool:
        """Queue the chunk on the connection; False if the connection is gone."""

    def full(self) -> bool:
        """The connection's buffer is past its high-water mark: the client reads slowly."""

    async def drain(self) -> None:
        """Wait until the connection's buffer is below its mark again."""


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
        "groups",
        "handle",
        "held",
        "held_groups",
        "idle",
        "max_s",
        "metrics",
        "share",
        "window_s",
        "write_share",
        "writing_s",
    )

    def __init__(
        self,
        base_s: float,
        max_s: float = 0.0,
        write_share: float = WRITE_SHARE,
        metrics: Metrics | None = None,
    ) -> None:
        self.base_s = base_s
        self.max_s = max(base_s, max_s)
        self.window_s = base_s
        self.write_share = write_share
        self.metrics = metrics  # counts the frames written here
        self.idle = 1.0  # smoothed: the fraction of the time the loop waits for I/O
        self.share = 0.0  # smoothed: the fraction of the time spent writing to streams
        self.writing_s = 0.0  # spent writing to streams since the last ``observe``
        self.held: list[Subscriber] = []  # written at the next tick
        self.handle: asyncio.TimerHandle | None = None  # the next tick
        self.due: list[Subscriber] = []  # written now, a slice per loop cycle
        self.due_handle: asyncio.Handle | None = None  # the next slice
        self.groups: deque[Hub] = deque()  # rooms' groups, written from the next slice on
        self.held_groups: list[Hub] = []  # and at the next tick

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
        sub.hand_over()
        self.held.append(sub)
        if self.handle is None:
            self.handle = asyncio.get_running_loop().call_later(self.window_s, self.flush)

    def soon(self, sub: Subscriber) -> None:
        """Write ``sub`` (parked idle, with a sink) in the next slices, once the call that
        made it due has returned."""
        sub.state = DIRECT  # its ``hand_over``, inlined: this runs once per stream and event
        self.due.append(sub)
        if self.due_handle is None:
            self.due_handle = asyncio.get_running_loop().call_soon(self.write_due)

    def group_due(self, hub: Hub) -> None:
        """A room's group has its first unwritten event: written in the next slice, or at
        the tick if its last round ended less than a window ago or one is under way (as
        ``Subscriber._schedule`` holds a stream)."""
        window_s = self.window_s
        if window_s and (hub.round or time.monotonic() - hub.last_write < window_s):
            self.held_groups.append(hub)  # a round under way, or just written: the next tick
            if self.handle is None:
                self.handle = asyncio.get_running_loop().call_later(window_s, self.flush)
        else:
            self.groups.append(hub)
            if self.due_handle is None:
                self.due_handle = asyncio.get_running_loop().call_soon(self.write_due)

    def flush(self) -> None:
        """The tick: every held stream and group is due."""
        self.handle = None
        self.due.extend(self.held)
        self.held = []
        if self.held_groups:
            self.groups.extend(self.held_groups)
            self.held_groups = []
        if self.due_handle is None:
            self.write_due()

    def write_groups(self, now: float) -> tuple[int, int]:
        """Write the due groups (``chat.hub``), ``SLICE`` members per slice; returns (frames,
        writes). A group's unwritten events become a round: one chunk, written to each stream
        the group had when the round began.

        A stream that left the group meanwhile has the round's events it lacks pending, and
        is skipped, as is one that has the whole round already. One that has part of it (a
        replay read events from the store before they were dispatched) leaves with the rest
        pending. One whose connection is full leaves and drains; one whose connection is gone
        is closed."""
        frames = writes = 0
        budget = SLICE
        groups = self.groups
        while groups and budget:
            hub = groups[0]
            current = hub.round or hub.begin_round()
            if current is None:  # nothing unwritten: dissolved meanwhile, or queued twice
                groups.popleft()
                continue
            first = current.done
            current.done = end = min(len(current.members), first + budget)
            budget -= end - first
            chunk, count, last_id = current.chunk, len(current.events), current.last_id
            for sub in current.members[first:end]:
                if sub.state is not GROUPED:
                    continue
                if sub.last_id >= current.first_id:
                    if sub.last_id < last_id:
                        sub.ungroup()
                    continue
                sink = sub.sink
                if sink is None:  # never: a stream joins with its sink, which stays
                    sub.ungroup()
                    continue
                try:
                    written = sink.write(chunk)
                    full = written and sink.full()
                except Exception:  # the others go on regardless
                    log.exception("writing to a stream failed; ending it")
                    written = full = False
                if not written:
                    sub.close("client_closed")
                    continue
                sub.last_id = last_id
                sub.events_sent += count
                sub.bytes_sent += len(chunk)
                sub.last_write = now
                frames += count
                writes += 1
                if full:
                    sub.ungroup()  # with what came meanwhile (past its bound: BEHIND)
                    sub.congest()
            if end == len(current.members):
                hub.round = None
                hub.last_write = now
                groups.popleft()
        return frames, writes

    def write_due(self) -> None:
        """Write one slice of the due streams; the next slice goes in the next loop cycle,
        after whatever I/O arrived meanwhile."""
        start = time.perf_counter()
        self.due_handle = None
        now = time.monotonic()
        frames = writes = 0
        if self.groups:
            frames, writes = self.write_groups(now)
        due = self.due
        if len(due) > SLICE:
            due, self.due = due[:SLICE], due[SLICE:]
        else:
            self.due = []
        # (a stream that left its group in this slice may have scheduled the next already)
        if (self.due or self.groups) and self.due_handle is None:
            self.due_handle = asyncio.get_running_loop().call_soon(self.write_due)
        for sub in due:
            sink = sub.sink
            if sub.state is not DIRECT or sink is None:
                sub.release()
                continue
            # Written straight to the sink; the stream's task stays parked. A full connection
            # wakes the task to drain it (what arrives meanwhile queues, up to the byte
            # bound); a connection that is gone, or whose write fails, ends the stream (the
            # client resumes). Inlined, as is the metric (once a slice): this loop runs once
            # per stream and event.
            chunk, count = sub.collect()
            if not count:
                continue
            try:
                written = sink.write(chunk)
                full = written and sink.full()
            except Exception:  # the publisher and the other subscribers go on regardless
                log.exception("writing to a stream failed; ending it")
                written = full = False
            if not written:
                sub.close("client_closed")
                continue
            sub.last_write = now
            frames += count
            writes += 1
            if full:
                sub.congest()
            elif sub.hub is not None:
                sub.hub.join(sub)  # written and idle: from now on written with its room's
        if writes and self.metrics is not None:
            self.metrics.wrote(frames, writes)
        self.writing_s += time.perf_counter() - start
