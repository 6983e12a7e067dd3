"""Scale-out under faults: a Redis that hangs instead of dying, presence changes made while
Redis is away, and a ``--workers`` process killed under its supervisor.

Same ground rules as ``tests/test_scaleout.py`` (whose helpers these are): real
``redis-server``, real service processes on one database (a shared SQLite file, or PostgreSQL:
every test runs on both stores, tests/conftest.py's ``store_kind``), every network wait
bounded, and what is asserted is what a client sees: status codes, the JSON envelope, the
events on its stream, ``/presence``, ``/metrics``. Deadlines are there for correctness, never
speed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from chat.workers import STARTUP_S
from tests.live import LiveServer, open_stream
from tests.redis_server import RedisServer
from tests.scaleout_helpers import (
    Cluster,
    Follower,
    check_sequence,
    children,
    eventually,
    kill_left,
    post,
    readyz,
    running,
    sockets_held_by,
    wait_all,
    wait_gone,
)
from tests.test_scaleout import GRACE_S, ids_of, present, wait_metric, wait_status

# The listener pings Redis after SILENCE_CHECK_S (5 s) without a message and gives the ping
# REDIS_TIMEOUT_S (2 s); the reconnect backoff is capped at 2 s. Generous on top of that.
HUNG_NOTICED_S = 15.0
BACK_S = 20.0
# Every Redis command times out after 2 s; a request that uses one must still answer.
ANSWER_S = 8.0


@pytest.fixture
def cluster(
    tmp_path: Path, redis_server: RedisServer, new_database: Callable[[Path], str]
) -> Iterator[Cluster]:
    """As in tests/test_scaleout.py: the test's own processes on a new database of the
    module's store, killed at the end, their logs printed (pytest shows them when the test
    failed)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    made = Cluster(tmp_path, redis_server.url, new_database(shared))
    try:
        yield made
    finally:
        made.close()
        print(made.logs()[-30000:])


async def all_unready(
    client: httpx.AsyncClient, servers: list[LiveServer], timeout_s: float
) -> None:
    """Every process answers /readyz 503 with the JSON envelope (``unavailable``) and reports
    ``chat_broker_connected 0``, all within one deadline."""

    async def one(live: LiveServer) -> None:
        down = await wait_status(client, live, 503, timeout_s)
        assert down.headers["content-type"].startswith("application/json"), down.headers
        error = down.json()["error"]
        assert error["code"] == "unavailable", down.text
        assert isinstance(error["message"], str) and isinstance(error["details"], list)
        await wait_metric(client, live, "chat_broker_connected", 0, 5)

    await asyncio.gather(*(one(live) for live in servers))


async def all_ready(client: httpx.AsyncClient, servers: list[LiveServer], timeout_s: float) -> None:
    async def one(live: LiveServer) -> None:
        await wait_status(client, live, 200, timeout_s)
        await wait_metric(client, live, "chat_broker_connected", 1, 5)

    await asyncio.gather(*(one(live) for live in servers))


def still_open(follower: Follower) -> None:
    """The follower's one stream never ended (the service keeps streams while Redis is away)."""
    assert follower.opened == [follower.url] and not follower.ends, (follower.opened, follower.ends)


# -- 1. a hung Redis -----------------------------------------------------------------------


async def test_hung_redis_is_noticed_and_nothing_hangs_or_is_lost(
    cluster: Cluster, redis_server: RedisServer
) -> None:
    """redis-server is paused (SIGSTOP): its connections stay open and nothing answers, which
    no connection error reveals. On both processes /readyz turns 503 (``unavailable``) and
    ``chat_broker_connected`` 0; /presence and /typing still answer (their Redis commands
    time out and fall back to the process's own view); posts to p0 get 201 and reach p1's
    subscribers through the store (its poll: nothing else can bring them there). Resumed
    (SIGCONT), Redis is used again: /readyz 200, and every subscriber has every id once, in
    order, on the stream it opened first."""
    p0, p1 = servers = cluster.start(2)
    room = "hung"
    async with contextlib.AsyncExitStack() as stack, httpx.AsyncClient(timeout=10) as client:
        await all_ready(client, servers, 10)
        followers = [
            await stack.enter_async_context(
                Follower(live.url, path, params, name=f"{live.workdir.name} {path} {params}")
            )
            for live in servers
            for path, params in ((f"/api/rooms/{room}/events", {}), ("/api/events", {"rooms": "*"}))
        ]
        posted = [
            await post(client, live.url, room, "a", f"before via {live.url}") for live in servers
        ]
        await wait_all(followers, posted[-1]["id"])

        assert redis_server.proc is not None
        os.kill(redis_server.proc.pid, signal.SIGSTOP)
        try:
            async with httpx.AsyncClient(timeout=ANSWER_S) as patient:

                async def answers(tag: str) -> None:
                    """/presence and /typing on both processes, together; none hangs."""

                    async def one(live: LiveServer) -> None:
                        listed = await patient.get(f"{live.url}/api/rooms/{room}/presence")
                        assert listed.status_code == 200, (live.url, listed.text)
                        assert listed.json()["users"] == [], listed.text
                        typing = await patient.post(
                            f"{live.url}/api/rooms/{room}/typing",
                            json={"user": f"typist-{tag}-{live.port}"},
                        )
                        assert typing.status_code == 202, (live.url, typing.text)

                    await asyncio.gather(*(one(live) for live in servers))

                await answers("paused")  # before the broker noticed: a command must not hang
                await all_unready(client, servers, HUNG_NOTICED_S)
                await answers("noticed")

            # Posted to p0 only: p1 has no event of its own that would show it a gap, and
            # nothing comes through Redis. Its subscribers get them all the same: the poll.
            posted += [await post(client, p0.url, room, "b", f"paused {i}") for i in range(6)]
            await wait_all(followers, posted[-1]["id"], timeout_s=10)
            for follower in followers:
                check_sequence(follower.ids(), ids_of(posted), follower)
            for live in servers:  # still paused, still unready, nobody exited
                assert (await readyz(client, live.url)).status_code == 503
                assert live.proc is not None and live.proc.poll() is None, live.log()[-3000:]
        finally:
            os.kill(redis_server.proc.pid, signal.SIGCONT)

        await all_ready(client, servers, BACK_S)
        for i in range(4):
            live = servers[i % 2]
            posted.append(await post(client, live.url, room, "c", f"after {i} via {live.url}"))
        marker = await post(client, p1.url, room, "marker", "marker")
        posted.append(marker)
        await wait_all(followers, marker["id"], timeout_s=15)
        await asyncio.sleep(1.5)  # late copies (a PUBLISH Redis ran on resuming) would show now
        by_id = {e["id"]: e for e in posted}
        for follower in followers:
            still_open(follower)
            check_sequence(follower.ids(), ids_of(posted), follower)
            messages = [e for e in follower.events if e.id is not None]
            assert all(e.json() == by_id[int(e.id or 0)] for e in messages), follower
        for live in servers:
            assert live.proc is not None and live.proc.poll() is None, live.log()[-3000:]


# -- 2. presence changes while Redis is away -----------------------------------------------


def states(observer: Follower, user: str) -> list[str]:
    """The presence states the observer received for ``user``, in order."""
    return [e["state"] for e in observer.of_type("presence") if e["user"] == user]


async def wait_state(observer: Follower, user: str, state: str, timeout_s: float) -> list[str]:
    """Until ``user``'s last presence event on the observer's stream is ``state``."""

    async def check() -> list[str] | None:
        got = states(observer, user)
        return got if got and got[-1] == state else None

    found: list[str] = await eventually(check, timeout_s, f"{observer}: {user} {state}")
    return found


async def everywhere(
    client: httpx.AsyncClient, servers: list[LiveServer], room: str, users: list[str]
) -> None:
    for live in servers:

        async def check(live: LiveServer = live) -> bool:
            return await present(client, live, room) == users

        await eventually(check, 10, f"presence on {live.url} == {users}", 0.1)


async def user_stream(
    stack: contextlib.AsyncExitStack,
    client: httpx.AsyncClient,
    live: LiveServer,
    room: str,
    user: str,
) -> contextlib.AsyncExitStack:
    """A stream of ``user`` on ``live`` (connected); closing the returned stack closes it."""
    own = contextlib.AsyncExitStack()
    params = {"user": user, "types": "message"}
    path = f"{live.url}/api/rooms/{room}/events"
    await own.enter_async_context(open_stream(client, path, params=params))
    stack.push_async_callback(own.aclose)
    return own


@pytest.mark.parametrize("extra_outage_s", [0.0, 7.0], ids=["short", "past-keepalive"])
async def test_a_leave_during_a_redis_outage_is_announced_after_it(
    cluster: Cluster, redis_server: RedisServer, extra_outage_s: float
) -> None:
    """u streams on A; an observer streams on B and sees u join. Redis is killed, u's stream
    closes and the grace period passes: A cannot share the leave. Once Redis is back, the
    observer on B receives u's leave (its own stream was never cut), and neither process
    lists u any more. The long outage outlasts the presence keep-alive (5 s), which once
    announced the leave before any process had subscribed again, so nobody got it."""
    a, b = servers = cluster.start(2)
    room = "leaving"
    async with contextlib.AsyncExitStack() as stack, httpx.AsyncClient(timeout=10) as client:
        observer = await stack.enter_async_context(
            Follower(b.url, f"/api/rooms/{room}/events", name="observer on B")
        )
        u_stream = await user_stream(stack, client, a, room, "u")
        assert await wait_state(observer, "u", "join", 10) == ["join"]
        await everywhere(client, servers, room, ["u"])

        redis_server.stop()
        await all_unready(client, servers, HUNG_NOTICED_S)
        await u_stream.aclose()
        await asyncio.sleep(GRACE_S + 1.0 + extra_outage_s)
        assert await present(client, a, room) == []  # A's own view, while Redis is away
        assert states(observer, "u") == ["join"]  # nothing could reach B yet

        redis_server.start()
        await all_ready(client, servers, BACK_S)
        await wait_state(observer, "u", "leave", 15)
        await everywhere(client, servers, room, [])
        marker = await post(client, a.url, room, "marker", "marker")
        await observer.wait_for_id(marker["id"])
        await asyncio.sleep(GRACE_S + 1.0)
        assert states(observer, "u") == ["join", "leave"]  # one leave, and no join after it
        still_open(observer)


async def test_a_join_during_a_redis_outage_is_announced_after_it(
    cluster: Cluster, redis_server: RedisServer
) -> None:
    """With Redis killed, w opens a stream on A (A's own view lists w). Once Redis is back,
    the observer on B (its stream never cut) receives w's join, and both processes list w.
    A repeated join would be acceptable; a missing one is not. Presence works as usual after:
    w's stream closes and the observer sees the leave."""
    a, b = servers = cluster.start(2)
    room = "joining"
    async with contextlib.AsyncExitStack() as stack, httpx.AsyncClient(timeout=10) as client:
        observer = await stack.enter_async_context(
            Follower(b.url, f"/api/rooms/{room}/events", name="observer on B")
        )
        await everywhere(client, servers, room, [])

        redis_server.stop()
        await all_unready(client, servers, HUNG_NOTICED_S)
        w_stream = await user_stream(stack, client, a, room, "w")
        assert await present(client, a, room) == ["w"]  # A's own view, while Redis is away
        await asyncio.sleep(GRACE_S + 0.5)
        assert states(observer, "w") == []  # nothing could reach B yet

        redis_server.start()
        await all_ready(client, servers, BACK_S)
        joins = await wait_state(observer, "w", "join", 15)
        assert set(joins) == {"join"}, joins
        await everywhere(client, servers, room, ["w"])
        still_open(observer)

        await w_stream.aclose()
        got = await wait_state(observer, "w", "leave", GRACE_S + 10)
        assert got.count("leave") == 1 and got[-1] == "leave", got
        await everywhere(client, servers, room, [])
        still_open(observer)


# -- 3. the supervisor restarts a worker ---------------------------------------------------


async def test_a_killed_worker_is_replaced_and_sigterm_still_exits_0(cluster: Cluster) -> None:
    """``serve --workers 2`` with Redis. SIGKILL to one worker (older than the supervisor's
    start-up window, so not taken for a bad start): its streams end and resume on the port
    with Last-Event-ID, and a new worker takes its place (two running again); killed at once
    too, it is replaced again (a probe: the restart's early death stopped the service).
    Streams held by both current workers get every message posted to the port, once, in
    order. SIGTERM to the parent then stops every current worker cleanly, and the parent
    exits 0: the workers killed earlier do not count against it."""
    live = cluster.make(args=["--workers", "2"])
    await asyncio.wait_for(asyncio.to_thread(live.start), 30)
    parent = live.pid
    seen: set[int] = set()
    room = "supervised"
    path = f"/api/rooms/{room}/events"
    try:

        async def workers(count: int) -> set[int]:
            found = {pid for pid in children(parent) if running(pid)}
            seen.update(found)
            return found if len(found) == count else set()

        first = await eventually(lambda: workers(2), 15, "two worker processes", 0.1)
        started_by = time.monotonic()  # both were started before this

        async def listening(pids: set[int]) -> None:
            async def check() -> bool:
                return all(sockets_held_by(pid, live.port, "0A") for pid in pids)

            await eventually(check, 20, f"{sorted(pids)} listening on {live.port}", 0.1)

        async def spread(
            stack: contextlib.AsyncExitStack, pids: set[int], tag: str
        ) -> list[Follower]:
            """Followers of the port (each its own connection, resumed on the port when cut)
            until every worker of ``pids`` holds at least one."""
            made: list[Follower] = []
            for n in range(40):
                follower = Follower(live.url, path, name=f"{tag} {n}", reconnect_url=live.url)
                made.append(await stack.enter_async_context(follower))
                if all(sockets_held_by(pid, live.port) for pid in pids):
                    return made
            held = {pid: sockets_held_by(pid, live.port) for pid in pids}
            raise AssertionError(f"{len(made)} streams, not on every worker: {held}")

        await listening(first)
        fresh = httpx.Limits(max_keepalive_connections=0)  # a new connection per post
        async with (
            contextlib.AsyncExitStack() as stack,
            httpx.AsyncClient(timeout=10, limits=fresh) as client,
        ):
            before = await spread(stack, first, "before")
            posted = [await post(client, live.url, room, "w", f"{i}") for i in range(5)]
            await wait_all(before, posted[-1]["id"])

            await asyncio.sleep(max(0.0, started_by + STARTUP_S + 1.0 - time.monotonic()))
            victim = min(first)
            os.kill(victim, signal.SIGKILL)

            async def replaced() -> set[int]:
                now = await workers(2)
                return now if now and victim not in now else set()

            current = await eventually(replaced, 15, f"a worker in place of {victim}", 0.1)
            new = current - first
            assert len(new) == 1 and current - new == first - {victim}, (first, current)
            assert not running(victim)
            # The replacement dies at once, within the window that would stop the service
            # at its first start: it is tried again (it used to stop every worker).
            (early,) = new
            os.kill(early, signal.SIGKILL)
            victim = early
            current = await eventually(replaced, 15, f"a worker in place of {early}", 0.1)
            new = current - first
            assert len(new) == 1 and early not in new and not running(early), (first, current)
            await listening(current)
            assert any(f.ends for f in before), "no stream was on the killed worker"

            after = await spread(stack, current, "after")
            posted += [await post(client, live.url, room, "w", f"{i}") for i in range(5, 25)]
            followers = [*before, *after]
            await wait_all(followers, posted[-1]["id"], timeout_s=20)
            for follower in before:
                check_sequence(follower.ids(), ids_of(posted), follower)
            for follower in after:  # opened after the first five
                check_sequence(follower.ids(), ids_of(posted[5:]), follower)
            assert {pid for pid in children(parent) if running(pid)} == current

            code = await asyncio.wait_for(asyncio.to_thread(live.terminate, 20), 25)
            assert code == 0, (code, live.log()[-3000:])

        await wait_gone(seen, "worker")
    finally:
        kill_left(seen)
