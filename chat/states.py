"""The states of a stream's subscriber (``chat.subscriber``), and what moves it between them.

A push (``Hub.broadcast``) never awaits. What it does depends on the subscriber's one state:

=========  ==========================================  ==========================================
state      a push                                      left by
=========  ==========================================  ==========================================
ACTIVE     appends (the stream's task runs, or has     the task: ``wait`` -> IDLE; the task holds
           been woken, and writes what is pending)     itself for the flusher's tick -> HELD
IDLE       appends and, with a sink, hands the         a push -> DIRECT (or, without a sink,
           subscriber to the flusher; else wakes it    -> ACTIVE); a heartbeat -> ACTIVE;
                                                       joining its room's group -> GROUPED
DIRECT     appends (the task stays parked: the         the flusher's write -> IDLE, or CONGESTED
           flusher writes to the sink at its next      (the connection is full), or CLOSED (it
           slice or tick)                              is gone); a heartbeat -> HELD
HELD       appends (the flusher wakes the task at its  the flusher -> ACTIVE; ``wait`` with a
           tick or next slice)                         sink -> DIRECT
CONGESTED  appends (the task waits in ``drain``)       the task, once drained -> ACTIVE
GROUPED    is not pushed to: its room's hub writes     anything else (a push from another path,
           the room's events to every member of its    a wake, a heartbeat, a close, an
           group at once (``Hub.broadcast``; the task  ephemeral or private event) -> IDLE,
           stays parked, the flusher writes)           with what it was not written yet pending
BEHIND     ignored: everything dropped is in the       the task, before it replays from the
           store, and the task catches up from there   store -> ACTIVE
CLOSED     ignored                                     nothing: the stream ends
=========  ==========================================  ==========================================

An IDLE subscriber of one room, unfiltered, with a sink and nothing pending joins its room's
group (-> GROUPED) when it parks or the flusher has written it, while the group has nothing
unwritten (it has had everything the group will not write to it).

From any state but CLOSED: pending frames past ``limit_bytes`` (or ``Registry.resync_all``)
-> BEHIND, which drops them; ``close`` -> CLOSED. Either wakes the task. A heartbeat sets
``ping_due`` (not a state: it can be due in any of them) and wakes the task.

The flusher (``chat.flusher``) queues DIRECT and HELD subscribers and does the socket writes;
the subscriber only renders frames and changes state. A queued subscriber that left DIRECT or
HELD before its turn (it fell behind, was pinged or closed) is only woken at its turn. So a
slow reader costs the publisher nothing beyond a check, memory stays bounded, and
nothing is lost (docs/design/delivery.md).
"""

from __future__ import annotations

import enum


class State(enum.Enum):
    ACTIVE = "active"
    IDLE = "idle"
    DIRECT = "direct"
    HELD = "held"
    CONGESTED = "congested"
    GROUPED = "grouped"
    BEHIND = "behind"
    CLOSED = "closed"


# Module-level names for the hot path: ``state is BEHIND`` is a third of the cost of
# ``state is State.BEHIND`` on Python 3.11 (an Enum class attribute is a slow lookup).
ACTIVE = State.ACTIVE
IDLE = State.IDLE
DIRECT = State.DIRECT
HELD = State.HELD
CONGESTED = State.CONGESTED
GROUPED = State.GROUPED
BEHIND = State.BEHIND
CLOSED = State.CLOSED
