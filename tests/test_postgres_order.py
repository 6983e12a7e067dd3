"""Ids in commit order across processes, on PostgreSQL.

Three ``python -m chat serve`` processes share one PostgreSQL database and nothing else (no
file, no Redis: ``CHAT_BROKER=local``). Many clients post to all three at once, single
messages and batches, while a reader of its own (a psycopg connection on a thread, as another
service's reader would be) polls the ``events`` table as fast as it can. What API.md promises
("unique and strictly increasing across the whole deployment in commit order") means there:

- no id ever becomes visible after a larger one was (each poll's new ids are all above every
  id seen before), and no poll ever sees a hole below its largest id;
- at the end the ids are exactly 1..N, every 201's ids are stored once, with the very JSON
  the client got back, and a batch's ids are consecutive in the order given.

Every wait is bounded: the HTTP client's timeouts, ``asyncio.timeout``, the reader's deadline
and statement timeout."""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from chat.store import postgres as postgres_store
from tests.live import ROOT, LiveServer
from tests.postgres_server import PostgresServer

Json = dict[str, Any]

CLIENTS = 12
REQUESTS_EACH = 30
BATCH_SHARE = 0.35  # of the requests; each batch 2..BATCH_MAX messages
BATCH_MAX = 20
ROOMS = ("north", "south", "east")
BURST_S = 90.0  # the whole burst, bounded (it takes a few seconds)
MIGRATIONS = ROOT / "migrations" / postgres_store.MIGRATIONS_SUBDIR


@dataclass
class Watcher:
    """Polls ``SELECT id FROM events WHERE id > %s ORDER BY id`` from the lowest id below which
    every id was seen, so that an id showing up late (after a larger one) is seen too."""

    url: str
    seen: set[int] = field(default_factory=set)
    highest: int = 0  # the largest id seen
    dense: int = 0  # every id in 1..dense has been seen
    polls: int = 0
    growths: int = 0  # polls that saw new ids
    problems: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, deadline_s: float) -> None:
        deadline = time.monotonic() + deadline_s
        options = "-c statement_timeout=5000"
        with psycopg.connect(self.url, autocommit=True, connect_timeout=5, options=options) as c:
            while not self.stop.is_set() and time.monotonic() < deadline:
                self.poll(c)
            self.poll(c)  # once more after the last 201: what is committed is visible

    def poll(self, conn: psycopg.Connection[Any]) -> None:
        ids = [int(i) for (i,) in conn.execute(
            "SELECT id FROM events WHERE id > %s ORDER BY id", (self.dense,)
        )]  # fmt: skip
        self.polls += 1
        holes = sorted(set(range(self.dense + 1, ids[-1] + 1)) - set(ids)) if ids else []
        if holes and len(self.problems) < 20:
            self.problems.append(f"poll {self.polls}: {ids[-1]} visible while {holes[:10]} are not")
        new = [i for i in ids if i not in self.seen]
        late = [i for i in new if i < self.highest]
        if late and len(self.problems) < 20:
            self.problems.append(
                f"poll {self.polls}: {late[:10]} became visible after {self.highest} was"
            )
        if new:
            self.growths += 1
            self.seen.update(new)
            self.highest = max(self.highest, max(new))
            while self.dense + 1 in self.seen:
                self.dense += 1


@pytest.fixture
def three_processes(tmp_path: Path, postgres: PostgresServer) -> Iterator[list[LiveServer]]:
    """Three service processes, each in its own folder, on one new PostgreSQL database (their
    logs are printed at the end, which pytest shows when the test failed)."""
    url = postgres.new_database()
    servers = []
    for n in range(3):
        workdir = tmp_path / f"p{n}"
        workdir.mkdir()
        servers.append(LiveServer(workdir, {"CHAT_BROKER": "local"}, database=url))
    try:
        yield servers
    finally:
        for live in servers:
            live.kill()
        for live in servers:
            print(f"--- {live.workdir.name}\n{live.log()[-10000:]}")


async def test_ids_follow_commit_order_across_three_processes(
    three_processes: list[LiveServer],
) -> None:
    servers = three_processes
    url = str(servers[0].database)
    # All three at once on the empty database: the migrations are applied once, under the
    # advisory lock, whoever comes first.
    async with asyncio.timeout(60):
        await asyncio.gather(*(asyncio.to_thread(live.start, 45) for live in servers))
    for live in servers:  # no file of a store anywhere: PostgreSQL is the one shared thing
        assert not list(live.workdir.glob("*.db*")), list(live.workdir.iterdir())

    watcher = Watcher(url)
    reader = asyncio.ensure_future(asyncio.to_thread(watcher.run, BURST_S + 30))
    acked: list[tuple[str, list[Json], list[str]]] = []  # (process url, events, texts sent)
    refused: list[str] = []
    try:
        async with httpx.AsyncClient(timeout=15) as client:

            async def one_client(k: int) -> None:
                rng = random.Random(k)
                for i in range(REQUESTS_EACH):
                    live = servers[(k + i) % 3]
                    room = ROOMS[rng.randrange(len(ROOMS))]
                    base = f"{live.url}/api/rooms/{room}/messages"
                    if rng.random() < BATCH_SHARE:
                        texts = [f"c{k} r{i} m{j}" for j in range(rng.randint(2, BATCH_MAX))]
                        body = {"messages": [{"author": f"c{k}", "text": t} for t in texts]}
                        response = await client.post(f"{base}/batch", json=body)
                        events = response.json().get("events", [])
                    else:
                        texts = [f"c{k} r{i}"]
                        response = await client.post(
                            base, json={"author": f"c{k}", "text": texts[0]}
                        )
                        events = [response.json()]
                    if response.status_code == 201:
                        acked.append((live.url, events, texts))
                    else:
                        refused.append(f"{live.url} {response.status_code} {response.text[:200]}")

            async with asyncio.timeout(BURST_S):
                await asyncio.gather(*(one_client(k) for k in range(CLIENTS)))
    finally:
        watcher.stop.set()
        async with asyncio.timeout(15):
            await reader

    assert refused == []
    assert watcher.problems == []
    # the reader raced the writers: it saw the table grow many times, not once at the end
    assert watcher.polls >= 50 and watcher.growths >= 20, (watcher.polls, watcher.growths)

    ids = [int(e["id"]) for _, events, _ in acked for e in events]
    assert len(ids) == len(set(ids)), "an id was given to two 201s"
    for _, events, texts in acked:
        got = [int(e["id"]) for e in events]
        assert got == list(range(got[0], got[0] + len(got))), f"a batch's ids: {got}"
        assert [e["text"] for e in events] == texts
    # the processes took turns: ids of one process are interleaved with the others'
    owner = sorted((int(e["id"]), process) for process, events, _ in acked for e in events)
    switches = sum(1 for (_, a), (_, b) in itertools.pairwise(owner) if a != b)
    assert switches >= 30, f"the processes hardly interleaved ({switches} switches)"

    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        stored = conn.execute("SELECT id, data FROM events ORDER BY id").fetchall()
        [(last_id,)] = conn.execute("SELECT last_id FROM event_ids").fetchall()
    stored_ids = [int(i) for i, _ in stored]
    assert stored_ids == list(range(1, len(stored_ids) + 1)), "the ids are not 1..N"
    assert last_id == len(stored_ids)
    assert sorted(ids) == stored_ids  # every stored event is a 201's, and each 201's is stored
    assert watcher.seen == set(stored_ids)
    data = {int(i): orjson.loads(bytes(raw)) for i, raw in stored}
    for _, events, _ in acked:
        for event in events:
            assert data[int(event["id"])] == event  # the JSON the client got is what is stored

    # Each message is found by a search (written after each batch's commit, outside the lock:
    # migrations/postgresql/0011) through another process than the one that answered it.
    async with httpx.AsyncClient(timeout=15) as client, asyncio.timeout(60):
        for process, events, _ in acked[:: max(1, len(acked) // 40)]:
            other = next(live for live in servers if live.url != process)
            event = events[-1]
            response = await client.get(
                f"{other.url}/api/rooms/{event['room']}/messages", params={"q": event["text"]}
            )
            assert [m["id"] for m in response.json()["messages"]] == [event["id"]], event
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        assert conn.execute("SELECT count(*) FROM search_backlog").fetchone() == (0,)
        words = conn.execute("SELECT count(*) FROM message_words").fetchone()
    assert words == (len(stored_ids),)  # every event here is a message
    print(f"{len(stored_ids)} events, {watcher.polls} polls, {switches} switches")


def test_the_reader_reports_ids_out_of_commit_order(postgres: PostgresServer) -> None:
    """The reader's checks can fail: ids committed 1, 3, then 2 (what a plain sequence allows:
    two writers take 2 and 3, the second commits first) are reported, the hole below 3 and 2
    showing up after 3."""
    url = postgres.new_database()
    watcher = Watcher(url)
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        postgres_store.apply_pending(conn, MIGRATIONS)

        def commit(event_id: int) -> None:
            conn.execute(
                "INSERT INTO events (id, room, type, author, created_at, data) "
                "VALUES (%s, 'r', 'message', 'a', 'now', %s)",
                (event_id, b"{}"),
            )
            watcher.poll(conn)

        commit(1)
        assert watcher.problems == []
        commit(3)
        commit(2)
    assert len(watcher.problems) == 2, watcher.problems
    assert "3 visible while [2] are not" in watcher.problems[0]
    assert "[2] became visible after 3 was" in watcher.problems[1]
    assert (watcher.dense, watcher.highest) == (3, 3)
