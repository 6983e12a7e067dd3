"""How an event committed by any process reaches every process's registry.

``LocalBroker`` (the default) hands committed events straight to this process's registry, in
commit order, synchronously: the writer calls ``publish`` right after each commit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from chat.events import Event
from chat.registry import Registry


class Broker(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def publish(self, events: Sequence[Event]) -> None:
        """Committed events, in id order; ephemeral events one at a time."""

    async def ready(self) -> bool: ...


class LocalBroker:
    """One process: publishing is dispatching to the local registry."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def publish(self, events: Sequence[Event]) -> None:
        self.registry.dispatch_all(events)

    async def ready(self) -> bool:
        return True
