"""The flusher: direct writes to a fake sink, slices and ticks, and the coalescing window."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from chat.flusher import SLICE, Flusher
from chat.states import State
from chat.subscriber import Subscriber
from tests.fakes import FakeSink, msg, parked, parked_task, settle, stop

TIMEOUT_S = 1.0


def sub(flusher: Flusher | None = None, sink: FakeSink | None = None) -> Subscriber:
    s = Subscriber(("r",), flusher=flusher)
    s.sink = sink
    return s


# -- writes: straight to the sink, the task left parked -----------------------------------------


async def test_a_quiet_stream_is_written_in_the_next_slice_its_task_left_parked() -> None:
    flusher = Flusher(0.05)
    sink = FakeSink()
    s = sub(flusher, sink)
    async with parked_task(s) as task:
        events = [msg(1), msg(2)]
        for event in events:
            s.push(event)
        assert sink.chunks == [] and flusher.due == [s] and flusher.handle is None
        await asyncio.sleep(0)
        assert sink.chunks == [events[0].frame + events[1].frame]
        assert s.state is State.IDLE and s.pending == [] and s.last_id == 2
        assert not task.done() and s.waiter is not None


@pytest.mark.parametrize(
    ("sink", "state"),
    [
        (FakeSink(full=True), State.CONGESTED),
        (FakeSink(accept=False), State.CLOSED),
        (FakeSink(error=True), State.CLOSED),
    ],
)
async def test_a_full_refusing_or_raising_sink_wakes_the_task(sink: FakeSink, state: State) -> None:
    s = sub(Flusher(0.05), sink)
    task = await parked(s)
    s.push(msg(1))
    await asyncio.sleep(0)
    assert s.state is state
    await asyncio.wait_for(task, TIMEOUT_S)  # woken: to drain, or to end its stream
    assert s.has_work


async def test_one_raising_sink_ends_only_its_stream() -> None:
    flusher = Flusher(0.05)
    sinks = [FakeSink(), FakeSink(error=True), FakeSink()]
    subs = [sub(flusher, sink) for sink in sinks]
    tasks = [await parked(s) for s in subs]
    try:
        event = msg(1)
        for s in subs:
            s.push(event)
        await asyncio.sleep(0)
        assert [s.state for s in subs] == [State.IDLE, State.CLOSED, State.IDLE]
        assert sinks[0].chunks == [event.frame] == sinks[2].chunks
        await asyncio.wait_for(tasks[1], TIMEOUT_S)
    finally:
        for task in (tasks[0], tasks[2]):
            await stop(task)


async def test_due_streams_are_written_a_slice_per_loop_cycle() -> None:
    flusher = Flusher(0.05)
    sinks = [FakeSink() for _ in range(SLICE + 3)]
    subs = [sub(flusher, sink) for sink in sinks]
    tasks = [await parked(s) for s in subs]
    try:
        for s in subs:
            s.push(msg(1))
        await asyncio.sleep(0)
        assert sum(1 for sink in sinks if sink.chunks) == SLICE
        await asyncio.sleep(0)
        assert all(sink.chunks for sink in sinks) and flusher.due == []
        assert flusher.due_handle is None
    finally:
        for task in tasks:
            await stop(task)


async def test_a_stream_that_fell_behind_while_queued_is_woken_not_written() -> None:
    flusher = Flusher(0.05)
    sink = FakeSink()
    s = sub(flusher, sink)
    s.limit_bytes = len(msg(1).frame)
    task = await parked(s)
    s.push(msg(1))
    s.push(msg(2))  # over the bound while queued
    assert s.state is State.BEHIND
    await asyncio.wait_for(task, TIMEOUT_S)
    await asyncio.sleep(0)  # its turn in the slice
    assert sink.chunks == [] and s.state is State.BEHIND


# -- ticks: held streams, woken together -----------------------------------------------------


async def test_a_held_subscriber_is_not_woken_by_pushes_only_by_the_tick() -> None:
    flusher = Flusher(0.05)
    s = sub()
    s.push(msg(1))
    flusher.hold(s)
    parked = asyncio.create_task(s.park())
    await settle()
    s.push(msg(2))
    s.push(msg(3))
    await settle()
    assert not parked.done()  # frames pile up while held
    await asyncio.wait_for(parked, TIMEOUT_S)  # the tick wakes it
    assert [e.id for e in s.take()] == [1, 2, 3]  # and they go out together
    assert s.state is State.ACTIVE and flusher.held == []


async def test_a_recent_writer_is_held_for_the_tick_then_written_as_one_chunk() -> None:
    flusher = Flusher(0.02)
    sink = FakeSink()
    s = sub(flusher, sink)
    s.last_write = time.monotonic()
    async with parked_task(s) as task:
        events = [msg(i) for i in range(1, 4)]
        for event in events:
            s.push(event)
        assert s.state is State.DIRECT and flusher.held == [s] and flusher.handle is not None
        for _ in range(200):
            if sink.chunks:
                break
            await asyncio.sleep(0.005)
        assert sink.chunks == [b"".join(e.frame for e in events)]
        assert s.state is State.IDLE and not task.done() and flusher.handle is None


async def test_one_tick_wakes_every_held_subscriber() -> None:
    flusher = Flusher(0.02)
    subs = [sub() for _ in range(3)]
    tasks = []
    for s in subs:
        s.push(msg(1))
        flusher.hold(s)
        tasks.append(asyncio.create_task(s.park()))
    await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT_S)
    assert flusher.handle is None
    assert all(s.state is State.ACTIVE for s in subs)


async def test_closing_a_held_subscriber_wakes_it_at_once() -> None:
    flusher = Flusher(60.0)  # the tick would come far too late
    s = sub()
    s.push(msg(1))
    flusher.hold(s)
    parked = asyncio.create_task(s.park())
    await settle()
    s.close()
    await asyncio.wait_for(parked, TIMEOUT_S)
    assert s.state is State.CLOSED
    flusher.flush()  # the late tick finds nothing to do
    assert s.state is State.CLOSED
    if flusher.handle is not None:
        flusher.handle.cancel()


# -- the window: wider only while the loop is saturated --------------------------------------


def probe(flusher: Flusher, idle: float, writing: float, times: int) -> list[float]:
    """``times`` load probes of 10 ms: the loop idle for the share ``idle`` of each, and
    the flusher writing for the share ``writing``; the window after each."""
    windows = []
    for _ in range(times):
        flusher.writing_s = writing * 0.01
        flusher.observe(idle, 0.01)
        windows.append(flusher.window_s)
    return windows


def test_the_window_stays_at_its_base_while_the_loop_keeps_up() -> None:
    flusher = Flusher(0.01, 0.5)
    assert flusher.window_s == 0.01
    # a loop that keeps up: writing 40% of the time, idle 35% of it
    assert set(probe(flusher, 0.35, 0.4, 100)) == {0.01}
    # busy, and nothing but writing, yet idle now and then: not saturated
    assert set(probe(flusher, 0.1, 0.9, 100)) == {0.01}


def test_a_saturated_loop_widens_the_window_until_writes_take_their_share() -> None:
    flusher = Flusher(0.01, 0.5, write_share=0.25)
    windows = probe(flusher, 0.0, 0.8, 200)  # never idle, writing 80% of the time
    assert windows[0] == 0.01  # the smoothed load has to build up first
    steps = [b / a for a, b in itertools.pairwise([0.01, *windows])]
    assert max(steps) <= 1.25 + 1e-9  # at most a quarter wider per probe
    assert windows[-1] == 0.5  # the share never falls here: up to the bound, never past it
    # a saturated loop that writes little: the window shrinks toward the writes' share
    windows = probe(flusher, 0.0, 0.05, 200)
    assert min(b / a for a, b in itertools.pairwise(windows)) >= 0.8 - 1e-9
    assert windows[-1] == 0.01
    # saturated, writing its share: the window holds still
    probe(flusher, 0.0, 0.25, 100)
    flusher.window_s = 0.1
    assert all(0.099 < w < 0.101 for w in probe(flusher, 0.0, 0.25, 50))


def test_the_window_narrows_back_to_its_base_once_the_loop_has_time_to_spare() -> None:
    flusher = Flusher(0.01, 0.5)
    probe(flusher, 0.0, 0.8, 200)
    assert flusher.window_s == 0.5
    # busy but not saturated (idle 10%), still writing much: the window holds
    assert probe(flusher, 0.1, 0.8, 50)[-1] == 0.5
    # busy but not saturated, and the wide window left little writing: it narrows, all the
    # way, and never widens again while the loop is not saturated
    windows = probe(flusher, 0.1, 0.02, 200)
    assert windows[-1] == 0.01
    assert all(b <= a for a, b in itertools.pairwise(windows))
    probe(flusher, 0.0, 0.8, 200)
    windows = probe(flusher, 0.5, 0.1, 100)
    assert windows[-1] == 0.01
    assert min(b / a for a, b in itertools.pairwise(windows)) >= 0.8 - 1e-9


def test_a_zero_window_widens_under_saturation_and_comes_back_to_zero() -> None:
    flusher = Flusher(0.0, 0.5)  # CHAT_COALESCE_MS=0: every wake-up writes, unless saturated
    assert set(probe(flusher, 0.5, 0.9, 50)) == {0.0}
    windows = probe(flusher, 0.0, 0.9, 100)
    assert windows[5] == 0.0  # the smoothed idle share takes a few probes to fall
    assert 0 < windows[12] < windows[-1] == 0.5
    assert probe(flusher, 0.5, 0.1, 200)[-1] == 0.0


def test_an_empty_probe_changes_nothing() -> None:
    flusher = Flusher(0.01, 0.5)
    flusher.writing_s = 1.0
    flusher.observe(0.0, 0.0)
    assert flusher.window_s == 0.01 and flusher.writing_s == 1.0
