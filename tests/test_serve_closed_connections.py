"""Hypercorn's idle timer as ``chat.idle_timer`` runs it. A connection the client closes is closed
by the server at once, in every idle state: before its first request and after an answer (kept
alive), which waited for the header timeout under Hypercorn's own timer (a task its connection
waited for), and half way through its headers. An idle
connection holds no task (Hypercorn's own timer held two, and made and cancelled two per
request), and is closed at once when the server shuts down. A real server with the default
header timeout of 10 s; raw sockets; the server's side of each connection read from the
kernel's table (``/proc/net/tcp``: a socket the client closed and the server has not is in
CLOSE-WAIT). The timeout itself: tests/test_serve_header_timeout.py. Every wait is bounded."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.live import LiveServer, scrape

CLOSE_WAIT = "08"  # the state's number in /proc/net/tcp
GONE_WITHIN_S = 2.0  # the header timeout is 10 s: the connections must not wait for it
REQUEST = b"GET /healthz HTTP/1.1\r\nHost: chat\r\n\r\n"


def content_length(head: bytes) -> int:
    return int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path_factory.mktemp("closed-connections"))
    live.start()
    yield live
    live.terminate()


def server_side(port: int) -> dict[int, str]:
    """The server's sockets on ``port`` that are connected: the client's port -> the state."""
    found: dict[int, str] = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, remote, state = line.split()[1:4]
        if int(local.split(":")[1], 16) == port and remote != "00000000:0000":
            found[int(remote.split(":")[1], 16)] = state
    return found


def close_after(port: int, sent: bytes, read_answer: bool) -> int:
    """Connect, send ``sent``, read the answer if asked, close; the client's port."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        client_port: int = conn.getsockname()[1]
        if sent:
            conn.sendall(sent)
        if read_answer:  # all of it: a close with unread data would be a reset, not a close
            answer = b""
            while b"\r\n\r\n" not in answer:
                chunk = conn.recv(4096)
                assert chunk, "the server closed before it answered"
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200"), answer[:80]
            head, _, body = answer.partition(b"\r\n\r\n")
            length = content_length(head)
            while len(body) < length:
                chunk = conn.recv(4096)
                assert chunk, "the server closed before the end of its answer"
                body += chunk
        else:
            time.sleep(0.2)  # the server has accepted it and waits for a request
    return client_port


async def test_a_connection_the_client_closes_is_closed_at_once(server: LiveServer) -> None:
    closed = [
        close_after(server.port, b"", read_answer=False),  # nothing sent
        close_after(server.port, REQUEST, read_answer=True),  # kept alive after an answer
        close_after(server.port, b"GET /healthz HTTP/1.1\r\nHo", read_answer=False),  # half
    ]
    deadline = time.monotonic() + GONE_WITHIN_S
    while True:
        lingering = {p: s for p, s in server_side(server.port).items() if p in closed}
        if not lingering or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert lingering == {}, f"still open on the server's side (state {CLOSE_WAIT}: CLOSE-WAIT)"


async def test_a_connection_kept_open_by_its_client_stays_open(server: LiveServer) -> None:
    """The other side of it: an idle kept-alive connection is not closed before the header
    timeout, and it still serves a second request."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", server.port), timeout=5
    )
    try:
        for _ in range(2):
            writer.write(REQUEST)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            assert head.startswith(b"HTTP/1.1 200"), head[:80]
            await asyncio.wait_for(reader.readexactly(content_length(head)), timeout=5)
            await asyncio.sleep(GONE_WITHIN_S)  # idle, longer than the other test allows
    finally:
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), timeout=5)


async def kept_alive(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection that has had one answer and now sits idle, kept alive."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    writer.write(REQUEST)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200"), head[:80]
    await asyncio.wait_for(reader.readexactly(content_length(head)), 5)
    return reader, writer


async def tasks(url: str) -> float:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        return (await asyncio.wait_for(scrape(client), 10))["chat_asyncio_tasks"]


async def test_an_idle_connection_holds_no_task_of_its_own(server: LiveServer) -> None:
    """Each connection is one task (Hypercorn's); its idle timer is a timer handle, not the
    two tasks Hypercorn's ``AsyncioSingleTask`` and ``asyncio.wait_for`` made for it (and made
    again after every answer). Fails if ``chat.idle_timer`` is not installed."""
    before = await tasks(server.url)
    connections = [await kept_alive(server.port) for _ in range(40)]
    try:
        await asyncio.sleep(0.2)  # the answers' ends have been handled
        held = await tasks(server.url) - before
        # one task a connection, give or take the server's own coming and going
        assert 35 <= held <= 50, f"{held} tasks for 40 idle connections (Hypercorn's timer: 120)"
    finally:
        for _, writer in connections:
            writer.close()


async def test_idle_connections_are_closed_at_once_at_shutdown(
    make_server: Callable[..., LiveServer],
) -> None:
    """SIGTERM: idle connections (kept alive after an answer, or that never sent anything) are
    closed at once, not when the header timeout (10 s) or the shutdown grace (20 s here) ends."""
    live = make_server(CHAT_SHUTDOWN_GRACE_SECONDS="20")
    idle = [await kept_alive(live.port) for _ in range(3)]
    silent = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", live.port), 5)
    await asyncio.sleep(0.2)
    started = time.monotonic()
    code = asyncio.create_task(asyncio.to_thread(live.terminate, 30))
    try:
        for reader, _ in [*idle, silent]:
            assert await asyncio.wait_for(reader.read(), 5) == b""
        closed_s = time.monotonic() - started
    finally:
        assert await asyncio.wait_for(code, 35) == 0
        for _, writer in [*idle, silent]:
            writer.close()
    assert closed_s < 3.0, f"idle connections closed {closed_s:.1f} s after SIGTERM"


HALF_CLOSED = {
    "pipeline": REQUEST,  # answered by the pipeline itself
    # a Quart route that reads the store: Quart cancelled its handler at the disconnect
    # that the end of stream gave, and the client got no answer at all
    "quart": b"GET /api/rooms HTTP/1.1\r\nHost: chat\r\n\r\n",
    "message_post": (
        b"POST /api/rooms/half-closed/messages HTTP/1.1\r\nHost: chat\r\n"
        b"Content-Type: application/json\r\nContent-Length: 33\r\n\r\n"
        b'{"author": "ann", "text": "bye!"}'
    ),
}


@pytest.mark.parametrize("request_kind", list(HALF_CLOSED))
async def test_a_request_sent_with_the_close_is_answered_and_its_connection_closed(
    server: LiveServer, request_kind: str
) -> None:
    """A client that sends its request and its end of stream in one burst (a half-close,
    HTTP/1.0 style) gets its whole answer, and then the connection ends at once: the answer's
    end restarts the timer, but a timer handle is nothing the connection waits for (under
    Hypercorn's own timer, a task, it waited for the header timeout, 10 s). So for each kind
    of route: the pipeline's own, Quart's, the message POST."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as conn:
        conn.sendall(HALF_CLOSED[request_kind])
        conn.shutdown(socket.SHUT_WR)
        started = time.monotonic()
        received = b""
        while chunk := conn.recv(4096):  # to the server's close (each recv waits 5 s at most)
            received += chunk
        closed_s = time.monotonic() - started
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(
        b"HTTP/1.1 201" if request_kind == "message_post" else b"HTTP/1.1 200"
    ), received[:80]
    assert len(body) == content_length(head), received
    assert closed_s < GONE_WITHIN_S, f"closed {closed_s:.1f} s after the answer was asked for"
