"""Stream bodies written straight to Hypercorn's transport, chunk-encoded
(``chat.api.transport.TransportWriter``), read over raw sockets with the HTTP/1.1 chunked
framing decoded by hand: a mis-framed chunk, a lost, repeated or reordered frame, or a
missing terminator is what fails. ``chat_stream_writers_total{writer}`` must show that the
pinned Hypercorn takes the transport path for HTTP/1.1 and ASGI send for HTTP/1.0, so a
library upgrade that silently switches the direct write off fails here. Every wait is
bounded."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import re
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import orjson
import pytest

from chat.api.request import Request
from tests.live import LiveServer, scrape

pytestmark = pytest.mark.sqlite_only  # stream writes: the transport, on SQLite alone: conftest.py

MakeServer = Callable[..., LiveServer]
TIMEOUT_S = 2.0
PUBLISHED = 360  # what ``publish`` posts: 10 one by one, 250 concurrently, a batch of 100
WRITERS = 'chat_stream_writers_total{{writer="{}"}}'


async def stream_writers(url: str) -> tuple[float, float]:
    """(streams written to the transport, streams written through ASGI send)."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        values = await asyncio.wait_for(scrape(client), 10)
    return values.get(WRITERS.format("transport"), 0), values.get(WRITERS.format("asgi_send"), 0)


HELLO = b"retry: 3000\n: connected\n\n"
SSE_LINE = re.compile(rb"(retry: \d+|id: \d+|event: [a-z.]+|data: .*|:.*)")


def parse_frames(body: bytes) -> tuple[list[dict[str, Any]], bytes]:
    """Complete SSE frames in ``body`` (events only; comments dropped) and the rest. Every
    line must be an SSE line: chunk framing leaking into a body would fail here."""
    events: list[dict[str, Any]] = []
    *blocks, rest = body.split(b"\n\n")
    for block in blocks:
        fields: dict[str, bytes] = {}
        for line in block.split(b"\n"):
            assert SSE_LINE.fullmatch(line), f"not an SSE line: {line[:80]!r}"
            if not line.startswith(b":"):
                name, _, value = line.partition(b": ")
                fields[name.decode()] = value
        if "data" in fields:
            events.append(
                {
                    "id": int(fields["id"]) if "id" in fields else None,
                    "event": fields["event"].decode(),
                    "data": orjson.loads(fields["data"]),
                }
            )
    return events, rest


class RawStream:
    """One stream over a raw socket: HTTP/1.1 (chunked, decoded here) or HTTP/1.0."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.head = b""
        self.chunks: list[bytes] = []

    @classmethod
    async def open(cls, port: int, path: str, version: str) -> RawStream:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, limit=1 << 20), TIMEOUT_S * 5
        )
        self = cls(reader, writer)
        writer.write(f"GET {path} {version}\r\nHost: 127.0.0.1\r\n\r\n".encode())
        await asyncio.wait_for(writer.drain(), TIMEOUT_S * 5)
        self.head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT_S * 5)
        assert self.head.startswith(b"HTTP/1.1 200 "), self.head
        assert b"\r\ncontent-type: text/event-stream" in self.head.lower(), self.head
        return self

    async def chunk(self) -> bytes | None:
        """The next chunk of a chunked body, checked: a size line of bare lowercase hex, then
        exactly that many bytes, then CRLF. None at the terminator (``0`` CRLF CRLF)."""
        line = await self.reader.readuntil(b"\r\n")
        assert re.fullmatch(rb"[0-9a-f]+\r\n", line), f"bad chunk size line {line[:40]!r}"
        size = int(line[:-2], 16)
        if size == 0:
            assert await self.reader.readexactly(2) == b"\r\n", "no CRLF after the last chunk"
            return None
        data = await self.reader.readexactly(size + 2)
        assert data.endswith(b"\r\n"), f"chunk of {size} bytes not followed by CRLF"
        self.chunks.append(data[:-2])
        return data[:-2]

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(self.writer.wait_closed(), TIMEOUT_S)


async def read_while_publishing(
    url: str, room: str, receive: Callable[[], Awaitable[bytes | None]]
) -> tuple[list[dict[str, Any]], dict[int, str], bytes]:
    """``publish`` while reading the stream (``receive``: its next bytes, None or b"" at its
    end) until it has as many events as were acknowledged: (the events read, id -> text of
    what was acknowledged, the bytes left unparsed)."""
    got: list[dict[str, Any]] = []
    body = b""

    async def read(count: int) -> None:
        nonlocal body
        while len(got) < count:
            data = await receive()
            assert data, f"the stream ended after {len(got)} events"
            body += data
            events, body = parse_frames(body)
            got.extend(events)

    reader = asyncio.create_task(asyncio.wait_for(read(PUBLISHED), 60))
    try:
        acked = await publish(url, room)
        await reader
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    return got, acked, body


async def publish(url: str, room: str, timeout_s: float = 60) -> dict[int, str]:
    """Posts in three shapes, each delivered by another path: one by one with pauses past the
    coalescing window (idle stream: written from the publisher's call), concurrent bursts
    (held for the flusher's tick, or queued for the task), and one batch (one dispatch).
    Returns id -> text of everything acknowledged."""
    acked: dict[int, str] = {}
    async with (
        asyncio.timeout(timeout_s),
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):

        async def post(text: str) -> None:
            response = await client.post(
                f"/api/rooms/{room}/messages", json={"author": "alice", "text": text}
            )
            assert response.status_code == 201, response.text
            acked[response.json()["id"]] = text

        for i in range(10):
            await post(f"slow {i}")
            await asyncio.sleep(0.03)
        gate = asyncio.Semaphore(16)

        async def gated(text: str) -> None:
            async with gate:
                await post(text)

        await asyncio.gather(*(gated(f"burst {i} " + "y" * (i % 300)) for i in range(250)))
        batch = [{"author": "bob", "text": f"batch {i}"} for i in range(100)]
        response = await client.post(f"/api/rooms/{room}/messages/batch", json={"messages": batch})
        assert response.status_code == 201, response.text
        for event in response.json()["events"]:
            acked[event["id"]] = event["text"]
    return acked


async def shut_down_while_reading(live: LiveServer, rest: Callable[[], Awaitable[bytes]]) -> None:
    """SIGTERM the server while ``rest`` reads its stream to the end: the server exits 0 and
    the stream ends cleanly, with at most pings after the events (nothing more was posted)."""
    code = asyncio.create_task(asyncio.to_thread(live.terminate, 20))
    try:
        async with asyncio.timeout(25):
            tail = await rest()
        events, unparsed = parse_frames(tail)
        assert events == [] and unparsed == b"", tail[:200]
    finally:
        assert await asyncio.wait_for(code, 30) == 0


@contextlib.asynccontextmanager
async def new_server_and_stream(
    make_server: MakeServer, room: str, version: str
) -> AsyncIterator[tuple[LiveServer, RawStream]]:
    """A server of the test's own with ``room`` created, and a raw stream on the room (closed
    at the end)."""
    live = make_server(CHAT_HEARTBEAT_SECONDS="60")
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        response = await asyncio.wait_for(client.put(f"/api/rooms/{room}", json={}), 10)
        assert response.status_code in (200, 201), response.text
    stream = await RawStream.open(live.port, f"/api/rooms/{room}/events", version)
    try:
        yield live, stream
    finally:
        await stream.close()


async def test_http11_stream_is_chunk_encoded_in_order_and_terminated_at_shutdown(
    make_server: MakeServer,
) -> None:
    room = "direct"
    async with new_server_and_stream(make_server, room, "HTTP/1.1") as (live, stream):
        assert b"\r\ntransfer-encoding: chunked\r\n" in stream.head.lower(), stream.head
        assert await asyncio.wait_for(stream.chunk(), TIMEOUT_S * 5) == HELLO
        assert await stream_writers(live.url) == (1, 0), "HTTP/1.1 must take the transport path"

        got, acked, body = await read_while_publishing(live.url, room, stream.chunk)
        assert len(acked) == PUBLISHED
        ids = [e["id"] for e in got]
        assert ids == sorted(acked), "every acknowledged id once, in increasing order"
        assert [e["data"]["text"] for e in got] == [acked[i] for i in ids]
        assert all(e["event"] == "message" and e["data"]["room"] == room for e in got)
        # a chunk holds whole frames: nothing is split across chunks
        assert body == b""
        assert all(chunk.endswith(b"\n\n") for chunk in stream.chunks)

        # a graceful shutdown ends the stream with the chunked terminator, then closes
        async def to_the_terminator() -> bytes:
            tail = b""
            while (chunk := await stream.chunk()) is not None:
                tail += chunk
            assert await stream.reader.read() == b""  # EOF right after the terminator
            return tail

        await shut_down_while_reading(live, to_the_terminator)


async def test_http10_stream_is_close_delimited_without_chunk_framing(
    make_server: MakeServer,
) -> None:
    room = "old-client"
    async with new_server_and_stream(make_server, room, "HTTP/1.0") as (live, stream):
        head = stream.head.lower()
        assert b"transfer-encoding" not in head and b"content-length" not in head, head
        assert b"\r\nconnection: close\r\n" in head, head
        assert await asyncio.wait_for(stream.reader.readexactly(len(HELLO)), 10) == HELLO
        assert await stream_writers(live.url) == (0, 1), "HTTP/1.0 has no chunked transport"

        got, acked, body = await read_while_publishing(
            live.url, room, lambda: stream.reader.read(1 << 16)
        )
        ids = [e["id"] for e in got]
        assert ids == sorted(acked) and len(ids) == PUBLISHED
        assert [e["data"]["text"] for e in got] == [acked[i] for i in ids]
        assert body == b""

        # a graceful shutdown ends the body by closing the connection (no terminator)
        await shut_down_while_reading(live, stream.reader.read)  # up to EOF


async def test_a_stream_whose_client_went_away_is_dropped_and_publishers_go_on(
    make_server: MakeServer,
) -> None:
    """A client that resets its connection while its stream is idle: the next publish writes
    into a closing transport (the direct path), the stream ends and leaves its room, and
    every POST is answered."""
    room = "gone"
    async with new_server_and_stream(make_server, room, "HTTP/1.1") as (live, stream):
        assert await asyncio.wait_for(stream.chunk(), 10) == HELLO
        sock = stream.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        stream.writer.transport.abort()  # RST, not FIN
        async with (
            asyncio.timeout(30),
            httpx.AsyncClient(base_url=live.url, timeout=10) as client,
        ):
            for i in range(20):
                response = await client.post(
                    f"/api/rooms/{room}/messages", json={"author": "a", "text": f"m{i}"}
                )
                assert response.status_code == 201
            for _ in range(200):
                answer = (await client.get(f"/api/rooms/{room}")).json()
                if answer["subscribers"] == 0:
                    break
                await asyncio.sleep(0.05)
            assert answer["subscribers"] == 0


ANSWERS = 'chat_answer_writers_total{{writer="{}"}}'


async def read_answer(reader: asyncio.StreamReader) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """One answer off a raw connection: (status line, headers by lowercase name, body), its
    body exactly as long as its Content-Length says."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT_S * 5)
    status, *lines = head[:-4].split(b"\r\n")
    headers: dict[bytes, bytes] = {}
    for line in lines:
        name, _, value = line.partition(b": ")
        assert name.lower() not in headers, f"{name!r} twice in {head!r}"
        headers[name.lower()] = value
    body = await asyncio.wait_for(
        reader.readexactly(int(headers[b"content-length"])), TIMEOUT_S * 5
    )
    return status, headers, body


@contextlib.asynccontextmanager
async def raw_connection(
    port: int,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
    try:
        yield reader, writer
    finally:
        writer.close()


def message_post(room: str, text: str, *extra: str, version: str = "HTTP/1.1") -> bytes:
    body = orjson.dumps({"author": "alice", "text": text})
    head = [f"POST /api/rooms/{room}/messages {version}", "Host: 127.0.0.1"]
    head += ["Content-Type: application/json", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def test_message_answers_are_written_whole_to_the_transport_and_keep_the_connection_right(
    make_server: MakeServer,
) -> None:
    """A message POST's answer is written in one piece straight to the transport
    (``answer_whole``), with h11 and Hypercorn told, so that the connection goes on exactly
    as if Hypercorn had written it: answers one after another and pipelined on one
    connection, an idempotent replay, ``Connection: close`` and HTTP/1.0 (the connection ends
    after the answer), and Hypercorn's last answer on a connection (``keep_alive_max_requests``,
    1,000: it says ``Connection: close`` and ends it). Each answer is checked whole, and
    ``chat_answer_writers_total`` must show that the pinned Hypercorn took this path."""
    live = make_server()
    room = "answers"
    texts: dict[int, str] = {}

    async def closes_after(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes, text: str
    ) -> None:
        """``request`` is answered whole, with ``Connection: close``, and the connection ends."""
        writer.write(request)
        answer = await read_answer(reader)
        created(answer, text)
        assert answer[1][b"connection"] == b"close", answer
        assert await asyncio.wait_for(reader.read(), TIMEOUT_S * 5) == b"", "not closed"

    def created(answer: tuple[bytes, dict[bytes, bytes], bytes], text: str) -> None:
        status, headers, body = answer
        assert status == b"HTTP/1.1 201 ", (status, headers, body)
        assert headers[b"content-type"] == b"application/json; charset=utf-8"
        assert headers[b"x-content-type-options"] == b"nosniff"
        assert re.fullmatch(rb"[0-9a-f]{16}", headers[b"x-request-id"]), headers
        sent_at = email.utils.parsedate_to_datetime(headers[b"date"].decode())
        assert abs(time.time() - sent_at.timestamp()) < 2.5, headers  # now, to the second
        event = orjson.loads(body)
        assert event["text"] == text and event["room"] == room, event
        texts[event["id"]] = text

    async with raw_connection(live.port) as (reader, writer):
        for i in range(3):  # one after another
            writer.write(message_post(room, f"one {i}"))
            answer = await read_answer(reader)
            created(answer, f"one {i}")
            assert b"connection" not in answer[1], answer
        key = "Idempotency-Key: k-1"
        for expected in (b"HTTP/1.1 201 ", b"HTTP/1.1 200 "):  # the second is a replay
            writer.write(message_post(room, "once", key))
            status, headers, body = await read_answer(reader)
            assert status == expected, (status, body)
            assert (headers.get(b"idempotent-replayed") == b"true") == (expected.endswith(b"200 "))
            texts[orjson.loads(body)["id"]] = "once"
        writer.write(b"".join(message_post(room, f"piped {i}") for i in range(5)))
        for i in range(5):  # pipelined: answered in order, each whole
            created(await read_answer(reader), f"piped {i}")
        await closes_after(reader, writer, message_post(room, "last", "Connection: close"), "last")

    async with raw_connection(live.port) as (reader, writer):
        await closes_after(reader, writer, message_post(room, "old", version="HTTP/1.0"), "old")

    async with raw_connection(live.port) as (reader, writer):
        # Hypercorn's keep_alive_max_requests (1,000): its last answer ends the connection
        many = b"".join(message_post(room, f"many {i}") for i in range(999))
        writer.write(many)
        for i in range(999):
            answer = await read_answer(reader)
            created(answer, f"many {i}")
            assert b"connection" not in answer[1], (i, answer[1])
        await closes_after(reader, writer, message_post(room, "many 999"), "many 999")

    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        history = await asyncio.wait_for(
            client.get(f"/api/rooms/{room}/messages", params={"limit": 100}), 10
        )
        values = await asyncio.wait_for(scrape(client), 10)
    assert history.status_code == 200, history.text
    newest = {m["id"]: m["text"] for m in history.json()["messages"]}
    assert newest == {i: t for i, t in texts.items() if i in newest} and len(newest) == 100
    assert len(texts) == 3 + 1 + 5 + 1 + 1 + 1000  # the replay is the first "once"
    assert values.get(ANSWERS.format("transport")) == 1012, values
    assert values.get(ANSWERS.format("asgi_send"), 0) == 0, values


async def test_an_answer_goes_through_send_where_the_server_is_not_hypercorn() -> None:
    """``Request.answer`` under another server's ``send`` (or a middleware wrapping it) finds
    no connection and answers through ``send``, with the same headers."""
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        raise AssertionError("not called")

    scope: Any = {"type": "http", "method": "POST", "headers": [], "client": ("127.0.0.1", 1)}
    request = Request(scope, receive, send)
    body = b'{"id":1}'
    writer = await asyncio.wait_for(
        request.answer(201, [(b"content-type", b"application/json")], body), TIMEOUT_S
    )
    assert writer == "asgi_send"
    start, whole = sent
    assert start["status"] == 201 and request.status == 201
    names = [name for name, _ in start["headers"]]
    assert sorted(names) == sorted(
        [b"content-type", b"content-length", b"x-request-id", b"x-content-type-options"]
    )
    assert dict(start["headers"])[b"content-length"] == b"8"
    assert whole == {"type": "http.response.body", "body": body, "more_body": False}


async def test_posts_whose_clients_reset_at_once_leave_no_error(make_server: MakeServer) -> None:
    """A client that sends its POST and resets the connection (``SO_LINGER`` 0) while the
    message waits for its commit (behind batches of 500 that hold the write thread): the
    answer finds the connection gone, and that is no error of the server's (uvloop's write
    raises on a closed transport; no traceback, no second answer), and it serves on."""
    live = make_server(CHAT_MAX_BODY_BYTES="1000000")
    batch = {"messages": [{"author": "bob", "text": "b" * 200}] * 500}
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
        for i in range(5):
            busy = [
                asyncio.create_task(client.post("/api/rooms/resets/messages/batch", json=batch))
                for _ in range(4)
            ]
            await asyncio.sleep(0.005)  # the batches are in the write thread's queue
            conn = socket.create_connection(("127.0.0.1", live.port), timeout=5)
            conn.sendall(message_post("resets", f"gone {i}"))
            await asyncio.sleep(0.005)  # read by the server, waiting behind the batches
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
            for done in await asyncio.wait_for(asyncio.gather(*busy), 30):
                assert done.status_code == 201, done.text
        posted = await asyncio.wait_for(
            client.post("/api/rooms/resets/messages", json={"author": "a", "text": "still"}), 10
        )
    assert posted.status_code == 201, posted.text
    await asyncio.sleep(0.5)  # what the resets left to log has been logged
    log = live.log()
    assert "Traceback" not in log and " ERROR " not in log, log


class RecordingTransport:
    """What ``TransportWriter`` needs of a transport: records the bytes written."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (16384, 65536)

    def get_write_buffer_size(self) -> int:
        return 0


class FakeWriter:
    def __init__(self, transport: RecordingTransport) -> None:
        self.transport = transport


def test_each_stream_gets_every_chunk_framed_as_its_own_whatever_was_written_before() -> None:
    """A fan-out writes one chunk object to every stream in turn, framed once; chunks of
    other lengths, and the first again, written in between are each framed as themselves."""
    from chat.api.transport import TransportWriter

    first, other = b"id: 1\nevent: message\ndata: {}\n\n", b"id: 2\nevent: x\ndata: {}\n\n"
    transports = [RecordingTransport() for _ in range(3)]
    writers = [TransportWriter(FakeWriter(t)) for t in transports]  # type: ignore[arg-type]
    for chunk in (first, first, other, first, bytes(first)):
        for writer in writers:
            assert writer.write(chunk)
    framed = [b"%x\r\n%b\r\n" % (len(c), c) for c in (first, first, other, first, first)]
    assert all(bytes(t.data) == b"".join(framed) for t in transports)
    assert all(w.written == 4 * len(first) + len(other) for w in writers)


def test_the_server_s_own_headers_are_made_again_each_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A whole answer carries Hypercorn's ``date`` and ``server`` as its config makes them,
    made once a second (the date has a second's precision) and for each config."""
    from chat.api import transport

    made: list[str] = []

    class Config:
        def response_headers(self, protocol: str) -> list[tuple[bytes, bytes]]:
            made.append(protocol)
            return [(b"date", b"D%d" % len(made)), (b"server", b"hypercorn-h11")]

    now = [1_000.2]
    monkeypatch.setattr(time, "time", lambda: now[0])
    config = Config()
    assert transport._server_headers(config) == b"date: D1\r\nserver: hypercorn-h11\r\n"
    now[0] = 1_000.9
    assert transport._server_headers(config) == b"date: D1\r\nserver: hypercorn-h11\r\n"
    now[0] = 1_001.0
    assert transport._server_headers(config) == b"date: D2\r\nserver: hypercorn-h11\r\n"
    assert transport._server_headers(Config()) == b"date: D3\r\nserver: hypercorn-h11\r\n"
    assert made == ["h11"] * 3
