"""A room's group (``chat.hub``): the idle, unfiltered streams of one room are written each
event at once by the flusher, not pushed to one by one. What a client sees must not change:
every event once, in id order, with nothing lost whoever leaves or joins the group on the
way. Driven with fake sinks and a real registry and flusher; every wait is bounded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from chat.events import Event, make_event
from chat.filters import parse_filter
from chat.flusher import SLICE, Flusher
from chat.identity import Identity
from chat.registry import Registry
from chat.states import State
from chat.subscriber import Subscriber
from tests.fakes import TIMEOUT_S, FakeSink, msg, settle, stop, until


def stream(
    flusher: Flusher,
    rooms: tuple[str, ...] = ("r",),
    *,
    user: str | None = None,
    limit_bytes: int = 1 << 20,
    full: bool = False,
    **query: str,
) -> Subscriber:
    """A stream with a sink (``Delivery.open`` starts after the sink is set)."""
    identity = None if user is None else Identity(user)
    flt = parse_filter(query) if query else None
    s = Subscriber(
        rooms, flt, flusher=flusher, user=user, identity=identity, limit_bytes=limit_bytes
    )
    s.sink = FakeSink(full=full)
    return s


def big(event_id: int, size: int = 600) -> Event:
    return make_event("message", "r", {"author": "a", "text": "x" * size}, event_id=event_id)


def received(s: Subscriber) -> bytes:
    assert isinstance(s.sink, FakeSink)
    return b"".join(s.sink.chunks)


def frames(events: Sequence[Event]) -> bytes:
    return b"".join(event.frame for event in events)


@asynccontextmanager
async def parked_in(
    reg: Registry, subs: Sequence[Subscriber], *, woken: Sequence[Subscriber] = ()
) -> AsyncIterator[list[asyncio.Task[None]]]:
    """Each stream subscribed, its task parked in ``wait`` (as ``Delivery.open`` leaves it),
    stopped at the end: only the tasks of ``woken`` may have ended by then."""
    tasks = []
    for s in subs:
        reg.subscribe(s)
        tasks.append(asyncio.create_task(s.wait()))
    await settle()
    try:
        yield tasks
    finally:
        for s, task in zip(subs, tasks, strict=True):
            await stop(task, may_have_ended=s in woken)
            reg.unsubscribe(s)


async def cycles(n: int = 3) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_idle_streams_of_one_room_form_a_group_written_once_per_round() -> None:
    flusher = Flusher(0.0)
    reg = Registry()
    members = [stream(flusher) for _ in range(3)]
    filtered = stream(flusher, types="message")
    two_rooms = stream(flusher, ("r", "s"))
    async with parked_in(reg, [*members, filtered, two_rooms]) as tasks:
        assert [s.state for s in members] == [State.GROUPED] * 3
        assert filtered.state is State.IDLE and two_rooms.state is State.IDLE  # on their own
        first, second = msg(1), msg(2)
        assert reg.dispatch(first) == 5 and reg.dispatch(second) == 5
        assert all(s.pending == [] for s in members)  # nobody was pushed to
        await cycles()
        for s in [*members, filtered, two_rooms]:
            assert received(s) == frames([first, second]), s
        assert all(len(s.sink.chunks) == 1 for s in members)  # type: ignore[union-attr]
        for s in members:
            assert s.state is State.GROUPED and s.last_id == 2 and s.events_sent == 2
            assert s.bytes_sent == len(frames([first, second]))
        assert not any(task.done() for task in tasks)  # the tasks never ran


async def test_a_stream_joins_once_it_has_had_what_the_group_has_not_written() -> None:
    window_s = 0.05
    flusher = Flusher(window_s)
    reg = Registry()
    member, late = stream(flusher), stream(flusher)
    async with parked_in(reg, [member]):
        first, second = msg(1), msg(2)
        reg.dispatch(first)  # quiet: written in the next slice
        await cycles()
        reg.dispatch(second)  # written less than a window ago: held, unwritten till the tick
        async with parked_in(reg, [late]):
            assert late.state is State.IDLE  # the group has what it never had: on its own
            late.last_id = 2  # as ``Delivery.open`` sets it: it starts after what was sent
            third = msg(3)
            reg.dispatch(third)  # the group's, and pushed to ``late`` on its own
            assert late.pending == [third]
            await cycles()
            assert received(late) == third.frame and late.state is State.IDLE  # still unwritten
            await until(lambda: len(received(member)) >= len(frames([first, second, third])))
            assert received(member) == frames([first, second, third])  # the tick's round
            late.last_write -= window_s  # quiet since: its next frame goes out at once,
            reg.hubs["r"].last_write -= window_s  # and the group's (not held for a tick)
            fourth = msg(4)
            reg.dispatch(fourth)
            await cycles()
            assert received(late) == frames([third, fourth]) and late.state is State.GROUPED
            fifth = msg(5)
            reg.dispatch(fifth)
            assert late.pending == []
            await until(lambda: len(received(late)) >= len(frames([third, fourth, fifth])))
            assert received(late) == frames([third, fourth, fifth])
            assert received(member) == frames([first, second, third, fourth, fifth])


async def test_a_member_pushed_to_elsewhere_leaves_with_what_the_group_had_not_written() -> None:
    flusher = Flusher(0.0)
    reg = Registry()
    subs = [stream(flusher) for _ in range(3)]
    async with parked_in(reg, subs):
        leaver = subs[0]
        first = msg(1)
        reg.dispatch(first)  # the group's, not written yet
        other = make_event("member.added", "elsewhere", {"user": "x", "role": "member"}, event_id=2)
        leaver.push(other)  # as ``Registry._to_the_user`` does
        assert leaver.state is not State.GROUPED and leaver.pending == [first, other]
        await cycles()
        assert received(leaver) == frames([first, other])
        assert [received(s) for s in subs[1:]] == [first.frame] * 2
        assert leaver.state is State.GROUPED  # written and idle: back in its room's group
        third = msg(3)
        reg.dispatch(third)
        await cycles()
        assert received(leaver) == frames([first, other, third])
        assert [received(s) for s in subs[1:]] == [frames([first, third])] * 2


async def test_a_heartbeat_and_a_close_take_a_member_out_of_the_group() -> None:
    flusher = Flusher(0.0)
    reg = Registry()
    pinged, closed, stays = stream(flusher), stream(flusher), stream(flusher)
    async with parked_in(reg, [pinged, closed, stays], woken=[pinged, closed]) as tasks:
        first = msg(1)
        reg.dispatch(first)
        pinged.heartbeat_tick(time.monotonic() + 100, 15.0)  # idle for long: a comment due
        closed.close("client_closed")
        await asyncio.wait_for(asyncio.gather(tasks[0], tasks[1]), TIMEOUT_S)  # both woken
        assert pinged.state is State.ACTIVE and pinged.ping_due and pinged.pending == [first]
        assert closed.state is State.CLOSED and closed.pending == []
        await cycles()
        assert received(stays) == first.frame
        assert received(pinged) == b"" and received(closed) == b""  # the tasks write theirs
        assert list(reg.hubs["r"].members) == [stays]


async def test_a_member_that_leaves_in_the_middle_of_a_round_gets_the_round_once() -> None:
    flusher = Flusher(0.0)
    reg = Registry()
    subs = [stream(flusher) for _ in range(2 * SLICE + 20)]
    async with parked_in(reg, subs, woken=subs[-2:-1]):
        assert all(s.state is State.GROUPED for s in subs)
        first = msg(1)
        reg.dispatch(first)
        await asyncio.sleep(0)  # one slice: SLICE members written
        written = [s for s in subs if received(s)]
        assert len(written) == SLICE
        early, late = subs[0], subs[-1]  # one written this round already, one not
        assert received(early) == first.frame and received(late) == b""
        behind = subs[-2]  # not written this round yet: it catches up from the store instead
        behind.fall_behind()
        second = msg(2)
        for s in (early, late):
            s.push(second)  # leaves; ``late`` takes the round's event with it
        await asyncio.sleep(0)  # the next slice of the round, and both written on their own
        assert received(late) == frames([first, second]) and late.state is State.GROUPED
        await cycles(6)  # the round reaches ``late``, back in the group with it written
        assert received(early) == frames([first, second])
        assert received(late) == frames([first, second])
        assert received(behind) == b"" and behind.state is State.BEHIND  # its task's to write
        for s in subs[1:-2]:
            assert received(s) == first.frame, "the rest had the round, and not the push"
        assert early.state is State.GROUPED and late.state is State.GROUPED
        third = msg(3)
        reg.dispatch(third)
        await cycles(6)
        assert received(early) == received(late) == frames([first, second, third])
        assert all(received(s) == frames([first, third]) for s in subs[1:-2])


async def test_a_full_member_drains_and_a_gone_one_ends() -> None:
    flusher = Flusher(0.0)
    reg = Registry()
    full, gone, fine = stream(flusher), stream(flusher), stream(flusher)
    async with parked_in(reg, [full, gone, fine], woken=[full, gone]) as tasks:
        assert isinstance(full.sink, FakeSink) and isinstance(gone.sink, FakeSink)
        full.sink.is_full = True
        gone.sink.accept = False
        first, second = msg(1), msg(2)
        reg.dispatch(first)
        await cycles()
        assert full.state is State.CONGESTED and received(full) == first.frame
        assert gone.state is State.CLOSED and gone.ended_by == "client_closed"
        assert tasks[0].done() and tasks[1].done()  # woken: one drains, one ends
        reg.dispatch(second)  # queued for the draining one; nothing for the gone one
        assert full.pending == [second] and gone.pending == []
        await cycles()
        assert received(fine) == frames([first, second])
        assert list(reg.hubs["r"].members) == [fine]


async def test_typing_dissolves_the_group_and_skips_its_author() -> None:
    flusher = Flusher(0.0)
    reg = Registry()
    alice, bob = stream(flusher, user="alice"), stream(flusher, user="bob")
    async with parked_in(reg, [alice, bob]):
        first = msg(1)
        reg.dispatch(first)
        typing = make_event("typing", "r", {"user": "alice"})
        reg.dispatch(typing)
        assert not reg.hubs["r"].members
        await cycles()
        assert received(alice) == first.frame
        assert received(bob) == frames([first, typing])
        assert alice.state is State.GROUPED and bob.state is State.GROUPED  # back


async def test_a_batch_reaches_every_member_once_through_the_group() -> None:
    flusher = Flusher(0.0)
    reg = Registry()
    subs = [stream(flusher) for _ in range(3)]
    async with parked_in(reg, subs):
        before = msg(1)
        reg.dispatch(before)
        batch = [msg(i) for i in range(2, 6)]
        reg.dispatch_all(batch)  # one run: the group's, as the single event before it
        assert all(s.state is State.GROUPED and s.pending == [] for s in subs)
        await cycles()
        assert all(received(s) == frames([before, *batch]) for s in subs)
        assert all(s.state is State.GROUPED and s.last_id == 5 for s in subs)


async def test_a_private_room_s_streams_are_never_written_as_a_group() -> None:
    flusher = Flusher(0.0)
    reg = Registry()
    reg.access.load(["r"], [("r", "alice", "owner")])
    alice, bob = stream(flusher, user="alice"), stream(flusher, user="bob")
    async with parked_in(reg, [alice, bob]):
        assert alice.state is State.IDLE and bob.state is State.IDLE
        secret = msg(1)
        reg.dispatch(secret)
        await cycles()
        assert received(alice) == secret.frame and received(bob) == b""
        second = msg(2)
        reg.dispatch(second)
        await cycles()
        assert not reg.hubs["r"].members  # a member written on its own does not join
        assert received(alice) == frames([secret, second]) and received(bob) == b""


async def test_a_member_that_read_ahead_of_the_dispatch_gets_only_what_it_lacks() -> None:
    flusher = Flusher(0.0)
    reg = Registry()
    ahead, behind = stream(flusher), stream(flusher)
    async with parked_in(reg, [ahead, behind]):
        ahead.last_id = 2  # its replay read events 1-2 before they were dispatched
        events = [msg(i) for i in range(1, 5)]
        for event in events:
            reg.dispatch(event)  # one round of four
        await cycles()
        assert received(behind) == frames(events)
        assert received(ahead) == frames(events[2:])  # 3 and 4, once
        assert ahead.last_id == 4 and ahead.state is State.GROUPED
        later = msg(5)
        reg.dispatch(later)
        await cycles()
        assert received(ahead) == frames([*events[2:], later])


async def test_a_full_member_whose_leaving_passes_its_bound_falls_behind() -> None:
    flusher = Flusher(0.0)
    reg = Registry()
    others = [stream(flusher) for _ in range(SLICE)]
    victim = stream(flusher, limit_bytes=500, full=True)  # in the round's second slice
    async with parked_in(reg, [*others, victim], woken=[victim]):
        first = msg(1)
        reg.dispatch(first)
        await asyncio.sleep(0)  # the first slice: not the victim yet
        assert received(victim) == b""
        reg.dispatch(big(2))  # unwritten meanwhile: more than the victim may hold
        await asyncio.sleep(0)  # the victim written 1, full: leaves with 2, past its bound
        assert received(victim) == first.frame and victim.last_id == 1
        assert victim.state is State.BEHIND and victim.pending == []  # replays 2 from the store


async def test_a_push_that_takes_a_member_out_past_its_bound_queues_nothing() -> None:
    flusher = Flusher(0.0)
    reg = Registry()
    small, other = stream(flusher, limit_bytes=500), stream(flusher)
    async with parked_in(reg, [small, other], woken=[small]):
        reg.dispatch(big(1))
        elsewhere = make_event("member.added", "s", {"user": "x", "role": "member"}, event_id=2)
        small.push(elsewhere)
        assert small.state is State.BEHIND
        assert small.pending == [] and small.pending_bytes == 0


class CountingFlusher(Flusher):
    slices = 0

    def write_due(self) -> None:
        self.slices += 1
        super().write_due()


async def test_one_slice_per_loop_cycle_when_members_leave_in_a_slice() -> None:
    flusher = CountingFlusher(0.0)
    reg = Registry()
    subs = [stream(flusher) for _ in range(3 * SLICE)]
    async with parked_in(reg, subs):
        subs[0].last_id = 1  # part of the round already: it leaves in the first slice
        reg.dispatch(msg(1))
        reg.dispatch(msg(2))
        for cycle in range(1, 4):
            await asyncio.sleep(0)
            assert flusher.slices == cycle
            assert sum(1 for s in subs if received(s)) == cycle * SLICE


async def test_a_group_written_less_than_a_window_ago_waits_for_the_tick() -> None:
    window_s = 0.02
    flusher = Flusher(window_s)
    reg = Registry()
    leaver, stays = stream(flusher), stream(flusher)
    async with parked_in(reg, [leaver, stays], woken=[leaver]) as tasks:
        first, second, third = msg(1), msg(2), msg(3)
        reg.dispatch(first)  # quiet: the next slice
        await cycles()
        assert received(stays) == first.frame
        reg.dispatch(second)
        reg.dispatch(third)
        await cycles()
        assert received(stays) == first.frame and flusher.held_groups  # held: the tick
        leaver.heartbeat_tick(time.monotonic() + 100, 15.0)  # leaves while its group is held
        await asyncio.wait_for(tasks[0], TIMEOUT_S)
        assert leaver.pending == [second, third]  # its task writes them, with its comment
        await until(lambda: len(stays.sink.chunks) >= 2)  # type: ignore[union-attr]  # the tick
        assert stays.sink.chunks == [first.frame, frames([second, third])]  # type: ignore[union-attr]


async def test_a_task_cancelled_in_its_group_leaves_it() -> None:
    flusher = Flusher(0.0)
    reg = Registry()
    cancelled, stays = stream(flusher), stream(flusher)
    async with parked_in(reg, [cancelled, stays], woken=[cancelled]) as tasks:
        tasks[0].cancel()  # the client went away: runs before the group's slice
        first = msg(1)
        reg.dispatch(first)
        await asyncio.wait_for(asyncio.gather(tasks[0], return_exceptions=True), TIMEOUT_S)
        assert cancelled not in reg.hubs["r"].members and cancelled.pending == [first]
        await cycles()
        assert received(stays) == first.frame


async def test_a_room_made_private_after_its_group_formed_leaks_nothing() -> None:
    flusher = Flusher(0.0)
    reg = Registry()
    alice, guest = stream(flusher, user="alice"), stream(flusher)
    async with parked_in(reg, [alice, guest]):
        assert guest.state is State.GROUPED
        public = msg(1)
        reg.dispatch(public)
        created = make_event("room.created", "r", {"user": "alice", "private": True}, event_id=2)
        reg.dispatch(created)
        secret = msg(3)
        reg.dispatch(secret)
        await cycles()
        assert received(guest) == public.frame
        assert received(alice) == frames([public, created, secret])
        assert not reg.hubs["r"].members


async def test_a_user_s_access_event_of_another_room_reaches_it_in_order() -> None:
    flusher = Flusher(0.0)
    reg = Registry()
    alice, bob = stream(flusher, user="alice"), stream(flusher, user="bob")
    async with parked_in(reg, [alice, bob]):
        first = msg(1)
        reg.dispatch(first)
        added = make_event("member.added", "s", {"user": "alice", "role": "member"}, event_id=2)
        reg.dispatch(added)  # to alice's stream of ``r`` (``Registry._to_the_user``)
        third = msg(3)
        reg.dispatch(third)
        await cycles()
        assert received(alice) == frames([first, added, third])
        assert received(bob) == frames([first, third])
