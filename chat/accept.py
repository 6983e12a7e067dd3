"""uvloop's event loop, accepting every waiting connection when its listening socket is
readable, as asyncio's own loop does.

libuv, which uvloop bundles, accepts one connection per pass of its loop since version 1.45
("unix: don't accept() connections in a loop", libuv pull request 3696). A loop busy with
thousands of streams makes passes of milliseconds (some of hundreds), so it accepted a few
hundred connections a second: in a reconnect storm (10,000 clients within a second,
bench/storm.py) the kernel's accept queue stayed full for seconds, the connections beyond it
were dropped and their clients waited for TCP to send their SYN again (after 1, 3, 7 s).
Everyone was caught up after 9.0-9.6 s instead of 4.5 s (docs/design/transport.md,
"Accepting connections").

``BurstLoop`` is uvloop's loop with a server that also watches a duplicate of its listening
socket: each time it is readable, every waiting connection (up to the server's backlog) is
accepted and handed to the server's protocol factory (``connect_accepted_socket``, uvloop's
public way to serve a socket accepted elsewhere), as libuv's own accept would have. libuv's
watcher stays: whichever runs first accepts, and the other finds the queue empty. Closing the
server closes the duplicate too, so the port is released, and the connections accepted but not
yet handed over, as the kernel closes those still queued.

Imported only where uvloop imports (``chat.serve.loop_factory``).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from typing import Any

import uvloop

log = logging.getLogger(__name__)

# Out of files or memory: asyncio's loop pauses its accepting for as long (``base_events``).
ACCEPT_RETRY_DELAY_S = 1.0
_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# A connection's own network error, which Linux's accept() passes on: accept(2) says to treat
# these like EAGAIN and try again.
_ITS_OWN = frozenset(
    getattr(errno, name)
    for name in (
        "ENETDOWN",
        "EPROTO",
        "ENOPROTOOPT",
        "EHOSTDOWN",
        "ENONET",
        "EHOSTUNREACH",
        "EOPNOTSUPP",
        "ENETUNREACH",
    )
    if hasattr(errno, name)
)


class BurstLoop(uvloop.Loop):
    """uvloop's loop; a server it creates on a socket given to it accepts in bursts."""

    async def create_server(  # type: ignore[override]
        self, protocol_factory: Any, *args: Any, **kwargs: Any
    ) -> asyncio.AbstractServer:
        server: asyncio.AbstractServer = await super().create_server(
            protocol_factory, *args, **kwargs
        )
        sock = kwargs.get("sock")
        if not isinstance(sock, socket.socket):
            return server  # bound by host and port: not how the service listens
        return BurstServer(self, server, sock, protocol_factory, kwargs)


class BurstServer(asyncio.AbstractServer):
    """uvloop's server, and a reader on a duplicate of its socket that accepts in bursts."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        server: asyncio.AbstractServer,
        sock: socket.socket,
        protocol_factory: Any,
        options: dict[str, Any],
    ) -> None:
        self._loop, self._server, self._factory = loop, server, protocol_factory
        self._burst = max(1, int(options.get("backlog", 100)))
        self._tls: dict[str, Any] = {}
        if options.get("ssl") is not None:
            self._tls = {
                name: options[name]
                for name in ("ssl", "ssl_handshake_timeout", "ssl_shutdown_timeout")
                if options.get(name) is not None
            }
        self._tasks: set[asyncio.Task[None]] = set()
        # Accepted and not yet handed to a transport: closed with the server, as the kernel
        # closes what still waits in the queue of a listening socket that closes.
        self._waiting: dict[asyncio.Task[None], socket.socket] = {}
        self._sock: socket.socket | None = None
        self._watching = False
        try:
            self._sock = sock.dup()
            self._sock.setblocking(False)
            if options.get("start_serving", True):
                self._watch()
        except BaseException:
            self.close()
            raise

    def _watch(self) -> None:
        if self._sock is not None and not self._watching:
            self._loop.add_reader(self._sock.fileno(), self._accept)
            self._watching = True

    def _unwatch(self) -> None:
        if self._sock is not None and self._watching:
            self._loop.remove_reader(self._sock.fileno())
        self._watching = False

    def _accept(self) -> None:
        sock = self._sock
        if sock is None:
            return
        for _ in range(self._burst):
            try:
                conn, _address = sock.accept()
            except (BlockingIOError, InterruptedError):
                return  # nothing more waits (or libuv's watcher took it)
            except ConnectionAbortedError:
                continue  # the client gave up while it waited
            except OSError as error:
                if error.errno in _ITS_OWN:
                    continue
                if error.errno not in _RESOURCES:
                    raise
                log.warning("cannot accept connections for %.0f s: %s", ACCEPT_RETRY_DELAY_S, error)
                self._unwatch()
                self._loop.call_later(ACCEPT_RETRY_DELAY_S, self._watch)
                return
            task = self._loop.create_task(self._serve(conn))
            self._tasks.add(task)
            self._waiting[task] = conn
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        conn = self._waiting.pop(task, None)
        if conn is not None:  # cancelled before it ran: nothing else owns the socket
            conn.close()

    async def _serve(self, conn: socket.socket) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._waiting.pop(task, None)  # from here the transport owns it, or this closes it
        try:
            await self._loop.connect_accepted_socket(self._factory, conn, **self._tls)
        except OSError as error:  # gone during a TLS handshake (ssl.SSLError), or too slow
            log.debug("an accepted connection ended before it was served: %r", error)
            conn.close()  # safe: a transport that took the socket detached it or holds a ref
        except Exception as error:
            conn.close()
            self._loop.call_exception_handler(
                {"message": "serving an accepted connection failed", "exception": error}
            )

    def close(self) -> None:
        self._unwatch()
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        for task in list(self._waiting):
            task.cancel()  # its socket is closed when it is done
        self._server.close()

    async def wait_closed(self) -> None:
        await self._server.wait_closed()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._server.is_serving()

    async def start_serving(self) -> None:
        await self._server.start_serving()
        self._watch()

    async def serve_forever(self) -> None:
        self._watch()
        try:
            await self._server.serve_forever()
        except asyncio.CancelledError:
            self.close()  # uvloop's server, cancelled, closes only itself
            raise

    @property
    def sockets(self) -> Any:
        return getattr(self._server, "sockets", ())


def new_event_loop() -> asyncio.AbstractEventLoop:
    return BurstLoop()
