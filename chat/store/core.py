"""The SQLite store: the only code that speaks SQL.

Writes go through one writer task that owns the write connection: callers queue a write
operation (a plain function of a ``Tx``) and await its result; the writer takes everything
queued (up to ``write_batch_max``), runs it on the connection's thread in ONE hop as one
``BEGIN IMMEDIATE`` transaction (a savepoint per operation, so one failing operation does not
undo the others), commits, and only then hands the committed events, in id order, to
``on_commit`` (the broker). So an event reaches a subscriber only after it is committed, and a
caller's ``await`` returning means its write is durable.

Reads use a second connection (WAL: readers never block the writer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

import aiosqlite
import orjson

from chat import migrations
from chat.config import Settings
from chat.errors import NotFound, Unavailable
from chat.events import Event, event_from_json, make_event, now_rfc3339

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


EVENT_ROW = "INSERT INTO events (id, room, type, author, created_at, data) VALUES (?,?,?,?,?,?)"


class Tx:
    """What a write operation sees: the write connection inside the open transaction, and
    ``append`` to add an event with the next id.

    New rows are queued (``insert``) and written with one ``executemany`` per statement at
    ``flush``: a batch of 500 messages is then two statements, not 1,000 (~15% more
    messages/s, measured). ``flush`` runs after every operation, and an operation that
    reads what it (or an earlier item of its batch) inserted calls it first."""

    def __init__(self, conn: sqlite3.Connection, next_id: int) -> None:
        self.conn = conn
        self.next_id = next_id
        self.now = now_rfc3339()
        self.events: list[Event] = []
        self.rooms: set[str] = set()  # rooms known to exist in this transaction
        self.rows: dict[str, list[tuple[Any, ...]]] = {}  # statement -> rows, in order

    def append(self, room: str, event_type: str, fields: dict[str, Any]) -> Event:
        event = make_event(event_type, room, fields, event_id=self.next_id, created_at=self.now)
        self.next_id += 1
        self.insert(EVENT_ROW, (event.id, room, event_type, event.author, self.now, event.json))
        self.events.append(event)
        return event

    def insert(self, statement: str, row: tuple[Any, ...]) -> None:
        """Queue a row for ``statement`` (an INSERT), written at the next ``flush``."""
        rows = self.rows.get(statement)
        if rows is None:
            self.rows[statement] = [row]
        else:
            rows.append(row)

    def flush(self) -> None:
        """Write the queued rows, statement by statement in the order first queued (events
        before the rows that refer to them)."""
        if self.rows:
            queued, self.rows = self.rows, {}
            for statement, rows in queued.items():
                self.conn.executemany(statement, rows)

    def ensure_room(self, room: str, *, create: bool) -> None:
        if room in self.rooms:
            return  # a batch of 500 into one room checks it once (~25% more messages/s)
        if create:
            self.conn.execute(
                "INSERT OR IGNORE INTO rooms (name, title, created_at) VALUES (?, ?, ?)",
                (room, room, self.now),
            )
        elif self.conn.execute("SELECT 1 FROM rooms WHERE name = ?", (room,)).fetchone() is None:
            raise NotFound(f"no room {room!r}")
        self.rooms.add(room)


WriteOp = Callable[[Tx], T]


@dataclass(slots=True)
class _Pending(Generic[T]):
    op: WriteOp[T]
    future: asyncio.Future[T]


def _fail(pending: Sequence[_Pending[Any]], message: str) -> None:
    for item in pending:
        if not item.future.done():
            item.future.set_exception(Unavailable(message))


def _commit_batch(
    conn: sqlite3.Connection, ops: Sequence[WriteOp[Any]]
) -> tuple[list[tuple[bool, Any]], list[Event]]:
    """Runs on the write connection's thread: one transaction for the whole batch."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        tx = Tx(conn, (row[0] if row else 0) + 1)
        results: list[tuple[bool, Any]] = []
        for op in ops:
            event_mark, id_mark = len(tx.events), tx.next_id
            conn.execute("SAVEPOINT op")
            try:
                result = op(tx)
                tx.flush()
                results.append((True, result))
            except Exception as exc:  # the operation's own failure: undo it alone
                conn.execute("ROLLBACK TO op")
                tx.rows.clear()
                tx.rooms.clear()  # a room it created is gone again
                del tx.events[event_mark:]
                tx.next_id = id_mark
                results.append((False, exc))
            conn.execute("RELEASE op")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return results, tx.events


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> None:
    """From the write connection's thread: run ``fn`` on the loop (unless it has closed)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(fn, *args)


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception as seen (it was reported another way)."""
    if not future.cancelled():
        future.exception()


CLOSE_WAIT_S = 10.0
CHECKPOINT_EVERY_S = 0.5


async def _in_thread(conn: aiosqlite.Connection, fn: Callable[..., R], *args: Any) -> R:
    """Run ``fn(sqlite3_connection, *args)`` on the connection's own thread, in one hop.
    aiosqlite's public methods make one hop per statement; this queues a whole function
    through the same queue they use (``Connection._execute``)."""
    return cast(R, await conn._execute(fn, conn._conn, *args))  # type: ignore[no-untyped-call]


class Store:
    def __init__(self, settings: Settings, on_commit: Callable[[list[Event]], None]) -> None:
        self.settings = settings
        self.on_commit = on_commit
        self._write: aiosqlite.Connection | None = None
        self._read: aiosqlite.Connection | None = None
        self._queue: list[_Pending[Any]] = []
        # The batch on the write connection's thread: done once its outcome is handed out.
        self._inflight: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._open = False
        self._closing = False
        self._checkpoints: aiosqlite.Connection | None = None
        self._checkpointer: asyncio.Task[None] | None = None

    # -- life cycle ---------------------------------------------------------------------

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.settings.database, isolation_level=None)
        await conn.execute("PRAGMA busy_timeout = 10000")
        await conn.execute("PRAGMA journal_mode = WAL")
        await conn.execute(f"PRAGMA synchronous = {self.settings.sqlite_synchronous}")
        return conn

    async def open(self) -> None:
        self._write = await self._connect()
        await _in_thread(self._write, migrations.apply_pending, self.settings.migrations_dir)
        # Checkpoints (copying the WAL into the database file, with an fsync) run on a
        # connection of their own, off the writer: in the writer's COMMIT they stalled every
        # write queued behind them (message batches ~44k -> ~49k/s, bench/batch.py).
        await self._write.execute("PRAGMA wal_autocheckpoint = 0")
        self._checkpoints = await self._connect()
        self._checkpointer = asyncio.create_task(self._checkpoint_loop(), name="chat-checkpoint")
        self._read = await self._connect()
        await self._read.execute("PRAGMA query_only = 1")
        self._loop = asyncio.get_running_loop()
        self._open = True

    async def _checkpoint_loop(self) -> None:
        assert self._checkpoints is not None
        while True:
            await asyncio.sleep(CHECKPOINT_EVERY_S)
            try:
                await self._checkpoints.execute_fetchall("PRAGMA wal_checkpoint(PASSIVE)")
            except Exception:  # the next one catches up; the WAL only grows meanwhile
                log.exception("checkpointing the database failed; will try again")

    async def close(self) -> None:
        """Finish the writes already queued (up to 10 s), then close the connections."""
        self._closing = True
        deadline = time.monotonic() + CLOSE_WAIT_S
        while self._inflight is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._inflight), deadline - time.monotonic())
            except TimeoutError:
                # The batch may still commit on the thread (a resume then finds it in the
                # store); its callers learn that the outcome is unknown.
                self._inflight = None
                break
        _fail(self._queue, "the store is shutting down")
        self._queue = []
        self._open = False
        if self._checkpointer is not None:
            self._checkpointer.cancel()
            await asyncio.wait([self._checkpointer])
            self._checkpointer = None
        for conn in (self._read, self._checkpoints, self._write):
            if conn is not None:
                await conn.close()  # the last one to close checkpoints what is left
        self._read = self._checkpoints = self._write = None

    # -- writes -------------------------------------------------------------------------

    async def write(self, op: WriteOp[T]) -> T:
        """Queue a write; returns its result once committed (and its events published)."""
        if self._closing or not self.writer_alive:
            raise Unavailable("the store is shutting down")
        if len(self._queue) >= self.settings.write_queue_max:
            raise Unavailable("too many writes are waiting for the store", retry_after_s=1)
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(op, future))
        if self._inflight is None:
            self._submit()
        return await future

    @property
    def writer_alive(self) -> bool:
        return self._open

    def _submit(self) -> None:
        """Hand the next batch of queued writes to the write connection's thread, in one
        transaction. There is no writer task: the thread hands the outcome straight back
        to the loop (``_committed``), which publishes the events, answers the callers and
        submits the next batch. Each loop cycle between a commit and its broadcast was a
        wait behind whatever else the loop had to do (docs/design/performance.md)."""
        assert self._write is not None and self._loop is not None
        limit = self.settings.write_batch_max
        batch, self._queue = self._queue[:limit], self._queue[limit:]
        loop, conn = self._loop, self._write._conn  # aiosqlite's sqlite3 connection
        self._inflight = loop.create_future()
        ops = [p.op for p in batch]

        def run() -> None:  # on the thread
            try:
                outcome = _commit_batch(conn, ops)
            except BaseException as exc:  # the whole transaction failed (or the thread stops)
                _call_soon(loop, self._committed, batch, None, exc)
                raise
            _call_soon(loop, self._committed, batch, outcome, None)

        if not self._write._running:  # the connection's thread has stopped
            self._committed(batch, None, Unavailable("the write connection is closed"))
            return
        # aiosqlite's private queue (pinned: aiosqlite 0.22), as ``_in_thread`` uses it. Its own
        # completion future is not awaited: the outcome comes back through ``_committed``.
        unused = loop.create_future()
        unused.add_done_callback(_retrieve)
        self._write._tx.put_nowait((unused, run))

    def _committed(
        self,
        batch: list[_Pending[Any]],
        outcome: tuple[list[tuple[bool, Any]], list[Event]] | None,
        error: BaseException | None,
    ) -> None:
        """On the loop: a batch's outcome, handed out; then the next batch goes."""
        inflight, self._inflight = self._inflight, None
        try:
            if outcome is None:
                log.error("write batch of %d failed", len(batch), exc_info=error)
                _fail(batch, f"the store failed: {error}")
            else:
                results, events = outcome
                if events:
                    try:
                        self.on_commit(events)
                    except Exception:
                        log.exception("publishing committed events failed")
                for pending, (ok, value) in zip(batch, results, strict=True):
                    if pending.future.done():
                        continue  # the caller went away; its write is committed all the same
                    if ok:
                        pending.future.set_result(value)
                    else:
                        pending.future.set_exception(value)
        finally:
            if inflight is not None and not inflight.done():
                inflight.set_result(None)
            if self._queue and self._open:
                self._submit()

    # -- reads --------------------------------------------------------------------------

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        if self._read is None:
            raise Unavailable("the store is not open")
        return list(await self._read.execute_fetchall(sql, params))

    async def ping(self) -> None:
        await self._rows("SELECT 1")

    async def latest_id(self) -> int:
        rows = await self._rows("SELECT seq FROM sqlite_sequence WHERE name = 'events'")
        return int(rows[0][0]) if rows else 0

    async def get_room(self, name: str) -> dict[str, Any] | None:
        rows = await self._rows(_ROOM_SQL + " WHERE r.name = ?", (name,))
        return _room(rows[0]) if rows else None

    async def list_rooms(self) -> list[dict[str, Any]]:
        return [_room(row) for row in await self._rows(_ROOM_SQL + " ORDER BY r.name")]

    async def history(
        self,
        room: str,
        *,
        before: int | None,
        after: int | None,
        limit: int,
        q: str | None = None,
    ) -> tuple[list[dict[str, Any]], bool]:
        """Messages of a room, edits applied, deleted ones left out, each with its reactions.
        Ascending by id, and ``has_more`` says whether more lie beyond the page (older ones
        without ``after``, newer ones with it). With ``q`` (full-text search): the matches,
        newest first, ``before`` paging to older ones."""
        where, params = "m.room = ? AND m.deleted_at IS NULL", [cast(Any, room)]
        source = "messages m"
        if q is not None:
            source = "messages_fts f JOIN messages m ON m.id = f.rowid"
            where += " AND messages_fts MATCH ?"
            params.append(fts_query(q))
        if before is not None:
            where += " AND m.id < ?"
            params.append(before)
        if after is not None:
            where += " AND m.id > ?"
            params.append(after)
        ascending = after is not None and q is None
        rows = await self._rows(
            "SELECT m.id, m.room, m.author, m.text, m.reply_to, m.created_at, m.edited_at "
            f"FROM {source} WHERE {where} ORDER BY m.id {'ASC' if ascending else 'DESC'} "
            "LIMIT ?",
            (*params, limit + 1),
        )
        has_more = len(rows) > limit
        rows = rows[:limit]
        if not ascending and q is None:
            rows.reverse()
        messages = [_message(row) for row in rows]
        await self._add_reactions(messages)
        return messages, has_more

    async def _add_reactions(self, messages: list[dict[str, Any]]) -> None:
        by_id = {m["id"]: m for m in messages}
        for message in messages:
            message["reactions"] = {}
        if not by_id:
            return
        rows = await self._rows(
            "SELECT message_id, emoji, author FROM reactions "
            f"WHERE message_id IN ({','.join('?' * len(by_id))}) ORDER BY created_at, author",
            tuple(by_id),
        )
        for message_id, emoji, author in rows:
            by_id[message_id]["reactions"].setdefault(emoji, []).append(author)

    async def activity(
        self, room: str, *, before: int | None, limit: int
    ) -> tuple[list[dict[str, Any]], bool]:
        """Activity items of a room: the newest page (or the page just older than
        ``before``), ascending by id, and whether older ones exist."""
        where, params = "room = ? AND type = 'activity'", [cast(Any, room)]
        if before is not None:
            where += " AND id < ?"
            params.append(before)
        rows = await self._rows(
            f"SELECT data FROM events WHERE {where} ORDER BY id DESC LIMIT ?", (*params, limit + 1)
        )
        has_more = len(rows) > limit
        items = [orjson.loads(row[0]) for row in reversed(rows[:limit])]
        return items, has_more

    async def unread(self, user: str) -> tuple[dict[str, int], int]:
        """For each room the user has a read marker in: messages after it (not deleted).

        Also the newest stored event id, read in the same statement (so the same snapshot):
        a client that counted events from its stream meanwhile adds only those after it.
        """
        rows = await self._rows(
            "SELECT top.id, r.room, (SELECT count(*) FROM messages m WHERE m.room = r.room "
            "AND m.id > r.last_read_id AND m.deleted_at IS NULL) "
            "FROM (SELECT coalesce(max(id), 0) AS id FROM events) top "
            "LEFT JOIN read_markers r ON r.user = ? ORDER BY r.room",
            (user,),
        )
        rooms = {row[1]: int(row[2]) for row in rows if row[1] is not None}
        return rooms, int(rows[0][0])

    async def events_after(
        self, rooms: tuple[str, ...] | None, after: int, limit: int
    ) -> list[Event]:
        """Stored events with id > ``after`` in these rooms (None: all rooms), by id."""
        where, params = _rooms_clause(rooms)
        rows = await self._rows(
            f"SELECT data FROM events WHERE {where} id > ? ORDER BY id LIMIT ?",
            (*params, after, limit),
        )
        return [event_from_json(row[0]) for row in rows]

    async def count_after(self, rooms: tuple[str, ...] | None, after: int, cap: int) -> int:
        """How many stored events follow ``after`` in these rooms, counting at most ``cap``."""
        where, params = _rooms_clause(rooms)
        rows = await self._rows(
            f"SELECT count(*) FROM (SELECT 1 FROM events WHERE {where} id > ? LIMIT ?)",
            (*params, after, cap),
        )
        return int(rows[0][0])


_ROOM_SQL = (
    "SELECT r.name, r.title, r.created_at, "
    "(SELECT max(e.id) FROM events e WHERE e.room = r.name) FROM rooms r"
)


def _room(row: sqlite3.Row) -> dict[str, Any]:
    return {"name": row[0], "title": row[1], "created_at": row[2], "last_event_id": row[3] or 0}


def _message(row: sqlite3.Row) -> dict[str, Any]:
    message: dict[str, Any] = {
        "id": row[0],
        "type": "message",
        "room": row[1],
        "created_at": row[5],
        "author": row[2],
        "text": row[3],
    }
    if row[4] is not None:
        message["reply_to"] = row[4]
    if row[6] is not None:
        message["edited_at"] = row[6]
    return message


def fts_query(text: str) -> str:
    """A person's search text as an FTS5 query: every word must appear (each quoted, so no
    word is read as FTS5 syntax), the last one as a prefix (search as you type)."""
    words = ['"' + word.replace('"', '""') + '"' for word in text.split()]
    if not words:
        return '""'
    words[-1] += "*"
    return " ".join(words)


def _rooms_clause(rooms: tuple[str, ...] | None) -> tuple[str, tuple[str, ...]]:
    if rooms is None:
        return "", ()
    return f"room IN ({','.join('?' * len(rooms))}) AND", rooms
