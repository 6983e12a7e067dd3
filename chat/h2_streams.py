"""Hypercorn's HTTP/2 send buffers, released when the client resets their stream or the
connection closes, and holding a slow reader back; HTTP/2 connections never retired.

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

Two more mends keep a stream's promises over HTTP/2 (API.md, Streams):

- **A slow reader is held back.** ``StreamBuffer.push`` waits while the buffer holds 32 KiB,
  until ``pop`` has taken it below 16 KiB; but Hypercorn's ``pop`` woke the writer whenever
  the piece *it took* was under 16 KiB, and a stream whose client stopped reading (its
  flow-control window spent) is popped for nothing after every push. The writer was never
  held back: everything sent to the stream piled up in the buffer (a replay, every live
  event), so the service never saw the stream fall behind and the process's memory grew
  with what was posted. ``pop`` now wakes the writer when what is *left* is under 16 KiB: a
  stalled stream's send waits, its subscriber falls behind and is caught up from the store
  once its client reads again, as over HTTP/1.1.
- **A connection is never retired after 1,000 requests.** Hypercorn ends an HTTP/2
  connection after ``keep_alive_max_requests`` requests by closing h2's side of it at once:
  a GOAWAY, then nothing more is sent, so the connection's open event streams went silent
  (no event, no heartbeat, no end) and the request that crossed the limit, committed, was
  never answered. A browser sends a page's POSTs and its stream over one connection. Its
  request count now stays at 0 (HTTP/1.1's keeps Hypercorn's limit, with ``Connection:
  close``).

**This relies on Hypercorn's private ``H2Protocol.handle``'s ``Closed`` event,
``H2Protocol._handle_events``, ``H2Protocol.stream_buffers``, ``H2Protocol.keep_alive_requests``,
``StreamBuffer.close`` and ``StreamBuffer.pop`` with its ``buffer``, ``_paused`` and
``_is_empty``** (docs/design/private-access.md). If they have moved, ``install()`` logs a
warning and changes nothing.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from h2.events import DataReceived, RequestReceived, StreamReset

log = logging.getLogger(__name__)

_MARK = "_chat_closes_buffers"
_MOVED = (
    "Hypercorn's H2Protocol has moved: over HTTP/2 send buffers are not released, slow readers "
    "are not held back, and connections are retired after keep_alive_max_requests"
)


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


async def _pop(self: Any, max_length: int) -> bytes:
    """``StreamBuffer.pop``, the writer woken by what is left under the low-water mark, not
    by a small piece taken (a window of 0 takes nothing)."""
    length = min(len(self.buffer), max_length)
    data = bytes(self.buffer[:length])
    del self.buffer[:length]
    if len(self.buffer) < _LOW_WATER:
        await self._paused.set()
    if not self.buffer:
        await self._is_empty.set()
    return data


_LOW_WATER = 2**14  # Hypercorn 0.18's BUFFER_LOW_WATER, read again by install()


def _buffer_has_its_parts(stream_buffer: type[Any]) -> bool:
    """Whether a ``StreamBuffer`` still has what ``_pop`` uses."""
    try:
        from hypercorn.asyncio.worker_context import EventWrapper
    except ImportError:
        return False
    probe = stream_buffer(EventWrapper)
    return all(hasattr(probe, name) for name in ("buffer", "_paused", "_is_empty"))


def install() -> bool:
    """Wrap Hypercorn's ``H2Protocol.handle`` and ``H2Protocol._handle_events`` on the class,
    replace ``StreamBuffer.pop`` and make ``H2Protocol.keep_alive_requests`` read 0, once per
    process; False (and a warning, with nothing changed) if what it relies on has moved."""
    try:
        from hypercorn.events import Closed
        from hypercorn.protocol import h2 as h2_module
        from hypercorn.protocol.h2 import H2Protocol, StreamBuffer
    except ImportError:
        log.warning(_MOVED)
        return False
    handle: Callable[[Any, Any], Awaitable[None]] | None = getattr(H2Protocol, "handle", None)
    handle_events: Callable[[Any, list[Any]], Awaitable[None]] | None = getattr(
        H2Protocol, "_handle_events", None
    )
    if (
        handle is None
        or handle_events is None
        or not hasattr(StreamBuffer, "close")
        or not hasattr(StreamBuffer, "pop")
        or not _buffer_has_its_parts(StreamBuffer)
    ):
        log.warning(_MOVED)
        return False
    if getattr(handle, _MARK, False):
        return True
    global _LOW_WATER
    _LOW_WATER = int(getattr(h2_module, "BUFFER_LOW_WATER", _LOW_WATER))

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
    StreamBuffer.pop = _pop  # type: ignore[method-assign]
    # Read as 0 whatever is counted, so never past keep_alive_max_requests: no retirement.
    H2Protocol.keep_alive_requests = property(lambda self: 0, lambda self, value: None)  # type: ignore[assignment]
    return True
