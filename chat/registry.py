"""Room name -> hub. A hub exists while it has subscribers: created on the first subscribe,
dropped after the last unsubscribe. A multi-room subscriber sits in several hubs; a
``rooms=*`` subscriber sits in the one hub that sees every room.

The registry also holds the ``AccessBook`` and follows it in dispatch order: an event of a
private room reaches only the subscribers that may read the room as of that event (a
``member.added`` is applied before it is delivered, so the new member gets it; a
``member.removed`` after, so the removed member gets it and nothing later). A public room
costs one dictionary lookup per event.

A stream of listed rooms also gets its own user's access events (``room.created``,
``member.added``, ``member.removed`` naming that user) of rooms outside its list: the page's
one stream learns that its user was invited to, or removed from, a room.

Notifications (chat/notifications.py): an event that concerns a user wakes that user's
notification feed streams (each reads its updated groups from the store, where the event's
transaction put them) and puts a ``notify`` hint on that user's room streams opened with
``notify=1``, where the user may read the event's room. With no such stream open, an event
costs one dictionary test."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import groupby
from operator import attrgetter

from chat.access import ACCESS_EVENTS, MEMBER_REMOVED, AccessBook, hears
from chat.events import FRAME_OF, Event, Run, make_event
from chat.hub import Hub
from chat.notifications import NOTIFYING_TYPES, notices
from chat.subscriber import Subscriber

ID_OF = attrgetter("id")
TYPE_OF = attrgetter("type")
ROOM_OF = attrgetter("room")


class Registry:
    def __init__(self) -> None:
        self.hubs: dict[str, Hub] = {}
        self.everywhere = Hub()  # subscribers of every room
        self.subscribers: set[Subscriber] = set()
        # The id of the newest persisted event dispatched: where a stream without a resume
        # point starts (set from the store at start-up, then advanced by dispatch).
        self.position = 0
        self.closed = False
        self.access = AccessBook()
        # Events up to this id are already in the book (it was loaded from the store there).
        self.access_position = 0
        # user -> that user's streams of listed rooms (for their own access events)
        self.personal: dict[str, set[Subscriber]] = {}
        # user -> the streams that carry that user's notifications (feeds, ``notify=1``)
        self.notified: dict[str, set[Subscriber]] = {}

    def subscribe(self, sub: Subscriber) -> None:
        if self.closed:  # a stream admitted just before shutdown ends at once
            sub.close("shutdown")
        self.subscribers.add(sub)
        if sub.notify is not None:
            self.notified.setdefault(sub.notify, set()).add(sub)
            if sub.feed:
                return
        if sub.rooms is None:
            self.everywhere.subscribers.add(sub)
            return
        identity = sub.identity
        if identity is not None and not identity.guest and identity.rooms is None:
            self.personal.setdefault(identity.user, set()).add(sub)
        for room in sub.rooms:
            hub = self.hubs.get(room)
            if hub is None:
                hub = self.hubs[room] = Hub()
                access = self.access.rooms.get(room)
                hub.private = access is not None and access.private
            hub.subscribers.add(sub)
        if len(sub.rooms) == 1 and sub.filter is None and sub.notify is None:
            sub.hub = hub  # it may join its room's group while idle (chat.hub)

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)
        if sub.notify is not None:
            streams = self.notified.get(sub.notify)
            if streams is not None:
                streams.discard(sub)
                if not streams:
                    del self.notified[sub.notify]
            if sub.feed:
                return
        if sub.rooms is None:
            self.everywhere.subscribers.discard(sub)
            return
        identity = sub.identity
        if identity is not None:
            own = self.personal.get(identity.user)
            if own is not None:
                own.discard(sub)
                if not own:
                    del self.personal[identity.user]
        sub.hub = None
        for room in sub.rooms:
            hub = self.hubs.get(room)
            if hub is not None:
                hub.remove(sub)
                if not hub.subscribers:
                    del self.hubs[room]

    def dispatch(self, event: Event) -> int:
        """Hand a committed (or ephemeral) event to every subscriber of its room."""
        if event.id is not None and event.id > self.position:
            self.position = event.id
        if self.notified and event.type in NOTIFYING_TYPES and event.id is not None:
            self._notify(event)
        access = self.access.rooms.get(event.room)
        if access is not None or event.type in ACCESS_EVENTS:
            return self._dispatch_guarded(event)
        count = 0
        hub = self.hubs.get(event.room)
        if hub is not None:
            count = hub.broadcast(event)
        if self.everywhere.subscribers:
            count += self.everywhere.broadcast(event)
        return count

    def _notify(self, event: Event) -> None:
        """The event's notices: wake the feeds of the users it concerns, and put a hint on
        their ``notify=1`` streams that may read its room (the access book as of the event:
        a ``member.added`` is applied later, so the hint of an invitation comes with the
        event itself, which reaches the user's stream as an access event)."""
        added = event.type in ACCESS_EVENTS  # applied to the book after this
        room_access = self.access.get(event.room)
        for notice in notices(event.type, event.room, event.payload):
            user = notice.user
            streams = self.notified.get(user)
            if not streams:
                continue
            hint = None
            for sub in streams:
                if sub.feed:
                    sub.fall_behind()  # it reads its groups from the store
                    continue
                if not hears(sub.identity, user, event.room, room_access, added=added):
                    continue
                if hint is None:
                    fields = {"user": user, "kind": notice.kind, "event_id": event.id}
                    at = str(event.payload.get("created_at"))
                    hint = make_event("notify", event.room, fields, created_at=at)
                sub.push(hint)

    def _dispatch_guarded(self, event: Event) -> int:
        """``dispatch`` for a room with members: the book follows access events in order,
        and a private room's event reaches only those who may read it."""
        follows = event.id is None or event.id > self.access_position
        removal = follows and event.type == MEMBER_REMOVED
        if follows and not removal:
            self.access.apply(event)  # an added member gets its own member.added
        access = self.access.rooms.get(event.room)
        count = 0
        hub = self.hubs.get(event.room)
        if access is None or not access.private:
            if hub is not None:
                count = hub.broadcast(event)
            if self.everywhere.subscribers:
                count += self.everywhere.broadcast(event)
        else:
            if hub is not None:
                count = hub.broadcast_private(event, access)
            if self.everywhere.subscribers:
                count += self.everywhere.broadcast_private(event, access)
        if removal:
            self.access.apply(event)  # the removed member got its member.removed, no more
        if event.type in ACCESS_EVENTS:
            count += self._to_the_user(event)
        return count

    def _to_the_user(self, event: Event) -> int:
        """An access event, to its user's streams of listed rooms that do not list its room."""
        count = 0
        for sub in self.personal.get(str(event.payload.get("user")), ()):
            rooms = sub.rooms
            if rooms is not None and event.room not in rooms and sub.wants(event):
                sub.push(event)
                count += 1
        return count

    def dispatch_all(self, events: Sequence[Event]) -> None:
        """``dispatch`` each event, in order; a run of events of one room (a batch) goes to
        each subscriber at once."""
        for _, same_room in groupby(events, ROOM_OF):  # in C: no Python step per event
            run = list(same_room)
            if len(run) == 1:
                self.dispatch(run[0])
            else:
                self._dispatch_run(run)

    def _dispatch_run(self, run: list[Event]) -> None:
        if (
            run[0].room in self.access.rooms
            or not ACCESS_EVENTS.isdisjoint(map(TYPE_OF, run))
            or None in map(ID_OF, run)
        ):
            # Rare: a room with members, the run creating one or changing its members (the
            # book follows each event in turn, as ``dispatch`` does), or ephemeral events.
            for event in run:
                self.dispatch(event)
            return
        if self.notified:
            for event in run:
                if event.type in NOTIFYING_TYPES and event.id is not None:
                    self._notify(event)
        first, last = run[0].id, run[-1].id
        assert first is not None and last is not None  # persisted events, in id order
        if last > self.position:
            self.position = last
        hub = self.hubs.get(run[0].room)
        everywhere = self.everywhere.subscribers
        if hub is None and not everywhere:
            return
        shared = Run(run, first, last, sum(map(len, map(FRAME_OF, run))))
        if hub is not None:
            hub.broadcast_many(shared)
        if everywhere:
            self.everywhere.broadcast_many(shared)

    def count(self, room: str) -> int:
        hub = self.hubs.get(room)
        return (len(hub.subscribers) if hub is not None else 0) + len(self.everywhere.subscribers)

    def heartbeat_tick(self, now: float, idle_s: float) -> None:
        for sub in self.subscribers:
            sub.heartbeat_tick(now, idle_s)

    def resync_all(self) -> None:
        """Something went wrong between the store and the hubs (a dispatch failed half way):
        every subscriber catches up from the store, so none silently misses an event."""
        for sub in self.subscribers:
            sub.fall_behind()

    def close_all(self) -> None:
        """Shutdown: end every open stream (clients resume elsewhere or later)."""
        self.closed = True
        for sub in list(self.subscribers):
            sub.close("shutdown")
