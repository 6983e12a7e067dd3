"""The plain routes: endpoints of the app's one route table (its ``url_map``) that the
pipeline serves itself, without Quart's per-request machinery.

Each is added to the ``url_map`` like any route, with a view function that carries its
documentation for /docs and /openapi.json. The pipeline serves the endpoint for the methods
below; Quart only ever sees it for OPTIONS (its automatic answer), so the view function is
never called (tests/test_pipeline.py checks that the plain routes serve these endpoints).
"""

from __future__ import annotations

from typing import Any, NoReturn

from quart import Quart
from quart_schema import document_headers, document_querystring, document_request, document_response

from chat.api.deps import Services
from chat.api.event_stream import EventStreams
from chat.api.pipeline import PlainRoute, Route
from chat.api.post_message import PostMessage
from chat.models import IdempotencyHeaders, MessageEvent, MessageIn, MultiStreamQuery, StreamQuery

GET = frozenset({"GET", "HEAD"})
POST = frozenset({"POST"})


def _served_by_the_pipeline() -> NoReturn:
    raise RuntimeError("a plain route's endpoint reached Quart (chat/api/routes.py)")


@document_querystring(StreamQuery)
async def room_events(room: str) -> NoReturn:
    """The room's events as `text/event-stream`; resume with `Last-Event-ID`."""
    _served_by_the_pipeline()


@document_querystring(MultiStreamQuery)
async def events() -> NoReturn:
    """Several rooms on one stream (`rooms=a,b`), or every room (`rooms=*`)."""
    _served_by_the_pipeline()


async def notification_events(user: str) -> NoReturn:
    """The user's notification feed as `text/event-stream`: a `notification` event (the group,
    with `type` and `created_at`, its `latest_at`) each time one of the user's groups changes,
    `id:` its `latest_event_id`; resume with `Last-Event-ID`."""
    _served_by_the_pipeline()


@document_request(MessageIn)
@document_headers(IdempotencyHeaders)
@document_response(MessageEvent, 201)
async def post_message(room: str) -> NoReturn:
    """Post a message: 201 with the stored `message` event once it is committed. With an
    `Idempotency-Key`, a retry returns the first answer (200) and posts nothing."""
    _served_by_the_pipeline()


def install(app: Quart, services: Services) -> dict[str, Route]:
    """Add the plain routes to the app's route table; returns them by endpoint."""
    streams = EventStreams(services)
    table: list[tuple[str, str, Any, PlainRoute, frozenset[str]]] = [
        ("/api/rooms/<room>/events", "streams.room_events", room_events, streams, GET),
        ("/api/events", "streams.events", events, streams, GET),
        (
            "/api/users/<user>/notifications/events",
            "streams.notifications",
            notification_events,
            streams,
            GET,
        ),
        ("/api/rooms/<room>/messages", "messages.post", post_message, PostMessage(services), POST),
    ]
    routes = {}
    for rule, endpoint, documented, handler, methods in table:
        app.add_url_rule(rule, endpoint, documented, methods=sorted(methods))
        routes[endpoint] = Route(handler, methods)
    return routes
