"""Serving: Hypercorn with a shutdown trigger that first ends every open stream.

Hypercorn waits for open connections before it exits (hypercorn issue 308), and an SSE
stream never ends by itself; so on SIGTERM or SIGINT the trigger marks the service as
shutting down (``/readyz`` answers 503, new streams get 503) and closes every stream, and
only then lets Hypercorn stop. Clients reconnect and resume with ``Last-Event-ID``.

The transport's limits are set here too (docs/design/transport.md): the header timeout
(Hypercorn's idle timer), TLS with HTTP/2 (Hypercorn's own), TCP keepalive and
TCP_USER_TIMEOUT on the listening socket (accepted connections inherit them), so that a client
whose network vanished is released, and the JSON envelope for requests h11 cannot parse
(``chat.protocol_errors``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import resource
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config
from quart import Quart

from chat import h2_streams, idle_timer, protocol_errors
from chat.api import Services
from chat.app import create_app
from chat.config import Settings

log = logging.getLogger(__name__)

STUCK_MARGIN_S = 2.0


def hypercorn_config(
    settings: Settings,
    host: str,
    port: int,
    *,
    certfile: str | None = None,
    keyfile: str | None = None,
) -> Config:
    """Hypercorn's configuration. With ``certfile`` and ``keyfile`` it serves HTTPS, offering
    HTTP/2 and HTTP/1.1 through ALPN."""
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None  # one log line per request costs more than the request itself
    config.errorlog = logging.getLogger("hypercorn.error")  # through our logging setup
    config.graceful_timeout = settings.shutdown_grace_seconds
    # The kernel's queue of connections not yet accepted (capped by net.core.somaxconn): deep
    # enough for a reconnect storm's second of 10,000 clients while some passes of the loop
    # take hundreds of milliseconds (bench/storm.py: 2,048 overflowed about 1,000 times a
    # storm, each a client waiting a second or more for TCP's retry; 4,096 never)
    config.backlog = 4096
    # The header timeout. Hypercorn's idle timer starts when a connection opens and after
    # each response, and stops once a request's headers are complete (h11: the Request event;
    # h2: RequestReceived), so a connection that has not sent whole headers within it is
    # closed, and so is a kept-alive connection idle for as long. read_timeout stays unset:
    # it would cut idle SSE streams.
    config.keep_alive_timeout = settings.header_timeout_seconds
    # A TLS handshake happens before the idle timer starts: it gets the same time.
    config.ssl_handshake_timeout = settings.header_timeout_seconds
    if (certfile is None) != (keyfile is None):
        raise ValueError("certfile and keyfile go together")
    if certfile is not None:
        config.certfile = certfile
        config.keyfile = keyfile
        config.alpn_protocols = ["h2", "http/1.1"]
    return config


async def serve(app: Quart, config: Config, stop: asyncio.Event) -> None:
    """Serve until ``stop`` is set (SIGTERM/SIGINT set it when run from the command line)."""
    svc: Services = app.extensions["chat"]
    protocol_errors.install(lambda status: svc.metrics.answered("unparsable", "", status))
    idle_timer.install()
    h2_streams.install()

    async def trigger() -> None:
        await stop.wait()
        log.info("shutting down: closing %d open streams", len(svc.registry.subscribers))
        svc.begin_shutdown()

    await hypercorn_serve(app, config, shutdown_trigger=trigger)


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """The event loop ``CHAT_LOOP`` names; ``auto``: uvloop if it can be imported."""
    if name == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop  # noqa: F401  (chat.accept builds on it)
    except Exception as error:  # not installed (ImportError), or installed and broken
        if name == "uvloop":  # the settings refused it already, unless they were bypassed
            raise
        if not isinstance(error, ImportError):
            log.warning("uvloop failed to import (%r): serving on asyncio's loop", error)
        return asyncio.new_event_loop
    from chat import accept  # uvloop's loop, accepting in bursts as asyncio's does

    return accept.new_event_loop


async def _exit_if_stuck(stop: asyncio.Event, grace_s: float) -> None:
    """The last resort of a shutdown. Hypercorn cannot close a connection whose client stopped
    reading while data is queued for it: its close waits for the socket, ignoring the
    cancellation, so the process would live as long as that client. Once the grace period
    and a margin have passed, a thread (the event loop may be the one stuck) ends the process.
    Every answered write was committed before its answer, so nothing acknowledged is lost."""
    await stop.wait()
    timer = threading.Timer(grace_s + STUCK_MARGIN_S, _force_exit)
    timer.daemon = True
    timer.start()


def _force_exit() -> None:
    log.warning("shutdown is stuck on connections that do not close; exiting now")
    logging.shutdown()
    os._exit(0)


# The kernel's limits on the keepalive options (tcp(7)).
MAX_KEEPIDLE_S = 32767
MAX_KEEPINTVL_S = 32767
KEEPALIVE_PROBES = 3


@dataclass(frozen=True, slots=True)
class DeadPeerPlan:
    """TCP options that release a peer whose network vanished within ``bound_s`` seconds.

    - TCP_USER_TIMEOUT: data the peer has not acknowledged for this long ends the connection
      (the case of a stream with events or heartbeats in flight);
    - keepalive (SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT): a connection with
      nothing in flight is probed after ``idle_s`` of silence, every ``interval_s``; with
      TCP_USER_TIMEOUT set, Linux ends it at the first probe at which the peer has been
      silent for the user timeout, and ``idle_s + interval_s * probes`` equals it.

    Keepalive counts whole seconds: the bound is ``dead_peer_seconds`` rounded down, and at
    least 2 s (one idle second, one probe)."""

    idle_s: int
    interval_s: int
    probes: int
    user_timeout_ms: int

    @property
    def bound_s(self) -> float:
        return max(self.idle_s + self.interval_s * self.probes, self.user_timeout_ms / 1000)


def dead_peer_plan(dead_peer_seconds: float) -> DeadPeerPlan | None:
    """The options for ``CHAT_DEAD_PEER_SECONDS``; None for 0 (the kernel's defaults)."""
    if dead_peer_seconds <= 0:
        return None
    whole = max(2, int(dead_peer_seconds))
    probes = min(KEEPALIVE_PROBES, whole - 1)
    interval = min(MAX_KEEPINTVL_S, max(1, whole // (2 * probes)))
    idle = min(MAX_KEEPIDLE_S, whole - probes * interval)
    user_timeout_ms = int(min(dead_peer_seconds, idle + probes * interval) * 1000)
    return DeadPeerPlan(idle, interval, probes, max(1, user_timeout_ms))


def set_dead_peer_options(sock: socket.socket, plan: DeadPeerPlan | None) -> None:
    """Set the plan's options on a TCP socket (a listening one passes them to every connection
    it accepts, on Linux). Options the platform lacks are left out."""
    if plan is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (
        ("TCP_KEEPIDLE", plan.idle_s),
        ("TCP_KEEPINTVL", plan.interval_s),
        ("TCP_KEEPCNT", plan.probes),
        ("TCP_USER_TIMEOUT", plan.user_timeout_ms),
    ):
        option = getattr(socket, name, None)
        if option is not None:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)


def listening_socket(
    host: str, port: int, *, dead_peer_seconds: float, reuse_port: bool = False
) -> socket.socket:
    """The socket the service listens on, bound (Hypercorn calls listen on it): with the dead
    peer options, which every accepted connection inherits, and, for one of several workers,
    SO_REUSEPORT (every worker binds its own on the same port, and the kernel spreads the
    connections over them). An IPv6 address (``::``, ``::1``, with or without brackets) gets
    an IPv6 socket, anything else (an IPv4 address, a host name) an IPv4 one, as Hypercorn's
    own binding does."""
    host = host.removeprefix("[").removesuffix("]")
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        set_dead_peer_options(sock, dead_peer_plan(dead_peer_seconds))
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def connection_errors_quietly(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
    """The event loop's exception handler: a connection that ends with a socket error is not
    an error of the service. Hypercorn's connection task (asyncio's ``client_connected_cb``)
    lets an ``OSError`` other than a reset escape while it closes the connection: the
    ``TimeoutError`` (ETIMEDOUT) of a dead peer that keepalive or TCP_USER_TIMEOUT gave up
    on is one. It is logged at DEBUG; everything else goes to asyncio's default handler."""
    error = context.get("exception")
    if isinstance(error, OSError) and "client_connected_cb" in str(context.get("message", "")):
        log.debug("a connection ended with %r", error)
        return
    loop.default_exception_handler(context)


GC_THRESHOLDS = (20_000, 50, 100)


def tune_gc() -> None:
    """The cyclic garbage collector, tuned for a server: what was imported and built at start
    is frozen (never scanned again), and collections run less often. A batch of 500 events
    allocates thousands of short-lived containers, and with the default thresholds the
    collector took a large share of the batch benchmark's time (docs/design/performance.md).
    Nothing here relies on cycles."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def raise_open_files_limit() -> int:
    """Raise this process's soft limit of open files to its hard limit, and return it: every
    open stream holds a socket, and the soft limit (often 1,024) would refuse connections long
    before memory or CPU run out. The hard limit is the operator's (``ulimit -Hn``,
    systemd's ``LimitNOFILE``, Docker's ``--ulimit nofile``)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == resource.RLIM_INFINITY or soft >= hard:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as error:  # a sandbox that refuses: keep going as before
        log.warning("could not raise the open files limit from %d to %d: %s", soft, hard, error)
        return soft
    log.info("open files limit raised from %d to %d", soft, hard)
    return hard


def run(
    settings: Settings,
    host: str,
    port: int,
    *,
    reuse_port: bool = False,
    certfile: str | None = None,
    keyfile: str | None = None,
) -> None:
    """Serve one process. ``reuse_port``: one of several workers sharing the port;
    ``certfile`` and ``keyfile`` (PEM): serve HTTPS, with HTTP/2."""
    raise_open_files_limit()
    app = create_app(settings)
    config = hypercorn_config(settings, host, port, certfile=certfile, keyfile=keyfile)
    tune_gc()
    sock = listening_socket(
        host, port, dead_peer_seconds=settings.dead_peer_seconds, reuse_port=reuse_port
    )
    config.bind = [f"fd://{sock.detach()}"]  # Hypercorn owns (and closes) it from here on

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(connection_errors_quietly)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        watchdog = asyncio.create_task(_exit_if_stuck(stop, settings.shutdown_grace_seconds))
        try:
            await serve(app, config, stop)
        finally:
            watchdog.cancel()

    with asyncio.Runner(loop_factory=loop_factory(settings.loop)) as runner:
        runner.run(main())
