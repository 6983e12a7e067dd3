"""A connection its client has closed is closed here at once, not when the header timeout ends.

Hypercorn's ``TCPServer`` reads a connection until the client's end of the stream, then
leaves its group of tasks, which waits for every task in it, the idle timer included (the
header timeout, ``CHAT_HEADER_TIMEOUT_SECONDS``). So a connection the client closed while it
was idle (before its first request, or after an answer) stayed open on this side, in CLOSE-WAIT,
holding a file and its objects for up to that timeout (Hypercorn 0.16 to 0.18,
``hypercorn/asyncio/tcp_server.py``). A client that opens a connection per request and closes
it after the answer, a few thousand times a second, would hold every file the process may
open. ``install()`` wraps ``TCPServer._read_data`` so that once the client's end has been read
the idle timer stops: the group then ends as soon as the requests in flight have (Hypercorn has
told them of the disconnect), and the connection is closed.

**This relies on Hypercorn's private ``TCPServer._read_data`` and ``TCPServer.idle_task``**
(docs/design/private-access.md). If either is renamed, ``install()`` logs a warning and changes
nothing (such connections wait for the timeout again), and tests/test_serve_closed_connections.py
fails: it closes connections in each idle state and requires them gone within two seconds.
A connection closed half way through its headers was closed at once before (h11 refuses it).
Not covered: a client that half-closes right after its request gets its answer, and the
connection then may still wait for the timer, which the answer's end restarts (as before).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

_WRAPPED = "_chat_stops_idle_timer"


def install() -> bool:
    """Wrap ``TCPServer._read_data`` once per process; False (and a warning) if it has moved."""
    moved = "Hypercorn's TCPServer._read_data has moved: closed connections linger"
    try:
        from hypercorn.asyncio.tcp_server import TCPServer
    except ImportError:
        log.warning(moved)
        return False
    read: Callable[[Any], Awaitable[None]] | None = getattr(TCPServer, "_read_data", None)
    if read is None:
        log.warning(moved)
        return False
    if getattr(read, _WRAPPED, False):
        return True

    @functools.wraps(read)
    async def _read_data(self: Any) -> None:
        await read(self)  # returns at the client's end of stream, or a read error
        # Only the timer: a request in flight may still be answered to a client that
        # half-closed after sending it (closing the writer here would cut that answer).
        idle = getattr(self, "idle_task", None)
        if idle is not None:
            await idle.stop()

    setattr(_read_data, _WRAPPED, True)
    TCPServer._read_data = _read_data  # type: ignore[method-assign]
    return True
