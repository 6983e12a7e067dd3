"""Writing a stream's body straight to Hypercorn's HTTP/1.1 transport: the one module that
touches library internals (docs/design/private-access.md lists them, and their tests).

Through ASGI ``send``, each chunk passes the ASGI message checks, h11's state machine, two
event objects, Hypercorn's lock and a drain: several times the CPU of the write itself
(docs/design/performance.md), and a busy stream writes thousands of chunks a second. So the
body's chunks are written here, chunk-encoded, while the response start and the end of the
body still go through ``send``: h11 frames a chunked body without counting it, so the chunks
written here leave its state exactly as if it had sent them.

``TransportWriter.under(send)`` finds the connection by following the server's bound
``send`` back to Hypercorn's ``H11Protocol`` and its ``asyncio.StreamWriter``. Anything it
does not recognise (HTTP/1.0, HTTP/2, another server, a Hypercorn or h11 whose internals
moved, a middleware wrapping ``send``) gives None, and the stream is written through
``send``: slower, never wrong. ``chat_stream_writers_total{writer}`` counts which way each
stream went, and tests/test_transport.py fails when the pinned Hypercorn stops taking this
path. The imports are lazy so that a missing or renamed module degrades the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
from typing import Any

from hypercorn.typing import ASGISendCallable

log = logging.getLogger(__name__)


@functools.cache
def _internals() -> tuple[type[Any], type[Any]] | None:
    """(Hypercorn's H11Protocol, h11's ChunkedWriter), or None if either has moved."""
    try:
        from h11._writers import ChunkedWriter
        from hypercorn.protocol.h11 import H11Protocol
    except ImportError:
        log.warning("h11 or Hypercorn internals have moved: streams are written through send")
        return None
    return H11Protocol, ChunkedWriter


class TransportWriter:
    """A stream's connection, written to directly: the subscriber's sink."""

    __slots__ = ("high", "reader", "transport", "writer", "written")

    def __init__(
        self, writer: asyncio.StreamWriter, reader: asyncio.StreamReader | None = None
    ) -> None:
        self.writer = writer
        self.reader = reader
        self.transport = writer.transport
        self.high = self.transport.get_write_buffer_limits()[1]
        self.written = 0  # the body's bytes written here (the access log's ``bytes``)

    def vanished(self) -> bool:
        """Whether the connection ended because the kernel gave up on the peer (keepalive
        probes or data unanswered: ETIMEDOUT), not by a close of the client's."""
        error = self.reader.exception() if self.reader is not None else None
        return isinstance(error, OSError) and error.errno == errno.ETIMEDOUT

    @classmethod
    def under(cls, send: ASGISendCallable) -> TransportWriter | None:
        """The writer for the connection under the server's own ``send``, once the response
        has started with a chunked body; None when it cannot be found."""
        internals = _internals()
        if internals is None:
            return None
        protocol_type, chunked_type = internals
        # send is HTTPStream.app_send; its .send is H11Protocol.stream_send.
        protocol = getattr(getattr(getattr(send, "__self__", None), "send", None), "__self__", None)
        if not isinstance(protocol, protocol_type):
            return None
        body_writer = getattr(getattr(protocol, "connection", None), "_writer", None)
        if not isinstance(body_writer, chunked_type):
            return None  # HTTP/1.0 (close-delimited) or a body h11 frames another way
        # H11Protocol.send is TCPServer.protocol_send, whose server holds the StreamWriter
        # (and the StreamReader, which keeps the error the connection ended with).
        server = getattr(getattr(protocol, "send", None), "__self__", None)
        writer = getattr(server, "writer", None)
        if not isinstance(writer, asyncio.StreamWriter):
            return None
        reader = getattr(server, "reader", None)
        return cls(writer, reader if isinstance(reader, asyncio.StreamReader) else None)

    def write(self, chunk: bytes) -> bool:
        """Queue one chunk; False once the connection is closing."""
        if self.transport.is_closing():
            return False
        if not chunk:
            return True  # an empty chunk would be the chunked body's end
        self.transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        self.written += len(chunk)
        return True

    def full(self) -> bool:
        return self.transport.get_write_buffer_size() > self.high

    async def drain(self) -> None:
        """Wait while the client reads slowly (its subscriber queues, then catches up)."""
        with contextlib.suppress(OSError):  # gone: the next write says so and ends the stream
            await self.writer.drain()
