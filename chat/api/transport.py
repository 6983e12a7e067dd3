"""Writing straight to Hypercorn's HTTP/1.1 transport: a stream's body, and a message POST's
whole answer. The one module that touches these library internals
(docs/design/private-access.md lists them, and their tests).

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

``answer_whole`` writes a complete answer (status, headers, a Content-Length body) in one
write. Through ``send`` it is three ASGI messages, each checked and turned into an event by
Hypercorn, then into an h11 event whose headers h11 validates again, then three writes, each
with Hypercorn's lock and a drain: for the message POST, the request publishers send in a
loop, that was about a seventh of the instructions of a whole publish in the rooms scenario
(a POST and ten deliveries; docs/design/performance.md). Here h11 is told of an answer
through its public API (``Connection.send`` of a Response with an empty body, then of its
end), so that its state, keep-alive included, stays exactly right; the bytes it makes are
only read for the ``Connection: close`` it adds when the client asked for it; and the answer
written is built here. Hypercorn is then told the stream has closed, as its own end of a
response does. ``chat_answer_writers_total{writer}`` counts which way each answer went.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import time
from typing import Any

from hypercorn.typing import ASGISendCallable

log = logging.getLogger(__name__)

Headers = list[tuple[bytes, bytes]]


class _Internals:
    """What this module needs of h11 and Hypercorn, imported once (lazily: a missing or
    renamed one makes ``_internals()`` None, and everything goes through ``send``)."""

    def __init__(self) -> None:
        import h11
        from h11._writers import ChunkedWriter
        from hypercorn.protocol.events import StreamClosed
        from hypercorn.protocol.h11 import H11Protocol
        from hypercorn.protocol.http_stream import ASGIHTTPState, HTTPStream

        self.h11 = h11
        self.chunked_type = ChunkedWriter
        self.stream_closed = StreamClosed
        self.protocol_type = H11Protocol
        self.stream_type = HTTPStream
        self.request_state = ASGIHTTPState.REQUEST
        self.closed_state = ASGIHTTPState.CLOSED
        # h11 validates these once: the answer's own headers are written here
        self.empty = h11.Response(status_code=200, headers=[(b"content-length", b"0")])
        self.empty_closing = h11.Response(
            status_code=200, headers=[(b"content-length", b"0"), (b"connection", b"close")]
        )
        self.end = h11.EndOfMessage()
        # the request read whole: DONE, or MUST_CLOSE when the connection ends after it
        self.request_read = (h11.DONE, h11.MUST_CLOSE)


@functools.cache
def _internals() -> _Internals | None:
    try:
        return _Internals()
    except (ImportError, AttributeError):
        log.warning("h11 or Hypercorn internals have moved: streams and answers go through send")
        return None


def _connection(
    send: ASGISendCallable, known: _Internals
) -> tuple[Any, Any, asyncio.StreamWriter, asyncio.StreamReader | None] | None:
    """Hypercorn's HTTP/1.1 stream, protocol, and the connection's writer and reader under
    the server's own ``send``, or None. ``send`` is ``HTTPStream.app_send``; the stream's
    ``send`` is ``H11Protocol.stream_send``; the protocol's ``send`` is
    ``TCPServer.protocol_send``, whose server holds the StreamWriter (and the StreamReader,
    which keeps the error the connection ended with)."""
    stream = getattr(send, "__self__", None)
    protocol = getattr(getattr(stream, "send", None), "__self__", None)
    if not isinstance(stream, known.stream_type) or not isinstance(protocol, known.protocol_type):
        return None
    server = getattr(getattr(protocol, "send", None), "__self__", None)
    writer = getattr(server, "writer", None)
    if not isinstance(writer, asyncio.StreamWriter):
        return None
    reader = getattr(server, "reader", None)
    return stream, protocol, writer, reader if isinstance(reader, asyncio.StreamReader) else None


# The last chunk written and its chunked framing: a fan-out writes the same chunk object (an
# event's frame, or a batch's joined frames) to every stream of the room in turn.
_last_framed: tuple[bytes, bytes] = (b"", b"")


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
        known = _internals()
        found = None if known is None else _connection(send, known)
        if known is None or found is None:
            return None
        _, protocol, writer, reader = found
        body_writer = getattr(getattr(protocol, "connection", None), "_writer", None)
        if not isinstance(body_writer, known.chunked_type):
            return None  # HTTP/1.0 (close-delimited) or a body h11 frames another way
        return cls(writer, reader)

    def write(self, chunk: bytes) -> bool:
        """Queue one chunk; False once the connection is closing."""
        if self.transport.is_closing():
            return False
        if not chunk:
            return True  # an empty chunk would be the chunked body's end
        global _last_framed
        chunk_in, framed = _last_framed
        if chunk_in is not chunk:  # one event's frame goes to every stream of a room: framed once
            framed = b"%x\r\n%b\r\n" % (len(chunk), chunk)
            _last_framed = (chunk, framed)
        self.transport.write(framed)
        self.written += len(chunk)
        return True

    def full(self) -> bool:
        return self.transport.get_write_buffer_size() > self.high

    async def drain(self) -> None:
        """Wait while the client reads slowly (its subscriber queues, then catches up)."""
        with contextlib.suppress(OSError):  # gone: the next write says so and ends the stream
            await self.writer.drain()


# Hypercorn's own headers of an answer (``date``, ``server``, as ``Config.response_headers``
# makes them) as written, for the second they were made in: the date changes once a second,
# and formatting it took about 2% of a message POST's CPU.
_server_lines: tuple[int, object, bytes] = (-1, None, b"")


def _server_headers(config: Any) -> bytes:
    global _server_lines
    second = int(time.time())
    made_in, made_for, lines = _server_lines
    if made_in != second or made_for is not config:
        pairs = config.response_headers("h11")
        lines = b"".join(b"%s: %s\r\n" % pair for pair in pairs)
        _server_lines = (second, config, lines)
    return lines


async def answer_whole(send: ASGISendCallable, status: int, headers: Headers, body: bytes) -> bool:
    """Write a whole answer (``headers`` without Content-Length, which is added) straight to
    the connection under the server's own ``send``; False, with nothing written, when that
    cannot be done (the caller then answers through ``send``). Only before the answer has
    started, once the request's body has been read whole, and for an answer with a body
    (not to HEAD, nor a 1xx, 204 or 304)."""
    known = _internals()
    if known is None or status < 200 or status in (204, 304):
        return False
    found = _connection(send, known)
    if found is None:
        return False
    stream, protocol, writer, _ = found
    connection = getattr(protocol, "connection", None)
    config = getattr(protocol, "config", None)
    requests = getattr(protocol, "keep_alive_requests", None)
    if (
        stream.state is not known.request_state
        or stream.scope["method"] == "HEAD"
        or not isinstance(connection, known.h11.Connection)
        or writer.transport.is_closing()  # gone: Hypercorn's own path ends it quietly
        or not isinstance(requests, int)
        or config is None
        or connection.our_state is not known.h11.SEND_RESPONSE
        or connection.their_state not in known.request_read
    ):
        return False
    # Hypercorn ends a connection after keep_alive_max_requests answers (with Connection: close)
    last = requests >= config.keep_alive_max_requests
    head = connection.send(known.empty_closing if last else known.empty)
    connection.send(known.end)
    # the client's wish, or the last answer (find: ``in`` on bytes costs a TypeError, sse.py)
    closing = head.lower().find(b"connection: close") >= 0
    lines = [b"HTTP/1.1 %d \r\n" % status]
    lines += [b"%s: %s\r\n" % pair for pair in headers]
    lines.append(b"content-length: %d\r\n" % len(body))
    lines.append(_server_headers(config))  # date, server
    if closing:
        lines.append(b"connection: close\r\n")
    lines += (b"\r\n", body)
    # Answered, before the first await: if the task is cancelled in the drain, Hypercorn's
    # end of the app sends no 500 after this answer, only the stream's close.
    stream.state = known.closed_state
    try:  # as Hypercorn writes: a client that reads slowly holds the next request back
        writer.write(b"".join(lines))
        await writer.drain()
    except (ConnectionError, RuntimeError):  # it went away meanwhile (uvloop: RuntimeError)
        pass  # h11 is done all the same; Hypercorn closes the connection
    await stream.send(known.stream_closed(stream_id=stream.stream_id))  # recycle or close
    return True
