"""One room's fan-out: which subscribers get an event, and that the frame is shared."""

from __future__ import annotations

import asyncio

from chat.events import Event, Run
from chat.hub import Hub
from chat.states import State
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
    Hub().broadcast_many(run_of([msg(1)]))


def run_of(events: list[Event]) -> Run:
    first, last = events[0].id, events[-1].id
    assert first is not None and last is not None
    return Run(events, first, last, sum(len(e.frame) for e in events))


def test_broadcast_many_sends_what_broadcasting_one_by_one_sends() -> None:
    events = [msg(1, "alice"), msg(2, "bob"), msg(3, "alice")]
    one_by_one, at_once = Hub(), Hub()
    singles = [sub(), sub(authors="bob"), sub(authors="carol")]
    runs = [sub(), sub(authors="bob"), sub(authors="carol")]
    one_by_one.subscribers.update(singles)
    at_once.subscribers.update(runs)
    for event in events:
        one_by_one.broadcast(event)
    at_once.broadcast_many(run_of(events))
    for single, run in zip(singles, runs, strict=True):
        assert run.pending_bytes == single.pending_bytes
        assert run.collect() == single.collect()
        assert run.last_id == single.last_id and run.events_sent == single.events_sent
    assert runs[0].events_sent == 3 and runs[1].events_sent == 1 and runs[2].events_sent == 0


def test_a_run_is_joined_once_for_every_subscriber() -> None:
    hub = Hub()
    subs = [sub() for _ in range(3)]
    hub.subscribers.update(subs)
    events = [msg(1), msg(2)]
    hub.broadcast_many(run_of(events))
    chunks = [s.collect()[0] for s in subs]
    assert chunks[0] == events[0].frame + events[1].frame
    assert chunks[1] is chunks[0] and chunks[2] is chunks[0]


def test_a_run_partly_sent_already_sends_only_the_rest() -> None:
    """A replay overlapped the run: its ids up to the last sent are skipped, not doubled."""
    hub = Hub()
    s = sub()
    hub.subscribers.add(s)
    s.last_id = 2
    events = [msg(i) for i in range(1, 6)]
    hub.broadcast_many(run_of(events[:4]))
    hub.broadcast(events[4])
    assert s.collect() == (b"".join(e.frame for e in events[2:]), 3)
    assert s.last_id == 5 and s.events_sent == 3


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
