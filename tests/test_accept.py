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
import errno
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config

from chat import serve
from tests.conftest import need
from tests.test_serve_loop import uvloop_imports
from tests.test_serve_tls import Cert, make_cert

GREETING = b"hello\n"
PASSES = 10  # of run_until_complete(sleep(0)): uvloop's own loop accepted 38 of 300 in these
TIMEOUT_S = 10.0


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


def bound() -> tuple[socket.socket, int]:
    """A socket bound to a free port of 127.0.0.1, not listening (as ``serve`` binds its
    own): it and its port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock, sock.getsockname()[1]


@contextlib.contextmanager
def server_on(
    loop: asyncio.AbstractEventLoop, tls: ssl.SSLContext | None = None
) -> Iterator[tuple[int, Callable[[], None], asyncio.AbstractServer]]:
    """A server greeting each connection, on a socket bound here as ``serve`` binds it:
    (its port, a function that closes it, the server)."""
    sock, port = bound()
    server = loop.run_until_complete(
        asyncio.start_server(greet, sock=sock, backlog=1024, ssl=tls, ssl_handshake_timeout=5)
        if tls is not None
        else asyncio.start_server(greet, sock=sock, backlog=1024)
    )

    def close() -> None:
        server.close()
        loop.run_until_complete(asyncio.wait_for(server.wait_closed(), TIMEOUT_S))

    try:
        yield port, close, server
    finally:
        close()


def passes(loop: asyncio.AbstractEventLoop, count: int) -> None:
    for _ in range(count):
        loop.run_until_complete(asyncio.sleep(0))


def queue_room() -> int:
    """The kernel's cap on a listening socket's queue (``net.core.somaxconn``)."""
    try:
        return int(Path("/proc/sys/net/core/somaxconn").read_text())
    except (OSError, ValueError):
        return 128


def greeted(clients: list[socket.socket]) -> int:
    """How many of the clients have the greeting waiting for them (read without waiting)."""
    count = 0
    for client in clients:
        client.setblocking(False)
        with contextlib.suppress(BlockingIOError, ConnectionError):
            count += client.recv(64) == GREETING
    return count


def test_every_waiting_connection_is_served_within_a_few_passes(
    loop: asyncio.AbstractEventLoop,
) -> None:
    need(queue_room() >= 300, "net.core.somaxconn is under 300: 300 connections cannot wait")
    with server_on(loop) as (port, _close, _server):
        clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(300)]
        try:
            passes(loop, PASSES)
            assert greeted(clients) == len(clients)
        finally:
            for client in clients:
                client.close()


def test_connections_accepted_but_not_yet_served_are_closed_with_the_server(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """Hypercorn closes its server and then waits for the connections it serves: one still
    being handed over when the server closed would be served after that wait. Closed with the
    server instead, as the kernel closes those still in the queue."""
    sock, port = bound()

    async def close_after_one_pass() -> tuple[int, int]:
        server = await asyncio.start_server(greet, sock=sock, backlog=1024)
        clients: list[socket.socket] = []
        try:
            for _ in range(200):
                clients.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            await asyncio.sleep(0)  # one poll of the loop: the burst is accepted
            server.close()
            await server.wait_closed()
            before = greeted(clients)
            await asyncio.sleep(0.2)
            return before, greeted(clients)
        finally:
            server.close()
            for client in clients:
                client.close()

    before, after = loop.run_until_complete(asyncio.wait_for(close_after_one_pass(), TIMEOUT_S))
    # none was served before the close, nor after it (libuv's own accept: at most one)
    assert (before, after) in {(0, 0), (0, 1)}


def test_closing_the_server_releases_its_port(loop: asyncio.AbstractEventLoop) -> None:
    with server_on(loop) as (port, close, _server):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            passes(loop, PASSES)
            assert client.recv(64) == GREETING
        close()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_a_server_ended_by_cancelling_serve_forever_releases_its_port(
    loop: asyncio.AbstractEventLoop,
) -> None:
    sock, port = bound()

    async def serve_then_stop() -> None:
        server = await asyncio.start_server(greet, sock=sock, backlog=64, start_serving=False)
        forever = asyncio.create_task(server.serve_forever())
        await asyncio.sleep(0.05)
        forever.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await forever

    loop.run_until_complete(asyncio.wait_for(serve_then_stop(), TIMEOUT_S))
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_a_server_created_not_serving_refuses_until_it_starts(
    loop: asyncio.AbstractEventLoop,
) -> None:
    errors: list[object] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context.get("exception")))
    sock, port = bound()
    server = loop.run_until_complete(
        asyncio.start_server(greet, sock=sock, backlog=64, start_serving=False)
    )
    try:
        passes(loop, PASSES)  # not listening yet: nothing to accept, and no error
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        assert errors == []
        loop.run_until_complete(asyncio.wait_for(server.start_serving(), TIMEOUT_S))
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            passes(loop, PASSES)
            assert greeted([client]) == 1
    finally:
        server.close()
        loop.run_until_complete(asyncio.wait_for(server.wait_closed(), TIMEOUT_S))


def test_hypercorn_serving_as_serve_does_accepts_in_bursts(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop changes only servers created on a socket given to them, which is how
    Hypercorn serves the socket ``serve`` binds (``fd://``): if Hypercorn stopped creating its
    servers so, the bursts would be gone without a word, and this test fails."""
    from chat import accept  # where uvloop imports (the fixture made sure)

    built: list[accept.BurstServer] = []

    class Counted(accept.BurstServer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(accept, "BurstServer", Counted)
    sock = serve.listening_socket("127.0.0.1", 0, dead_peer_seconds=0)
    port = sock.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]  # as serve.run hands its socket over

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        length = str(len(GREETING)).encode()
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", length)]}
        )
        await send({"type": "http.response.body", "body": GREETING})

    async def serve_and_ask() -> bytes:
        stop = asyncio.Event()
        serving = asyncio.create_task(hypercorn_serve(app, config, shutdown_trigger=stop.wait))
        try:
            for _ in range(100):  # until it listens
                try:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    break
                except ConnectionRefusedError:
                    await asyncio.sleep(0.05)
            else:
                raise AssertionError("Hypercorn never listened")
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = await reader.read()
            writer.close()
            return answer
        finally:
            stop.set()
            await serving

    answer = loop.run_until_complete(asyncio.wait_for(serve_and_ask(), TIMEOUT_S))
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(GREETING)
    assert len(built) == 1


def test_tls_connections_waiting_together_are_served(
    loop: asyncio.AbstractEventLoop, tmp_path: Path
) -> None:
    cert: Cert = make_cert(tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert.certfile, cert.keyfile)
    with server_on(loop, tls) as (port, _close, _server):
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
            while len(heard) < len(raw) and any(t.is_alive() for t in threads):  # noqa: ASYNC110
                await asyncio.sleep(0.01)

        loop.run_until_complete(asyncio.wait_for(until_read(), TIMEOUT_S))
        for thread in threads:
            thread.join(TIMEOUT_S)
        assert heard == [GREETING] * len(raw)


class Scripted:
    """The server's duplicate socket, whose ``accept`` first raises the errors given: the
    kernel's errors that a test on loopback cannot cause at will."""

    def __init__(self, sock: socket.socket, errors: list[OSError]) -> None:
        self.sock, self.errors, self.calls = sock, errors, 0

    def accept(self) -> tuple[socket.socket, Any]:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.sock.accept()

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def scripted_server(
    loop: asyncio.AbstractEventLoop, errors: list[OSError]
) -> Iterator[tuple[Scripted, Callable[[], socket.socket], list[socket.socket]]]:
    """A greeting server whose duplicate socket raises ``errors`` first: (the script, a
    function that connects a client to it, the clients connected)."""
    from chat import accept  # where uvloop imports (the fixture made sure)

    with server_on(loop) as (port, _close, server):
        clients: list[socket.socket] = []

        def connect() -> socket.socket:
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            return clients[-1]

        try:
            assert isinstance(server, accept.BurstServer)
            assert server._sock is not None
            fake = Scripted(server._sock, errors)
            server._sock = fake  # type: ignore[assignment]
            yield fake, connect, clients
        finally:
            for client in clients:
                client.close()


def test_a_connection_s_own_network_error_skips_it_and_accepting_goes_on(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """Linux's accept() passes on a waiting connection's network error (accept(2): treat it
    like EAGAIN): the others are served, and nothing reaches the loop's error handler."""
    errors: list[object] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context.get("exception")))
    protocol_errors = [OSError(errno.EPROTO, "protocol error")] * 3
    with scripted_server(loop, protocol_errors) as (fake, connect, clients):
        for _ in range(5):
            connect()
        passes(loop, PASSES)
        assert fake.calls > 3  # the reader went on after the errors
        assert greeted(clients) == len(clients)
        assert errors == []


def test_out_of_files_the_reader_pauses_and_comes_back(
    loop: asyncio.AbstractEventLoop,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from chat import accept

    monkeypatch.setattr(accept, "ACCEPT_RETRY_DELAY_S", 0.05)
    out_of_files = [OSError(errno.EMFILE, "Too many open files")]
    with scripted_server(loop, out_of_files) as (fake, connect, clients):
        connect()
        passes(loop, PASSES)
        assert "cannot accept connections for" in caplog.text
        calls = fake.calls
        loop.run_until_complete(asyncio.sleep(0.2))  # the pause is over
        connect()
        passes(loop, PASSES)
        assert fake.calls > calls  # watching again
        assert greeted(clients) == len(clients)
        assert caplog.text.count("cannot accept connections for") == 1
