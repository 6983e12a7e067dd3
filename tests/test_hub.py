"""One room's fan-out: pending frames, the byte bound, parking and waking, heartbeats."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from chat.events import Event, make_event
from chat.filters import parse_filter
from chat.hub import Flusher, Hub, Subscriber

TIMEOUT_S = 1.0


def msg(event_id: int, author: str = "alice", text: str = "hi") -> Event:
    return make_event("message", "r", {"author": author, "text": text}, event_id=event_id)


def sub(limit_bytes: int = 1 << 20, **query: str) -> Subscriber:
    return Subscriber(("r",), parse_filter(query), limit_bytes=limit_bytes)


async def settle() -> None:
    """Let every ready callback run, so a task that could finish has finished."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_broadcast_reaches_only_matching_subscribers() -> None:
    hub = Hub()
    everyone, only_bob, no_alice = sub(), sub(authors="bob"), sub(exclude_authors="alice")
    hub.subscribers.update({everyone, only_bob, no_alice})
    event = msg(1, "alice")
    assert hub.broadcast(event) == 1
    assert everyone.take() == [event]
    assert only_bob.take() == [] and no_alice.take() == []
    assert hub.broadcast(msg(2, "bob")) == 3


def test_every_subscriber_gets_the_same_frame_object() -> None:
    hub = Hub()
    subs = [sub() for _ in range(5)]
    hub.subscribers.update(subs)
    event = msg(1)
    hub.broadcast(event)
    taken = [s.take() for s in subs]
    assert all(len(t) == 1 for t in taken)
    assert all(t[0].frame is event.frame for t in taken)


def test_broadcast_to_an_empty_hub() -> None:
    assert Hub().broadcast(msg(1)) == 0


def test_take_returns_in_arrival_order_and_empties() -> None:
    s = sub()
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
    assert not s.behind
    assert s.take() == events


def test_push_over_the_bound_marks_behind_and_drops_pending() -> None:
    first = msg(1)
    s = sub(limit_bytes=len(first.frame) + 10)
    s.push(first)
    assert not s.behind
    s.push(msg(2))
    assert s.behind
    assert s.pending_bytes == 0
    assert s.take() == []
    assert s.has_work  # the stream must wake up to catch up from the store


def test_behind_subscriber_ignores_pushes_until_reset() -> None:
    first = msg(1)
    s = sub(limit_bytes=len(first.frame) + 10)
    s.push(first)
    s.push(msg(2))
    assert s.behind
    s.push(msg(3))  # would fit in the bound, but a behind subscriber takes no live events
    assert s.take() == [] and s.pending_bytes == 0
    s.behind = False  # what the stream does before it replays from the store
    later = msg(4)
    s.push(later)
    assert s.take() == [later]
    assert not s.behind


def test_slow_subscriber_does_not_affect_others() -> None:
    hub = Hub()
    slow, fast = sub(limit_bytes=1), sub()
    hub.subscribers.update({slow, fast})
    events = [msg(i) for i in range(1, 4)]
    for e in events:
        hub.broadcast(e)
    assert slow.behind and slow.take() == []
    assert not fast.behind and fast.take() == events


def test_closed_subscriber_ignores_pushes() -> None:
    s = sub()
    s.close()
    s.push(msg(1))
    assert s.take() == []
    assert s.closed and s.has_work


async def test_wait_returns_at_once_when_work_is_pending() -> None:
    s = sub()
    s.push(msg(1))
    await asyncio.wait_for(s.wait(), TIMEOUT_S)
    assert s.waiter is None
    assert len(s.take()) == 1


@pytest.mark.parametrize("reason", ["behind", "closed", "ping_due"])
async def test_wait_returns_at_once_for_catch_up_close_and_ping(reason: str) -> None:
    s = sub()
    setattr(s, reason, True)
    await asyncio.wait_for(s.wait(), TIMEOUT_S)


async def test_wait_parks_until_a_push() -> None:
    hub = Hub()
    s = sub()
    hub.subscribers.add(s)
    task = asyncio.create_task(s.wait())
    await settle()
    assert not task.done()
    event = msg(1)
    hub.broadcast(event)
    await asyncio.wait_for(task, TIMEOUT_S)
    assert s.take() == [event]
    assert s.waiter is None


async def test_wait_parks_through_pushes_the_filter_rejects() -> None:
    hub = Hub()
    s = sub(authors="bob")
    hub.subscribers.add(s)
    task = asyncio.create_task(s.wait())
    try:
        await settle()
        hub.broadcast(msg(1, "alice"))
        await settle()
        assert not task.done()
        hub.broadcast(msg(2, "bob"))
        await asyncio.wait_for(task, TIMEOUT_S)
    finally:
        task.cancel()


async def test_wait_is_woken_by_close() -> None:
    s = sub()
    task = asyncio.create_task(s.wait())
    await settle()
    assert not task.done()
    s.close()
    await asyncio.wait_for(task, TIMEOUT_S)
    assert s.closed


async def test_wait_is_woken_by_overflow() -> None:
    s = sub(limit_bytes=1)
    task = asyncio.create_task(s.wait())
    await settle()
    s.push(msg(1))
    await asyncio.wait_for(task, TIMEOUT_S)
    assert s.behind


async def test_cancelled_wait_leaves_no_waiter() -> None:
    s = sub()
    task = asyncio.create_task(s.wait())
    await settle()
    assert s.waiter is not None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, TIMEOUT_S)
    assert s.waiter is None
    s.push(msg(1))  # waking with nobody parked is harmless
    assert len(s.take()) == 1


async def test_heartbeat_wakes_an_idle_subscriber() -> None:
    s = sub()
    task = asyncio.create_task(s.wait())
    await settle()
    assert not task.done()
    s.heartbeat_tick(100.0, 15.0)
    await asyncio.wait_for(task, TIMEOUT_S)
    assert s.ping_due


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


# -- the flusher: coalesced writes under load --------------------------------------------------


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
    assert not s.holding and flusher.held == []


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


async def test_closing_a_held_subscriber_wakes_it_at_once() -> None:
    flusher = Flusher(60.0)  # the tick would come far too late
    s = sub()
    s.push(msg(1))
    flusher.hold(s)
    parked = asyncio.create_task(s.park())
    await settle()
    s.close()
    await asyncio.wait_for(parked, TIMEOUT_S)
    assert s.closed
    flusher.flush()  # the late tick finds nothing to do
    if flusher.handle is not None:
        flusher.handle.cancel()


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
    # 200 msg/s into 500 streams: writing 40% of the time, idle 35% of it
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
