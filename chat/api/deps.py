"""What the blueprints share: the parts ``create_app`` built, found on the current app."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from quart import current_app

from chat.broker import Broker
from chat.config import Settings
from chat.metrics import Metrics
from chat.registry import Registry
from chat.store import Store
from chat.stream import Streams


@dataclass(slots=True)
class Services:
    settings: Settings
    store: Store
    registry: Registry
    broker: Broker
    metrics: Metrics
    streams: Streams
    shutting_down: bool = False

    def begin_shutdown(self) -> None:
        """Stop taking streams, report not ready, and end every open stream."""
        self.shutting_down = True
        self.registry.close_all()


def services() -> Services:
    return cast(Services, current_app.extensions["chat"])
