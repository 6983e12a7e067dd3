"""The one request pipeline. Every HTTP request passes these steps, in this order, in
``Pipeline.__call__``:

1. **record**: the request's id (a well-formed ``X-Request-ID``, else a new one; echoed in
   the answer), its access record (endpoint, status, duration; counted in
   ``chat_requests_total`` when it ends, and logged to ``chat.access`` at DEBUG), and its
   endpoint, looked up in the route table so that every step below knows it;
2. **error envelope**: whatever a later step raises becomes the JSON envelope of API.md
   (``chat.api.envelope``), unless the answer has already started;
3. **body**: read whole before anything else looks at it, at most ``max_body_bytes``
   (413) within ``body_timeout_seconds`` (408);
4. **identity**: who is asking (a seam: ``chat.api.auth.Authenticator`` in the service:
   bearer token, session cookie or ``access_token``; 401 for a bad credential, or for none
   in ``CHAT_AUTH=required`` mode; 403 for a cookie write from another origin);
5. **access and limits**: policies that may refuse the request, in order (a seam: the
   service puts ``chat.api.auth.RoomAccessPolicy`` first, which hides private rooms from
   non-members and keeps scoped credentials to their rooms);
6. **routing**: the app's ``url_map`` is the one route table: no match is a 404 or 405, a
   body that is not JSON a 415; then a plain route (``chat.api.routes``: the event streams
   and the message POST, served without Quart's per-request machinery) or Quart (every
   other route) serves the endpoint.

A websocket request is refused (no route takes one); lifespan events go to Quart.

Quart routes therefore see a request that has passed every step above; nothing
cross-cutting is a Quart hook, so no route can miss it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hypercorn.typing import (
    ASGIReceiveCallable,
    ASGIReceiveEvent,
    ASGISendCallable,
    ASGISendEvent,
    Scope,
)
from werkzeug.exceptions import MethodNotAllowed as WerkzeugMethodNotAllowed
from werkzeug.exceptions import NotFound as WerkzeugNotFound
from werkzeug.routing import Map, RequestRedirect

from chat.api.envelope import answer_for
from chat.api.request import Identify, Policy, Request, anonymous
from chat.errors import (
    ChatError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
)
from chat.metrics import Metrics

log = logging.getLogger(__name__)
# One line per request at DEBUG (CHAT_LOG_LEVEL=DEBUG); off by default, and then it costs one
# level check. Issue 14's structured request log takes the same record.
access_log = logging.getLogger("chat.access")

ASGIApp = Callable[[Scope, ASGIReceiveCallable, ASGISendCallable], Awaitable[None]]
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# After a body passes the limit, what is left of it is still received (and dropped) for at
# most this long: Hypercorn closes a connection whose request was not read to the end, and
# the kernel then resets it, which can destroy the 413 on its way to the client.
DRAIN_S = 2.0
MATCHES_KEPT = 4096
SCOPE_KEY = "chat.request"  # where Quart routes find the Request: request.scope[SCOPE_KEY]


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

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "websocket":  # no route takes one: refused, not left to Quart
            await send({"type": "websocket.close", "code": 1008, "reason": ""})
            return
        if scope["type"] != "http":  # lifespan (start-up and shutdown): Quart's
            await self.quart(scope, receive, send)
            return
        request = Request(scope, receive, send)  # 1. record
        scope[SCOPE_KEY] = request  # type: ignore[literal-required]
        miss = self.locate(request)
        try:
            try:  # 2. error envelope
                if not await self.read_body(request):  # 3. body
                    return  # the client went away before its body was complete
                request.identity = await self.identify(request)  # 4. identity
                for policy in self.policies:  # 5. access and limits
                    await policy(request)
                await self.route(request, miss)  # 6. routing
            except ChatError as error:
                await self.refuse(request, error)
            except Exception as error:
                log.exception("unhandled error on %s %s", request.method, request.path)
                await self.refuse(request, error)
        finally:
            # The scope and the Request refer to each other: without this, every request's
            # body would wait for the cyclic collector, which serve.tune_gc runs seldom.
            del scope[SCOPE_KEY]  # type: ignore[misc]
            self.metrics.answered(request.endpoint, request.served_by, request.status)
            if access_log.isEnabledFor(logging.DEBUG):
                access_log.debug(
                    "%s %s %s -> %d (%s, %s) in %.1f ms",
                    request.request_id().decode(),
                    request.method,
                    request.path,
                    request.status,
                    request.endpoint or "unmatched",
                    request.served_by or "pipeline",
                    (time.perf_counter() - request.started) * 1000,
                )

    async def refuse(self, request: Request, error: Exception) -> None:
        if request.status:
            return  # the answer has started: the connection ends with what was sent
        answer = answer_for(error)
        start: ASGISendEvent = {
            "type": "http.response.start",
            "status": answer.status,
            "headers": answer.headers,
        }
        await request.send(start)
        await request.send({"type": "http.response.body", "body": answer.body, "more_body": False})

    async def read_body(self, request: Request) -> bool:
        """Read the whole body into ``request.body``; False if the client went away first."""
        limit, receive = self.max_body_bytes, request.receive
        length = request.header(b"content-length")
        too_large = length is not None and length.isdigit() and int(length) > limit
        chunks: list[bytes] = []
        size, more = 0, True
        try:
            async with asyncio.timeout(self.body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        return False
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        too_large = True
                    if not too_large:
                        chunks.append(chunk)
                    more = message.get("more_body", False)
                    if not more or too_large:
                        break
        except TimeoutError:
            if not too_large:
                late = f"the body did not arrive within {self.body_timeout_s:g} s"
                raise RequestTimeout(late) from None
        if too_large:
            if more:
                await _drain(receive)
            raise PayloadTooLarge(f"the body is over the limit of {limit} bytes")
        request.body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return True

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
            _check_media_type(request)
        route = self.routes.get(request.endpoint)
        if route is not None and method in route.methods:
            request.served_by = "plain"
            await route.handler(request, request.args)
        else:
            request.served_by = "quart"
            await self.quart(request.scope, _replay(request), request.send)


def _check_media_type(request: Request) -> None:
    """A body is JSON; only a DELETE may come without one."""
    has_body = bool(request.body) or request.header(b"transfer-encoding") is not None
    if not has_body and request.method == "DELETE":
        return
    content_type = request.header(b"content-type") or b""
    mimetype = content_type.split(b";", 1)[0].strip().lower()
    if mimetype != b"application/json":
        shown = mimetype.decode("latin-1") or "nothing"
        raise UnsupportedMediaType(f"send the body as application/json, not {shown!r}")


async def _drain(receive: ASGIReceiveCallable) -> None:
    """Receive and drop what is left of a body, for at most DRAIN_S."""
    try:
        async with asyncio.timeout(DRAIN_S):
            while True:
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body", False):
                    return
    except TimeoutError:
        return


def _replay(request: Request) -> ASGIReceiveCallable:
    """``receive`` for Quart: the body already read, then the rest (a disconnect)."""
    first: list[ASGIReceiveEvent] = [
        {"type": "http.request", "body": request.body, "more_body": False}
    ]
    receive = request.receive

    async def replayed() -> ASGIReceiveEvent:
        return first.pop() if first else await receive()

    return replayed
