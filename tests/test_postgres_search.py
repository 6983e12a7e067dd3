"""Search on PostgreSQL: its words written after the write lock, and its plans.

PostgreSQL writes the search words of a batch of messages (from INDEX_AFTER_FROM ids on)
after its commit, outside the write lock (migrations/postgresql/0011,
chat/store/postgres_words.py), and keeps the ranges still to index in ``search_backlog``. What
a user sees: a batch whose index failed is still answered, and its messages become findable
with the next write; messages that a process committed and never indexed (it ended first) are
found as soon as another process starts, or by a running one a sweep later, whether or not
anyone writes through it; an edit made in between is what a search finds, not the text
before it, even when the two race; and an edit whose trigger holds a row the words' insert
needs does not hold up the writes.

"A process that ends before its index" is made real here by a lock: another connection holds
``message_words`` in SHARE mode, so the store's words' insert after a batch's COMMIT (which
does not touch the table, and goes through) waits for the lock until it gives way
(``postgres_words.LOCK_WAIT``) and fails.

A search is planned for its words every time it runs, never from a plan cached for any
words (chat/store/postgres_reads.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import orjson
import psycopg
import pytest

from chat.config import Settings
from chat.errors import Unavailable
from chat.store import Store, postgres_words, search, writes
from chat.store.postgres_reads import PgReadDb
from tests.postgres_server import PostgresServer
from tests.scaleout_helpers import eventually

WAIT_S = 30.0
TIMEOUT_S = 1.0  # the store's statement timeout (CHAT_DATABASE_TIMEOUT_SECONDS)


@asynccontextmanager
async def opened(url: str, timeout_s: float = TIMEOUT_S) -> AsyncIterator[Store]:
    store = Store(Settings(database=url, database_timeout_seconds=timeout_s), lambda e: None)
    async with asyncio.timeout(WAIT_S):
        await store.open()
    try:
        yield store
    finally:
        async with asyncio.timeout(WAIT_S):
            await store.close()


@contextmanager
def index_blocked(url: str) -> Iterator[None]:
    """Every write into ``message_words`` waits (and times out) while this is open; reads go on."""
    with psycopg.connect(url) as conn:
        conn.execute("LOCK TABLE message_words IN SHARE MODE")
        yield
        conn.rollback()


async def post(store: Store, text: str, room: str = "r") -> int:
    """One message (its words written in its own transaction)."""
    async with asyncio.timeout(WAIT_S):
        event = await store.write(writes.post_message(room, "ann", text, None, create_room=True))
    assert event.id is not None
    return event.id


async def post_batch(store: Store, word: str, room: str = "r") -> list[int]:
    """A batch of messages as ``POST .../messages/batch`` writes it, just large enough for its
    words to be written after its commit; each message's text is ``word`` and its number."""
    texts = [f"{word} n{n}" for n in range(postgres_words.INDEX_AFTER_FROM)]
    ops = [writes.post_message(room, "ann", t, None, create_room=True, index=False) for t in texts]
    async with asyncio.timeout(WAIT_S):
        answer = await store.write(writes.batch("messages", ops, writes.index_messages))
    ids = [int(e["id"]) for e in orjson.loads(answer)["events"]]
    assert len(ids) == len(texts)
    return ids


async def found(store: Store, q: str, room: str = "r") -> list[int]:
    async with asyncio.timeout(WAIT_S):
        page, _ = await store.history(room, before=None, after=None, limit=50, q=q)
    return [m["id"] for m in page]


async def left_unindexed(url: str, word: str, room: str = "r") -> list[int]:
    """A batch posted by a process that ended before writing its words: its ids."""
    async with opened(url) as ended:
        with index_blocked(url):
            return await post_batch(ended, word, room)


def backlog(url: str) -> list[tuple[int, int]]:
    with psycopg.connect(url) as conn:
        return [(int(a), int(b)) for a, b in conn.execute("SELECT * FROM search_backlog")]


def indexed(url: str, ids: list[int]) -> int:
    """How many of these messages have their search words."""
    with psycopg.connect(url) as conn:
        sql = "SELECT count(*) FROM message_words WHERE id = ANY(%s)"
        row = conn.execute(sql, (ids,)).fetchone()
        assert row is not None
        return int(row[0])


async def test_a_write_whose_index_failed_is_answered_and_found_after_the_next(
    postgres: PostgresServer,
) -> None:
    url = postgres.new_database()
    async with opened(url) as store:
        with index_blocked(url):
            batch = await post_batch(store, "zebra")  # answered: it was committed
        assert await found(store, "zebra") == []  # its words wait for the next write
        assert backlog(url) == [(batch[0], batch[-1])]
        single = await post(store, "zebra again")
        assert await found(store, "zebra") == [*batch, single]
        assert backlog(url) == []


async def test_what_a_process_left_unindexed_is_found_once_another_starts(
    postgres: PostgresServer,
) -> None:
    url = postgres.new_database()
    async with opened(url) as ended:
        kept = await post(ended, "okapi seen")
        with index_blocked(url):
            lost = await post_batch(ended, "okapi") + await post_batch(ended, "okapi")
    half = len(lost) // 2  # the process ended before indexing them
    assert backlog(url) == [(lost[0], lost[half - 1]), (lost[half], lost[-1])]
    async with opened(url) as started:
        assert await found(started, "okapi") == [kept, *lost]
        assert backlog(url) == []


async def test_a_writer_indexes_what_another_left_at_its_second_sweep(
    postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A range is indexed by another writer once it has seen it at two sweeps (the writer that
    committed it may still be on it at the first); sweeps here at every call, not a minute
    apart."""
    url = postgres.new_database()
    lost = await left_unindexed(url, "gnu", room="s")
    monkeypatch.setattr(postgres_words, "SWEEP_EVERY_S", 0.0)
    words = postgres_words.Words(rollback=lambda: None)
    with psycopg.connect(url, autocommit=True) as raw:
        words.catch_up(raw)  # the first sweep that sees the range
        assert backlog(url) == [(lost[0], lost[-1])]
        assert indexed(url, lost) == 0
        words.catch_up(raw)  # the second: it is indexed
        assert backlog(url) == []
        assert indexed(url, lost) == len(lost)


async def test_an_idle_process_indexes_what_another_left(
    postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nobody writes through the running process: its empty write every sweep interval
    (chat/store/store.py) makes its writer sweep all the same; here every second, not every
    minute (two sweeps, a second apart, index the range: the first look comes well after)."""
    monkeypatch.setattr(postgres_words, "SWEEP_EVERY_S", 1.0)
    url = postgres.new_database()
    async with opened(url) as idle:
        lost = await left_unindexed(url, "gnu", room="s")
        assert await found(idle, "gnu", room="s") == []

        async def indexed_by_now() -> bool:
            return await found(idle, "gnu", room="s") == lost

        await eventually(indexed_by_now, WAIT_S, "the left batch found by the idle process")
        assert backlog(url) == []


async def test_the_store_s_upkeep_does_not_pass_a_database_that_takes_no_writes(
    postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the database refuses writes (a full disk, here a trigger that answers as one),
    the store says so (``/readyz`` answers 503 until a real write succeeds). A write that
    changes nothing passes on a full disk and would end that state: the idle sweep's empty
    write and the purge of old idempotency keys (``Store.maintain``) wait instead."""
    monkeypatch.setattr(postgres_words, "SWEEP_EVERY_S", 0.1)
    url = postgres.new_database()
    async with opened(url) as store:
        await post(store, "before")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "CREATE FUNCTION disk_full() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "RAISE EXCEPTION 'could not extend file' USING ERRCODE = '53100'; END $$"
            )
            conn.execute(
                "CREATE TRIGGER disk_full BEFORE INSERT ON events "
                "FOR EACH ROW EXECUTE FUNCTION disk_full()"
            )
        with pytest.raises(Unavailable, match="cannot be written"):
            await post(store, "refused")
        assert store.unwritable is not None
        await asyncio.sleep(1.0)  # ten sweep intervals
        assert store.unwritable is not None
        purge = writes.purge_idempotency_keys("2000-01-01T00:00:00.000Z")  # deletes nothing
        async with asyncio.timeout(WAIT_S):
            assert await store.maintain(purge) is None
        assert store.unwritable is not None
        async with asyncio.timeout(WAIT_S):
            assert await store.write(purge) == 0  # what the upkeep must not do: it passes
        assert store.unwritable is None


async def test_an_edit_made_before_the_index_is_what_a_search_finds(
    postgres: PostgresServer,
) -> None:
    """The words of an edited message come from its text as it is when they are written."""
    url = postgres.new_database()
    async with opened(url) as other:
        batch = await left_unindexed(url, "quagga")
        async with asyncio.timeout(WAIT_S):
            await other.write(writes.edit_message("r", batch[0], "ann", "plain horse"))
        assert backlog(url) == [(batch[0], batch[-1])]
    async with opened(url) as started:  # indexes the range: the edited words stay
        assert await found(started, "quagga") == batch[1:]
        assert await found(started, "horse") == [batch[0]]


def blocked_on_a_lock(url: str, pid: int) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)
        ).fetchone()
    return row is not None and row[0] == "Lock"


async def test_words_that_race_an_edit_are_the_edited_ones(postgres: PostgresServer) -> None:
    """The race itself: the words' insert reads the text before an edit commits, meets the
    row the edit's trigger wrote and has not committed, waits for it, and then keeps it
    (``ON CONFLICT DO NOTHING``): the edited words, not the old ones it had read."""
    url = postgres.new_database()
    message = (await left_unindexed(url, "quagga"))[0]
    with psycopg.connect(url) as editor, psycopg.connect(url, autocommit=True) as indexer:
        editor.execute("UPDATE messages SET text = 'plain horse' WHERE id = %s", (message,))
        errors: list[BaseException] = []

        def index() -> None:
            try:
                indexer.execute(postgres_words.INDEX_RANGE, (message, message))
            except BaseException as error:  # reported below
                errors.append(error)

        thread = threading.Thread(target=index)
        thread.start()
        deadline = time.monotonic() + WAIT_S
        while not blocked_on_a_lock(url, indexer.info.backend_pid):
            assert time.monotonic() < deadline and thread.is_alive(), errors
            await asyncio.sleep(0.02)
        editor.commit()
        thread.join(WAIT_S)
        assert not thread.is_alive() and errors == []
        words = indexer.execute(
            "SELECT words = to_tsvector('simple', 'plain horse') FROM message_words WHERE id = %s",
            (message,),
        ).fetchone()
    assert words == (True,)


async def test_an_edit_holding_a_row_the_words_need_holds_up_no_write(
    postgres: PostgresServer,
) -> None:
    """Another process's edit of a message whose words are still to be written holds the row
    its trigger wrote until it commits. The words' insert gives way after a short wait for it
    (``lock_timeout``) instead of holding up this process's writes until the edit ends (here
    never, within the test: a statement timeout of 30 s), and is written with a later batch."""
    url = postgres.new_database()
    async with opened(url, timeout_s=WAIT_S) as store:
        with index_blocked(url):
            batch = await post_batch(store, "quagga")  # its words wait for the next write
        with psycopg.connect(url) as editor:
            editor.execute("UPDATE messages SET text = 'plain horse' WHERE id = %s", (batch[0],))
            async with asyncio.timeout(10):  # answered while the edit is open
                single = await post(store, "quagga single")
            editor.commit()
        await post(store, "elsewhere")  # writes the batch's words
        assert await found(store, "quagga") == [*batch[1:], single]
        assert await found(store, "horse") == [batch[0]]
        assert backlog(url) == []


async def test_a_search_is_never_run_from_a_prepared_plan(postgres: PostgresServer) -> None:
    """psycopg prepares a statement it has run a few times, and PostgreSQL then soon plans it
    for any parameters: for a search, one plan for rare and common words alike, which walked a
    room's messages one by one for a word none of them holds (bench/README.md). Other reads
    are prepared as before: the check below sees them, so it can see a search's too."""
    url = postgres.new_database()
    async with opened(url) as store:
        await post(store, "okapi")
    reads = await PgReadDb.open(Settings(database=url, database_pool_size=1))
    try:
        find = f"SELECT m.id FROM {PgReadDb.matches} WHERE m.room = ? AND {PgReadDb.match}"
        async with asyncio.timeout(WAIT_S):
            for _ in range(10):
                assert await reads.rows(find, ("r", search.tsquery("okapi"))) == [(1,)]
                assert await reads.rows("SELECT count(*) FROM messages WHERE room = ?", ("r",))
            prepared = await reads.rows("SELECT statement FROM pg_prepared_statements")
    finally:
        await reads.close()
    statements = [str(row[0]) for row in prepared]
    assert any("FROM messages WHERE room" in s for s in statements), statements
    assert not any("@@" in s for s in statements), statements
