"""The header timeout (``CHAT_HEADER_TIMEOUT_SECONDS``, Hypercorn's idle timer): a connection
whose request headers have not fully arrived within it is closed, whether it trickles them
(a slowloris), sends nothing, or sits idle after an answer; a stream that is open, and idle
for longer than the timeout between heartbeats, is not. A real server with a 1 s timeout and
heartbeats every 1.5 s; raw sockets for the slow clients. Every wait is bounded.

The close times are checked against the timeout with a wide margin: the point is that the
connection is closed by the timeout (not by the client, and not after the default 10 s)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.live import LiveServer, open_stream

HEADER_TIMEOUT_S = 1.0
HEARTBEAT_S = 1.5
# The timeout, plus a margin for a loaded machine; well under the default of 10 s.
CLOSED_BY_S = HEADER_TIMEOUT_S + 3.0
TRICKLE_EVERY_S = 0.3


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(
        tmp_path_factory.mktemp("header-timeout"),
        {
            "CHAT_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT_S),
            "CHAT_HEARTBEAT_SECONDS": str(HEARTBEAT_S),
        },
    )
    live.start()
    yield live
    live.terminate()


@pytest.fixture
async def client(server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as c:
        yield c


async def _read_to_end(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes (a reset counts as a close)."""
    try:
        return await reader.read()
    except ConnectionResetError:
        return b""


@contextlib.asynccontextmanager
async def raw_connection(
    port: int,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    async with asyncio.timeout(5):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 5)


async def test_a_slowloris_is_closed_within_the_header_timeout(server: LiveServer) -> None:
    """A request line, then the headers one byte every 0.3 s: data keeps arriving, but the
    headers never end, and the server closes the connection without an answer."""
    loop = asyncio.get_running_loop()
    trickle = b"Host: x\r\nX-Slow: " + b"a" * 100  # never the blank line that ends headers
    async with raw_connection(server.port) as (reader, writer):
        started = loop.time()
        writer.write(b"GET /healthz HTTP/1.1\r\n")
        end = asyncio.ensure_future(_read_to_end(reader))
        sent = 0
        async with asyncio.timeout(CLOSED_BY_S + 2):
            while not end.done() and sent < len(trickle):
                try:
                    writer.write(trickle[sent : sent + 1])
                    await writer.drain()
                except ConnectionError:
                    break
                sent += 1
                await asyncio.wait({end}, timeout=TRICKLE_EVERY_S)
            answer = await end
        elapsed = loop.time() - started
    assert answer == b"", answer  # closed, not answered
    assert sent >= 2, "the server closed before the client trickled anything"
    assert sent < len(trickle), "the server never closed the trickling connection"
    assert elapsed < CLOSED_BY_S, elapsed


async def test_a_connection_that_sends_nothing_is_closed(server: LiveServer) -> None:
    async with raw_connection(server.port) as (reader, _writer):
        async with asyncio.timeout(CLOSED_BY_S):
            assert await _read_to_end(reader) == b""


async def test_a_kept_alive_connection_idle_for_the_timeout_is_closed(server: LiveServer) -> None:
    """After an answer the timer starts again: the next request's headers must come within
    it too."""
    async with raw_connection(server.port) as (reader, writer):
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        async with asyncio.timeout(5):
            await reader.readexactly(length)
        async with asyncio.timeout(CLOSED_BY_S):
            assert await _read_to_end(reader) == b""


async def test_an_open_stream_idle_for_longer_than_the_timeout_stays_open(
    client: httpx.AsyncClient, room: str
) -> None:
    """Heartbeats every 1.5 s, a timeout of 1 s: the stream is idle longer than the timeout
    between heartbeats, twice, and still delivers a message posted after that."""
    async with open_stream(client, f"/api/rooms/{room}/events") as stream:
        await stream.until_comment("ping", HEARTBEAT_S * 2 + 5, count=2)
        posted = await asyncio.wait_for(
            client.post(f"/api/rooms/{room}/messages", json={"author": "a", "text": "still here"}),
            10,
        )
        assert posted.status_code == 201, posted.text
        event = await stream.next(timeout_s=10)
        assert event.event == "message"
        assert event.json()["text"] == "still here"
