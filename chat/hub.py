"""One room's subscribers (or every room's, for ``rooms=*``): the fan-out of an event.

``broadcast`` never awaits: it hands the event (its frame encoded once, shared by every
subscriber) to each subscriber whose filter wants it, and ``Subscriber.push`` decides from the
subscriber's state whether to queue it, hand it to the flusher or drop it
(``chat.subscriber``).

A room's group: its idle, unfiltered streams of this one room, with a sink (``GROUPED`` in
``chat.states``). A public room's persisted event is not pushed to each of them: it joins the
group's ``unwritten`` list, and the flusher writes that list to every member as one chunk (a
``Round``, ``Flusher.write_groups``): one step for the group instead of one per stream. A
member that anything else touches leaves the group (``Subscriber.ungroup``) with the group's
events it has not been written yet pending, so it misses nothing and gets nothing twice. An
ephemeral event (one's own typing is not for oneself) or a private room's event first
dissolves the group, and each stream is served on its own as before (docs/design/delivery.md).

What holds: ``members`` are exactly this hub's GROUPED subscribers; ``flusher`` is set once a
stream has joined (every stream of a process shares one); once ``private``, always private.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from chat.access import RoomAccess, reads
from chat.events import FRAME_OF, Event, Run
from chat.states import GROUPED, IDLE
from chat.subscriber import Subscriber

if TYPE_CHECKING:
    from chat.flusher import Flusher


@dataclass(slots=True)
class Round:
    """The group's events the flusher is writing: one chunk, to each stream the group had
    when the round began, a slice of them per loop cycle."""

    events: list[Event]  # persisted, in id order
    chunk: bytes
    first_id: int
    last_id: int
    members: list[Subscriber]
    done: int = 0  # members handled so far


class Hub:
    __slots__ = (
        "flusher",
        "last_write",
        "members",
        "private",
        "round",
        "subscribers",
        "unwritten",
    )

    def __init__(self) -> None:
        self.subscribers: set[Subscriber] = set()
        self.members: dict[Subscriber, None] = {}  # the group, in the order they joined
        self.unwritten: list[Event] = []  # the group's events no round holds yet
        self.round: Round | None = None  # the round the flusher is writing
        self.flusher: Flusher | None = None  # the members' (one per process)
        self.last_write = 0.0  # when the group's last round ended (monotonic seconds)
        self.private = False  # an event of a private room was seen: no group from then on

    def join(self, sub: Subscriber) -> None:
        """An idle stream of this room alone joins the group, when it can: it has nothing
        pending, a sink to be written to, and the group nothing unwritten (events it has had,
        or has pending, on its own)."""
        if (
            sub.state is IDLE
            and not sub.pending
            and not sub.ping_due
            and sub.sink is not None
            and sub.flusher is not None
            and not self.unwritten
            and not self.private
            and sub in self.subscribers
        ):
            sub.state = GROUPED
            self.members[sub] = None
            self.flusher = sub.flusher

    def leave(self, sub: Subscriber) -> list[Event]:
        """Take ``sub`` out of the group; returns the group's events not written to it yet (a
        new list: the caller's), for ``Subscriber.ungroup`` to queue."""
        del self.members[sub]
        current = self.round
        if current is None:
            return list(self.unwritten)
        last_id = sub.last_id  # the round under way: written to it already, or not yet
        missed = [e for e in current.events if e.id is not None and e.id > last_id]
        return missed + self.unwritten

    def dissolve(self) -> None:
        """Every member on its own again, each with what it missed pending."""
        for sub in list(self.members):
            sub.ungroup()
        self.unwritten = []

    def begin_round(self) -> Round | None:
        """The flusher's turn: the unwritten events become the round; None if there are none
        (the group was dissolved, or its round written already)."""
        events = self.unwritten
        if not events:
            return None
        self.unwritten = []
        first, last = events[0].id, events[-1].id
        assert first is not None and last is not None  # a group takes persisted events only
        chunk = events[0].frame if len(events) == 1 else b"".join(map(FRAME_OF, events))
        self.round = Round(events, chunk, first, last, list(self.members))
        return self.round

    def remove(self, sub: Subscriber) -> None:
        """A subscriber's stream ended."""
        self.subscribers.discard(sub)
        self.members.pop(sub, None)

    def _to_group(self, events: list[Event]) -> None:
        if not self.unwritten:
            self.flusher.group_due(self)  # type: ignore[union-attr]  # set by the first join
        self.unwritten.extend(events)

    def broadcast_many(self, run: Run) -> None:
        """``broadcast`` for a run of events (a batch's, all of this hub's room, in id order):
        one decision per subscriber instead of one per subscriber and event; a subscriber
        without a filter gets the run itself, its frames joined once for all of them."""
        if self.members:  # persisted events of a public room (``Registry._dispatch_run``)
            self._to_group(run.events)
        for sub in self.subscribers:
            flt = sub.filter
            if flt is None:
                if sub.state is not GROUPED:
                    sub.push_many(run, run.size)
            else:
                wanted = [event for event in run.events if flt.matches(event)]
                if wanted:
                    sub.push_many(wanted, sum(len(event.frame) for event in wanted))

    def broadcast(self, event: Event) -> int:
        """Queue the event for every subscriber whose filter wants it; returns how many."""
        count = 0
        members = self.members
        if members:
            if event.id is None:
                self.dissolve()  # ephemeral: typing is not for its author
            else:
                self._to_group([event])
                count = len(members)
        for sub in self.subscribers:
            if sub.filter is None:
                if sub.state is not GROUPED:
                    sub.push(event)
                    count += 1
            elif sub.filter.matches(event):  # Subscriber.wants, inlined
                sub.push(event)
                count += 1
        return count

    def broadcast_private(self, event: Event, access: RoomAccess) -> int:
        """``broadcast`` of a private room's event: only to its members and admins."""
        self.private = True
        if self.members:
            self.dissolve()
        count = 0
        for sub in self.subscribers:
            if not reads(sub.identity, access):  # chat.access: members and admins
                continue
            if sub.filter is None or sub.filter.matches(event):
                sub.push(event)
                count += 1
        return count
