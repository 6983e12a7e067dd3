"""One request as the pipeline sees it (``Request``), and the pipeline's two seams: who is
asking (``Identify``) and whether to let the request on (``Policy``)."""

from __future__ import annotations

import itertools
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, ASGISendEvent, HTTPScope

from chat.api.transport import answer_whole
from chat.identity import Identity

__all__ = ["SCOPE_KEY", "Identify", "Identity", "Policy", "Request", "anonymous"]

SCOPE_KEY = "chat.request"  # where Quart routes find the Request: request.scope[SCOPE_KEY]

REQUEST_ID = re.compile(rb"[A-Za-z0-9._~:/+=@-]{1,128}")
# A made id: this process's random prefix and a count (a random id per request would cost a
# system call each).
ID_PREFIX = secrets.token_hex(4).encode()
_counter = itertools.count()
NOSNIFF = (b"x-content-type-options", b"nosniff")  # on every answer (ACCESS.md)
UNREAD: Any = object()  # ``Request.parsed`` until the body's JSON is read (chat.api.body)


class Request:
    """One request as the pipeline sees it: its head, its whole body once read, who asks,
    its access record (id, endpoint, what served it, status, when it started), and how to
    answer (``send``, which records the answer)."""

    __slots__ = (
        "args",
        "body",
        "client",
        "endpoint",
        "extra_headers",
        "id",
        "identity",
        "parsed",
        "raw_send",
        "receive",
        "scope",
        "sent_bytes",
        "served_by",
        "started",
        "status",
    )

    def __init__(
        self, scope: HTTPScope, receive: ASGIReceiveCallable, raw_send: ASGISendCallable
    ) -> None:
        self.scope = scope
        self.receive = receive  # after the pipeline has read the body: the disconnect
        self.raw_send = raw_send  # the server's own send, for ``chat.api.transport``
        self.started = time.perf_counter()
        given = self.header(b"x-request-id")
        self.id = given if given is not None and REQUEST_ID.fullmatch(given) else None
        self.body = b""
        self.parsed: Any = UNREAD  # the body's JSON, once read (``chat.api.body.body_json``)
        self.identity: Identity | None = None  # None: a guest (chat.api.auth)
        self.endpoint = ""  # the route table's name for it; "" if none matched
        self.args: Mapping[str, Any] = {}  # the path's arguments (``room``)
        self.served_by = ""  # "plain" (a plain route) or "quart"; "" if not routed
        self.status = 0  # 0 until the answer starts
        self.sent_bytes = 0  # the answer's body bytes that went through ``send``
        peer = scope.get("client")
        # the client's address: the peer's, or a trusted proxy's X-Forwarded-For (pipeline)
        self.client = peer[0] if peer else "unknown"
        self.extra_headers: list[tuple[bytes, bytes]] = []  # CORS, CSP: set by the pipeline

    @property
    def method(self) -> str:
        return self.scope["method"]

    @property
    def path(self) -> str:
        return self.scope["path"]

    def header(self, name: bytes) -> bytes | None:
        """The first value of a header (``name`` in lower case), or None."""
        for key, value in self.scope["headers"]:
            if key == name:
                return value
        return None

    def request_id(self) -> bytes:
        if self.id is None:
            self.id = b"%s%08x" % (ID_PREFIX, next(_counter) & 0xFFFFFFFF)
        return self.id

    def _with_ours(self, headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """An answer's headers and the ones every answer carries: the request id, ``nosniff``
        and the pipeline's (CORS, CSP)."""
        return [*headers, (b"x-request-id", self.request_id()), NOSNIFF, *self.extra_headers]

    async def answer(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> str:
        """Answer whole (``headers`` without Content-Length): straight to the connection where
        the server allows it (``chat.api.transport.answer_whole``), else through ``send``.
        Returns which: "transport" or "asgi_send"."""
        self.status = status
        if await answer_whole(self.raw_send, status, self._with_ours(headers), body):
            self.sent_bytes += len(body)
            return "transport"
        length = (b"content-length", b"%d" % len(body))
        await self.send(
            {"type": "http.response.start", "status": status, "headers": [*headers, length]}
        )
        await self.send({"type": "http.response.body", "body": body, "more_body": False})
        return "asgi_send"

    async def send(self, message: ASGISendEvent) -> None:
        """ASGI ``send`` that notes the answer's status in the access record and echoes the
        request id. (A method, not a closure over the request: a closure stored on the
        request would make a reference cycle of every request.)"""
        if message["type"] == "http.response.start":
            self.status = message["status"]
            message = {**message, "headers": self._with_ours(message.get("headers", ()))}
        elif message["type"] == "http.response.body":
            self.sent_bytes += len(message.get("body", b""))
        await self.raw_send(message)


class Policy(Protocol):
    """A limit on requests: returns to let the request on, raises a ChatError to refuse it."""

    async def __call__(self, request: Request) -> None: ...


class Identify(Protocol):
    async def __call__(self, request: Request) -> Identity | None: ...


async def anonymous(request: Request) -> Identity | None:
    return None
