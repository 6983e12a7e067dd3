"""One room's fan-out: which subscribers get an event, and that the frame is shared."""

from __future__ import annotations

import asyncio

from chat.hub import Hub
from chat.subscriber import State
from tests.fakes import msg, settle, sub

TIMEOUT_S = 1.0


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
    Hub().broadcast_many([msg(1)], len(msg(1).frame))


def test_broadcast_many_queues_what_broadcasting_one_by_one_queues() -> None:
    events = [msg(1, "alice"), msg(2, "bob"), msg(3, "alice")]
    one_by_one, at_once = Hub(), Hub()
    singles = [sub(), sub(authors="bob"), sub(authors="carol")]
    runs = [sub(), sub(authors="bob"), sub(authors="carol")]
    one_by_one.subscribers.update(singles)
    at_once.subscribers.update(runs)
    for event in events:
        one_by_one.broadcast(event)
    at_once.broadcast_many(events, sum(len(e.frame) for e in events))
    for single, run in zip(singles, runs, strict=True):
        assert run.pending == single.pending and run.pending_bytes == single.pending_bytes
    assert [e.id for e in runs[1].pending] == [2] and runs[2].pending == []


def test_slow_subscriber_does_not_affect_others() -> None:
    hub = Hub()
    slow, fast = sub(limit_bytes=1), sub()
    hub.subscribers.update({slow, fast})
    events = [msg(i) for i in range(1, 4)]
    for e in events:
        hub.broadcast(e)
    assert slow.state is State.BEHIND and slow.take() == []
    assert fast.state is State.ACTIVE and fast.take() == events


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
