"""The flusher writing live frames straight to a stream's sink (``Flusher.write_due``) while
the stream's task stays parked, driven with fake sinks: a quiet stream's frame goes out in
the next slice, a busy one's at the tick as one chunk, a full sink wakes the task to drain,
a refusing or raising sink ends only its own stream. The real sink over real sockets is
tests/test_transport.py. Every wait is bounded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from chat.events import Event, make_event
from chat.flusher import SLICE, Flusher
from chat.metrics import Metrics
from chat.states import State
from chat.subscriber import Subscriber
from tests.fakes import FakeSink, msg, parked, parked_task, settle, stop, until
from tests.live import LiveServer

MakeServer = Callable[..., LiveServer]
TIMEOUT_S = 2.0
WINDOW_S = 0.05  # the flusher's coalescing window in the unit tests
PUBLISHED = 360  # what ``publish`` posts: 10 one by one, 250 concurrently, a batch of 100


def typing(user: str) -> Event:
    return make_event("typing", "r", {"user": user})


def direct_sub(
    sink: FakeSink | None = None, *, limit_bytes: int = 1 << 20, user: str | None = None
) -> tuple[Subscriber, FakeSink, Flusher]:
    flusher = Flusher(WINDOW_S)
    s = Subscriber(("r",), limit_bytes=limit_bytes, user=user, flusher=flusher)
    s.sink = sink if sink is not None else FakeSink()
    assert isinstance(s.sink, FakeSink)
    return s, s.sink, flusher


async def test_idle_push_is_written_in_the_next_slice_without_waking_the_task() -> None:
    s, sink, flusher = direct_sub()
    async with parked_task(s, may_end=True) as task:
        first = msg(1)
        s.push(first)
        assert (
            sink.chunks == [] and s.state is State.DIRECT
        )  # due: the publisher's call returns first
        assert flusher.due == [s] and flusher.handle is None  # no tick: the next cycle
        await asyncio.sleep(0)
        assert sink.chunks == [first.frame]  # one loop cycle later
        assert s.pending == [] and s.last_id == 1 and s.state is State.IDLE
        await settle()
        assert not task.done() and s.state is State.IDLE  # the task never ran
        # quiet for longer than the window: the next one goes out at once as well
        s.last_write -= 2 * WINDOW_S
        second = msg(2)
        s.push(second)
        await asyncio.sleep(0)
        assert sink.chunks == [first.frame, second.frame]
        await settle()
        assert not task.done() and s.state is State.IDLE and s.last_id == 2


async def test_pushes_before_the_slice_runs_go_out_in_its_one_write() -> None:
    s, sink, _ = direct_sub()
    async with parked_task(s, may_end=True) as task:
        events = [msg(i, text=f"m{i}") for i in range(1, 4)]
        for event in events:
            s.push(event)  # one publisher's call (one batch): all due in the same slice
        await asyncio.sleep(0)
        assert sink.chunks == [b"".join(e.frame for e in events)]
        assert not task.done() and s.state is State.IDLE


async def test_due_streams_are_written_a_slice_per_loop_cycle() -> None:
    flusher = Flusher(WINDOW_S)
    subs = [Subscriber(("r",), flusher=flusher) for _ in range(2 * SLICE + 5)]
    for s in subs:
        s.sink = FakeSink()
    tasks = [asyncio.ensure_future(s.wait()) for s in subs]
    await settle()
    written_between: list[int] = []

    def count() -> None:  # a callback of the next cycle, as a request's I/O would be
        written_between.append(sum(1 for s in subs if s.sink.chunks))  # type: ignore[union-attr]

    try:
        event = msg(1)
        for s in subs:
            s.push(event)
        loop = asyncio.get_running_loop()
        loop.call_soon(count)
        await until(lambda: all(s.sink.chunks for s in subs))  # type: ignore[union-attr]
        assert written_between == [SLICE]  # it ran after the first slice, before the second
        assert all(s.sink.chunks == [event.frame] for s in subs)  # type: ignore[union-attr]
        assert flusher.due == [] and flusher.due_handle is None
        assert not any(task.done() for task in tasks)  # written without waking one task
    finally:
        for task in tasks:
            await stop(task, may_have_ended=True)


async def test_the_metrics_count_every_frame_and_every_write_of_a_pass_of_slices() -> None:
    """What /metrics shows after streams are written in several slices: one write per
    stream, and every frame, two of them for the streams that had two events pending."""
    metrics = Metrics(lambda: 0, lambda: 0)
    flusher = Flusher(0.0, metrics=metrics)
    subs = [Subscriber(("r",), flusher=flusher) for _ in range(2 * SLICE + 5)]
    for s in subs:
        s.sink = FakeSink()
    tasks = [asyncio.ensure_future(s.wait()) for s in subs]
    await settle()
    try:
        first, second = msg(1), msg(2)
        for s in subs:
            s.push(first)
        for s in subs[:7]:  # queued already: the second event joins the same write
            s.push(second)
        await until(lambda: flusher.due_handle is None and not flusher.due)
        page = metrics.render().decode()
        assert f"chat_stream_writes_total {float(len(subs))}" in page
        assert f"chat_frames_sent_total {float(len(subs) + 7)}" in page
        assert subs[0].sink.chunks == [first.frame + second.frame]  # type: ignore[union-attr]
    finally:
        for task in tasks:
            await stop(task, may_have_ended=True)


async def test_push_within_the_window_is_held_and_written_at_the_tick_as_one_chunk() -> None:
    s, sink, flusher = direct_sub()
    async with parked_task(s, may_end=True) as task:
        events = [msg(i, text=f"m{i}") for i in range(1, 5)]
        s.push(events[0])  # quiet before: in the next slice
        await asyncio.sleep(0)
        for event in events[1:]:
            s.push(event)  # within the window: held for the tick
        assert sink.chunks == [events[0].frame]
        assert s.state is State.DIRECT and flusher.handle is not None
        await until(lambda: len(sink.chunks) >= 2)
        assert sink.chunks == [events[0].frame, b"".join(e.frame for e in events[1:])]
        assert s.state is State.IDLE and s.pending == [] and s.last_id == 4
        await settle()
        assert (
            not task.done() and s.state is State.IDLE
        )  # written by the tick, the task still parked


async def test_a_busy_subscriber_queues_and_its_task_writes() -> None:
    # 1. the task is running (not parked): the frame queues for it
    s, sink, flusher = direct_sub()
    first = msg(1)
    s.push(first)
    assert sink.chunks == [] and s.pending == [first]
    # 2. the task was woken (a heartbeat) but has not run yet: queue, do not write
    s.take()
    async with parked_task(s, may_end=True) as woken:
        s.heartbeat_tick(time.monotonic() + 3600, 1.0)
        assert s.state is State.ACTIVE
        second = msg(2)
        s.push(second)
        assert sink.chunks == [] and s.pending == [second]
        await asyncio.wait_for(woken, TIMEOUT_S)  # woken: it writes the ping and the frame
    # 3. parked for the flusher's tick by the task itself (``Delivery.open``): not idle, so
    # a push queues without waking it, and the tick wakes the task instead of writing
    s.take()
    s.ping_due = False
    s.last_write = time.monotonic()
    flusher.hold(s)
    held = asyncio.ensure_future(s.park())
    await settle()
    try:
        third = msg(3)
        s.push(third)
        await settle()
        assert not held.done() and s.pending == [third]
        await asyncio.wait_for(held, TIMEOUT_S)  # the tick woke the task
        assert sink.chunks == [] and s.pending == [third]
    finally:
        await stop(held, may_have_ended=True)


async def test_a_full_sink_marks_the_subscriber_congested_and_wakes_its_task() -> None:
    s, sink, _ = direct_sub(FakeSink(full=True))
    async with parked_task(s, may_end=True) as task:
        first = msg(1)
        s.push(first)
        await asyncio.sleep(0)
        assert sink.chunks == [first.frame]  # written, and the buffer is past its mark
        assert s.state is State.CONGESTED
        await asyncio.wait_for(task, TIMEOUT_S)  # woken to drain
        second = msg(2)
        s.push(second)  # while it drains, frames queue
        assert sink.chunks == [first.frame] and s.pending == [second]
        assert s.has_work  # it does not park again before draining


async def test_a_sink_that_refuses_the_write_closes_the_subscriber() -> None:
    s, sink, _ = direct_sub(FakeSink(accept=False))
    async with parked_task(s, may_end=True) as task:
        s.push(msg(1))
        await asyncio.sleep(0)
        assert s.state is State.CLOSED
        await asyncio.wait_for(task, TIMEOUT_S)  # woken: its stream ends
        s.push(msg(2))
        assert s.pending == [] and sink.chunks == []


async def test_render_skips_own_typing_and_ids_already_sent() -> None:
    s, sink, _ = direct_sub(user="alice")
    s.last_id = 5
    own, other = typing("alice"), typing("bob")
    m = {i: msg(i) for i in range(2, 9)}
    events = [own, m[3], other, m[5], m[6], m[6], m[4], m[7]]
    chunk, count = s.render(events)
    assert (chunk, count) == (other.frame + m[6].frame + m[7].frame, 3)
    assert s.last_id == 7
    assert s.render([own, m[7]]) == (b"", 0)
    # the same on the direct path: nothing to write is no write (and no wake-up)
    async with parked_task(s, may_end=True) as task:
        s.push(own)
        s.push(m[2])
        await settle()
        assert sink.chunks == [] and s.pending == []
        assert not task.done() and s.state is State.IDLE
        s.push(m[8])
        await asyncio.sleep(0)
        assert sink.chunks == [m[8].frame] and s.last_id == 8


async def test_overflow_while_held_wakes_the_task_to_catch_up() -> None:
    s, _sink, _ = direct_sub(limit_bytes=4096)
    async with parked_task(s, may_end=True) as task:
        for i in range(1, 60):  # one burst (as one batch's dispatch): > 4 KiB in the window
            s.push(msg(i, text="x" * 200))
        assert s.state is State.BEHIND
        await asyncio.wait_for(task, 4 * WINDOW_S + 0.5)  # must run, to catch up


class RaisingSink(FakeSink):
    def write(self, chunk: bytes) -> bool:
        raise RuntimeError("Cannot call write() after write_eof()")


async def test_a_sink_that_raises_ends_only_its_own_stream_and_the_tick_goes_on() -> None:
    flusher = Flusher(WINDOW_S)
    subs = [Subscriber(("r",), flusher=flusher) for _ in range(3)]
    sinks: list[FakeSink] = [FakeSink(), RaisingSink(), FakeSink()]
    for s, sink in zip(subs, sinks, strict=True):
        s.sink = sink
        s.last_write = time.monotonic()  # all busy: the push is held for the tick
    tasks = [await parked(s) for s in subs]
    try:
        event = msg(1)
        for s in subs:
            s.push(event)
        assert all(s.state is State.DIRECT for s in subs) and sinks[0].chunks == []
        await until(lambda: not any(s.state is State.DIRECT for s in subs))
        assert sinks[0].chunks == [event.frame] and sinks[2].chunks == [event.frame]
        assert [s.state for s in subs] == [State.IDLE, State.CLOSED, State.IDLE]
        await asyncio.wait_for(tasks[1], TIMEOUT_S)  # woken to end its stream
        later = msg(2)
        for s in subs:
            s.push(later)  # the survivors still get frames (held, then written at the tick)
        await until(lambda: len(sinks[0].chunks) == 2 and len(sinks[2].chunks) == 2)
        assert sinks[0].chunks[1] == later.frame == sinks[2].chunks[1]
    finally:
        for task in tasks:
            await stop(task, may_have_ended=True)
