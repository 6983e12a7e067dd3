"""The sequencer: events from several processes reach the hubs in id order with no gap, however
they arrive; what the broker never brings is read from the store."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

from chat.events import Event, make_event
from chat.registry import Registry
from chat.sequencer import HOLD_MAX, Sequencer
from chat.subscriber import Subscriber

TIMEOUT_S = 2.0


def msg(event_id: int, room: str = "r") -> Event:
    return make_event("message", room, {"author": "a", "text": f"m{event_id}"}, event_id=event_id)


class FakeStore:
    """The shared store: every committed event, and a count of the reads made."""

    def __init__(self, count: int = 0) -> None:
        self.events = [msg(i) for i in range(1, count + 1)]
        self.reads = 0

    def commit(self, count: int) -> list[Event]:
        new = [msg(len(self.events) + i) for i in range(1, count + 1)]
        self.events.extend(new)
        return new

    async def read_after(self, after: int, limit: int) -> list[Event]:
        self.reads += 1
        await asyncio.sleep(0)  # a real read yields to the loop
        return [e for e in self.events if e.id is not None and e.id > after][:limit]


def setup(store: FakeStore, gap_wait_s: float = 0.05) -> tuple[Sequencer, Subscriber]:
    registry = Registry()
    sub = Subscriber(None, limit_bytes=1 << 30)
    registry.subscribe(sub)
    return Sequencer(registry, store.read_after, gap_wait_s), sub


def ids(sub: Subscriber) -> list[int | None]:
    return [e.id for e in sub.take()]


async def until(condition: Callable[[], bool], timeout_s: float = TIMEOUT_S) -> None:
    """Let the loop run (timers, the fill task) until the condition holds."""
    async with asyncio.timeout(timeout_s):
        for _ in itertools.count():
            if condition():
                return
            await asyncio.sleep(0.005)


async def test_in_order_events_are_dispatched_at_once_without_reading_the_store() -> None:
    store = FakeStore()
    seq, sub = setup(store)
    seq.offer(store.commit(3))
    seq.offer(store.commit(2))
    assert ids(sub) == [1, 2, 3, 4, 5]
    assert store.reads == 0


async def test_a_late_smaller_id_is_waited_for_and_put_first() -> None:
    """Process A's 11 reaches the broker before B's 10: 10 then 11, no store read."""
    store = FakeStore(9)
    seq, sub = setup(store, gap_wait_s=1.0)
    seq.registry.position = 9
    ten, eleven = store.commit(2)
    seq.offer([eleven])
    assert ids(sub) == []  # held until 10 arrives
    seq.offer([ten])
    assert ids(sub) == [10, 11]
    assert store.reads == 0
    assert seq.held == {}


async def test_an_id_that_never_arrives_is_read_from_the_store_after_the_wait() -> None:
    """B died between its commit of 10 and its publish: 10 comes from the store."""
    store = FakeStore(9)
    seq, sub = setup(store, gap_wait_s=0.05)
    seq.registry.position = 9
    _ten, eleven = store.commit(2)
    seq.offer([eleven])
    await until(lambda: seq.registry.position == 11)
    assert ids(sub) == [10, 11]
    assert store.reads >= 1
    seq.offer([eleven])  # the late copy is a duplicate now
    assert ids(sub) == []


async def test_known_reads_what_nobody_published() -> None:
    store = FakeStore()
    seq, sub = setup(store)
    store.commit(1200)  # more than one page of the store
    seq.known(1200)
    await until(lambda: seq.registry.position == 1200)
    assert ids(sub) == list(range(1, 1201))
    seq.known(1200)  # nothing new: nothing happens
    assert ids(sub) == []


async def test_events_offered_during_a_fill_are_neither_lost_nor_doubled() -> None:
    store = FakeStore()
    seq, sub = setup(store)
    store.commit(5)
    seq.known(5)  # a fill starts
    live = store.commit(3)  # 6..8 arrive live while it runs
    seq.offer(live)
    seq.offer(live[:1])  # and one twice
    await until(lambda: seq.registry.position == 8 and not seq.held)
    assert ids(sub) == [1, 2, 3, 4, 5, 6, 7, 8]


async def test_ephemeral_events_pass_straight_through() -> None:
    store = FakeStore(1)
    seq, sub = setup(store, gap_wait_s=1.0)
    seq.offer([store.events[0]])
    seq.offer([make_event("typing", "r", {"user": "bob"})])
    assert ids(sub) == [1, None]


async def test_too_many_held_events_are_filled_without_waiting() -> None:
    store = FakeStore()
    seq, sub = setup(store, gap_wait_s=60.0)  # only the bound can start the fill in time
    events = store.commit(HOLD_MAX + 2)
    seq.offer(events[1:])  # id 1 never arrives
    await until(lambda: seq.registry.position == HOLD_MAX + 2)
    assert ids(sub) == list(range(1, HOLD_MAX + 3))
    assert seq.held == {}


async def test_a_failed_read_is_tried_again() -> None:
    store = FakeStore(3)
    seq, sub = setup(store)
    failures = [RuntimeError("the store is closing")]
    real_read = store.read_after

    async def flaky(after: int, limit: int) -> list[Event]:
        if failures:
            raise failures.pop()
        return await real_read(after, limit)

    seq.read_after = flaky
    seq.known(3)
    await until(lambda: seq.registry.position == 3, timeout_s=3.0)
    assert ids(sub) == [1, 2, 3]
    seq.close()


async def test_events_of_another_database_are_dropped_and_ours_still_flow() -> None:
    """A second deployment on the same channel: its ids are not in our store. They must not
    reach our subscribers, nor move the position past ids of our own."""
    store = FakeStore(2)
    seq, sub = setup(store, gap_wait_s=0.01)
    seq.offer(store.events)
    foreign = msg(500)
    seq.offer([foreign])
    await until(lambda: not seq.held)
    assert seq.registry.position == 2
    seq.offer(store.commit(1))
    assert ids(sub) == [1, 2, 3]


async def test_a_closed_sequencer_does_nothing() -> None:
    store = FakeStore(3)
    seq, sub = setup(store)
    seq.close()
    seq.offer(store.events)
    seq.known(3)
    await asyncio.sleep(0.05)
    assert ids(sub) == []
    assert store.reads == 0
