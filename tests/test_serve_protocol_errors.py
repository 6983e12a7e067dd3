"""Requests h11 cannot parse get the JSON error envelope of API.md, not Hypercorn's empty
answer (``chat.protocol_errors``, which replaces a private method of Hypercorn: these tests are
what fails when Hypercorn changes it). Each request goes over a raw socket to a real server;
each answer must be the envelope with its headers, and the connection must be closed after
it. Every wait is bounded."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from chat import protocol_errors
from tests.live import LiveServer

TIMEOUT_S = 5.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path_factory.mktemp("protocol-errors"))
    live.start()
    yield live
    log = live.log()
    live.terminate()
    assert "Traceback" not in log, log


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    closed: bool  # the server closed the connection after the answer

    def error(self) -> dict[str, object]:
        envelope = orjson.loads(self.body)
        assert set(envelope) == {"error"}, envelope
        error = envelope["error"]
        assert isinstance(error, dict)
        assert set(error) == {"code", "message", "details", "request_id"}, error
        return error


async def read_answer(reader: asyncio.StreamReader, last: bool) -> Answer:
    """One HTTP/1.1 answer with a Content-Length body; after the ``last`` one, whether the
    server ends the connection (its end of file, or a reset)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers["content-length"]))
    closed = False
    if last:
        try:
            closed = await reader.read(1) == b""
        except ConnectionResetError:
            closed = True
    return Answer(int(status_line.split(" ")[1]), headers, body, closed)


async def exchange(port: int, *requests: bytes) -> list[Answer]:
    """Send each request in turn on one connection and read the answer to each."""
    answers: list[Answer] = []
    async with asyncio.timeout(TIMEOUT_S):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for number, request in enumerate(requests, 1):
                writer.write(request)
                await writer.drain()
                answers.append(await read_answer(reader, last=number == len(requests)))
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    return answers


def assert_envelope(answer: Answer, status: int, code: str) -> None:
    assert answer.status == status, answer
    assert answer.headers["content-type"] == "application/json; charset=utf-8"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["connection"] == "close"
    assert answer.headers.get("x-request-id"), answer.headers
    error = answer.error()
    assert error["request_id"] == answer.headers["x-request-id"]  # what a user quotes
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert error["details"] == []
    assert answer.closed, "the connection stays open after a protocol error"


async def test_a_raw_non_ascii_byte_in_the_target_gets_the_envelope_and_a_close(
    server: LiveServer,
) -> None:
    [answer] = await exchange(server.port, b"GET /api/rooms/\xff HTTP/1.1\r\nHost: x\r\n\r\n")
    assert_envelope(answer, 400, "bad_request")
    assert "ASCII" in str(answer.error()["message"])


async def test_a_malformed_request_line_after_a_good_request_gets_the_envelope(
    server: LiveServer,
) -> None:
    """On a kept-alive connection: the first request is answered by the app, the broken
    second one by the envelope, and then the connection ends."""
    good, bad = await exchange(
        server.port,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        b"THIS IS NOT HTTP\r\n\r\n",
    )
    assert good.status == 200 and not good.closed
    assert orjson.loads(good.body) == {"status": "ok"}
    assert_envelope(bad, 400, "bad_request")


async def test_a_bad_header_line_gets_the_envelope(server: LiveServer) -> None:
    [answer] = await exchange(
        server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n"
    )
    assert_envelope(answer, 400, "bad_request")


async def test_headers_over_the_limit_get_431_in_the_envelope(server: LiveServer) -> None:
    """Request headers that grow past Hypercorn's buffer (16 KiB) before they end: h11 hints
    431, and the envelope says so."""
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 17_000
    [answer] = await exchange(server.port, head)
    assert_envelope(answer, 431, "headers_too_large")
    assert "16384 bytes" in str(answer.error()["message"])


async def test_an_unsupported_transfer_coding_gets_501_in_the_envelope(
    server: LiveServer,
) -> None:
    [answer] = await exchange(
        server.port,
        b"POST /api/rooms/r/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
    )
    assert_envelope(answer, 501, "not_implemented")


async def test_each_answer_is_logged_and_counted_under_its_request_id(
    tmp_path: Path,
) -> None:
    """A probe: these answers named a request id that no log line held, and chat_errors_total
    did not count them. Each now has its access-log line (JSON here) and is counted."""
    live = LiveServer(tmp_path, {"CHAT_LOG_FORMAT": "json", "CHAT_LOG_LEVEL": "INFO"})
    live.start()
    try:
        (answer,) = await exchange(live.port, b"GET /\xff HTTP/1.1\r\nHost: x\r\n\r\n")
        (big,) = await exchange(
            live.port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n"
        )
        async with asyncio.timeout(TIMEOUT_S):
            reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            metrics = (await reader.read()).decode()
            writer.close()
    finally:
        live.terminate()
    lines = [orjson.loads(line) for line in live.log().splitlines()]
    for got, status in ((answer, 400), (big, 431)):
        (line,) = [x for x in lines if x.get("request_id") == got.headers["x-request-id"]]
        seen = (line["event"], line["status"], line["endpoint"])
        assert seen == ("request", status, "unparsable"), line
        assert line["client"] == "127.0.0.1"
    assert 'chat_errors_total{status="400"} 1.0' in metrics, metrics
    assert 'chat_errors_total{status="431"} 1.0' in metrics, metrics


def test_error_for_maps_h11_hints_and_install_is_idempotent() -> None:
    assert protocol_errors.error_for(400, 16384).status == 400
    assert protocol_errors.error_for(431, 16384).code == "headers_too_large"
    assert protocol_errors.error_for(501, 16384).code == "not_implemented"
    assert protocol_errors.error_for(418, 16384).code == "bad_request"  # any other hint
    assert protocol_errors.install() and protocol_errors.install()
    assert protocol_errors.installed()


def test_the_module_says_it_relies_on_a_private_method() -> None:
    doc = protocol_errors.__doc__ or ""
    assert "private method of Hypercorn" in doc
    listed = (Path(__file__).resolve().parent.parent / "docs/design/private-access.md").read_text()
    assert "_send_error_response" in listed
