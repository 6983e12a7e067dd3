"""The one request pipeline (chat/api/pipeline.py), against real Hypercorn servers: a policy
in its limits seam refuses every route there is, whoever serves it; the plain routes are the
ones that serve their endpoints; request ids; HEAD on a stream path."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import re
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from quart import Quart

from chat.api.body import body_json
from chat.api.request import Identity, Request
from chat.app import create_app
from chat.config import Settings
from chat.errors import Forbidden
from chat.serve import hypercorn_config, serve
from tests.live import LiveServer, free_port, open_stream, scrape
from tests.scaleout_helpers import eventually
from tests.test_errors import assert_error

pytestmark = pytest.mark.sqlite_only  # the pipeline, on SQLite alone: conftest.py

TIMEOUT_S = 10.0
GOOD = {"author": "alice", "text": "hello"}
JSON = {"content-type": "application/json"}


@contextlib.asynccontextmanager
async def in_process(app: Quart, settings: Settings) -> AsyncIterator[str]:
    """Serve ``app`` on a free port with Hypercorn, in this test's loop; yields its URL."""
    port = free_port()
    stop = asyncio.Event()
    task = asyncio.create_task(serve(app, hypercorn_config(settings, "127.0.0.1", port), stop))
    try:
        async with asyncio.timeout(TIMEOUT_S):
            while True:
                assert not task.done(), task
                with contextlib.suppress(OSError):
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.close()
                    break
                await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


def concrete(path: str) -> str:
    """A route's path with each placeholder (``{room}``, ``<id:message_id>``) filled in."""
    return re.sub(r"\{[^}]+\}|<[^>]+>", "1", path)


async def test_a_policy_refusing_everything_refuses_every_route(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """Every route of /openapi.json, both stream paths, the message POST and every rule of
    the route table answer with the policy's refusal, and nothing is stored or streamed."""
    async with asyncio.timeout(TIMEOUT_S):
        spec = (await client.get("/openapi.json")).json()
    wanted = {(m.upper(), concrete(p)) for p, ops in spec["paths"].items() for m in ops}
    assert ("POST", "/api/rooms/1/messages") in wanted, "the message POST is documented"
    assert ("GET", "/api/rooms/1/events") in wanted and ("GET", "/api/events") in wanted
    seen: list[tuple[str, str, Identity | None, bytes]] = []
    endpoints: set[str] = set()

    async def identify(request: Request) -> Identity | None:
        return Identity("tester")

    async def refuse(request: Request) -> None:
        seen.append((request.method, request.path, request.identity, request.body))
        endpoints.add(request.endpoint)
        raise Forbidden("refused by the test's policy")

    settings = Settings(database=str(tmp_path / "chat.db"))
    app = create_app(settings, identify=identify, policies=[refuse])
    wanted |= {(m, concrete(r.rule)) for r in app.url_map.iter_rules() for m in r.methods or ()}
    wanted.add(("GET", "/api/events?rooms=*"))
    body = b'{"author": "alice", "text": "hello"}'
    async with in_process(app, settings) as url, httpx.AsyncClient(base_url=url) as refused:
        for method, path in sorted(wanted):
            async with asyncio.timeout(TIMEOUT_S):
                response = await refused.request(
                    method, path, content=body, headers={"content-type": "application/json"}
                )
            if method == "HEAD":
                assert response.status_code == 403 and response.content == b"", (method, path)
                continue
            error = assert_error(response, 403, "forbidden")
            assert error["message"] == "refused by the test's policy", (method, path)
    assert {(m, p.partition("?")[0]) for m, p in wanted} == {(m, p) for m, p, _, _ in seen}
    assert all(who == Identity("tester") and got == body for _, _, who, got in seen)
    # the policy knew which route each request was for
    assert {"messages.post", "streams.room_events", "streams.events", "ops.healthz"} <= endpoints
    with sqlite3.connect(tmp_path / "chat.db") as db:
        assert db.execute("SELECT count(*) FROM events").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM rooms").fetchone() == (0,)


async def test_plain_routes_serve_their_endpoints(client: httpx.AsyncClient, room: str) -> None:
    """The stream GETs and the message POST are served by their plain routes, whatever the
    body's framing; Quart serves the rest. A change that routes them to Quart fails here."""

    def served(values: dict[str, float], endpoint: str, by: str) -> float:
        return values.get(f'chat_requests_total{{endpoint="{endpoint}",served_by="{by}"}}', 0)

    async def chunked() -> AsyncIterator[bytes]:
        yield b'{"author": "alice", '
        yield b'"text": "chunked"}'

    async with asyncio.timeout(TIMEOUT_S):
        before = await scrape(client)
        async with open_stream(client, f"/api/rooms/{room}/events") as stream:
            for _ in range(3):
                assert (await client.post(f"/api/rooms/{room}/messages", json=GOOD)).is_success
            headers = {"content-type": "application/json"}
            response = await client.post(
                f"/api/rooms/{room}/messages", content=chunked(), headers=headers
            )
            assert response.status_code == 201, response.text
            assert [e.json()["text"] for e in await stream.take(4)] == ["hello"] * 3 + ["chunked"]
        async with open_stream(client, "/api/events", params={"rooms": room}):
            pass
        assert (await client.get(f"/api/rooms/{room}/messages")).status_code == 200
        # A request is counted when it ends, which may be just after its client has read the
        # answer (a stream: once the server has seen the client go).
        wanted = [
            ("messages.post", "plain", 4),
            ("streams.room_events", "plain", 1),
            ("streams.events", "plain", 1),
            ("messages.history", "quart", 1),
        ]
        while True:
            after = await scrape(client)
            if all(served(after, e, by) - served(before, e, by) >= n for e, by, n in wanted):
                break
            await asyncio.sleep(0.05)
    for endpoint, by, count in wanted:
        assert served(after, endpoint, by) - served(before, endpoint, by) == count, endpoint
    for endpoint in ("messages.post", "streams.room_events", "streams.events"):
        assert served(after, endpoint, "quart") == 0, endpoint


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_request_ids(client: httpx.AsyncClient, method: str) -> None:
    """A well-formed X-Request-ID is echoed; otherwise the answer carries a new one."""
    async with asyncio.timeout(TIMEOUT_S):
        given = await client.request(method, "/api/nope", headers={"x-request-id": "abc-123.x"})
        assert given.headers.get_list("x-request-id") == ["abc-123.x"]
        made = [
            (await client.request(method, "/api/nope", headers=headers)).headers["x-request-id"]
            for headers in ({}, {"x-request-id": "bad id"}, {"x-request-id": "x" * 129})
        ]
    assert all(re.fullmatch("[0-9a-f]{16}", made_id) for made_id in made), made
    assert len(set(made)) == 3


async def test_head_on_a_stream_path_opens_no_stream(
    client: httpx.AsyncClient, server: LiveServer, room: str
) -> None:
    async with asyncio.timeout(TIMEOUT_S):
        assert (await client.put(f"/api/rooms/{room}", json={})).status_code == 201
        before = await scrape(client)
        for path in (f"/api/rooms/{room}/events?user=head", f"/api/events?rooms={room}&user=h"):
            response = await client.head(path)
            assert response.status_code == 200, path
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.content == b""
        invalid = await client.head("/api/events")  # no rooms=
        assert invalid.status_code == 400 and invalid.content == b""
        presence: dict[str, Any] = (await client.get(f"/api/rooms/{room}/presence")).json()
        after = await scrape(client)
    assert presence["users"] == []
    assert after["chat_streams_opened_total"] == before["chat_streams_opened_total"]


async def test_requests_are_freed_without_the_cyclic_collector(tmp_path: Path) -> None:
    """The server runs the cyclic garbage collector seldom (serve.tune_gc), so whatever a
    request leaves in a reference cycle (its body included) piles up until then: a request
    of the pipeline must be freed by reference counting alone."""
    settings = Settings(database=str(tmp_path / "chat.db"))
    app = create_app(settings)
    async with in_process(app, settings) as url, httpx.AsyncClient(base_url=url) as client:

        async def post_many(count: int) -> None:
            async with asyncio.timeout(TIMEOUT_S * 3):
                for _ in range(count):
                    response = await client.post("/api/rooms/r/messages", json=GOOD)
                    assert response.status_code == 201, response.text
                    assert (await client.get("/api/rooms/r/messages")).status_code == 200
                    assert (await client.post("/api/rooms/r/nope", json=GOOD)).status_code == 404
                    bad = await client.post("/api/rooms/r/messages", content=b"{", headers=JSON)
                    assert bad.status_code == 400, bad.text

        await post_many(20)  # warm up: caches, pools, the room
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection finds stays in gc.garbage
        try:
            await post_many(100)
            gc.collect()
            left = [o for o in gc.garbage if _of_a_request(o)]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
    assert left == [], f"{len(left)} objects of requests in cycles, e.g. {left[:3]}"


def _of_a_request(thing: object) -> bool:
    """An object of the service's (its module under ``chat``) or an ASGI request scope."""
    if isinstance(thing, dict):
        return thing.get("type") == "http" and "asgi" in thing
    return type(thing).__module__.startswith("chat.")


async def answer_head(port: int, request: bytes) -> bytes:
    """Send raw bytes on a new connection; the head of the answer."""
    async with asyncio.timeout(TIMEOUT_S):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(request)
            return await reader.readuntil(b"\r\n\r\n")
        finally:
            writer.close()


async def test_a_websocket_request_is_refused(make_server: Callable[..., LiveServer]) -> None:
    """No route takes a websocket: the handshake is refused, not left to Quart, with the JSON
    envelope, its request id and nosniff like every error (API.md, ACCESS.md), and a line in
    the access log like every request."""
    live = make_server(CHAT_LOG_FORMAT="json")
    async with asyncio.timeout(TIMEOUT_S):
        reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
        try:
            writer.write(
                b"GET /api/rooms/r/events?access_token=SECRET HTTP/1.1\r\nHost: x\r\n"
                b"Upgrade: websocket\r\nConnection: Upgrade\r\nX-Request-ID: ws-refused-1\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            fields = dict(line.lower().split(": ", 1) for line in lines[1:] if line)
            body = await reader.readexactly(int(fields["content-length"]))
        finally:
            writer.close()
    assert lines[0].startswith("HTTP/1.1 403 "), head
    assert fields["content-type"] == "application/json; charset=utf-8", fields
    assert fields["x-content-type-options"] == "nosniff", fields
    assert fields["x-request-id"] == "ws-refused-1", fields
    error = orjson.loads(body)["error"]
    assert (error["code"], error["request_id"]) == ("forbidden", "ws-refused-1"), error

    async def logged() -> list[dict[str, Any]]:
        found = [orjson.loads(line) for line in live.log().splitlines() if "ws-refused-1" in line]
        return [line for line in found if line.get("event") == "request"]

    (line,) = await eventually(logged, TIMEOUT_S, "the refusal's line in the access log")
    assert (line["status"], line["method"]) == (403, "GET"), line
    assert line["path"] == "/api/rooms/r/events?access_token=[redacted]", line


async def test_a_body_over_the_limit_is_413_even_if_its_tail_stalls(
    make_server: Callable[..., LiveServer],
) -> None:
    """The limit is passed early, then the client stops sending: the answer is the 413 (after
    a bounded drain), not a 408 when the body timeout passes meanwhile."""
    live = make_server(CHAT_MAX_BODY_BYTES="1000", CHAT_BODY_TIMEOUT_SECONDS="1")
    head = await answer_head(
        live.port,
        b"POST /api/rooms/r/messages HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5dc\r\n" + b"x" * 1500 + b"\r\n",  # and never the rest
    )
    assert head.startswith(b"HTTP/1.1 413 "), head


async def test_the_access_record_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``chat.access`` at INFO: one line per request with its id, what was asked, the status
    and the endpoint that served it (written in json format, and in text format with
    CHAT_LOG_LEVEL=DEBUG: chat.logs)."""
    settings = Settings(database=str(tmp_path / "chat.db"))
    app = create_app(settings)
    caplog.set_level(logging.DEBUG, logger="chat.access")
    async with in_process(app, settings) as url, httpx.AsyncClient(base_url=url) as client:
        async with asyncio.timeout(TIMEOUT_S):
            posted = await client.post("/api/rooms/r/messages", json=GOOD)
            missing = await client.get("/api/nope", headers={"x-request-id": "trace-7"})
    assert posted.status_code == 201 and missing.status_code == 404
    lines = [r.getMessage() for r in caplog.records if r.name == "chat.access"]
    made = posted.headers["x-request-id"]
    assert any(
        line.startswith(f"{made} POST /api/rooms/r/messages -> 201 (messages.post, plain)")
        for line in lines
    ), lines
    assert any(
        line.startswith("trace-7 GET /api/nope -> 404 (unmatched, pipeline)") for line in lines
    ), lines


def test_a_body_is_parsed_once_for_every_reader() -> None:
    """The limits step (a batch's items) and the route (``ChatRequest.get_json``) read one
    parse of the body (``body_json``): a 500-item batch is not parsed twice, and the two cannot
    see two different bodies. A body that is no UTF-8 JSON is refused each time it is read."""

    async def nothing(*_: Any) -> Any:
        raise AssertionError("not called")

    scope: Any = {"type": "http", "headers": [], "client": ("127.0.0.1", 1)}
    request = Request(scope, nothing, nothing)
    request.body = orjson.dumps({"messages": [{"text": "hi"}] * 500})
    first = body_json(request)
    assert len(first["messages"]) == 500
    assert body_json(request) is first
    broken = Request(scope, nothing, nothing)
    broken.body = '{"text": "é"}'.encode("latin-1")
    for _ in range(2):
        with pytest.raises(ValueError, match="utf-8"):
            body_json(broken)
