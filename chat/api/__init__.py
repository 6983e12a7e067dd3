"""The HTTP layer: the request pipeline, its plain routes, and Quart blueprints, thin
(parse, call the parts, return JSON)."""

from __future__ import annotations

from quart import Quart
from werkzeug.routing import IntegerConverter

from chat.api import activity, envelope, messages, notifications, ops, rooms, session
from chat.api.deps import Services, services

__all__ = ["Services", "register", "services"]


class EventIdConverter(IntegerConverter):
    """``<id:...>`` in a path: an event id, any run of up to 20 digits. The range is checked by
    the route (``chat.api.messages.known_id``: outside 1..MAX_ID, a 404 like any unknown
    message): a converter that refused the value made werkzeug answer 405 to some methods of
    the same path and 404 to others."""

    regex = r"\d{1,20}"


def register(app: Quart) -> None:
    app.url_map.converters["id"] = EventIdConverter
    envelope.register(app)
    for module in (rooms, messages, activity, notifications, session, ops):
        app.register_blueprint(module.bp)
