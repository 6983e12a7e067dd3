"""The HTTP layer: the request pipeline, its plain routes, and Quart blueprints, thin
(parse, call the parts, return JSON)."""

from __future__ import annotations

from quart import Quart
from werkzeug.routing import IntegerConverter, Map

from chat.api import activity, envelope, messages, notifications, ops, rooms, session
from chat.api.deps import Services, services
from chat.rules import MAX_ID

__all__ = ["Services", "register", "services"]


class EventIdConverter(IntegerConverter):
    """``<id:...>`` in a path: an event id, 1 up to SQLite's largest integer (a larger one is
    a 404, not an overflow deep in the store)."""

    def __init__(self, url_map: Map) -> None:
        super().__init__(url_map, min=1, max=MAX_ID)


def register(app: Quart) -> None:
    app.url_map.converters["id"] = EventIdConverter
    envelope.register(app)
    for module in (rooms, messages, activity, notifications, session, ops):
        app.register_blueprint(module.bp)
