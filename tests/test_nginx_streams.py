"""Standard EventSource clients through nginx (deploy/nginx.conf, run as tests/test_deploy.py
runs it, in front of the compose topology) keep following a room across restarts of the apps
behind it: Node's `eventsource` package (pinned in tests/node/package.json) and Chromium's
own EventSource, in a page.

A standard EventSource gives up for good on any status but 200, so a stream that cannot be
served now must be answered 200 with a `retry:` (API.md, "Streams"): by the app while it shuts
down, and by nginx when no app answers. The clients here are used as an application uses
them, nothing added: they reconnect by themselves and resume with Last-Event-ID, and each
must see every numbered message exactly once, in order. Every wait is bounded."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import httpx
import pytest

from tests.conftest import need, need_program
from tests.live import ROOT, LiveServer, free_port, open_stream
from tests.page_helpers import (
    CHROMIUM_PRESENT,
    HAVE_PLAYWRIGHT,
    chromium,
    open_event_sources,
    seen_events,
)
from tests.redis_server import RedisServer
from tests.test_deploy import Nginx, Topology, load_compose, running_topology, subscribers

if TYPE_CHECKING:
    from playwright.async_api import Route

Json = dict[str, Any]
NODE_DIR = ROOT / "tests" / "node"
# The app's `retry:` at the start of each stream: how soon a client comes back after its
# stream dropped (3000 by default; short here so that the tests stay quick).
RETRY_MS = "200"
# nginx's `retry:` when no app answers (its map of $request_id): 1000 to 2875 ms.
NGINX_RETRY_MS = range(1000, 3000)
COME_BACK = re.compile(rb"retry: (\d+)\n: [^\n]+\n\n")


# --- the clients ----------------------------------------------------------------------------


class Clients(Protocol):
    """Standard EventSources, one per stream URL; ``seen()`` lists what they saw, as
    ``{stream, kind: open|message|error, id, data, readyState}``."""

    async def seen(self) -> list[Json]: ...


class NodeClients:
    """tests/node/sse_clients.mjs: one Node process, one `eventsource` EventSource per URL."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc = proc
        self.log = log
        self.lines: list[Json] = []
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    async def seen(self) -> list[Json]:
        if self.reader.done() and self.reader.exception() is not None:
            raise AssertionError(f"the node client failed: {self.reader.exception()!r}")
        return list(self.lines)

    async def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()  # the script ends when its stdin does
        try:
            await asyncio.wait_for(self.proc.wait(), 5)
        except TimeoutError:
            self.proc.kill()
            await asyncio.wait_for(self.proc.wait(), 5)
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(self.reader, 5)


def need_node() -> str:
    node = need_program("node")
    need(
        (NODE_DIR / "node_modules" / "eventsource").is_dir(),
        "Node's eventsource package is not installed: npm ci --prefix tests/node",
    )
    return node


@contextlib.asynccontextmanager
async def node_clients(base: str, paths: list[str], workdir: Path) -> AsyncIterator[NodeClients]:
    node = need_node()
    log = workdir / "node.log"
    with log.open("wb") as stderr:
        proc = await asyncio.wait_for(
            asyncio.create_subprocess_exec(
                node,
                str(NODE_DIR / "sse_clients.mjs"),
                *(base + path for path in paths),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
            ),
            10,
        )
    clients = NodeClients(proc, log)
    try:
        yield clients
    finally:
        await clients.close()


class PageClients:
    """EventSources in a Chromium page of nginx's origin (page_helpers.open_event_sources)."""

    def __init__(self, page: Any) -> None:
        self.page = page

    async def seen(self) -> list[Json]:
        return await seen_events(self.page)


BLANK = b"<!doctype html><meta charset=utf-8><link rel=icon href='data:,'><title>streams</title>"


async def serve_blank(route: Route) -> None:
    await route.fulfill(status=200, content_type="text/html", body=BLANK)


@contextlib.asynccontextmanager
async def page_clients(base: str, paths: list[str], workdir: Path) -> AsyncIterator[PageClients]:
    async with chromium() as browser:
        context = await browser.new_context()
        try:
            page = await context.new_page()
            # a page of nginx's origin (the EventSources are same-origin) that the test serves
            # itself, with an icon of its own: Chromium's request for /favicon.ico, unseen by
            # Playwright, would otherwise reach an app while the streams arrive, and least_conn
            # then puts both on the other app (the fresh-clone CI of 7268586 saw that 3 times)
            await page.route(f"{base}/streams-test", serve_blank)
            response = await page.goto(base + "/streams-test", timeout=15_000)
            assert response is not None and response.status == 200
            await open_event_sources(page, paths)
            yield PageClients(page)
        finally:
            await context.close()


ClientsFactory = Callable[[str, list[str], Path], contextlib.AbstractAsyncContextManager[Clients]]
KINDS: dict[str, ClientsFactory] = {"node": node_clients, "chromium": page_clients}


# --- what the clients saw -------------------------------------------------------------------


def received(seen: list[Json], stream: int) -> list[tuple[int, str]]:
    """(id, text) of every message event one stream delivered, in the order it did."""
    return [
        (int(line["id"]), json.loads(line["data"])["text"])
        for line in seen
        if line["stream"] == stream and line["kind"] == "message"
    ]


def gave_up(seen: list[Json]) -> list[Json]:
    """Errors after which an EventSource is CLOSED (readyState 2): it never comes back."""
    return [line for line in seen if line["kind"] == "error" and line["readyState"] == 2]


async def wait_seen(
    clients: Clients, check: Callable[[list[Json]], bool], what: str, timeout_s: float = 15.0
) -> list[Json]:
    """Poll the clients until ``check`` holds; fail (with what they saw) after ``timeout_s``,
    or as soon as one has given up."""
    seen: list[Json] = []
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                seen = await clients.seen()
                assert not gave_up(seen), f"an EventSource gave up for good: {gave_up(seen)}"
                if check(seen):
                    return seen
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"no {what} within {timeout_s}s; the clients saw {seen}") from None


class Room:
    """A room, numbered messages posted to it through nginx, and what each stream of it must
    have received: all of them, each once, in order."""

    def __init__(self, client: httpx.AsyncClient, name: str, streams: int) -> None:
        self.client = client
        self.name = name
        self.streams = streams
        self.posted: list[tuple[int, str]] = []

    async def post(self, count: int) -> None:
        """The next ``count`` numbered messages, each as a careful client posts: with an
        Idempotency-Key, tried again while nginx finds no app (a POST nginx had already sent
        to an app that died is not sent again by nginx: the key makes the retry safe)."""
        for _ in range(count):
            text = f"message {len(self.posted) + 1}"
            key = uuid.uuid4().hex
            # A guard against a hang, not a measure: after both apps were away, nginx holds
            # each for fail_timeout (10 s) after its last failed attempt, and a POST on one of
            # its kept-alive connections to the old process fails again (CI once ran out of
            # 15 s here at caa9c70, in the Chromium run).
            async with asyncio.timeout(40):
                while True:
                    response = await self.client.post(
                        f"/api/rooms/{self.name}/messages",
                        json={"author": "alice", "text": text},
                        headers={"Idempotency-Key": key},
                    )
                    if response.status_code not in {502, 503}:
                        break
                    await asyncio.sleep(0.2)
            assert response.status_code in {200, 201}, response.text
            self.posted.append((response.json()["id"], text))

    def all_arrived(self, seen: list[Json]) -> bool:
        return all(len(received(seen, s)) >= len(self.posted) for s in range(self.streams))

    async def wait_all(self, clients: Clients, timeout_s: float = 15.0) -> list[Json]:
        """Wait until every stream has as many messages as were posted, then check that they
        are exactly those, once each, in order."""
        seen = await wait_seen(clients, self.all_arrived, f"{self.posted}", timeout_s)
        for stream in range(self.streams):
            assert received(seen, stream) == self.posted, f"stream {stream}: {seen}"
        return seen


async def errors_after(clients: Clients, mark: int, count: int) -> list[Json]:
    """Wait until ``count`` streams have reported an error (their connection ended) after the
    first ``mark`` lines: they are reconnecting now, through whatever nginx answers meanwhile."""

    def dropped(seen: list[Json]) -> bool:
        return len({line["stream"] for line in seen[mark:] if line["kind"] == "error"}) >= count

    return await wait_seen(clients, dropped, f"dropped connection on {count} streams")


async def both(first: Callable[[], Any], second: Callable[[], Any]) -> None:
    """Two blocking steps (an app's start or stop) at once, off the event loop."""
    await asyncio.wait_for(asyncio.gather(asyncio.to_thread(first), asyncio.to_thread(second)), 60)


async def off_loop(step: Callable[[], Any]) -> Any:
    return await asyncio.wait_for(asyncio.to_thread(step), 60)


# --- the topology ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> Json:
    return load_compose()


@pytest.fixture
def nginx_program() -> str:
    return need_program("nginx")


@pytest.fixture
def clients_kind(kind: str) -> str:
    """The test's kind of client, there (or the test skipped) before anything starts."""
    if kind == "node":
        need_node()
    else:
        need(HAVE_PLAYWRIGHT, "playwright is not installed")
        need(CHROMIUM_PRESENT, "Debian's chromium is not installed")
    return kind


@pytest.fixture
def quick_topology(
    clients_kind: str, tmp_path: Path, compose: Json, redis_server: RedisServer, nginx_program: str
) -> Any:
    """The compose topology with the repository's nginx.conf, the apps telling clients to come
    back after RETRY_MS."""
    with running_topology(
        tmp_path, compose, redis_server, nginx_program, {"CHAT_RETRY_MS": RETRY_MS}
    ) as topology:
        yield topology


@contextlib.asynccontextmanager
async def followed_room(
    topology: Topology, kind: str, tmp_path: Path, room: str
) -> AsyncIterator[tuple[Room, Clients]]:
    """A room followed through nginx by two standard EventSources of one kind, one on each
    stream path; returns once both are open and nginx has put one on each app."""
    async with httpx.AsyncClient(base_url=topology.nginx.url, timeout=10) as client:
        created = await client.put(f"/api/rooms/{room}", json={"title": room})
        assert created.status_code in {200, 201}, created.text
        paths = [f"/api/rooms/{room}/events", f"/api/events?rooms={room}"]

        async def spread() -> list[float]:
            return [await subscribers(client, app) for app in (topology.app1, topology.app2)]

        async def settled(wanted: list[float]) -> bool:
            # (an EventSource is open once the headers came, the app subscribes it just after)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    while True:
                        if await spread() == wanted:
                            return True
                        await asyncio.sleep(0.05)
            return False

        # least_conn spreads the two streams over both apps, so that taking either app away
        # drops a stream (a test that dropped none would prove nothing). It counts the
        # requests in flight when each stream arrives, and another request in flight then
        # can tip both streams onto one app (page_clients keeps Chromium's /favicon.ico away):
        # then the clients are closed and opened again.
        for attempt in range(1, 4):
            async with KINDS[kind](topology.nginx.url, paths, tmp_path) as clients:
                await wait_seen(
                    clients,
                    lambda seen: (
                        {line["stream"] for line in seen if line["kind"] == "open"} == {0, 1}
                    ),
                    "open event on both streams",
                )
                if await settled([1, 1]):
                    yield Room(client, room, len(paths)), clients
                    return
                if attempt == 3:
                    raise AssertionError(f"streams per app after 3 tries: {await spread()}")
            assert await settled([0, 0]), f"closed streams still subscribed: {await spread()}"


async def assert_nginx_sends_streams_back(url: str, room: str) -> None:
    """What a client that reconnects now gets from nginx with no app up: 200, an event
    stream, a `retry:` of one to three seconds, and the end of the response."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        answer = await client.get(f"/api/rooms/{room}/events", headers={"Last-Event-ID": "1"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    come_back = COME_BACK.fullmatch(answer.content)
    assert come_back and int(come_back[1]) in NGINX_RETRY_MS, answer.content


# --- the tests ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["node", "chromium"])
async def test_standard_event_sources_follow_a_room_through_nginx_across_app_restarts(
    quick_topology: Topology, kind: str, tmp_path: Path, room: str
) -> None:
    """Apps killed (SIGKILL) and started again on the same port: first one while the other
    serves, then both, for a few seconds, while nginx answers every reconnect itself. Each
    client resumes by itself and sees every message once, in order."""
    topology = quick_topology
    app1, app2 = topology.app1, topology.app2
    async with followed_room(topology, kind, tmp_path, room) as (messages, clients):
        await messages.post(3)  # before
        await messages.wait_all(clients)

        mark = len(await clients.seen())
        app1.kill()  # one app down, the other up
        await messages.post(3)  # during: nginx sends the POSTs and the reconnect to app2
        await off_loop(app1.start)  # the same port again
        await errors_after(clients, mark, 1)  # the stream app1 served ended and came back
        await messages.post(3)
        await messages.wait_all(clients)

        mark = len(await clients.seen())
        app1.kill()  # every app down
        app2.kill()
        await errors_after(clients, mark, messages.streams)
        await assert_nginx_sends_streams_back(topology.nginx.url, room)
        await asyncio.sleep(2)  # down for a few seconds: the clients keep coming back
        await both(app1.start, app2.start)
        await messages.post(3)  # after
        seen = await messages.wait_all(clients)
        assert not gave_up(seen)


@pytest.mark.parametrize("kind", ["node", "chromium"])
async def test_standard_event_sources_follow_a_room_through_nginx_across_app_shutdowns(
    quick_topology: Topology, kind: str, tmp_path: Path, room: str
) -> None:
    """Apps stopped as Docker stops them (SIGTERM: each ends its streams and exits; a new
    stream that still reaches one gets its 200 and `retry:`, the others go to the app still up
    or get nginx's), first one, then both, and started again; messages posted while an app
    shuts down too. Each client sees every message once, in order."""
    topology = quick_topology
    app1, app2 = topology.app1, topology.app2
    async with followed_room(topology, kind, tmp_path, room) as (messages, clients):
        await messages.post(3)  # before
        await messages.wait_all(clients)

        mark = len(await clients.seen())
        stopping = asyncio.ensure_future(off_loop(app1.terminate))
        await messages.post(3)  # during the shutdown
        assert await stopping == 0, app1.log()
        await errors_after(clients, mark, 1)  # app1's stream (at least) ended and came back
        await off_loop(app1.start)
        await messages.post(3)
        await messages.wait_all(clients)

        mark = len(await clients.seen())
        await both(app1.terminate, app2.terminate)
        await errors_after(clients, mark, messages.streams)
        await assert_nginx_sends_streams_back(topology.nginx.url, room)
        await both(app1.start, app2.start)
        await messages.post(3)  # after
        seen = await messages.wait_all(clients)
        assert not gave_up(seen)


async def test_a_stream_with_no_app_reachable_gets_200_a_jittered_retry_and_its_end(
    tmp_path: Path, nginx_program: str, compose: Json
) -> None:
    """nginx alone (nothing listens at the upstream addresses): the three stream paths, GET and
    with Last-Event-ID, are 200 event streams that say when to come back and end; the retry
    varies from one request to the next, so clients sent away together spread out. A REST
    path keeps the JSON 503 (test_deploy.test_nginx_own_errors_are_json)."""
    nginx = Nginx(nginx_program, tmp_path, compose, [free_port(), free_port()])
    nginx.start()
    try:
        async with httpx.AsyncClient(base_url=nginx.url, timeout=10) as client:
            retries = set()
            paths = (
                "/api/events?rooms=a,b",
                "/api/rooms/general/events",
                "/api/users/alice/notifications/events",
            )
            for index in range(24):
                path = paths[index % len(paths)]
                answer = await client.get(path, headers={"Last-Event-ID": str(index)})
                assert answer.status_code == 200, answer.text
                assert answer.headers["content-type"] == "text/event-stream; charset=utf-8"
                assert answer.headers["cache-control"] == "no-cache"
                come_back = COME_BACK.fullmatch(answer.content)
                assert come_back, answer.content
                retries.add(int(come_back[1]))
            assert retries <= set(NGINX_RETRY_MS) and len(retries) > 1, retries
            rest = await client.get("/api/rooms/general/messages")
            assert rest.status_code == 503 and rest.json()["error"]["code"] == "unavailable"
    finally:
        nginx.stop()


async def refusing_server(port: int, requests: list[bytes]) -> asyncio.Server:
    """An upstream that answers every request 503 (an app that cannot serve it) and closes;
    each request's head goes into ``requests``."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                requests.append(await reader.readuntil(b"\r\n\r\n"))
                body = b'{"error": {"code": "unavailable", "message": "busy", "details": []}}'
                writer.write(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
                )
                await writer.drain()
        finally:
            writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", port)


async def test_a_stream_one_app_answers_503_is_served_by_the_other(
    tmp_path: Path, nginx_program: str, compose: Json, room: str
) -> None:
    """app1 answers 503 (as an app that cannot serve a stream and predates the 200 answer
    would), app2 serves: every stream opened through nginx is served, by app2. least_conn
    offers a new stream to app1 at the latest once app2 holds one, so nginx gets app1's 503
    and sends the GET on to app2 (then it leaves app1 out for a while, as for any failure)."""
    app = LiveServer(tmp_path / "app2")
    app.workdir.mkdir()
    await off_loop(app.start)
    refusing_port = free_port()
    refused: list[bytes] = []
    refusing = await refusing_server(refusing_port, refused)
    (tmp_path / "nginx").mkdir()
    nginx = Nginx(nginx_program, tmp_path / "nginx", compose, [refusing_port, app.port])
    try:
        await off_loop(nginx.start)
        async with (
            httpx.AsyncClient(base_url=nginx.url, timeout=10) as client,
            contextlib.AsyncExitStack() as streams,
        ):
            for _ in range(4):
                await streams.enter_async_context(open_stream(client, f"/api/rooms/{room}/events"))
            assert await subscribers(client, app) == 4
        assert refused and all(head.startswith(b"GET /api/rooms/") for head in refused), refused
    finally:
        await off_loop(nginx.stop)
        refusing.close()
        await asyncio.wait_for(refusing.wait_closed(), 5)
        app.kill()
