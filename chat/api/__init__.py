"""The HTTP layer: Quart blueprints, thin (parse, call the parts, return JSON)."""

from __future__ import annotations

from quart import Quart

from chat.api import activity, errors, messages, ops, rooms, streams
from chat.api.deps import Services, services

__all__ = ["Services", "register", "services"]


def register(app: Quart) -> None:
    errors.register(app)
    for module in (rooms, messages, activity, streams, ops):
        app.register_blueprint(module.bp)
