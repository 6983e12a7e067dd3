"""One subscriber: pending frames, the byte bound, its states, parking and waking, heartbeats."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

import pytest

from chat.events import make_event
from chat.flusher import Flusher
from chat.states import State
from chat.subscriber import Subscriber
from tests.fakes import FakeSink, msg, parked_task, settle, stop, sub

TIMEOUT_S = 1.0


def test_take_returns_in_arrival_order_and_empties() -> None:
    s = sub()
    assert s.state is State.ACTIVE and not s.has_work and s.waiter is None
    events = [msg(i) for i in range(1, 6)]
    for e in events:
        s.push(e)
    assert s.pending_bytes == sum(len(e.frame) for e in events)
    assert s.take() == events
    assert s.take() == []
    assert s.pending_bytes == 0
    assert not s.has_work


def test_pending_up_to_the_bound_is_kept() -> None:
    events = [msg(1), msg(2)]
    s = sub(limit_bytes=sum(len(e.frame) for e in events))
    for e in events:
        s.push(e)
    assert s.state is State.ACTIVE
    assert s.take() == events


def test_push_over_the_bound_marks_behind_and_drops_pending() -> None:
    first = msg(1)
    s = sub(limit_bytes=len(first.frame) + 10)
    s.push(first)
    assert s.state is State.ACTIVE
    s.push(msg(2))
    assert s.state is State.BEHIND
    assert s.pending_bytes == 0
    assert s.take() == []
    assert s.has_work  # the stream must wake up to catch up from the store


def test_push_many_over_the_bound_marks_behind_too() -> None:
    events = [msg(1), msg(2)]
    size = sum(len(e.frame) for e in events)
    s = sub(limit_bytes=size)
    s.push_many(events, size)
    assert s.state is State.ACTIVE and s.take() == events
    s.push_many([*events, msg(3)], size + len(msg(3).frame))
    assert s.state is State.BEHIND and s.take() == [] and s.pending_bytes == 0


def test_behind_subscriber_ignores_pushes_until_reset() -> None:
    first = msg(1)
    s = sub(limit_bytes=len(first.frame) + 10)
    s.push(first)
    s.push(msg(2))
    assert s.state is State.BEHIND
    s.push(msg(3))  # would fit in the bound, but a behind subscriber takes no live events
    s.push_many([msg(3)], len(msg(3).frame))
    assert s.take() == [] and s.pending_bytes == 0
    s.state = State.ACTIVE  # what the stream does before it replays from the store
    later = msg(4)
    s.push(later)
    assert s.take() == [later]
    assert s.state is State.ACTIVE


def test_closed_subscriber_ignores_pushes() -> None:
    s = sub()
    s.close()
    s.push(msg(1))
    s.push_many([msg(2)], len(msg(2).frame))
    assert s.take() == []
    assert s.state is State.CLOSED and s.has_work


def test_closed_stays_closed_when_everyone_falls_behind() -> None:
    s = sub()
    s.push(msg(1))
    s.close()
    s.fall_behind()  # Registry.resync_all after shutdown began
    assert s.state is State.CLOSED and s.pending == [] and s.pending_bytes == 0


async def test_wait_returns_at_once_when_work_is_pending() -> None:
    s = sub()
    s.push(msg(1))
    await asyncio.wait_for(s.wait(), TIMEOUT_S)
    assert s.waiter is None
    assert len(s.take()) == 1


@pytest.mark.parametrize("reason", ["behind", "closed", "congested", "ping_due"])
async def test_wait_returns_at_once_for_catch_up_close_drain_and_ping(reason: str) -> None:
    s = sub()
    if reason == "ping_due":
        s.ping_due = True
    else:
        s.state = State[reason.upper()]
    await asyncio.wait_for(s.wait(), TIMEOUT_S)
    assert s.waiter is None


async def test_wait_parks_idle_until_a_push_without_a_sink() -> None:
    s = sub()
    task = asyncio.create_task(s.wait())
    await settle()
    assert s.state is State.IDLE and not task.done()
    event = msg(1)
    s.push(event)
    assert s.state is State.ACTIVE
    await asyncio.wait_for(task, TIMEOUT_S)
    assert s.take() == [event]
    assert s.waiter is None and s.state is State.ACTIVE


@contextlib.contextmanager
def direct_sub() -> Iterator[tuple[Subscriber, Flusher]]:
    """A subscriber with a sink, that wrote just now: a push holds it for a tick far away
    (cancelled at the end, with everything held)."""
    flusher = Flusher(60.0)
    s = Subscriber(("r",), flusher=flusher)
    s.sink = FakeSink()
    s.last_write = time.monotonic()
    try:
        yield s, flusher
    finally:
        if flusher.handle is not None:
            flusher.handle.cancel()
        flusher.held.clear()


async def test_an_idle_push_with_a_sink_goes_to_the_flusher_not_the_task() -> None:
    with direct_sub() as (s, flusher):
        async with parked_task(s) as task:
            s.push(msg(1))
            assert s.state is State.DIRECT and flusher.held == [s]
            s.push(msg(2))  # while queued, pushes only append
            s.push_many([msg(3)], len(msg(3).frame))
            assert flusher.held == [s] and [e.id for e in s.pending] == [1, 2, 3]
            await settle()
            assert not task.done() and s.state is State.DIRECT
        assert s.state is State.HELD  # cancelled while parked: awake, still queued


async def test_a_heartbeat_while_direct_wakes_the_task_and_keeps_it_queued() -> None:
    with direct_sub() as (s, flusher):
        async with parked_task(s, may_end=True) as task:
            s.push(msg(1))
            assert s.state is State.DIRECT
            s.heartbeat_tick(s.last_write + 100.0, 15.0)
            assert s.state is State.HELD and s.ping_due
            await asyncio.wait_for(task, TIMEOUT_S)
            s.push(msg(2))  # the flusher wakes it at its turn: a push only appends
            assert [e.id for e in s.pending] == [1, 2] and s.state is State.HELD
            assert flusher.held == [s]


async def test_wait_with_a_queued_entry_parks_direct() -> None:
    """A task that held itself for the tick (HELD) but found nothing left: the flusher's entry
    writes for it while it waits."""
    with direct_sub() as (s, flusher):
        flusher.hold(s)
        assert s.state is State.HELD
        task = asyncio.create_task(s.wait())
        try:
            await settle()
            assert s.state is State.DIRECT and not task.done()
        finally:
            await stop(task)


async def test_wait_is_woken_by_close() -> None:
    s = sub()
    task = asyncio.create_task(s.wait())
    await settle()
    assert not task.done()
    s.close()
    await asyncio.wait_for(task, TIMEOUT_S)
    assert s.state is State.CLOSED


async def test_wait_is_woken_by_overflow() -> None:
    s = sub(limit_bytes=1)
    task = asyncio.create_task(s.wait())
    await settle()
    s.push(msg(1))
    await asyncio.wait_for(task, TIMEOUT_S)
    assert s.state is State.BEHIND


async def test_cancelled_wait_leaves_no_waiter() -> None:
    s = sub()
    task = asyncio.create_task(s.wait())
    await settle()
    assert s.waiter is not None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, TIMEOUT_S)
    assert s.waiter is None and s.state is State.ACTIVE
    s.push(msg(1))  # waking with nobody parked is harmless
    assert len(s.take()) == 1


def test_a_drained_subscriber_is_active_again_unless_it_fell_behind() -> None:
    s = sub()
    s.state = State.CONGESTED
    s.push(msg(1))  # while it drains, frames queue
    assert s.state is State.CONGESTED and len(s.pending) == 1
    s.drained()
    assert s.state is State.ACTIVE
    s.state = State.CONGESTED
    s.fall_behind()
    s.drained()
    assert s.state is State.BEHIND


async def test_heartbeat_wakes_an_idle_subscriber() -> None:
    s = sub()
    task = asyncio.create_task(s.wait())
    await settle()
    assert not task.done()
    s.heartbeat_tick(100.0, 15.0)
    await asyncio.wait_for(task, TIMEOUT_S)
    assert s.ping_due and s.state is State.ACTIVE


def test_heartbeat_pings_only_subscribers_idle_for_the_period() -> None:
    busy, idle = sub(), sub()
    busy.last_write = 95.0  # what the stream sets after a write
    busy.heartbeat_tick(100.0, 15.0)
    idle.heartbeat_tick(100.0, 15.0)
    assert not busy.ping_due and not busy.has_work
    assert idle.ping_due and idle.has_work
    busy.heartbeat_tick(110.0, 15.0)  # idle for 15 s now
    assert busy.ping_due


async def test_heartbeat_after_a_write_does_not_wake() -> None:
    s = sub()
    s.last_write = 95.0
    task = asyncio.create_task(s.wait())
    try:
        await settle()
        s.heartbeat_tick(100.0, 15.0)
        await settle()
        assert not task.done()
        s.heartbeat_tick(110.0, 15.0)
        await asyncio.wait_for(task, TIMEOUT_S)
    finally:
        task.cancel()


def test_render_skips_own_typing_and_ids_already_sent() -> None:
    s = Subscriber(("r",), user="alice")
    s.last_id = 5
    own, other = (make_event("typing", "r", {"user": u}) for u in ("alice", "bob"))
    m = {i: msg(i) for i in range(3, 8)}
    chunk, count = s.render([own, m[3], other, m[5], m[6], m[6], m[4], m[7]])
    assert (chunk, count) == (other.frame + m[6].frame + m[7].frame, 3)
    assert s.last_id == 7
    assert s.render([own, m[7]]) == (b"", 0)
