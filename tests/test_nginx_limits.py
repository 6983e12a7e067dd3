"""deploy/nginx.conf's first line of defence: per client address, a request rate on the REST
API (streams left out) and a number of requests in progress at once (streams counted), both
answered with the API's JSON 429 and Retry-After.

The repository's numbers are far above what a page or this test suite does, so these tests
run a test-only copy of the conf (tests/test_deploy.py's Nginx ``edit``) in which only those
three numbers are lowered; every other byte is the file compose mounts. Every wait is
bounded."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import need_program
from tests.live import open_stream
from tests.redis_server import RedisServer
from tests.test_deploy import Topology, load_compose, running_topology

Json = dict[str, Any]

# The repository's numbers, and the test's: each string must appear in the conf once.
RATE, BURST, CONNECTIONS = 1, 3, 6
LOWERED = {
    b"rate=50r/s;": b"rate=%dr/s;" % RATE,
    b"burst=200 nodelay;": b"burst=%d nodelay;" % BURST,
    b"limit_conn chat_conn 1000;": b"limit_conn chat_conn %d;" % CONNECTIONS,
}


def lowered_limits(conf: bytes) -> bytes:
    for old, new in LOWERED.items():
        assert conf.count(old) == 1, f"deploy/nginx.conf should say {old.decode()!r} once"
        conf = conf.replace(old, new)
    return conf


@pytest.fixture
def limited(tmp_path: Path, redis_server: RedisServer) -> Iterator[Topology]:
    """The compose topology behind the test-only copy of nginx.conf."""
    nginx = need_program("nginx")
    with running_topology(
        tmp_path, load_compose(), redis_server, nginx, edit=lowered_limits
    ) as topology:
        yield topology


@pytest.fixture
async def via_nginx(limited: Topology) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=limited.nginx.url, timeout=10) as client:
        yield client


def assert_rate_limited(response: httpx.Response) -> None:
    """nginx's own 429, in the contract's shape (ACCESS.md, "Limits")."""
    assert response.status_code == 429, (response.status_code, response.headers)
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["retry-after"] == "1"
    error = response.json()["error"]
    assert error["code"] == "rate_limited" and error["message"] and error["details"] == []


async def stream_answer(client: httpx.AsyncClient, path: str) -> httpx.Response:
    """A stream's answer: its body read if it is an error, the stream left at once if not."""
    async with asyncio.timeout(10):
        response = await client.send(client.build_request("GET", path), stream=True)
        try:
            if response.status_code != 200:
                await response.aread()
        finally:
            await response.aclose()
    return response


async def open_streams(
    client: httpx.AsyncClient, room: str, count: int, stack: contextlib.AsyncExitStack
) -> None:
    for _ in range(count):
        await stack.enter_async_context(open_stream(client, f"/api/rooms/{room}/events"))


async def test_over_the_request_rate_the_api_answers_json_429_and_streams_still_open(
    via_nginx: httpx.AsyncClient, room: str
) -> None:
    """From one address: more streams than the rate and its burst allow all open (a stream is
    not rate-limited: an EventSource reconnecting is not abuse); then REST calls beyond the
    burst get the JSON 429 with Retry-After, while paths outside /api (the page, health
    checks) are not limited."""
    async with contextlib.AsyncExitStack() as stack:
        await open_streams(via_nginx, room, BURST + 2, stack)
        answers = [await via_nginx.get("/api/rooms") for _ in range(BURST + 5)]
        statuses = [answer.status_code for answer in answers]
        assert statuses[0] == 200 and 429 in statuses, statuses
        assert set(statuses) == {200, 429}, statuses
        for answer in answers:
            if answer.status_code == 429:
                assert_rate_limited(answer)
        assert (await via_nginx.get("/healthz")).status_code == 200
        # and a stream still opens while the REST calls are refused
        await open_streams(via_nginx, room, 1, stack)


async def test_over_the_connection_limit_streams_and_calls_get_json_429(
    via_nginx: httpx.AsyncClient, room: str
) -> None:
    """From one address: as many streams as the connection limit open; one more stream, or a
    REST call, gets the JSON 429 (a status, not a `retry:`: reconnecting sooner would not
    help a client over its own limit, API.md "Streams"); once a stream closes, a new one
    opens again."""
    async with contextlib.AsyncExitStack() as stack:
        await open_streams(via_nginx, room, CONNECTIONS - 1, stack)
        async with contextlib.AsyncExitStack() as last:
            await open_streams(via_nginx, room, 1, last)
            assert_rate_limited(await stream_answer(via_nginx, f"/api/rooms/{room}/events"))
            assert_rate_limited(await via_nginx.get("/api/rooms"))
        # the last stream closed: nginx counts it out once it sees the connection go (asked
        # with HEAD, which the app answers with a stream's headers and no stream)
        async with asyncio.timeout(5):
            while True:
                answer = await via_nginx.head(f"/api/rooms/{room}/events")
                if answer.status_code == 200:
                    break
                assert answer.status_code == 429, answer
                await asyncio.sleep(0.1)
        await open_streams(via_nginx, room, 1, stack)
