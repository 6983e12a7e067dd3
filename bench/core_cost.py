"""CPU per delivery of the fan-out core alone (Hub.broadcast, Subscriber, Flusher writes to a
sink that only accepts), in one process, with no network: a measure that the VM's noise
barely moves, for comparing two versions of the core.

    .venv/bin/python bench/core_cost.py          # this checkout
    PYTHONPATH=/path/to/other/checkout .venv/bin/python bench/core_cost.py

Prints the best of 5 runs, in ns per delivery, for quiet streams (each write one frame,
scheduled for the next slice), busy streams (held for the tick), busy streams that coalesce
10 frames per write, and (since rooms' groups, chat/hub.py) quiet streams subscribed through
the registry, which form their room's group and are written each frame at once."""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

from chat.events import make_event
from chat.hub import Hub
from chat.registry import Registry

try:  # since issue 12
    from chat.flusher import Flusher
    from chat.subscriber import Subscriber
except ImportError:  # before it, for comparisons
    from chat.hub import Flusher, Subscriber  # type: ignore[attr-defined,no-redef]

SUBSCRIBERS = 1000
ROUNDS = 300


class Sink:
    def write(self, chunk: bytes) -> bool:
        return True

    def full(self) -> bool:
        return False

    async def drain(self) -> None:
        return None


def write_all(flusher: Any) -> None:
    """Run the flusher's writes now, slice after slice, instead of from the loop."""
    while flusher.due or getattr(flusher, "groups", None):
        if flusher.due_handle is not None:
            flusher.due_handle.cancel()
            flusher.due_handle = None
        flusher.write_due()
    if flusher.due_handle is not None:
        flusher.due_handle.cancel()
        flusher.due_handle = None


async def run(busy: bool, per_write: int, grouped: bool = False) -> float:
    flusher = Flusher(0.005)
    registry = Registry()
    hub = Hub()
    subs = []
    for _ in range(SUBSCRIBERS):
        sub = Subscriber(("r",), flusher=flusher)
        sub.sink = Sink()
        subs.append(sub)
        if grouped:
            registry.subscribe(sub)  # its room's group, once its task parks
        else:
            hub.subscribers.add(sub)  # a hub of its own: each stream on its own
    if grouped:
        hub = registry.hubs["r"]
    tasks = [asyncio.ensure_future(sub.wait()) for sub in subs]
    await asyncio.sleep(0)
    fields = {"author": "a", "text": "x" * 64}
    events = [make_event("message", "r", fields, event_id=i + 1) for i in range(ROUNDS * per_write)]
    gc.disable()
    start = time.perf_counter()
    for round_ in range(ROUNDS):
        for sub in subs:
            sub.last_write = time.monotonic() if busy else 0.0
        if grouped:
            hub.last_write = 0.0  # quiet: written in the next slice
        for event in events[round_ * per_write : (round_ + 1) * per_write]:
            hub.broadcast(event)
        if flusher.handle is not None:  # the tick, now
            flusher.handle.cancel()
            flusher.flush()
        write_all(flusher)
    elapsed = time.perf_counter() - start
    gc.enable()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return elapsed / (ROUNDS * per_write * SUBSCRIBERS) * 1e9


def main() -> None:
    cases = [
        ("quiet", False, 1, False),
        ("busy", True, 1, False),
        ("busy", True, 10, False),
        ("grouped", False, 1, True),
    ]
    for name, busy, per_write, grouped in cases:
        if grouped and not hasattr(Hub(), "members"):
            continue  # a version from before rooms' groups
        best = min(asyncio.run(run(busy, per_write, grouped)) for _ in range(5))
        print(f"{name:7s} streams, {per_write:2d} frame(s) per write: {best:6.1f} ns per delivery")


if __name__ == "__main__":
    main()
