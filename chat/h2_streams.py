"""Hypercorn's HTTP/2 send buffers, released when the client resets their stream or the
connection closes.

Over HTTP/2 an answer's body goes through a buffer per stream (``StreamBuffer`` in
``hypercorn.protocol.h2``), which the connection's sending task empties as the client's
flow-control window allows: the application's ``send`` of a body waits in
``StreamBuffer.push`` while the buffer holds 32 KiB, and its end of the body waits in
``StreamBuffer.drain`` until the buffer is empty. Hypercorn (0.18) releases these waits only
from the sending task, which two ways of ending a stream never reach:

- **the connection closes** (the client closes it, or it breaks): ``H2Protocol.handle(Closed)``
  marks the protocol closed and the sending task leaves its loop, but the buffers are left
  as they are. An answer written after the close (a POST answered once its commit or its
  rate-limit pause is over), or whose data the client had not taken, waits for ever;
- **the client resets the stream** (RST_STREAM) while its window is spent (a page or a
  stream's backlog larger than the window, which the client stopped reading): Hypercorn
  wakes the sending task, which counts on h2 raising for a closed stream, but h2 keeps a
  reset stream (closed, with its window of 0) until its next sweep, so the stream is blocked
  again and its buffer never released.

Either way the request's task, and with it the connection's group of tasks (Hypercorn leaves
it only once every task in it has ended) and everything the connection holds, lived until
shutdown, where Hypercorn cancelled them after the grace period.

``install()`` closes the buffers of those streams first: every buffer of a connection that
closes, and the buffer of each stream a client resets. A closed buffer wakes whoever waits on
it; what the application sends after that is dropped, as Hypercorn drops what is sent on a
stream it knows is closed; and the sending task, if it still runs, finds the buffer complete
and removes it. An answer that ends normally is not touched.

A third way ends the whole connection: a stream answered before its request's body was
all read (a 413 for a body over the limit) is gone from Hypercorn's streams, and the body's
next DATA frame raised a ``KeyError`` in ``H2Protocol._handle_events`` that closed the
connection with every other stream on it (a page's event stream among them, in a browser
that sends everything over one connection). Such data is acknowledged and dropped.

**This relies on Hypercorn's private ``H2Protocol.handle``'s ``Closed`` event,
``H2Protocol._handle_events``, ``H2Protocol.stream_buffers`` and ``StreamBuffer.close``**
(docs/design/private-access.md). If they have moved, ``install()`` logs a warning and
changes nothing.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from h2.events import DataReceived, RequestReceived, StreamReset

log = logging.getLogger(__name__)

_MARK = "_chat_closes_buffers"


async def _close_buffers(protocol: Any, stream_ids: Iterable[int] | None = None) -> None:
    """Close the send buffers of ``stream_ids``' streams (None: of every stream)."""
    buffers = getattr(protocol, "stream_buffers", None)
    if not isinstance(buffers, dict):
        return
    for stream_id in list(buffers) if stream_ids is None else stream_ids:
        buffer = buffers.get(stream_id)
        if buffer is not None:
            await buffer.close()


def _without_late_data(protocol: Any, events: list[Any]) -> list[Any]:
    """The events, less the body data of streams already answered and gone: acknowledged
    (the connection's window must not shrink for good) and dropped."""
    streams = getattr(protocol, "streams", None)
    if not isinstance(streams, dict):
        return events
    kept: list[Any] = []
    opened: set[int] = set()  # a request and its first data come in one batch of events
    for event in events:
        if isinstance(event, RequestReceived):
            opened.add(event.stream_id)
        elif (
            isinstance(event, DataReceived)
            and event.stream_id not in streams
            and event.stream_id not in opened
        ):
            protocol.connection.acknowledge_received_data(
                event.flow_controlled_length, event.stream_id
            )
            continue
        kept.append(event)
    return kept


def install() -> bool:
    """Wrap Hypercorn's ``H2Protocol.handle`` and ``H2Protocol._handle_events`` on the class,
    once per process; False (and a warning) if what it relies on has moved."""
    try:
        from hypercorn.events import Closed
        from hypercorn.protocol.h2 import H2Protocol, StreamBuffer
    except ImportError:
        log.warning("Hypercorn's H2Protocol has moved: HTTP/2 send buffers are not released")
        return False
    handle: Callable[[Any, Any], Awaitable[None]] | None = getattr(H2Protocol, "handle", None)
    handle_events: Callable[[Any, list[Any]], Awaitable[None]] | None = getattr(
        H2Protocol, "_handle_events", None
    )
    if handle is None or handle_events is None or not hasattr(StreamBuffer, "close"):
        log.warning("Hypercorn's H2Protocol has moved: HTTP/2 send buffers are not released")
        return False
    if getattr(handle, _MARK, False):
        return True

    # The buffers are closed before Hypercorn closes the streams: that puts a disconnect in
    # each application's queue, which waits while the queue is full, and an application
    # blocked on its buffer does not read its queue.
    @functools.wraps(handle)
    async def _handle(self: Any, event: Any) -> None:
        if isinstance(event, Closed):  # the connection is gone: nothing more can be sent
            await _close_buffers(self)
        await handle(self, event)

    @functools.wraps(handle_events)
    async def _handle_events(self: Any, events: list[Any]) -> None:
        reset = [e.stream_id for e in events if isinstance(e, StreamReset)]
        if reset:
            await _close_buffers(self, reset)
        await handle_events(self, _without_late_data(self, events))
        if reset:  # and a stream that opened in this same batch, whose buffer is new
            await _close_buffers(self, reset)

    setattr(_handle, _MARK, True)
    H2Protocol.handle = _handle  # type: ignore[method-assign]
    H2Protocol._handle_events = _handle_events  # type: ignore[method-assign]
    return True
