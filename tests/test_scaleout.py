"""Scale-out: several ``python -m chat serve`` processes on one database share every event
through a real redis-server (``CHAT_BROKER=redis://...``). Every test runs on both stores
(tests/conftest.py's ``store_kind``): the processes share one SQLite file, or one PostgreSQL
database and no file at all.

What a client sees must not depend on which process it talks to: every persisted event that
matches a stream arrives there once, in id order, with no gap (ids are global and dense);
resuming with ``Last-Event-ID`` works on any process; presence and the typing limit are
shared; Redis going away costs readiness, never a message; ``--workers 2`` is one port with
two processes. Every network wait is bounded (the helpers' timeouts, ``asyncio.timeout``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.live import LiveServer, SSEStream, free_port, open_stream
from tests.redis_server import RedisServer
from tests.scaleout_helpers import (
    Cluster,
    Follower,
    Json,
    check_sequence,
    descendants,
    eventually,
    kill_left,
    metric,
    post,
    readyz,
    running,
    sockets_held_by,
    wait_all,
    wait_gone,
)

GRACE_S = 0.2  # CHAT_PRESENCE_GRACE_SECONDS of every cluster process (scaleout_helpers)


@pytest.fixture
def cluster(
    tmp_path: Path, redis_server: RedisServer, new_database: Callable[[Path], str]
) -> Iterator[Cluster]:
    """Processes of the test's own on one new database of the module's store (a SQLite file
    they share, or a PostgreSQL database) and the test's Redis; all killed at the end (their
    logs are printed, which pytest shows when the test failed)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    made = Cluster(tmp_path, redis_server.url, new_database(shared))
    try:
        yield made
    finally:
        made.close()
        print(made.logs()[-30000:])


def ids_of(events: list[Json]) -> list[int]:
    return [int(e["id"]) for e in events]


async def wait_status(
    client: httpx.AsyncClient, live: LiveServer, status: int, timeout_s: float
) -> httpx.Response:
    """Poll ``/readyz`` until it answers ``status``; returns that answer."""

    async def check() -> httpx.Response | None:
        response = await readyz(client, live.url)
        return response if response.status_code == status else None

    found: httpx.Response = await eventually(check, timeout_s, f"{live.url}/readyz {status}", 0.1)
    return found


async def wait_metric(
    client: httpx.AsyncClient, live: LiveServer, name: str, value: float, timeout_s: float
) -> None:
    async def check() -> bool:
        return await metric(client, live.url, name) == value

    await eventually(check, timeout_s, f"{live.url} {name} == {value}", 0.1)


# -- 1. fan-out across processes -----------------------------------------------------------


async def test_a_message_posted_anywhere_reaches_subscribers_of_every_process(
    cluster: Cluster,
) -> None:
    """Three processes, each with a one-room stream, a two-room stream and a ``rooms=*``
    stream. Messages posted round-robin to the three processes, into three rooms (none of which
    exists beforehand): every stream receives exactly the matching ones, in id order, each the
    very JSON its publisher got back."""
    servers = cluster.start(3)
    a, b, c = "alpha", "beta", "gamma"
    kinds = {
        "one": ((f"/api/rooms/{a}/events", {}), {a}),
        "two": (("/api/events", {"rooms": f"{a},{b}"}), {a, b}),
        "all": (("/api/events", {"rooms": "*"}), {a, b, c}),
    }
    async with contextlib.AsyncExitStack() as stack, httpx.AsyncClient(timeout=10) as client:
        followers: list[tuple[str, Follower]] = []
        for live in servers:
            for kind, ((path, params), _) in kinds.items():
                name = f"{live.workdir.name} {kind}"
                follower = Follower(live.url, path, params, name=name)
                followers.append((kind, await stack.enter_async_context(follower)))
        posted: list[Json] = []
        for i in range(12):
            live = servers[i % 3]
            room = (a, b, c)[(i // 3) % 3]  # each process posts into each room
            posted.append(await post(client, live.url, room, f"u{i % 3}", f"{i} via {live.url}"))
        assert ids_of(posted) == sorted(ids_of(posted))  # one after the other: increasing
        marker = await post(client, servers[1].url, a, "marker", "marker")
        await wait_all((f for _, f in followers), marker["id"])
        for kind, follower in followers:
            rooms = kinds[kind][1]
            expected = [e for e in posted if e["room"] in rooms] + [marker]
            check_sequence(follower.ids(), ids_of(expected), follower)
            assert [e.json() for e in follower.events] == expected, follower
            assert all(e.event == "message" for e in follower.events), follower
    if cluster.kind == "postgresql":  # the processes share the database and no file
        assert cluster.files() == [], cluster.files()


# -- 2. concurrent publishers --------------------------------------------------------------


async def test_concurrent_publishers_on_three_processes_every_id_once_in_order(
    cluster: Cluster,
) -> None:
    """Six publishers, 40 messages each, every publisher going round-robin over the three
    processes. The ids the POSTs returned are dense (consecutive: one sequence across the
    processes), and every subscriber on every process gets exactly those, in order."""
    servers = cluster.start(3)
    room, publishers, each = "busy", 6, 40
    async with contextlib.AsyncExitStack() as stack, httpx.AsyncClient(timeout=10) as client:
        created = await client.put(f"{servers[0].url}/api/rooms/{room}", json={})
        assert created.status_code == 201, created.text
        followers: list[Follower] = []
        for live in servers:
            for path, params in (
                (f"/api/rooms/{room}/events", {}),
                ("/api/events", {"rooms": "*"}),
            ):
                name = f"{live.workdir.name} {path} {params}"
                followers.append(
                    await stack.enter_async_context(Follower(live.url, path, params, name=name))
                )
        acked: list[Json] = []

        async def publisher(k: int) -> None:
            for i in range(each):
                live = servers[(k + i) % 3]
                acked.append(await post(client, live.url, room, f"p{k}", f"{k}:{i}"))

        async with asyncio.timeout(60):
            await asyncio.gather(*(publisher(k) for k in range(publishers)))
        ids = sorted(ids_of(acked))
        assert len(set(ids)) == publishers * each
        assert ids == list(range(ids[0], ids[0] + publishers * each)), "ids are not dense"
        marker = await post(client, servers[2].url, room, "marker", "marker")
        await wait_all(followers, marker["id"], timeout_s=30)
        by_id = {e["id"]: e for e in [*acked, marker]}
        for follower in followers:
            check_sequence(follower.ids(), [*ids, marker["id"]], follower)
            assert all(e.json() == by_id[int(e.id or 0)] for e in follower.events), follower


# -- 3. Redis goes away and comes back -----------------------------------------------------


async def test_redis_killed_and_restarted_mid_run_loses_nothing(
    cluster: Cluster, redis_server: RedisServer
) -> None:
    """Redis is killed while three processes serve subscribers: /readyz turns 503 (the JSON
    envelope, ``unavailable``) and ``chat_broker_connected`` 0 on every process, posting still
    commits (201), and once Redis is back /readyz is 200 again. Every subscriber ends up with
    every id once, in order (a stream the server ends is resumed, as EventSource would), and
    every process is still running."""
    servers = cluster.start(3)
    room = "weather"
    async with contextlib.AsyncExitStack() as stack, httpx.AsyncClient(timeout=10) as client:
        for live in servers:
            assert (await readyz(client, live.url)).status_code == 200
            assert await metric(client, live.url, "chat_broker_connected") == 1
        followers = [
            await stack.enter_async_context(
                Follower(
                    live.url,
                    path,
                    params,
                    name=f"{live.workdir.name} {path} {params}",
                    reconnect_url=live.url,
                )
            )
            for live in servers
            for path, params in (
                (f"/api/rooms/{room}/events", {}),
                ("/api/events", {"rooms": f"{room},elsewhere"}),
            )
        ]
        posted: list[Json] = []

        async def post_round(tag: str, count: int) -> None:
            for i in range(count):
                live = servers[i % 3]
                posted.append(await post(client, live.url, room, "w", f"{tag} {i} via {live.url}"))

        await post_round("before", 9)
        await wait_all(followers, posted[-1]["id"])

        redis_server.stop()
        for live in servers:
            down = await wait_status(client, live, 503, timeout_s=15)
            assert down.headers["content-type"].startswith("application/json"), down.headers
            error = down.json()["error"]
            assert error["code"] == "unavailable", down.text
            assert isinstance(error["message"], str) and isinstance(error["details"], list)
            await wait_metric(client, live, "chat_broker_connected", 0, timeout_s=15)
        await post_round("while redis is down", 9)  # every one 201: committed
        for live in servers:  # still down, nobody exited
            assert (await readyz(client, live.url)).status_code == 503
            assert live.proc is not None and live.proc.poll() is None, live.log()[-3000:]

        redis_server.start()
        for live in servers:
            await wait_status(client, live, 200, timeout_s=20)
            await wait_metric(client, live, "chat_broker_connected", 1, timeout_s=5)
        await post_round("after", 9)
        marker = await post(client, servers[0].url, room, "marker", "marker")
        await wait_all(followers, marker["id"], timeout_s=20)
        expected = [*ids_of(posted), marker["id"]]
        for follower in followers:
            check_sequence(follower.ids(), expected, follower)
        for live in servers:
            assert live.proc is not None and live.proc.poll() is None, live.log()[-3000:]


# -- 4. a process dies ---------------------------------------------------------------------


async def test_process_killed_clients_resume_on_another_then_it_serves_again(
    cluster: Cluster,
) -> None:
    """SIGKILL to the process two clients stream from, while messages keep being posted to the
    other two: each client sees its stream end and resumes with Last-Event-ID on another
    process; what it received before and after is every id once, in order. Restarted on the
    same port and database, the killed process serves a resumed stream and live events again,
    and what is posted to it reaches the others."""
    p0, p1, p2 = cluster.start(3)
    room, count = "failover", 60
    path = f"/api/rooms/{room}/events"
    async with contextlib.AsyncExitStack() as stack, httpx.AsyncClient(timeout=10) as client:
        on_victim = [
            Follower(p0.url, path, name="p0 room, then p1", reconnect_url=p1.url),
            Follower(
                p0.url,
                "/api/events",
                {"rooms": f"{room},other"},
                name="p0 rooms, then p2",
                reconnect_url=p2.url,
            ),
        ]
        bystander = Follower(p2.url, path, name="p2 room")
        for follower in [*on_victim, bystander]:
            await stack.enter_async_context(follower)
        acked: list[Json] = []

        async def publish() -> None:
            for i in range(count):
                live = (p1, p2)[i % 2]
                acked.append(await post(client, live.url, room, "pub", f"m{i} via {live.url}"))
                await asyncio.sleep(0.02)

        publisher = asyncio.create_task(publish())
        try:

            async def enough() -> bool:
                return all(len(f.ids()) >= 15 for f in on_victim)

            await eventually(enough, 15, "15 events on p0's streams")
            await asyncio.wait_for(asyncio.to_thread(p0.kill), 15)
            acked_at_kill = len(acked)
            await asyncio.wait_for(publisher, 30)
        finally:
            publisher.cancel()
            await asyncio.gather(publisher, return_exceptions=True)
        assert acked_at_kill < count, "the kill did not land while messages were posted"
        ids = ids_of(acked)
        assert ids == sorted(ids) and len(ids) == count
        await wait_all([*on_victim, bystander], ids[-1], timeout_s=20)
        for follower in on_victim:
            assert follower.opened == [p0.url, follower.reconnect_url], follower.opened
            assert len(follower.ends) == 1, follower.ends  # the kill ended the first stream
            check_sequence(follower.ids(), ids, follower)
        check_sequence(bystander.ids(), ids, bystander)
        assert bystander.opened == [p2.url] and not bystander.ends

        await asyncio.wait_for(asyncio.to_thread(p0.start), 30)
        resume_from = ids[29]
        back = await stack.enter_async_context(
            Follower(p0.url, path, name="p0 after its restart", since=resume_from)
        )
        more = [
            await post(client, live.url, room, "after", f"after the restart via {live.url}")
            for live in (p1, p2, p0)
        ]
        await wait_all([back, *on_victim, bystander], more[-1]["id"])
        check_sequence(back.ids(), [*ids[30:], *ids_of(more)], back)
        for follower in [*on_victim, bystander]:
            check_sequence(follower.ids(), [*ids, *ids_of(more)], follower)


# -- 5. a commit that never reaches Redis --------------------------------------------------


async def local_writer(cluster: Cluster) -> LiveServer:
    """A process on the same database with ``CHAT_BROKER=local``: its commits are never
    published to Redis, like a process that committed and died before publishing."""
    live = cluster.make(broker="local")
    await asyncio.wait_for(asyncio.to_thread(live.start), 30)
    return live


async def test_commit_never_published_arrives_before_the_next_event(cluster: Cluster) -> None:
    """Message X committed by the local-broker process, then Y posted to a redis process: Y's
    id is X's plus one, and subscribers on every redis process receive X, then Y. The store is
    polled only every 30 s here, so X can only come from noticing the gap before Y."""
    servers = cluster.start(3, CHAT_BROKER_POLL_SECONDS="30")
    local = await local_writer(cluster)
    room = "order"
    async with contextlib.AsyncExitStack() as stack, httpx.AsyncClient(timeout=10) as client:
        followers = [
            await stack.enter_async_context(
                Follower(live.url, f"/api/rooms/{room}/events", name=live.workdir.name)
            )
            for live in servers
        ]
        followers.append(
            await stack.enter_async_context(
                Follower(servers[1].url, "/api/events", {"rooms": "*"}, name="p1 rooms=*")
            )
        )
        expected: list[Json] = []
        for round_ in range(5):
            x = await post(client, local.url, room, "local", f"x{round_} (never published)")
            y = await post(client, servers[round_ % 3].url, room, "redis", f"y{round_}")
            assert y["id"] == x["id"] + 1, (x, y)
            expected += [x, y]
            await wait_all(followers, y["id"], timeout_s=10)
        marker = await post(client, servers[2].url, room, "marker", "marker")
        expected.append(marker)
        await wait_all(followers, marker["id"])
        for follower in followers:
            check_sequence(follower.ids(), ids_of(expected), follower)
            assert [e.json() for e in follower.events] == expected, follower


async def test_commit_never_published_arrives_by_the_poll(cluster: Cluster) -> None:
    """Only the local-broker process posts, nothing follows on Redis: subscribers on the redis
    processes still receive each message within a few seconds (the store's poll), once."""
    servers = cluster.start(2)
    local = await local_writer(cluster)
    room = "quiet"
    async with contextlib.AsyncExitStack() as stack, httpx.AsyncClient(timeout=10) as client:
        followers = [
            await stack.enter_async_context(
                Follower(live.url, path, params, name=f"{live.url} {path}")
            )
            for live in servers
            for path, params in ((f"/api/rooms/{room}/events", {}), ("/api/events", {"rooms": "*"}))
        ]
        expected: list[Json] = []
        for round_ in range(2):
            x = await post(client, local.url, room, "local", f"alone {round_}")
            expected.append(x)
            await wait_all(followers, x["id"], timeout_s=8)
        y = await post(client, servers[0].url, room, "redis", "then one through redis")
        expected.append(y)
        await wait_all(followers, y["id"])
        for follower in followers:
            check_sequence(follower.ids(), ids_of(expected), follower)
            assert [e.json() for e in follower.events] == expected, follower


# -- 6. presence and typing ----------------------------------------------------------------


async def present(client: httpx.AsyncClient, live: LiveServer, room: str) -> list[str]:
    response = await client.get(f"{live.url}/api/rooms/{room}/presence")
    assert response.status_code == 200, response.text
    names: list[str] = response.json()["users"]
    return names


async def presence(stream: SSEStream, timeout_s: float = 5.0) -> tuple[str, str, str]:
    """The next event, which must be a presence event: (room, user, state)."""
    event = await stream.next(timeout_s)
    assert (event.event, event.id) == ("presence", None), event
    body = event.json()
    return body["room"], body["user"], body["state"]


async def test_presence_and_typing_limit_are_shared(cluster: Cluster) -> None:
    """Observers on three processes. alice streams on two processes and bob on a third: every
    process lists both, once; each observer sees one join per user. alice leaves only after her
    last stream closed (plus the grace period), once. Typing for one user and room twice within
    the interval, on two processes: the second is 429 and is not broadcast."""
    servers = cluster.start(3, CHAT_TYPING_INTERVAL_SECONDS="5")
    p0, p1, p2 = servers
    room = "lobby"
    path = f"/api/rooms/{room}/events"
    async with contextlib.AsyncExitStack() as stack, httpx.AsyncClient(timeout=10) as client:
        observers = [
            await stack.enter_async_context(open_stream(client, live.url + path))
            for live in servers
        ]

        async def everywhere(users: list[str]) -> None:
            for live in servers:

                async def check(live: LiveServer = live) -> bool:
                    return await present(client, live, room) == users

                await eventually(check, 5, f"presence on {live.url} == {users}")

        async def next_is_marker() -> None:
            """Nothing reached any observer since its last event: a fresh message is next."""
            marker = await post(client, p1.url, room, "marker", "marker")
            for observer in observers:
                event = await observer.next(5)
                assert (event.event, event.id) == ("message", str(marker["id"])), event

        async def stream_of(user: str, live: LiveServer) -> contextlib.AsyncExitStack:
            own = contextlib.AsyncExitStack()
            params = {"user": user, "types": "message"}
            await own.enter_async_context(open_stream(client, live.url + path, params=params))
            stack.push_async_callback(own.aclose)
            return own

        await everywhere([])
        alice_on_p0 = await stream_of("alice", p0)
        for observer in observers:
            assert await presence(observer) == (room, "alice", "join")
        await everywhere(["alice"])

        alice_on_p1 = await stream_of("alice", p1)  # the same user on another process
        await stream_of("bob", p2)
        for observer in observers:  # bob's join: no second join of alice came first
            assert await presence(observer) == (room, "bob", "join")
        await everywhere(["alice", "bob"])
        await asyncio.sleep(GRACE_S + 0.5)
        await next_is_marker()  # ...nor later

        await alice_on_p0.aclose()  # her stream on p1 is still open: she stays
        await asyncio.sleep(GRACE_S + 0.5)
        await next_is_marker()
        await everywhere(["alice", "bob"])

        closed = time.monotonic()
        await alice_on_p1.aclose()  # her last stream
        for observer in observers:
            assert await presence(observer, GRACE_S + 5) == (room, "alice", "leave")
        assert time.monotonic() - closed >= GRACE_S * 0.9  # not before the grace period
        await everywhere(["bob"])
        await asyncio.sleep(GRACE_S + 0.5)
        await next_is_marker()  # exactly one leave

        first = await client.post(f"{p0.url}/api/rooms/{room}/typing", json={"user": "carol"})
        assert first.status_code == 202, first.text
        again = await client.post(f"{p1.url}/api/rooms/{room}/typing", json={"user": "carol"})
        assert again.status_code == 429, again.text
        assert again.json()["error"]["code"] == "rate_limited"
        assert int(again.headers["Retry-After"]) >= 1
        other = await client.post(f"{p2.url}/api/rooms/{room}/typing", json={"user": "dave"})
        assert other.status_code == 202, other.text  # the limit is per user
        for observer in observers:
            got = [await observer.next(5) for _ in range(2)]
            assert [(e.event, e.id) for e in got] == [("typing", None)] * 2, got
            assert sorted(e.json()["user"] for e in got) == ["carol", "dave"]
        await asyncio.sleep(0.3)
        await next_is_marker()  # the refused one was broadcast nowhere


# -- 7. --workers ----------------------------------------------------------------------------


async def test_two_workers_on_one_port_share_every_message(cluster: Cluster) -> None:
    """``serve --workers 2`` with Redis: one port, two worker processes. Streams opened to the
    port (enough that both workers hold some) each receive every message posted to the port
    (over fresh connections, so both workers take posts), in order, once. SIGTERM to the parent
    ends every stream, every worker, and the parent, which exits 0."""
    live = cluster.make(args=["--workers", "2"])
    await asyncio.wait_for(asyncio.to_thread(live.start), 30)
    parent = live.pid
    family: set[int] = set()
    try:

        async def two_workers() -> set[int]:
            found = {pid for pid in descendants(parent) if running(pid)}
            return found if len(found) >= 2 else set()

        family = await eventually(two_workers, 15, "two worker processes", 0.1)

        async def both_listen() -> bool:
            return all(sockets_held_by(pid, live.port, "0A") for pid in family)

        await eventually(both_listen, 20, f"every worker listening on {live.port}", 0.1)
        room = "workers"
        followers: list[Follower] = []
        async with contextlib.AsyncExitStack() as stack:
            for n in range(24):  # each follower has a connection of its own
                follower = Follower(live.url, f"/api/rooms/{room}/events", name=f"stream {n}")
                followers.append(await stack.enter_async_context(follower))
                held = [sockets_held_by(pid, live.port) for pid in sorted(family)]
                if n >= 5 and sum(1 for h in held if h >= 2) >= 2:
                    break
            held = [sockets_held_by(pid, live.port) for pid in sorted(family)]
            assert sum(1 for h in held if h > 0) >= 2, (
                f"{len(followers)} streams, per process {held}"
            )

            fresh = httpx.Limits(max_keepalive_connections=0)  # a new connection per post
            async with httpx.AsyncClient(timeout=10, limits=fresh) as client:
                posted = [await post(client, live.url, room, "w", f"{i}") for i in range(20)]
            ids = ids_of(posted)
            await wait_all(followers, ids[-1])
            for follower in followers:
                check_sequence(follower.ids(), ids, follower)

            code = await asyncio.wait_for(asyncio.to_thread(live.terminate, 20), 25)
            assert code == 0, live.log()[-3000:]

            async def all_ended() -> bool:
                return all(f.ends for f in followers)

            await eventually(all_ended, 10, "every stream ended by the shutdown")
            for follower in followers:  # nothing more arrived before the end
                check_sequence(follower.ids(), ids, follower)

        await wait_gone(family, "process")
    finally:
        kill_left(family)


@pytest.mark.parametrize("broker", [None, "local"])
def test_workers_refused_with_the_local_broker(tmp_path: Path, broker: str | None) -> None:
    """``--workers 2`` with the local broker (the default, or said explicitly) exits with code
    2 and says on stderr that it needs CHAT_BROKER."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    env["CHAT_DATABASE"] = str(tmp_path / "chat.db")
    if broker is not None:
        env["CHAT_BROKER"] = broker
    command = [sys.executable, "-m", "chat", "serve", "--port", str(free_port()), "--workers", "2"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, timeout=30)
    stderr = done.stderr.decode(errors="replace")
    assert done.returncode == 2, (done.returncode, stderr)
    assert "CHAT_BROKER" in stderr, stderr
