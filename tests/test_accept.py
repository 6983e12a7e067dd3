"""The loop ``serve`` runs on by default (uvloop's, chat/accept.py) serves every connection
waiting on its listening socket within a few passes, as asyncio's loop does, not one a pass
as libuv does since 1.45. With thousands of streams a pass takes milliseconds, and one
connection a pass overflowed the kernel's queue in a reconnect storm: clients waited for TCP
to send their SYN again, 1 to 7 s (bench/storm.py).

Each test runs the loop itself, a bounded number of passes, with the clients' connections
queued by the kernel while the loop stood still; every client then reads what the server
wrote to it. Closing the server releases the port."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chat import serve
from tests.conftest import need
from tests.test_serve_tls import Cert, make_cert

GREETING = b"hello\n"
PASSES = 10  # libuv alone accepts about two connections in these (a sleep(0) is two passes)
TIMEOUT_S = 10.0


def uvloop_imports() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    need(uvloop_imports(), "uvloop is not installed (pip install uvloop)")
    loop = serve.loop_factory("uvloop")()
    try:
        yield loop
    finally:
        loop.close()


async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(GREETING)
    writer.close()
    await writer.wait_closed()


@contextlib.contextmanager
def server_on(
    loop: asyncio.AbstractEventLoop, tls: ssl.SSLContext | None = None
) -> Iterator[tuple[int, Callable[[], None]]]:
    """A server greeting each connection, on a socket bound here as ``serve`` binds it:
    (its port, a function that closes it)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = loop.run_until_complete(
        asyncio.start_server(greet, sock=sock, backlog=1024, ssl=tls, ssl_handshake_timeout=5)
        if tls is not None
        else asyncio.start_server(greet, sock=sock, backlog=1024)
    )

    def close() -> None:
        server.close()
        loop.run_until_complete(asyncio.wait_for(server.wait_closed(), TIMEOUT_S))

    try:
        yield port, close
    finally:
        close()


def passes(loop: asyncio.AbstractEventLoop, count: int) -> None:
    for _ in range(count):
        loop.run_until_complete(asyncio.sleep(0))


def test_every_waiting_connection_is_served_within_a_few_passes(
    loop: asyncio.AbstractEventLoop,
) -> None:
    with server_on(loop) as (port, _close):
        clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(300)]
        try:
            passes(loop, PASSES)
            greeted = 0
            for client in clients:
                client.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    greeted += client.recv(64) == GREETING
            assert greeted == len(clients)
        finally:
            for client in clients:
                client.close()


def test_closing_the_server_releases_its_port(loop: asyncio.AbstractEventLoop) -> None:
    with server_on(loop) as (port, close):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            passes(loop, PASSES)
            assert client.recv(64) == GREETING
        close()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_tls_connections_waiting_together_are_served(
    loop: asyncio.AbstractEventLoop, tmp_path: Path
) -> None:
    cert: Cert = make_cert(tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert.certfile, cert.keyfile)
    with server_on(loop, tls) as (port, _close):
        raw = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(20)]
        heard: list[bytes] = []
        context = cert.client_context()

        def handshake_and_read(sock: socket.socket) -> None:
            with context.wrap_socket(sock, server_hostname="127.0.0.1") as client:
                heard.append(client.recv(64))

        threads = [threading.Thread(target=handshake_and_read, args=(sock,)) for sock in raw]
        for thread in threads:
            thread.start()

        async def until_read() -> None:
            while len(heard) < len(raw) and any(thread.is_alive() for thread in threads):
                await asyncio.sleep(0.01)

        loop.run_until_complete(asyncio.wait_for(until_read(), TIMEOUT_S))
        for thread in threads:
            thread.join(TIMEOUT_S)
        assert heard == [GREETING] * len(raw)
