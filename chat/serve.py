"""Serving: Hypercorn with a shutdown trigger that first ends every open stream.

Hypercorn waits for open connections before it exits (hypercorn issue 308), and an SSE
stream never ends by itself; so on SIGTERM or SIGINT the trigger marks the service as
shutting down (``/readyz`` answers 503, new streams get 503) and closes every stream, and
only then lets Hypercorn stop. Clients reconnect and resume with ``Last-Event-ID``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable
from typing import cast

from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config
from quart import Quart

from chat.api import Services
from chat.app import create_app
from chat.config import Settings

log = logging.getLogger(__name__)

STUCK_MARGIN_S = 2.0


def hypercorn_config(settings: Settings, host: str, port: int) -> Config:
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None  # one log line per request costs more than the request itself
    config.errorlog = logging.getLogger("hypercorn.error")  # through our logging setup
    config.graceful_timeout = settings.shutdown_grace_seconds
    config.backlog = 2048
    # read_timeout stays unset: it would cut idle SSE streams.
    return config


async def serve(app: Quart, config: Config, stop: asyncio.Event) -> None:
    """Serve until ``stop`` is set (SIGTERM/SIGINT set it when run from the command line)."""
    svc: Services = app.extensions["chat"]

    async def trigger() -> None:
        await stop.wait()
        log.info("shutting down: closing %d open streams", len(svc.registry.subscribers))
        svc.begin_shutdown()

    await hypercorn_serve(app, config, shutdown_trigger=trigger)


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if name == "uvloop":
        import uvloop

        return cast(Callable[[], asyncio.AbstractEventLoop], uvloop.new_event_loop)
    return asyncio.new_event_loop


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


def _reuse_port_socket(host: str, port: int) -> socket.socket:
    """A socket bound with SO_REUSEPORT: every worker binds its own on the same port, and the
    kernel spreads the connections over them."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


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


def run(settings: Settings, host: str, port: int, *, reuse_port: bool = False) -> None:
    """Serve one process. ``reuse_port``: one of several workers sharing the port."""
    app = create_app(settings)
    config = hypercorn_config(settings, host, port)
    tune_gc()
    if reuse_port:  # Hypercorn owns (and closes) the descriptor from here on
        config.bind = [f"fd://{_reuse_port_socket(host, port).detach()}"]

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        watchdog = asyncio.create_task(_exit_if_stuck(stop, settings.shutdown_grace_seconds))
        try:
            await serve(app, config, stop)
        finally:
            watchdog.cancel()

    with asyncio.Runner(loop_factory=loop_factory(settings.loop)) as runner:
        runner.run(main())
