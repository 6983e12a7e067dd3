"""Room name -> hub: lazy hubs, multi-room and every-room subscribers, dispatch, shutdown."""

from __future__ import annotations

import asyncio

from chat.events import Event, make_event
from chat.filters import parse_filter
from chat.registry import Registry
from chat.states import State
from chat.subscriber import Subscriber

TIMEOUT_S = 1.0


def msg(room: str, event_id: int | None = None, author: str = "alice") -> Event:
    if event_id is None:
        return make_event("typing", room, {"user": author})
    return make_event("message", room, {"author": author, "text": "hi"}, event_id=event_id)


def test_hub_created_on_first_subscribe_and_dropped_after_last() -> None:
    reg = Registry()
    assert reg.hubs == {}
    a, b = Subscriber(("r",)), Subscriber(("r",))
    reg.subscribe(a)
    assert set(reg.hubs) == {"r"}
    hub = reg.hubs["r"]
    reg.subscribe(b)
    assert reg.hubs["r"] is hub  # the second subscriber joins the same hub
    reg.unsubscribe(a)
    assert reg.hubs["r"] is hub
    reg.unsubscribe(b)
    assert reg.hubs == {}
    assert reg.subscribers == set()


def test_unsubscribe_twice_or_unknown_is_harmless() -> None:
    reg = Registry()
    a, stranger = Subscriber(("r",)), Subscriber(("r", "other"))
    reg.subscribe(a)
    reg.unsubscribe(stranger)
    assert reg.count("r") == 1
    reg.unsubscribe(a)
    reg.unsubscribe(a)
    assert reg.hubs == {} and reg.count("r") == 0


def test_multi_room_subscriber_sits_in_each_hub_and_leaves_all() -> None:
    reg = Registry()
    multi, only_b = Subscriber(("a", "b", "c")), Subscriber(("b",))
    reg.subscribe(multi)
    reg.subscribe(only_b)
    assert set(reg.hubs) == {"a", "b", "c"}
    assert all(multi in reg.hubs[room].subscribers for room in "abc")
    reg.unsubscribe(multi)
    assert set(reg.hubs) == {"b"}
    assert reg.hubs["b"].subscribers == {only_b}


def test_multi_room_subscriber_receives_its_rooms_in_order() -> None:
    reg = Registry()
    multi = Subscriber(("a", "b"))
    reg.subscribe(multi)
    events = [msg("a", 1), msg("z", 2), msg("b", 3), msg("a", 4)]
    reg.dispatch_all(events)
    assert multi.take() == [events[0], events[2], events[3]]


def test_dispatch_reaches_only_the_rooms_subscribers() -> None:
    reg = Registry()
    in_a, in_b = Subscriber(("a",)), Subscriber(("b",))
    reg.subscribe(in_a)
    reg.subscribe(in_b)
    event = msg("a", 1)
    assert reg.dispatch(event) == 1
    assert in_a.take() == [event] and in_b.take() == []
    assert reg.dispatch(msg("nobody-here", 2)) == 0
    assert "nobody-here" not in reg.hubs  # dispatch creates no hub


def test_dispatch_applies_each_subscribers_filter() -> None:
    reg = Registry()
    mine = Subscriber(("a",), parse_filter({"exclude_authors": "alice"}))
    reg.subscribe(mine)
    assert reg.dispatch(msg("a", 1, "alice")) == 0
    bob = msg("a", 2, "bob")
    assert reg.dispatch(bob) == 1
    assert mine.take() == [bob]


def test_everywhere_subscriber_receives_every_rooms_events() -> None:
    reg = Registry()
    star, in_a = Subscriber(None), Subscriber(("a",))
    reg.subscribe(star)
    reg.subscribe(in_a)
    assert reg.hubs.keys() == {"a"}  # `*` makes no per-room hub
    events = [msg("a", 1), msg("created-later", 2), msg("b")]
    for event in events:
        reg.dispatch(event)
    assert star.take() == events
    assert in_a.take() == [events[0]]
    assert reg.dispatch(msg("a", 3)) == 2


def test_everywhere_subscriber_filter_and_unsubscribe() -> None:
    reg = Registry()
    star = Subscriber(None, parse_filter({"types": "activity"}))
    reg.subscribe(star)
    assert reg.dispatch(msg("a", 1)) == 0
    reg.unsubscribe(star)
    assert reg.everywhere.subscribers == set() and reg.subscribers == set()
    assert reg.count("a") == 0


def test_position_advances_only_for_persisted_ids() -> None:
    reg = Registry()
    assert reg.position == 0
    reg.dispatch(msg("a", 5))  # nobody listening: the position moves all the same
    assert reg.position == 5
    reg.dispatch(msg("a"))  # typing: no id
    assert reg.position == 5
    reg.dispatch(make_event("reset", "a", {"latest_id": 99, "reason": "x"}))
    assert reg.position == 5
    reg.dispatch(msg("b", 7))
    assert reg.position == 7
    reg.dispatch(msg("b", 6))  # a late arrival never moves it back
    assert reg.position == 7


def test_count_includes_everywhere_subscribers() -> None:
    reg = Registry()
    assert reg.count("a") == 0
    reg.subscribe(Subscriber(("a",)))
    reg.subscribe(Subscriber(("a", "b")))
    reg.subscribe(Subscriber(None))
    assert reg.count("a") == 3
    assert reg.count("b") == 2
    assert reg.count("never-used") == 1


def test_heartbeat_tick_reaches_every_subscriber_once() -> None:
    reg = Registry()
    multi, star, busy = Subscriber(("a", "b")), Subscriber(None), Subscriber(("a",))
    for s in (multi, star, busy):
        reg.subscribe(s)
    busy.last_write = 95.0
    reg.heartbeat_tick(100.0, 15.0)
    assert multi.ping_due and star.ping_due
    assert not busy.ping_due  # one tick, even though busy and multi share hub "a"


async def test_close_all_closes_and_wakes_everyone() -> None:
    reg = Registry()
    subs = [Subscriber(("a",)), Subscriber(("a", "b")), Subscriber(None)]
    for s in subs:
        reg.subscribe(s)
    waits = [asyncio.create_task(s.wait()) for s in subs]
    await asyncio.sleep(0)
    assert not any(t.done() for t in waits)
    reg.close_all()
    await asyncio.wait_for(asyncio.gather(*waits), TIMEOUT_S)
    assert all(s.state is State.CLOSED for s in subs)
    reg.dispatch(msg("a", 1))
    assert all(s.take() == [] for s in subs)
    for s in subs:  # what each stream's `finally` does
        reg.unsubscribe(s)
    assert reg.hubs == {} and reg.subscribers == set() and not reg.everywhere.subscribers


def test_dispatch_all_hands_runs_of_one_room_over_at_once_in_id_order() -> None:
    """A batch's events (a run of one room) go to each subscriber in one step; what each
    subscriber queues is what dispatching them one by one would have queued."""
    events = [msg("a", 1), msg("a", 2, "bob"), msg("b", 3), msg("a", 4), msg("a", 5, "bob")]
    events += [msg("a", 6), msg("a", None, "carol"), msg("b", 7, "bob")]

    def subscribers() -> list[Subscriber]:
        return [
            Subscriber(("a",)),
            Subscriber(("a",), parse_filter({"authors": "bob"})),
            Subscriber(("a", "b")),
            Subscriber(None, parse_filter({"exclude_authors": "alice"})),
            Subscriber(("b",), limit_bytes=1),  # overflows: behind, nothing queued
        ]

    one_by_one, at_once = Registry(), Registry()
    singles, runs = subscribers(), subscribers()
    for reg, subs in ((one_by_one, singles), (at_once, runs)):
        for sub in subs:
            reg.subscribe(sub)
    for event in events:
        one_by_one.dispatch(event)
    at_once.dispatch_all(events)
    frames = {e.id: e.frame for e in events}
    assert runs[4].state is State.BEHIND and runs[4].pending == []
    for single, run in zip(singles, runs, strict=True):
        assert run.state is single.state
        assert run.pending_bytes == single.pending_bytes
        assert run.collect() == single.collect()  # the same bytes, the same count
    assert singles[2].events_sent == 8  # 1-6, carol's typing, 7
    assert runs[1].bytes_sent == len(frames[2] + frames[5])
    assert at_once.position == one_by_one.position == 7


async def test_resync_all_sends_everyone_back_to_the_store_and_wakes_them() -> None:
    reg = Registry()
    parked, queued, closed = Subscriber(("a",)), Subscriber(("a",)), Subscriber(None)
    for s in (parked, queued, closed):
        reg.subscribe(s)
    waiting = asyncio.create_task(parked.wait())
    await asyncio.sleep(0)
    reg.dispatch(msg("a", 1))
    await asyncio.wait_for(waiting, TIMEOUT_S)
    closed.close()
    reg.resync_all()
    assert parked.state is State.BEHIND and queued.state is State.BEHIND
    assert closed.state is State.CLOSED
    assert all(s.pending == [] and s.pending_bytes == 0 for s in (parked, queued, closed))
    waiting = asyncio.create_task(queued.wait())  # catching up is work: no parking
    await asyncio.wait_for(waiting, TIMEOUT_S)


def test_a_run_reaches_the_room_s_streams_and_every_room_s_as_one_chunk_joined_once() -> None:
    reg = Registry()
    in_room, everywhere, bobs = Subscriber(("a",)), Subscriber(None), Subscriber(("a",))
    bobs.filter = parse_filter({"authors": "bob"})
    for sub in (in_room, everywhere, bobs):
        reg.subscribe(sub)
    events = [msg("a", 1), msg("a", 2, "bob"), msg("a", 3)]
    reg.dispatch_all(events)
    chunk, count = in_room.collect()
    assert (chunk, count) == (b"".join(e.frame for e in events), 3)
    assert everywhere.collect()[0] is chunk  # one join for both
    assert bobs.collect() == (events[1].frame, 1)
    assert reg.position == 3
