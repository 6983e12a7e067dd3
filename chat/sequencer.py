"""Hands persisted events to the registry strictly in id order, whatever order they arrive in.

With several processes, events reach a process from two sides: its own commits (at once) and
the other processes' commits (through Redis, each when its publisher gets to it). Ids are
assigned inside one SQLite write transaction at a time, so when id N is committed every id
below N is committed too, and readable from the store. The sequencer relies on exactly that:

- the next id (``position + 1``) is dispatched at once, then any held ones that follow it;
- an id further ahead is held, and the gap below it waits ``gap_wait_s`` for its event (it is
  usually on its way through Redis); after that, or as soon as too many are held, the
  missing ids are read from the store (a *gap fill*) and dispatched in order;
- ``known(latest)`` tells it the store holds ids up to ``latest`` (a poll, a reconnect): it
  fills from the store at once.
So a subscriber sees ids in increasing order with no gap even when process A's id 11 reaches
the broker before process B's id 10, or B's never does (B died between commit and publish).
Ephemeral events (no id) are dispatched as they come.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from chat.events import Event
from chat.registry import Registry

log = logging.getLogger(__name__)

ReadAfter = Callable[[int, int], Awaitable[list[Event]]]  # (after id, at most) -> events
HOLD_MAX = 10_000  # events held out of order before the store is read without waiting
FILL_PAGE = 1000
RETRY_S = 1.0  # a gap fill that failed (the store is closing, say) is tried again after this


class Sequencer:
    def __init__(
        self,
        registry: Registry,
        read_after: ReadAfter,
        gap_wait_s: float,
        on_fill: Callable[[], None] = lambda: None,
    ) -> None:
        self.registry = registry
        self.read_after = read_after
        self.gap_wait_s = gap_wait_s
        self.on_fill = on_fill  # counts gap fills (metrics)
        self.held: dict[int, Event] = {}
        self.target = 0  # the largest id known to be committed
        self._timer: asyncio.TimerHandle | None = None
        self._filling: asyncio.Task[None] | None = None
        self.closed = False

    def offer(self, events: Iterable[Event]) -> None:
        if self.closed:
            return
        registry = self.registry
        for event in events:
            event_id = event.id
            if event_id is None:
                registry.dispatch(event)
            elif event_id <= registry.position:
                continue  # already dispatched (our own commit, or read by a gap fill)
            elif event_id == registry.position + 1 and self._filling is None:
                registry.dispatch(event)
                if self.held:
                    self._release()
            else:
                self.held[event_id] = event
                if event_id > self.target:
                    self.target = event_id
                if len(self.held) > HOLD_MAX:
                    self._fill_now()
                elif self._timer is None and self._filling is None:
                    loop = asyncio.get_running_loop()
                    self._timer = loop.call_later(self.gap_wait_s, self._fill_now)

    def known(self, latest: int) -> None:
        """The store holds every id up to ``latest``: dispatch what is missing from it."""
        if latest > self.registry.position and not self.closed:
            self.target = max(self.target, latest)
            self._fill_now()

    def _release(self) -> None:
        """Dispatch the held events that now follow the position, in order."""
        registry, held = self.registry, self.held
        while (event := held.pop(registry.position + 1, None)) is not None:
            registry.dispatch(event)
        for stale in [i for i in held if i <= registry.position]:
            del held[stale]
        if not held and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fill_now(self) -> None:
        if self.closed:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._filling is None:
            self._filling = asyncio.create_task(self._fill(), name="chat-gap-fill")

    async def _fill(self) -> None:
        registry = self.registry
        try:
            self.on_fill()
            while registry.position < self.target:
                events = await self.read_after(registry.position, FILL_PAGE)
                if not events:
                    self._skip_missing()
                    break
                for event in events:
                    if event.id is not None and event.id > registry.position:
                        registry.dispatch(event)
        except Exception:
            log.exception("reading missed events from the store failed; trying again")
            self._filling = None
            self._timer = asyncio.get_running_loop().call_later(RETRY_S, self._fill_now)
            return
        self._filling = None
        self._release()
        if self.held and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.gap_wait_s, self._fill_now)

    def _skip_missing(self) -> None:
        """The store ends below events announced as committed. That cannot happen with one
        database (ids are dense and published after COMMIT), so they belong to another one:
        a second deployment on the same Redis channel (CHAT_BROKER_PREFIX must differ). They
        are dropped; dispatching them would move ``position`` past ids of our own."""
        if self.held:
            log.warning(
                "dropped %d events that are not in this database (ids %d..%d): does another "
                "deployment share CHAT_BROKER_PREFIX?",
                len(self.held),
                min(self.held),
                max(self.held),
            )
            self.held.clear()
        self.target = self.registry.position

    def close(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._filling is not None:
            self._filling.cancel()
            self._filling = None
