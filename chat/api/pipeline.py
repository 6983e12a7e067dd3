"""The one request pipeline. Every HTTP request passes these steps, in this order, in
``Pipeline.__call__``:

1. **record**: the request's id (a well-formed ``X-Request-ID``, else a new one; echoed in
   the answer and in its error body), its client's address (``X-Forwarded-For`` only from
   a proxy in ``CHAT_FORWARDED_ALLOW_IPS``), its access record (endpoint, status, duration,
   bytes; counted in ``chat_requests_total`` when it ends, and logged as one line to
   ``chat.access``, ``chat.logs``), and its endpoint, looked up in the route table so that
   every step below knows it;
2. **error envelope**: whatever a later step raises becomes the JSON envelope of API.md
   (``chat.api.envelope``), unless the answer has already started;
3. **framing, CORS and body**: a request with both ``Content-Length`` and
   ``Transfer-Encoding`` is refused and its connection closed (request smuggling); the CORS
   headers of its origin are noted for the answer, and a CORS preflight is answered here
   (``chat.api.cors``); then the body is read whole before anything else looks at it, at
   most ``max_body_bytes`` (413) within ``body_timeout_seconds`` (408) (``chat.api.body``);
4. **identity**: who is asking (a seam: ``chat.api.auth.Authenticator`` in the service:
   bearer token, session cookie or ``access_token``; 401 for a bad credential, or for none
   in ``CHAT_AUTH=required`` mode; 403 for a cookie write from another origin);
5. **access and limits**: policies that may refuse the request, in order (a seam: the
   service puts ``chat.api.auth.RoomAccessPolicy`` first, which hides private rooms from
   non-members and keeps scoped credentials to their rooms, then ``chat.api.limiting``'s
   per-client write and sign-in limits);
6. **routing**: the app's ``url_map`` is the one route table: no match is a 404 or 405, a
   body that is not JSON a 415; then a plain route (``chat.api.routes``: the event streams
   and the message POST, served without Quart's per-request machinery) or Quart (every
   other route) serves the endpoint.

A websocket request is refused (no route takes one); lifespan events go to Quart.

Quart routes therefore see a request that has passed every step above; nothing
cross-cutting is a Quart hook, so no route can miss it.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hypercorn.typing import (
    ASGIReceiveCallable,
    ASGISendCallable,
    ASGISendEvent,
    HTTPScope,
    Scope,
    WebsocketScope,
)
from werkzeug.exceptions import MethodNotAllowed as WerkzeugMethodNotAllowed
from werkzeug.exceptions import NotFound as WerkzeugNotFound
from werkzeug.routing import Map, RequestRedirect

from chat.api import body
from chat.api.cors import Cors
from chat.api.envelope import answer_for
from chat.api.request import NOSNIFF, SCOPE_KEY, Identify, Policy, Request, anonymous
from chat.errors import (
    ChatError,
    Forbidden,
    MethodNotAllowed,
    NotFound,
)
from chat.limits import Forwarded
from chat.logs import access_log, redacted_target
from chat.metrics import Metrics

__all__ = ["BODY_METHODS", "SCOPE_KEY", "Pipeline", "PlainRoute", "Route"]

log = logging.getLogger(__name__)

ASGIApp = Callable[[Scope, ASGIReceiveCallable, ASGISendCallable], Awaitable[None]]
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MATCHES_KEPT = 4096


PlainRoute = Callable[[Request, Mapping[str, Any]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Route:
    """An endpoint served without Quart, for these methods (others go to Quart)."""

    handler: PlainRoute
    methods: frozenset[str]


class Pipeline:
    def __init__(
        self,
        quart: ASGIApp,
        url_map: Map,
        routes: dict[str, Route],
        metrics: Metrics,
        *,
        max_body_bytes: int,
        body_timeout_s: float,
        identify: Identify = anonymous,
        policies: Sequence[Policy] = (),
        forwarded: Forwarded | None = None,
        cors: Cors | None = None,
        endpoint_headers: Mapping[str, list[tuple[bytes, bytes]]] | None = None,
        media_types: Mapping[str, frozenset[bytes]] | None = None,
    ) -> None:
        self.quart = quart
        # Matches are remembered: a matcher call costs several µs and leaves a reference
        # cycle (werkzeug's recursive closure), and publishers POST to the same paths.
        self.match = functools.lru_cache(maxsize=MATCHES_KEPT)(url_map.bind("localhost").match)
        self.routes = routes
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.identify = identify
        self.policies = list(policies)
        self.forwarded = forwarded if forwarded is not None and forwarded.enabled else None
        self.cors = cors if cors is not None and cors.on else None
        self.endpoint_headers = dict(endpoint_headers or {})  # e.g. the CSP of static files
        # endpoint -> the body media types it takes besides application/json
        self.media_types = dict(media_types or {})

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "websocket":  # no route takes one: refused, not left to Quart
            await self.refuse_websocket(scope, receive, send)
            return
        if scope["type"] != "http":  # lifespan (start-up and shutdown): Quart's
            await self.quart(scope, receive, send)
            return
        request = self.record(scope, receive, send)  # 1. record
        scope[SCOPE_KEY] = request  # type: ignore[literal-required]
        miss = self.locate(request)
        if request.endpoint in self.endpoint_headers:
            request.extra_headers += self.endpoint_headers[request.endpoint]
        try:
            try:  # 2. error envelope
                body.check_framing(request)  # 3. framing, CORS and body
                if self.cors is not None and self.cors.apply(request):
                    await self.answer_preflight(request)
                    return
                if not await body.read_body(request, self.max_body_bytes, self.body_timeout_s):
                    return  # the client went away before its body was complete
                request.identity = await self.identify(request)  # 4. identity
                for policy in self.policies:  # 5. access and limits
                    await policy(request)
                await self.route(request, miss)  # 6. routing
            except ChatError as error:
                await self.refuse(request, error)
            except Exception as error:
                log.exception(
                    "unhandled error on %s %s",
                    request.method,
                    request.path,
                    extra={"request_id": request.request_id().decode()},
                )
                await self.refuse(request, error)
        finally:
            # The scope and the Request refer to each other: without this, every request's
            # body would wait for the cyclic collector, which serve.tune_gc runs seldom.
            del scope[SCOPE_KEY]  # type: ignore[misc]
            self.finish(request)

    def record(
        self, scope: HTTPScope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> Request:
        """The request's access record, with the client's address (a trusted proxy's
        ``X-Forwarded-For``, when one is configured)."""
        request = Request(scope, receive, send)
        if self.forwarded is not None:
            request.client = self.forwarded.client(
                request.client, request.header(b"x-forwarded-for")
            )
        return request

    def finish(self, request: Request) -> None:
        """The request's end: counted by endpoint and status, and its access log line."""
        self.metrics.answered(request.endpoint, request.served_by, request.status)
        if access_log.isEnabledFor(logging.INFO):
            _log_request(request)

    async def refuse_websocket(
        self, scope: WebsocketScope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        """403 to a websocket handshake, recorded and logged like any request: the JSON
        envelope with the request id and nosniff where the server can send an answer of its
        own (ASGI's ``websocket.http.response``, which Hypercorn offers); otherwise a close
        before the handshake, which the server answers with a bare 403."""
        record = {**scope, "method": "GET"}  # what the access record reads of a request
        request = self.record(record, receive, send)  # type: ignore[arg-type]
        try:
            if "websocket.http.response" not in (scope.get("extensions") or {}):
                await send({"type": "websocket.close", "code": 1008, "reason": ""})
                request.status = 403
                return
            error = Forbidden("this service serves no websocket: its streams are SSE (a GET)")
            answer = answer_for(error, request.request_id())
            headers = [*answer.headers, (b"x-request-id", request.request_id()), NOSNIFF]
            await send({"type": "websocket.http.response.start", "status": 403, "headers": headers})
            await send(
                {"type": "websocket.http.response.body", "body": answer.body, "more_body": False}
            )
            request.status, request.sent_bytes = 403, len(answer.body)
        finally:
            self.finish(request)

    async def answer_preflight(self, request: Request) -> None:
        await request.send({"type": "http.response.start", "status": 204, "headers": []})
        await request.send({"type": "http.response.body", "body": b"", "more_body": False})

    async def refuse(self, request: Request, error: Exception) -> None:
        if request.status:
            return  # the answer has started: the connection ends with what was sent
        answer = answer_for(error, request.request_id())
        start: ASGISendEvent = {
            "type": "http.response.start",
            "status": answer.status,
            "headers": answer.headers,
        }
        await request.send(start)
        await request.send({"type": "http.response.body", "body": answer.body, "more_body": False})

    def locate(self, request: Request) -> Callable[[], ChatError] | None:
        """Look the request up in the route table, so that every step knows its endpoint;
        returns what makes the error routing answers with (step 6) when nothing matches (a
        maker, not the error: a raised error held in a local would keep its traceback's
        frames, and with them the request, in a reference cycle)."""
        method = request.method
        try:
            request.endpoint, request.args = self.match(request.path, method)
        except (WerkzeugNotFound, RequestRedirect):  # no rule ends with a slash to redirect to
            return functools.partial(NotFound, "the requested URL was not found on the server")
        except WerkzeugMethodNotAllowed as error:
            allowed = sorted(error.valid_methods or ())
            return functools.partial(MethodNotAllowed, f"{method} is not allowed here", allowed)
        return None

    async def route(self, request: Request, miss: Callable[[], ChatError] | None) -> None:
        if miss is not None:
            raise miss()
        method = request.method
        if method in BODY_METHODS:
            body.check_media_type(request, self.media_types.get(request.endpoint, frozenset()))
        route = self.routes.get(request.endpoint)
        if route is not None and method in route.methods:
            request.served_by = "plain"
            await route.handler(request, request.args)
        else:
            request.served_by = "quart"
            await self.quart(request.scope, body.replay(request), request.send)


def _log_request(request: Request) -> None:
    """The request's line in the access log (ACCESS.md, Logs)."""
    who = request.identity
    duration_ms = round((time.perf_counter() - request.started) * 1000, 2)
    target = redacted_target(request.path, request.scope["query_string"])
    access_log.info(
        "%s %s %s -> %d (%s, %s) in %.1f ms",
        request.request_id().decode(),
        request.method,
        target,
        request.status,
        request.endpoint or "unmatched",
        request.served_by or "pipeline",
        duration_ms,
        extra={
            "event": "request",
            "request_id": request.request_id().decode(),
            "method": request.method,
            "path": target,
            "status": request.status,
            "duration_ms": duration_ms,
            "bytes": request.sent_bytes,
            "user": None if who is None else who.user,
            "client": request.client,
            "endpoint": request.endpoint or None,
        },
    )
