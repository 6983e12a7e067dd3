"""The event-stream GETs, served straight on ASGI, in front of Quart.

A stream is the one request that lives for hours, so what it holds is paid once per open
connection. Under Quart, each stream also holds a request and its contexts, a request body
with two ``asyncio.Event``s, a Response, and two tasks (the handler and the disconnect
watcher) besides Hypercorn's own. None of it is used once the stream runs. Served here, a
stream holds its subscriber, its generator and one small task that waits for the disconnect.
docs/design/performance.md has the measurements.

The checks are ``stream_request``'s, the same function the Quart routes in ``streams.py``
call, and errors are the same JSON envelope. Every other request (and HEAD, and any path
this does not recognise) goes to Quart untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from typing import Any
from urllib.parse import parse_qsl

from h11 import _writers as h11_writers
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, HTTPScope, Scope
from werkzeug.datastructures import MultiDict

from chat.api.asgi import send_error
from chat.api.deps import Services
from chat.api.streams import SSE_HEADERS, stream_request
from chat.errors import ChatError
from chat.hub import Subscriber

log = logging.getLogger(__name__)

ROOM_PREFIX = "/api/rooms/"
ROOM_SUFFIX = "/events"
START_HEADERS = [(k.lower().encode(), v.encode()) for k, v in SSE_HEADERS.items()]


def stream_path(path: str) -> tuple[bool, str | None]:
    """(is a stream path, its room): ``/api/events`` or ``/api/rooms/{room}/events``."""
    if path == "/api/events":
        return True, None
    if path.startswith(ROOM_PREFIX) and path.endswith(ROOM_SUFFIX):
        room = path[len(ROOM_PREFIX) : -len(ROOM_SUFFIX)]
        if room and "/" not in room:
            return True, room
    return False, None


class FastStreams:
    def __init__(self, app: Any, services: Services) -> None:
        self.app = app
        self.services = services

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            is_stream, room = stream_path(scope["path"])
            if is_stream:
                await self._stream(scope, room, receive, send)
                return
        await self.app(scope, receive, send)

    async def _stream(
        self,
        scope: HTTPScope,
        room: str | None,
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
    ) -> None:
        svc = self.services
        query = scope["query_string"].decode("latin-1")
        args = MultiDict(parse_qsl(query, keep_blank_values=True))
        last_event_id = ""
        for name, value in scope["headers"]:
            if name == b"last-event-id":
                last_event_id = value.decode("latin-1")
        try:
            wanted = await stream_request(svc, room, args, last_event_id)
        except ChatError as error:
            await send_error(svc, send, error)
            return
        except Exception:
            log.exception("unhandled error opening a stream on %s", scope["path"])
            await send_error(svc, send, None)
            return
        sub = svc.streams.subscriber(wanted)
        watcher = asyncio.ensure_future(_close_on_disconnect(receive, sub))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": START_HEADERS})
            direct = DirectWriter.under(send)
            if direct is None and scope["http_version"] == "1.1":
                _warn_no_direct_writes()
            sub.sink = direct  # live frames are written by the flusher, the task stays parked
            async with contextlib.aclosing(svc.streams.open(wanted, sub)) as body:
                if direct is None:
                    flusher = svc.streams.flusher
                    async for chunk in body:
                        start = time.perf_counter()
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                        flusher.writing_s += time.perf_counter() - start  # the window's load
                else:
                    async for chunk in body:
                        if not direct.write(chunk):
                            break  # the connection is gone
                        if direct.full():
                            await direct.drain()
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()


class DirectWriter:
    """Writes a stream's body chunks straight to the connection's transport, chunk-encoded.

    Through Hypercorn, each chunk passes the ASGI message checks, h11's state machine, two
    event objects, a lock and a drain: about 35 µs of CPU, five times the write itself
    (docs/design/performance.md). A stream writes thousands of chunks a second under load, so
    its body goes around all that. The response start goes through Hypercorn as usual, and so
    does the end of the body: h11 frames chunked bodies without counting them, so the chunks
    written here leave its state exactly as if it had sent them.

    Only for Hypercorn's HTTP/1.1 connections with a chunked body, found by following the
    bound ``send`` callable back to its connection; under anything else (HTTP/1.0, HTTP/2,
    another server, another Hypercorn) ``under`` gives None and the stream uses ``send``.
    """

    __slots__ = ("high", "transport", "writer")

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.transport = writer.transport
        self.high = self.transport.get_write_buffer_limits()[1]

    @classmethod
    def under(cls, send: ASGISendCallable) -> DirectWriter | None:
        """The writer for the connection under ``send``, once the response has started."""
        protocol = getattr(getattr(getattr(send, "__self__", None), "send", None), "__self__", None)
        if not isinstance(protocol, H11Protocol):
            return None
        body_writer = getattr(protocol.connection, "_writer", None)
        if not isinstance(body_writer, h11_writers.ChunkedWriter):
            return None
        server = getattr(protocol.send, "__self__", None)
        writer = getattr(server, "writer", None)
        if not isinstance(writer, asyncio.StreamWriter):
            return None
        return cls(writer)

    def write(self, chunk: bytes) -> bool:
        """Queue one chunk (never empty); False once the connection is closing."""
        if self.transport.is_closing():
            return False
        if not chunk:
            return True  # an empty chunk would be the chunked body's end
        self.transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        return True

    def full(self) -> bool:
        return self.transport.get_write_buffer_size() > self.high

    async def drain(self) -> None:
        """Wait while the client reads slowly (its subscriber queues, then catches up)."""
        with contextlib.suppress(OSError):  # gone: the next write says so and ends the stream
            await self.writer.drain()


@functools.cache
def _warn_no_direct_writes() -> None:
    log.warning(
        "an HTTP/1.1 stream is written through ASGI send: Hypercorn's connection was not "
        "found under it (another server, or a Hypercorn or h11 this was not written for); "
        "streams work, at several times the CPU per write"
    )


async def _close_on_disconnect(receive: ASGIReceiveCallable, sub: Subscriber) -> None:
    """A client that goes away ends its stream: the generator leaves its loop and cleans up."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            sub.close()
            return
