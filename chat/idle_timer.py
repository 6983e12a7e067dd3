"""Hypercorn's idle timer on each connection (the header timeout, ``CHAT_HEADER_TIMEOUT_SECONDS``)
as one timer handle, which also lets a connection its client closed be closed at once.

Hypercorn's ``TCPServer`` runs the timer as a task (``idle_task``, an ``AsyncioSingleTask``
running ``_idle_timeout``, which waits for the worker's end with ``asyncio.wait_for``: a second
task). It stops the timer when a request's headers are complete and starts it again after the
answer, so every request cancelled two tasks and created two, behind a lock: about an eleventh
of the instructions of a whole publish in the rooms scenario (a POST and ten deliveries;
docs/design/performance.md). ``IdleTimer`` keeps the contract with a ``call_later`` handle:
when it runs out the connection is closed as Hypercorn's own timer closes it
(``TCPServer._initiate_server_close``, in the connection's group of tasks), and when the worker
is told to end (Hypercorn's ``context.terminated``, at shutdown) every idle connection of that
worker is closed at once, as before.

Closed connections: Hypercorn's ``TCPServer`` reads a connection until the client's end of
the stream, then leaves its group of tasks, which waits for every task in it. With Hypercorn's
timer, a task, a connection the client closed while it was idle (before its first request, or
after an answer) stayed open on this side, in CLOSE-WAIT, holding a file until the timer ran
out (Hypercorn 0.16 to 0.18): a client that opens a connection per request and closes it after
the answer, a few thousand times a second, would hold every file the process may open. A timer
handle is no task, so such a connection is closed as soon as its requests have ended.

**This relies on Hypercorn's private ``TCPServer.idle_task``, ``_initiate_server_close``,
``context``, ``config`` and ``loop``** (docs/design/private-access.md). If one has moved,
``install()`` logs a warning and leaves Hypercorn's own timer (and closed connections wait for
it again), and tests fail: tests/test_serve_closed_connections.py (no task per idle
connection; closed connections gone within two seconds; idle ones closed at shutdown at once)
and tests/test_serve_header_timeout.py (the timeout itself).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

_IDLE = "_chat_idle_timers"  # on a worker's context: its running timers, closed at its end
_watchers: set[asyncio.Task[None]] = set()  # one per worker context, waiting for its end


class IdleTimer:
    """One connection's idle timer, in place of Hypercorn's ``AsyncioSingleTask``: the same
    two calls, ``restart(task_group, action)`` and ``stop()``."""

    __slots__ = ("__weakref__", "group", "handle", "running", "server")

    def __init__(self, server: Any) -> None:
        self.server = server
        self.handle: asyncio.TimerHandle | None = None
        self.group: Any = None  # the connection's group of tasks, where the close runs
        self.running = _running(server.context)  # its worker's running timers

    async def restart(self, task_group: Any, action: Callable[[], Awaitable[None]]) -> None:
        """Start the timer again (``action``, Hypercorn's timer body, is not needed: what it
        ends with, the connection's close, is done by ``expire``)."""
        self.cancel()
        self.group = task_group
        if self.server.context.terminated.is_set():  # the worker is ending: close now
            self.expire()
            return
        self.handle = self.server.loop.call_later(
            self.server.config.keep_alive_timeout, self.expire
        )
        self.running.add(self)

    async def stop(self) -> None:
        self.cancel()

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
            self.running.discard(self)

    def expire(self) -> None:
        """The connection sat idle for the timeout, or the worker is ending: close it."""
        self.cancel()
        close = self.server._initiate_server_close()
        try:
            self.group.spawn(lambda: close)
        except RuntimeError:  # its group of tasks has ended: the connection is closed already
            close.close()


def _running(context: Any) -> weakref.WeakSet[IdleTimer]:
    """The worker's running timers; the first call also starts the watcher that closes their
    connections when the worker is told to end."""
    timers: weakref.WeakSet[IdleTimer] | None = getattr(context, _IDLE, None)
    if timers is None:
        timers = weakref.WeakSet()
        setattr(context, _IDLE, timers)

        async def watch() -> None:
            await context.terminated.wait()
            for timer in list(timers):
                timer.expire()

        task = asyncio.get_running_loop().create_task(watch())
        _watchers.add(task)
        task.add_done_callback(_watchers.discard)
    return timers


def install() -> bool:
    """Put an ``IdleTimer`` in every new ``TCPServer`` of Hypercorn's, once per process;
    False (and a warning) if what it relies on has moved."""
    try:
        from hypercorn.asyncio.tcp_server import TCPServer
    except ImportError:
        log.warning("Hypercorn's TCPServer has moved: its own idle timer stays")
        return False
    init: Callable[..., None] = TCPServer.__init__
    if getattr(init, _IDLE, False):
        return True
    if not hasattr(TCPServer, "_initiate_server_close"):
        log.warning("Hypercorn's TCPServer has moved: its own idle timer stays")
        return False

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        if all(hasattr(self, name) for name in ("idle_task", "context", "config", "loop")):
            self.idle_task = IdleTimer(self)

    setattr(__init__, _IDLE, True)
    TCPServer.__init__ = __init__  # type: ignore[method-assign]
    return True
