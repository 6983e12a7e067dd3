"""The PostgreSQL store under faults: a service process killed mid-burst, PostgreSQL restarted
(a clean ``fast`` stop, and an ``immediate`` one, a crash) while posts go on, and readiness
while the database is away.

Each test has a PostgreSQL cluster of its own (tests/postgres_server.py), destroyed at the
end, since these stop it. What is asserted is what a client sees: status codes, the JSON
envelope and ``Retry-After`` of API.md, the history, the events on a stream; and, read
straight from the database, that ids stay 1..N and that a batch is never half-written. Every
wait is bounded: a request that is not answered within ``ANSWER_S`` is a hang, and fails.
A PostgreSQL that stops answering altogether (paused) makes reads, /readyz among them, answer
503 after ``CHAT_DATABASE_TIMEOUT_SECONDS``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from psycopg_pool import PoolTimeout

from chat.errors import Unavailable
from chat.store.postgres_reads import PgReadDb
from tests.conftest import postgres_cluster
from tests.live import LiveServer, SSEStream
from tests.postgres_server import PostgresServer
from tests.scaleout_helpers import Follower, check_sequence, descendants, eventually

Json = dict[str, Any]

ANSWER_S = 15.0  # every request is answered within this, or the test fails: never a hang
RECONNECT_S = 20.0  # after PostgreSQL is back, posts succeed again within this
DOWN_S = 20.0  # once PostgreSQL is stopped, the service says so (503) within this


@pytest.fixture
def pg() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster of the test's own: the test stops and starts it."""
    with postgres_cluster() as cluster:
        yield cluster


@pytest.fixture
def services(tmp_path: Path) -> Iterator[list[LiveServer]]:
    """Service processes the test starts (append them); killed at the end, their logs printed
    (pytest shows them when the test failed)."""
    started: list[LiveServer] = []
    try:
        yield started
    finally:
        for live in started:
            live.kill()
        for live in started:
            print(f"--- {live.workdir.name} {live.url}\n{live.log()[-15000:]}")


def service(tmp_path: Path, started: list[LiveServer], database: str, **env: str) -> LiveServer:
    workdir = tmp_path / f"p{len(started)}"
    workdir.mkdir()
    live = LiveServer(workdir, {"CHAT_BROKER": "local", **env}, database=database)
    started.append(live)
    return live


async def start(*servers: LiveServer) -> None:
    async with asyncio.timeout(60):
        await asyncio.gather(*(asyncio.to_thread(live.start, 45) for live in servers))


async def pg_stop(pg: PostgresServer, mode: str) -> None:
    await asyncio.wait_for(asyncio.to_thread(pg.stop, mode), 60)


async def pg_start(pg: PostgresServer) -> None:
    await asyncio.wait_for(asyncio.to_thread(pg.start), 60)


# -- what a client saw -----------------------------------------------------------------------


@dataclass
class Outcome:
    """One POST (a single message or a batch) and its answer."""

    process: str
    texts: list[str]
    batch: bool
    sent_at: float
    status: int | None = None  # None: no answer (see ``failure``)
    events: list[Json] = field(default_factory=list)
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    failure: str | None = None  # the transport error, when there was no answer

    def ids(self) -> list[int]:
        return [int(e["id"]) for e in self.events]


async def send(
    client: httpx.AsyncClient, live: LiveServer, room: str, author: str, texts: list[str]
) -> Outcome:
    """POST one message (one text) or a batch (several); the outcome, whatever it is."""
    batch = len(texts) > 1
    outcome = Outcome(live.url, texts, batch, time.monotonic())
    base = f"{live.url}/api/rooms/{room}/messages"
    try:
        if batch:
            body = {"messages": [{"author": author, "text": t} for t in texts]}
            response = await client.post(f"{base}/batch", json=body, timeout=ANSWER_S)
        else:
            response = await client.post(
                base, json={"author": author, "text": texts[0]}, timeout=ANSWER_S
            )
    except httpx.TransportError as exc:  # a timeout included: no answer
        outcome.failure = f"{type(exc).__name__}: {exc}"
        return outcome
    outcome.status = response.status_code
    outcome.headers = response.headers
    with contextlib.suppress(ValueError):
        outcome.body = response.json()
    if response.status_code == 201:
        outcome.events = outcome.body["events"] if batch else [outcome.body]
    return outcome


def check_unavailable(outcome: Outcome) -> None:
    """A 503 as API.md has it: the JSON envelope, code ``unavailable``, and Retry-After."""
    where = (outcome.process, outcome.texts[0], outcome.headers, outcome.body)
    assert outcome.headers.get("content-type", "").startswith("application/json"), where
    error = outcome.body["error"]
    assert error["code"] == "unavailable", where
    assert isinstance(error["message"], str) and error["message"], where
    assert isinstance(error["details"], list), where
    retry_after = outcome.headers.get("retry-after", "")
    assert retry_after.isdigit() and 1 <= int(retry_after) <= 60, where


async def history(client: httpx.AsyncClient, url: str, room: str) -> list[Json]:
    """Every message of the room, through the API, oldest first (pages of 200)."""
    found: list[Json] = []
    after = 0
    for _ in range(1000):
        response = await client.get(
            f"{url}/api/rooms/{room}/messages",
            params={"after": str(after), "limit": "200"},
            timeout=ANSWER_S,
        )
        assert response.status_code == 200, response.text
        page = response.json()
        found += page["messages"]
        if not page["has_more"]:
            return found
        after = page["messages"][-1]["id"]
    raise AssertionError("history never ended")


def stored(url: str) -> tuple[list[int], dict[str, list[int]], dict[int, bytes], int]:
    """Straight from the database: every event id in order, the ids stored for each message
    text, every event's JSON, and the id counter."""
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        ids = [int(i) for (i,) in conn.execute("SELECT id FROM events ORDER BY id")]
        by_text: dict[str, list[int]] = {}
        for text, i in conn.execute("SELECT text, id FROM messages ORDER BY id"):
            by_text.setdefault(text, []).append(int(i))
        data = {int(i): bytes(d) for i, d in conn.execute("SELECT id, data FROM events")}
        [(last_id,)] = conn.execute("SELECT last_id FROM event_ids").fetchall()
    return ids, by_text, data, int(last_id)


def check_store(url: str, outcomes: list[Outcome]) -> list[int]:
    """Ids 1..N with no gap and none twice; each 201 stored once with the JSON the client got;
    each request without a 201 stored wholly or not at all (a batch never half-written).
    Returns the stored ids."""
    ids, by_text, data, last_id = stored(url)
    assert ids == list(range(1, len(ids) + 1)), "the stored ids are not 1..N"
    assert last_id == len(ids), (last_id, len(ids))
    twice = {text: got for text, got in by_text.items() if len(got) > 1}
    assert twice == {}, f"messages stored twice: {list(twice.items())[:5]}"
    acked = [i for o in outcomes for i in o.ids()]
    assert len(acked) == len(set(acked)), "an id was given to two 201s"
    for outcome in outcomes:
        found = [i for t in outcome.texts for i in by_text.get(t, [])]
        if outcome.status == 201:
            assert found == outcome.ids(), (outcome.texts[0], found, outcome.ids())
            for event in outcome.events:
                assert orjson.loads(data[int(event["id"])]) == event
        elif found:  # no 201 (its outcome unknown to the client): all of it, in one piece
            assert len(found) == len(outcome.texts), (
                f"{len(found)} of {len(outcome.texts)} stored: {outcome}"
            )
            assert found == list(range(found[0], found[0] + len(found))), found
    return ids


# -- an EventSource-like client that may start while the store is away ----------------------


@dataclass
class Attempt:
    """One stream the Resumer opened: its status, content type, ``retry:``, the ids it
    carried and how it ended (None: still open)."""

    status: int
    content_type: str
    retry_ms: int | None = None
    ids: list[int] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    ended: str | None = None


class Resumer:
    """Follows a stream as a browser's EventSource does: each time the stream ends, it opens
    it again with ``Last-Event-ID`` (the last id it received, or ``since``) after the
    ``retry:`` it was given (at most 3 s). Unlike ``Follower``, its first attempt may be told
    to come back. Any status but 200 would end a real EventSource for good: it stops there."""

    def __init__(self, url: str, path: str, since: int) -> None:
        self.url, self.path, self.since = url, path, since
        self.attempts: list[Attempt] = []
        self.task: asyncio.Task[None] | None = None

    def ids(self) -> list[int]:
        return [i for attempt in self.attempts for i in attempt.ids]

    async def __aenter__(self) -> Resumer:
        self.task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(self.task, 10)

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=httpx.Timeout(ANSWER_S, read=60)) as client:
            for _ in range(200):  # bounded: at most 200 reconnections
                ids = self.ids()
                last = ids[-1] if ids else self.since
                async with client.stream(
                    "GET", self.url + self.path, headers={"Last-Event-ID": str(last)}
                ) as response:
                    attempt = Attempt(
                        response.status_code, response.headers.get("content-type", "")
                    )
                    self.attempts.append(attempt)
                    if response.status_code != 200:
                        return  # a real EventSource would stop here (the test fails)
                    stream = SSEStream(response, response.aiter_lines())
                    try:
                        while True:
                            event = await stream.next(timeout_s=60)
                            if event.id is not None:
                                attempt.ids.append(int(event.id))
                    except (EOFError, httpx.TransportError) as exc:
                        attempt.ended = type(exc).__name__
                    finally:
                        attempt.comments, attempt.retry_ms = stream.comments, stream.retry
                await asyncio.sleep(min(attempt.retry_ms or 500, 3000) / 1000)

    async def ended_once(self, timeout_s: float) -> Attempt:
        """The first attempt, once it has ended."""

        async def ended() -> bool:
            return bool(self.attempts) and self.attempts[0].ended is not None

        await eventually(ended, timeout_s, "the resumed stream's first attempt ended", 0.05)
        return self.attempts[0]

    async def wait_for(self, last_id: int, timeout_s: float) -> list[int]:
        async def arrived() -> bool:
            assert self.task is not None
            if self.task.done():
                raise AssertionError(f"the resumer stopped: {self.attempts}")
            ids = self.ids()
            return bool(ids) and ids[-1] >= last_id

        await eventually(arrived, timeout_s, f"id {last_id} on the resumed stream", 0.05)
        return self.ids()


# -- a. a service process killed mid-burst -----------------------------------------------------


async def test_a_process_killed_mid_burst_loses_no_acknowledged_message(
    tmp_path: Path, pg: PostgresServer, services: list[LiveServer]
) -> None:
    """Three processes on one database; nine clients post singles and batches to all three.
    SIGKILL to p0 while that goes on: whatever p0's transaction held (the id counter's lock
    included) is let go by PostgreSQL, so p1 and p2 answer every post 201 throughout. In the
    end every 201 (p0's before its death too) is in the history read from p1, once; the ids
    are 1..N; what p0 never answered is stored wholly or not at all. p0 restarted on the same
    database goes on from the next id."""
    database = pg.new_database()
    victim, *others = servers = [service(tmp_path, services, database) for _ in range(3)]
    await start(*servers)
    room = "burst"
    outcomes: list[Outcome] = []
    killed = asyncio.Event()
    waiting_on_victim: set[int] = set()  # posters whose post to p0 has no answer yet

    async with httpx.AsyncClient() as client:

        async def poster(k: int) -> None:
            for i in range(60):
                live = servers[(k + i) % 3]
                if live is victim and killed.is_set():
                    live = others[i % 2]
                size = 1 if i % 3 else 2 + (k + i) % 9
                texts = [f"k{k} i{i} m{j}" for j in range(size)]
                if live is victim:
                    waiting_on_victim.add(k)
                try:
                    outcomes.append(await send(client, live, room, f"k{k}", texts))
                finally:
                    waiting_on_victim.discard(k)
                await asyncio.sleep(0.005)

        posters = [asyncio.create_task(poster(k)) for k in range(9)]
        try:

            async def mid_burst() -> bool:
                """After 25 answers from p0, SIGKILL it the moment two posts to it wait for
                their answers: with no await in between, they are cut, whatever the timing
                (killing at any other moment, a run once found no post to p0 in flight)."""
                answered = sum(o.status == 201 for o in outcomes if o.process == victim.url)
                if answered < 25 or len(waiting_on_victim) < 2 or victim.proc is None:
                    return False
                victim.proc.kill()
                return True

            await eventually(mid_burst, 30, "25 posts answered by p0, then 2 waiting", 0.001)
            await asyncio.wait_for(asyncio.to_thread(victim.kill), 15)  # reaps it
            killed.set()
            async with asyncio.timeout(90):
                await asyncio.gather(*posters)
        finally:
            for task in posters:
                task.cancel()
            await asyncio.gather(*posters, return_exceptions=True)

        on_victim = [o for o in outcomes if o.process == victim.url]
        cut = [o for o in on_victim if o.status is None]
        assert cut, "no post to p0 was cut by the kill: it did not land mid-burst"
        assert all(o.status in (201, None) for o in on_victim), [o.status for o in on_victim]
        elsewhere = [o for o in outcomes if o.process != victim.url]
        late = [o for o in elsewhere if o.status != 201]
        assert late == [], late[:3]  # p1 and p2 never stalled on what p0 held
        assert len(elsewhere) > 100

        ids = check_store(database, outcomes)
        listed = await history(client, others[0].url, room)
        listed_ids = [int(m["id"]) for m in listed]
        assert len(listed_ids) == len(set(listed_ids)), "an id twice in the history"
        assert listed_ids == ids  # every message in the room, in order
        by_id = {int(m["id"]): m for m in listed}
        for outcome in outcomes:
            for event in outcome.events:
                message = by_id[int(event["id"])]
                assert (message["author"], message["text"]) == (event["author"], event["text"])

        await asyncio.wait_for(asyncio.to_thread(victim.start), 45)
        again = await send(client, victim, room, "again", ["after the restart"])
        assert again.status == 201, again
        assert again.ids() == [ids[-1] + 1]


# -- b. PostgreSQL restarted while posts go on ------------------------------------------------


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_postgresql_restarted_while_posting(
    tmp_path: Path, pg: PostgresServer, services: list[LiveServer], mode: str
) -> None:
    """Four clients post singles and batches to one process without pause; a stream follows
    the room, and PostgreSQL is stopped (``fast``: sessions ended, a clean shutdown;
    ``immediate``: every server process quits at once, a crash) and started again on the
    same port. Meanwhile every post is answered, 201 or 503 (the JSON envelope, code
    ``unavailable``, Retry-After): never a 500, never a hang. A stream opened during the
    outage with Last-Event-ID is told to come back (200, ``retry:``), as API.md says. Without
    any restart of the service, posts succeed again within RECONNECT_S of PostgreSQL's
    start. In the end: ids 1..N, every 201 stored once, no batch half-written; the stream open
    throughout and the one that resumed across the outage each got every stored event of the
    room after their start, once, in order."""
    database = pg.new_database()
    # a read waits 1 s for a connection (5 by default): the outage outlasts that, so a stream
    # opened during it is told to come back rather than kept waiting until it ends
    live = service(tmp_path, services, database, CHAT_DATABASE_CONNECT_TIMEOUT_SECONDS="1")
    await start(live)
    pid = live.pid
    room = "restart"
    path = f"/api/rooms/{room}/events"
    outcomes: list[Outcome] = []
    stop = asyncio.Event()

    async with contextlib.AsyncExitStack() as stack, httpx.AsyncClient() as client:
        throughout = await stack.enter_async_context(
            Follower(live.url, path, name="throughout", since=0, reconnect_url=live.url)
        )

        async def poster(k: int) -> None:
            for i in range(100_000):  # until told to stop; bounded by the test's deadline
                if stop.is_set():
                    return
                size = 1 if i % 2 else 2 + (k + i) % 7
                texts = [f"{mode} k{k} i{i} m{j}" for j in range(size)]
                outcomes.append(await send(client, live, room, f"k{k}", texts))
                await asyncio.sleep(0.01)

        def answered(status: int, since: float, least: int) -> Callable[[], Awaitable[bool]]:
            """A check for ``eventually``: ``least`` posts sent since then got ``status``."""

            async def check() -> bool:
                return sum(o.status == status and o.sent_at >= since for o in outcomes) >= least

            return check

        posters = [asyncio.create_task(poster(k)) for k in range(4)]
        try:
            async with asyncio.timeout(100):
                await eventually(answered(201, 0, 20), 20, "20 posts answered 201")
                before = max(i for o in outcomes for i in o.ids())
                down_at = time.monotonic()
                await pg_stop(pg, mode)
                await eventually(answered(503, down_at, 3), DOWN_S, "503s while it is down")
                # a stream that resumes now is told to come back (API.md), and does
                resumer = await stack.enter_async_context(Resumer(live.url, path, before))
                first = await resumer.ended_once(15)
                assert (first.status, first.ids) == (200, []), first
                assert first.content_type.startswith("text/event-stream"), first
                assert first.retry_ms is not None and first.retry_ms >= 1000, first
                await asyncio.sleep(0.5)  # down for a while more: posts keep being refused

                await pg_start(pg)
                up_at = time.monotonic()
                await eventually(answered(201, up_at, 1), RECONNECT_S, "a 201 after the start")
                back_in = min(o.sent_at for o in outcomes if o.status == 201 and o.sent_at >= up_at)
                await eventually(answered(201, back_in, 20), 20, "posts succeed again")
        finally:
            stop.set()
            async with asyncio.timeout(ANSWER_S + 5):
                await asyncio.gather(*posters, return_exceptions=True)

        statuses = {o.status for o in outcomes}
        no_answer = [o for o in outcomes if o.status is None]
        assert no_answer == [], f"{len(no_answer)} posts got no answer: {no_answer[:3]}"
        assert statuses <= {201, 503}, [
            (o.status, o.body) for o in outcomes if o.status not in (201, 503)
        ][:5]
        refused = [o for o in outcomes if o.status == 503]
        assert refused, "no post was refused while PostgreSQL was down"
        for outcome in refused:
            check_unavailable(outcome)
        assert live.proc is not None and live.proc.poll() is None and live.pid == pid

        marker = await send(client, live, room, "marker", ["marker"])
        assert marker.status == 201, marker
        ids = check_store(database, [*outcomes, marker])
        room_ids = ids  # one room: every event is the room's
        await throughout.wait_for_id(marker.ids()[0], timeout_s=20)
        check_sequence(throughout.ids(), room_ids, throughout)
        resumed = await resumer.wait_for(marker.ids()[0], timeout_s=30)
        check_sequence(resumed, [i for i in room_ids if i > before], "the resumed stream")
        assert len(resumer.attempts) >= 2
        assert {a.status for a in resumer.attempts} == {200}, resumer.attempts
        assert all(a.content_type.startswith("text/event-stream") for a in resumer.attempts)
        print(
            f"{mode}: {len(outcomes)} posts, {len(refused)} refused, back "
            f"{back_in - up_at:.2f}s after the start; resumer attempts {len(resumer.attempts)}"
        )


# -- c. readiness -------------------------------------------------------------------------------


async def readyz(client: httpx.AsyncClient, live: LiveServer) -> httpx.Response:
    return await client.get(f"{live.url}/readyz", timeout=ANSWER_S)


OUTAGE_S = 6.0  # how long test_readyz_follows_the_database keeps PostgreSQL down


async def test_readyz_follows_the_database(
    tmp_path: Path, pg: PostgresServer, services: list[LiveServer]
) -> None:
    """/readyz is 200 with PostgreSQL up. Stopped for OUTAGE_S: 503 on every ask (the JSON
    envelope, code ``unavailable``, Retry-After), each answered in time. Started again: 200
    within RECONNECT_S, and it stays 200 (no stale connection left to fail an ask); the
    history is read again."""
    # a read waits 2 s for a connection (5 by default): the asks during the outage are quicker
    live = service(tmp_path, services, pg.new_database(), CHAT_DATABASE_CONNECT_TIMEOUT_SECONDS="2")
    await start(live)
    async with httpx.AsyncClient() as client:
        before = await send(client, live, "ready", "a", ["before"])
        assert before.status == 201, before
        assert (await readyz(client, live)).status_code == 200

        await pg_stop(pg, "fast")
        stopped = time.monotonic()
        answers: list[httpx.Response] = []
        while time.monotonic() - stopped < OUTAGE_S:
            asked = time.monotonic()
            answers.append(await readyz(client, live))
            assert time.monotonic() - asked < ANSWER_S
            await asyncio.sleep(0.2)
        assert len(answers) >= 2
        for down in answers:
            assert down.status_code == 503, down.text
            assert down.headers["content-type"].startswith("application/json"), down.headers
            error = down.json()["error"]
            assert error["code"] == "unavailable" and isinstance(error["details"], list)
            assert down.headers.get("retry-after", "").isdigit(), down.headers

        await pg_start(pg)
        started = time.monotonic()

        async def ready() -> bool:
            return (await readyz(client, live)).status_code == 200

        await eventually(ready, RECONNECT_S, "/readyz 200 again", 0.2)
        print(f"ready {time.monotonic() - started:.2f}s after the start")
        again = [(await readyz(client, live)).status_code for _ in range(20)]
        assert again == [200] * 20
        assert [m["id"] for m in await history(client, live.url, "ready")] == before.ids()


async def test_the_first_post_after_a_restart_succeeds(
    tmp_path: Path, pg: PostgresServer, services: list[LiveServer]
) -> None:
    """A post; PostgreSQL restarted while nobody posts; once /readyz says 200 again, the next
    post is 201 (the service is ready: its write connection, closed by the restart, is
    replaced before a batch is tried on it)."""
    live = service(tmp_path, services, pg.new_database())
    await start(live)
    async with httpx.AsyncClient() as client:
        first = await send(client, live, "again", "a", ["before the restart"])
        assert first.status == 201, first
        await pg_stop(pg, "fast")
        await pg_start(pg)

        async def ready() -> bool:
            return (await readyz(client, live)).status_code == 200

        await eventually(ready, RECONNECT_S, "/readyz 200 again", 0.2)
        after = await send(client, live, "again", "a", ["after the restart"])
        assert after.status == 201, (after.status, after.body)
        assert after.ids() == [first.ids()[0] + 1]


async def test_readyz_answers_503_while_the_database_hangs(
    tmp_path: Path, pg: PostgresServer, services: list[LiveServer]
) -> None:
    """PostgreSQL paused (SIGSTOP to every one of its processes: its connections stay open and
    nothing answers, as behind a network that drops packets): /readyz still answers, 503,
    within HUNG_S, and 200 again once PostgreSQL is resumed."""
    live = service(
        tmp_path, services, pg.new_database(), CHAT_DATABASE_TIMEOUT_SECONDS=str(DEADLINE_S)
    )
    await start(live)
    postmaster = int((pg.data / "postmaster.pid").read_text().split()[0])
    async with httpx.AsyncClient() as client:
        assert (await readyz(client, live)).status_code == 200
        paused = {postmaster, *descendants(postmaster)}
        for pid in paused:
            os.kill(pid, signal.SIGSTOP)
        try:
            try:
                response = await client.get(f"{live.url}/readyz", timeout=HUNG_S)
            except httpx.TimeoutException:
                raise AssertionError(f"/readyz did not answer within {HUNG_S}s") from None
            assert response.status_code == 503, response.text
        finally:
            for pid in paused:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

        async def ready() -> bool:
            return (await readyz(client, live)).status_code == 200

        await eventually(ready, RECONNECT_S, "/readyz 200 again", 0.2)


# A read's deadline (CHAT_DATABASE_TIMEOUT_SECONDS), then psycopg's own bounded wait for the
# query's cancellation (5 s), with room for a loaded machine.
DEADLINE_S = 3
HUNG_S = 20.0


async def test_a_read_that_cannot_get_a_connection_waits_for_one_once() -> None:
    """While PostgreSQL is away, a read waited for a pooled connection twice (the pool's
    PoolTimeout is an OperationalError, which the retry for a dead connection caught first):
    /readyz took 10 s to answer 503 where README says CHAT_DATABASE_CONNECT_TIMEOUT_SECONDS
    (5). A pool that times out is asked once."""
    asked: list[int] = []

    class TimingOut:
        def connection(self) -> Any:
            asked.append(1)
            raise PoolTimeout("couldn't get a connection after 5.00 sec")

    reads = PgReadDb(TimingOut(), timeout_s=10)  # type: ignore[arg-type]
    with pytest.raises(Unavailable) as refused:
        await asyncio.wait_for(reads.rows("SELECT 1"), 10)
    assert asked == [1]
    assert "couldn't get a connection" in refused.value.message
