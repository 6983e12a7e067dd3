"""A raw-socket SSE client: HTTP/1.1 over asyncio streams, chunked transfer decoding and SSE
frames parsed by hand. For what httpx hides or makes costly: a tiny receive buffer, thousands
of connections, seeing the chunked terminator. Every network wait is bounded by a timeout."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

HOST = "127.0.0.1"


class UnexpectedStatus(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP status {status}")
        self.status = status


@dataclass(frozen=True, slots=True)
class Frame:
    id: int | None
    event: str | None
    data: str


async def _connect(
    port: int, rcvbuf: int | None, limit: int, timeout_s: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if rcvbuf is not None:  # before connect: the window is negotiated in the handshake
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(loop.sock_connect(sock, (HOST, port)), timeout_s)
        return await asyncio.wait_for(asyncio.open_connection(sock=sock, limit=limit), timeout_s)
    except BaseException:
        sock.close()
        raise


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), 5)


async def _read_status(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, head.lower()


@dataclass
class RawSSE:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    comments: list[str] = field(default_factory=list)
    ended: bool = False  # the chunked terminator was read: the server ended the stream
    after_end: bytes = b""  # what came after the terminator, up to EOF
    _body: bytearray = field(default_factory=bytearray)

    @classmethod
    async def open(
        cls,
        port: int,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        rcvbuf: int | None = None,
        limit: int = 1 << 16,
        pipeline: str | None = None,
        timeout_s: float = 10.0,
    ) -> RawSSE:
        """Connect, send the GET, read the head and the ``: connected`` comment. ``limit``
        bounds what asyncio buffers in user space before it stops reading the socket;
        ``pipeline`` is the path of a second GET sent right behind the first (HTTP/1.1
        pipelining: it is answered once the stream ends, see ``after_end``)."""
        reader, writer = await _connect(port, rcvbuf, limit, timeout_s)
        self = cls(reader, writer)
        try:
            extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
            request = f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n{extra}\r\n"
            if pipeline is not None:
                request += f"GET {pipeline} HTTP/1.1\r\nHost: {HOST}\r\n\r\n"
            writer.write(request.encode())
            async with asyncio.timeout(timeout_s):
                await writer.drain()
                status, head = await _read_status(reader)
                if status != 200:
                    raise UnexpectedStatus(status)
                assert b"transfer-encoding: chunked" in head, head
                assert b"content-type: text/event-stream" in head, head
                while "connected" not in self.comments:
                    if await self._fill() is None:
                        raise EOFError("the stream ended before `: connected`")
                    self._frames()
        except BaseException:
            await self.close()
            raise
        return self

    async def close(self) -> None:
        await _close(self.writer)

    async def _fill(self) -> int | None:
        """Read one chunk into the body buffer: its size, or None at the terminator."""
        line = await self.reader.readuntil(b"\r\n")
        size = int(line.split(b";")[0], 16)
        if size == 0:
            while await self.reader.readuntil(b"\r\n") != b"\r\n":  # trailers, if any
                pass
            self.ended = True
            return None
        chunk = await self.reader.readexactly(size + 2)
        assert chunk.endswith(b"\r\n"), "malformed chunk"
        self._body += chunk[:-2]
        return size

    def _frames(self) -> list[Frame]:
        """Parse the complete frames buffered so far (comments and retry are recorded)."""
        frames: list[Frame] = []
        while (end := self._body.find(b"\n\n")) >= 0:
            block = bytes(self._body[:end]).decode()
            del self._body[: end + 2]
            fields: dict[str, list[str]] = {}
            for line in block.split("\n"):
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())
                    continue
                name, _, value = line.partition(":")
                fields.setdefault(name, []).append(value.removeprefix(" "))
            if "data" in fields or "event" in fields:
                ident = fields.get("id", [None])[-1]
                frames.append(
                    Frame(
                        id=int(ident) if ident is not None else None,
                        event=fields.get("event", [None])[-1],
                        data="\n".join(fields.get("data", [])),
                    )
                )
        return frames

    async def read_events(self, count: int, timeout_s: float) -> list[Frame]:
        """At least ``count`` events (everything parsed meanwhile), or raise on timeout/end."""
        got: list[Frame] = []
        async with asyncio.timeout(timeout_s):
            while len(got) < count:
                if await self._fill() is None:
                    raise EOFError(f"the stream ended after {len(got)} of {count} events")
                got += self._frames()
        return got

    async def read_until(self, last_id: int, quiet_s: float, most: int) -> list[Frame]:
        """Events until one with ``last_id`` or above, or until none came for ``quiet_s``."""
        got: list[Frame] = []
        for _ in range(most):  # each read returns at least one event
            try:
                got += await self.read_events(1, timeout_s=quiet_s)
            except TimeoutError:
                break
            if (got[-1].id or 0) >= last_id:
                break
        return got

    async def read_to_end(self, timeout_s: float) -> list[Frame]:
        """Every event up to the chunked terminator, then whatever follows it (``after_end``)
        until the server closes the connection (EOF)."""
        got: list[Frame] = []
        async with asyncio.timeout(timeout_s):
            while await self._fill() is not None:
                got += self._frames()
            got += self._frames()
            self.after_end = await self.reader.read()
        assert not self._body, f"an unterminated frame: {bytes(self._body[:80])!r}"
        return got
