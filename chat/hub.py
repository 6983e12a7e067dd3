"""One room's subscribers (or every room's, for ``rooms=*``): the fan-out of an event.

``broadcast`` never awaits: it hands the event (its frame encoded once, shared by every
subscriber) to each subscriber whose filter wants it, and ``Subscriber.push`` decides from the
subscriber's state whether to queue it, hand it to the flusher or drop it
(``chat.subscriber``).
"""

from __future__ import annotations

from chat.access import RoomAccess, reads
from chat.events import Event, Run
from chat.subscriber import Subscriber


class Hub:
    __slots__ = ("subscribers",)

    def __init__(self) -> None:
        self.subscribers: set[Subscriber] = set()

    def broadcast_many(self, run: Run) -> None:
        """``broadcast`` for a run of events (a batch's, all of this hub's room, in id order):
        one decision per subscriber instead of one per subscriber and event; a subscriber
        without a filter gets the run itself, its frames joined once for all of them."""
        for sub in self.subscribers:
            flt = sub.filter
            if flt is None:
                sub.push_many(run, run.size)
            else:
                wanted = [event for event in run.events if flt.matches(event)]
                if wanted:
                    sub.push_many(wanted, sum(len(event.frame) for event in wanted))

    def broadcast(self, event: Event) -> int:
        """Queue the event for every subscriber whose filter wants it; returns how many."""
        count = 0
        for sub in self.subscribers:
            if sub.filter is None or sub.filter.matches(event):  # Subscriber.wants, inlined
                sub.push(event)
                count += 1
        return count

    def broadcast_private(self, event: Event, access: RoomAccess) -> int:
        """``broadcast`` of a private room's event: only to its members and admins."""
        count = 0
        for sub in self.subscribers:
            if not reads(sub.identity, access):  # chat.access: members and admins
                continue
            if sub.filter is None or sub.filter.matches(event):
                sub.push(event)
                count += 1
        return count
