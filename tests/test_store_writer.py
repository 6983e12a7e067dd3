"""The store's write thread (chat/store/writer.py), without a server: a real SQLite file and
a real PostgreSQL database in turn, a real ``Settings``, a ``Store`` opened on the test's
loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from chat.config import Settings
from chat.errors import Unavailable
from chat.events import Event
from chat.store import Store, Tx, WriteOp, writes
from chat.store.dialect import database_kind
from chat.store.writer import THREAD_NAME, Writer
from tests.live import read_store

WAIT_S = 5.0


class Recorder:
    """``on_commit``: what it was handed, and whether each event was in the file by then."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.events: list[Event] = []
        self.batches: list[list[int | None]] = []  # event ids per call
        self.committed_first: list[bool] = []

    def __call__(self, events: list[Event]) -> None:
        ids = [e.id for e in events]
        [(found,)] = read_store(  # another connection sees only what is committed
            self.database,
            f"SELECT count(*) FROM events WHERE id IN ({','.join('?' * len(ids))})",
            ids,
        )
        self.committed_first.append(found == len(ids))
        self.events.extend(events)
        self.batches.append([e.id for e in events])


@pytest.fixture
def database(
    new_database: Callable[[Path], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """A new store of the module's kind (conftest.py), which ``Settings()`` reads."""
    url = new_database(tmp_path)
    monkeypatch.setenv("CHAT_DATABASE", url)
    return url


@pytest.fixture
def recorder(database: str) -> Recorder:
    return Recorder(database)


@pytest.fixture
async def store(recorder: Recorder) -> AsyncIterator[Store]:
    opened = Store(Settings(), recorder)
    async with asyncio.timeout(WAIT_S):
        await opened.open()
    yield opened
    async with asyncio.timeout(3 * WAIT_S):
        await opened.close()


def writer_of(store: Store) -> Writer:
    return store._writer  # the thread and executor are the store's own, reached for the test


def post(text: str, room: str = "r") -> WriteOp[Event]:
    return writes.post_message(room, "ann", text, None, create_room=True)


def gated(gate: threading.Event, op: WriteOp[Any]) -> WriteOp[Any]:
    """``op`` once ``gate`` is set: holds the write thread, so writes queue behind it."""

    def run(tx: Tx) -> Any:
        assert gate.wait(WAIT_S), "the test never opened the gate"
        return op(tx)

    return run


def seeing(seen: list[Tx], op: WriteOp[Any]) -> WriteOp[Any]:
    def run(tx: Tx) -> Any:
        seen.append(tx)
        return op(tx)

    return run


def texts(database: str) -> list[str]:
    return [text for (text,) in read_store(database, "SELECT text FROM messages ORDER BY id")]


def wal_of(database: str) -> Path | None:
    """SQLite's WAL file of the database; None on PostgreSQL."""
    if database_kind(database) != "sqlite":
        return None
    return Path(database).with_name(Path(database).name + "-wal")


async def test_writes_queued_behind_a_batch_commit_together_in_one_transaction(
    store: Store, recorder: Recorder
) -> None:
    gate, seen = threading.Event(), list[Tx]()
    async with asyncio.timeout(WAIT_S):
        first = asyncio.ensure_future(store.write(gated(gate, post("first"))))
        await asyncio.sleep(0.05)  # the first batch is on the thread, held by the gate
        rest = [asyncio.ensure_future(store.write(seeing(seen, post(f"m{i}")))) for i in range(3)]
        await asyncio.sleep(0)
        gate.set()
        results = await asyncio.gather(first, *rest)
    assert [e.id for e in results] == [1, 2, 3, 4]
    assert len(seen) == 3 and seen[0] is seen[1] is seen[2]  # one Tx: one transaction
    assert recorder.batches == [[1], [2, 3, 4]]


async def test_write_batch_max_bounds_a_batch(
    monkeypatch: pytest.MonkeyPatch, recorder: Recorder
) -> None:
    monkeypatch.setenv("CHAT_WRITE_BATCH_MAX", "2")
    store = Store(Settings(), recorder)
    gate, seen = threading.Event(), list[Tx]()
    async with asyncio.timeout(WAIT_S):
        await store.open()
        try:
            first = asyncio.ensure_future(store.write(gated(gate, post("first"))))
            await asyncio.sleep(0.05)
            rest = [
                asyncio.ensure_future(store.write(seeing(seen, post(f"m{i}")))) for i in range(3)
            ]
            await asyncio.sleep(0)
            gate.set()
            await asyncio.gather(first, *rest)
        finally:
            await store.close()
    assert seen[0] is seen[1] and seen[2] is not seen[1]


async def test_a_failing_operation_is_undone_alone(
    store: Store, recorder: Recorder, database: str
) -> None:
    def fails(tx: Tx) -> None:
        post("undone")(tx)
        raise RuntimeError("its own failure")

    gate = threading.Event()
    async with asyncio.timeout(WAIT_S):
        held = asyncio.ensure_future(store.write(gated(gate, post("before"))))
        await asyncio.sleep(0.05)
        batch = [asyncio.ensure_future(store.write(op)) for op in (post("one"), fails, post("two"))]
        await asyncio.sleep(0)
        gate.set()
        await held
        one, failed, two = await asyncio.gather(*batch, return_exceptions=True)
    assert isinstance(failed, RuntimeError)
    assert isinstance(one, Event) and isinstance(two, Event)
    assert (one.id, two.id) == (2, 3)  # the undone operation's id is given to the next one
    assert texts(database) == ["before", "one", "two"]
    assert [e.id for e in recorder.events] == [1, 2, 3]


async def test_events_reach_on_commit_after_the_commit_in_id_order_before_the_caller(
    store: Store, recorder: Recorder
) -> None:
    answered: list[int] = []

    async def one(i: int) -> None:
        event = await store.write(post(f"m{i}", room=f"room-{i % 3}"))
        assert event.id is not None
        assert event.id in {e.id for e in recorder.events}  # published before the answer
        answered.append(event.id)

    async with asyncio.timeout(WAIT_S):
        await asyncio.gather(*(one(i) for i in range(50)))
    ids = [e.id for e in recorder.events]
    assert ids == list(range(1, 51))
    assert all(recorder.committed_first)
    assert sorted(answered) == ids


async def test_writes_run_on_the_stores_own_thread_after_the_migrations(
    store: Store, database: str
) -> None:
    sqlite = database_kind(database) == "sqlite"

    def where(tx: Tx) -> tuple[str, str]:
        mode = tx.conn.execute("PRAGMA journal_mode").fetchone()[0] if sqlite else "wal"
        return threading.current_thread().name, str(mode)

    async with asyncio.timeout(WAIT_S):
        name, mode = await store.write(where)
    assert name.startswith(THREAD_NAME) and mode == "wal"
    [(applied,)] = read_store(database, "SELECT count(*) FROM schema_migrations")
    assert applied >= 1


async def test_a_batch_whose_transaction_fails_fails_its_callers_and_the_next_one_commits(
    store: Store,
) -> None:
    class Stop(BaseException):
        """Not an operation's own failure: it ends the whole transaction."""

    def stops(tx: Tx) -> None:
        raise Stop

    gate = threading.Event()
    async with asyncio.timeout(WAIT_S):
        held = asyncio.ensure_future(store.write(gated(gate, post("held"))))
        await asyncio.sleep(0.05)
        batch = [asyncio.ensure_future(store.write(op)) for op in (post("lost"), stops)]
        await asyncio.sleep(0)
        gate.set()
        await held
        outcomes = await asyncio.gather(*batch, return_exceptions=True)
        assert all(isinstance(o, Unavailable) for o in outcomes)
        assert (await store.write(post("after"))).id == 2
    assert store.accepting_writes


async def test_close_finishes_the_writes_in_flight_and_queued_and_refuses_new_ones(
    recorder: Recorder, database: str
) -> None:
    store = Store(Settings(), recorder)
    gate = threading.Event()
    async with asyncio.timeout(3 * WAIT_S):
        await store.open()
        assert store.accepting_writes
        held = asyncio.ensure_future(store.write(gated(gate, post("in flight"))))
        await asyncio.sleep(0.05)
        queued = asyncio.ensure_future(store.write(post("queued")))
        await asyncio.sleep(0)
        closing = asyncio.ensure_future(store.close())
        await asyncio.sleep(0)
        assert not store.accepting_writes
        with pytest.raises(Unavailable):
            await store.write(post("too late"))
        gate.set()
        await closing
        assert [(await held).id, (await queued).id] == [1, 2]
    assert texts(database) == ["in flight", "queued"]
    wal = wal_of(database)
    assert wal is None or not wal.exists()  # SQLite: closing the last connection checkpointed it


async def test_close_gives_up_on_a_stuck_batch_and_its_callers_learn_it(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("chat.store.store.CLOSE_WAIT_S", 0.2)
    store = Store(Settings(), recorder)
    gate = threading.Event()
    async with asyncio.timeout(3 * WAIT_S):
        await store.open()
        thread = writer_of(store)._thread
        assert thread is not None
        held = asyncio.ensure_future(store.write(gated(gate, post("stuck"))))
        await asyncio.sleep(0.05)
        queued = asyncio.ensure_future(store.write(post("queued")))
        await asyncio.sleep(0)
        try:
            await store.close()
            with pytest.raises(Unavailable, match="may or may not be committed"):
                await held
            with pytest.raises(Unavailable, match="shutting down"):
                await queued
        finally:
            gate.set()
            await asyncio.to_thread(thread.join, WAIT_S)
    assert not thread.is_alive()


async def test_a_shut_down_executor_fails_writes_at_once(store: Store) -> None:
    executor = writer_of(store)._executor
    assert executor is not None
    executor.shutdown(wait=True)
    async with asyncio.timeout(1):
        with pytest.raises(Unavailable, match="write thread has stopped"):
            await store.write(post("nowhere"))
        with pytest.raises(Unavailable, match="write thread has stopped"):
            await store.write(post("nowhere either"))
    assert not store.accepting_writes


async def test_a_batch_cancelled_by_a_shutdown_fails_at_once(store: Store) -> None:
    executor = writer_of(store)._executor
    assert executor is not None
    gate, busy = threading.Event(), threading.Event()

    def hold() -> bool:
        busy.set()
        return gate.wait(WAIT_S)

    holding = executor.submit(hold)  # the thread is busy: the next job waits
    try:
        # running, not just queued: a shutdown cancels what has not started (CI once
        # found the thread still on a job of its own after 50 ms, and cancelled this one)
        assert await asyncio.to_thread(busy.wait, WAIT_S), "the write thread never took it"
        async with asyncio.timeout(1):
            waiting = asyncio.ensure_future(store.write(post("queued on the thread")))
            await asyncio.sleep(0.05)
            executor.shutdown(wait=False, cancel_futures=True)
            with pytest.raises(Unavailable, match="write thread has stopped"):
                await waiting
    finally:
        gate.set()
        async with asyncio.timeout(WAIT_S):
            await asyncio.wrap_future(holding)


async def test_a_dead_write_thread_fails_writes_at_once(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    writer = writer_of(store)
    executor, thread = writer._executor, writer._thread
    assert executor is not None and thread is not None

    def die(_: Future[bool]) -> None:
        raise SystemExit  # escapes the executor's worker loop: the thread ends

    gate = threading.Event()
    job = executor.submit(gate.wait, WAIT_S)
    job.add_done_callback(die)
    gate.set()
    async with asyncio.timeout(WAIT_S):
        await asyncio.to_thread(thread.join, WAIT_S)
    assert not thread.is_alive()
    async with asyncio.timeout(1):
        with pytest.raises(Unavailable, match="write thread has stopped"):
            await store.write(post("nobody runs this"))
    assert not store.accepting_writes
    assert "write thread has stopped" in caplog.text


async def test_writes_before_open_fail_at_once(recorder: Recorder) -> None:
    store = Store(Settings(), recorder)
    assert not store.accepting_writes
    async with asyncio.timeout(1):
        with pytest.raises(Unavailable, match="not open"):
            await store.write(post("too early"))
        await store.close()  # closing what was never opened is harmless
