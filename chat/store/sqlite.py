"""The SQLite store: how every connection to the file is set up, the write connection (with
``BEGIN IMMEDIATE`` as the write lock) and the read connections.

SQLite in WAL mode: readers never block the writer, and the writer never blocks readers.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import sqlite3
import stat
import time
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

import aiosqlite

from chat import migrations
from chat.config import Settings
from chat.errors import Unavailable
from chat.store import search
from chat.store.dialect import Kind, database_kind, sqlite_path

T = TypeVar("T")
Rows = Sequence[Sequence[Any]]

BUSY_TIMEOUT_MS = 10_000  # another process's batch holds the write lock: wait, do not fail
READ_WAIT_S = BUSY_TIMEOUT_MS / 1000  # a read waits this long for a free connection, then 503


def _pragmas(settings: Settings) -> tuple[str, ...]:
    return (
        f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}",
        "PRAGMA journal_mode = WAL",  # readers never block the writer, nor it them
        f"PRAGMA synchronous = {settings.sqlite_synchronous}",
    )


PRAGMA_RETRY_S = 0.02


def _locked(error: sqlite3.OperationalError, deadline: float) -> bool:
    """Whether a pragma that failed with ``error`` should be tried again. Switching a new file
    to WAL takes the exclusive lock from a shared one, and SQLite answers SQLITE_BUSY at once,
    without the busy handler, when another connection is doing the same (it could deadlock
    otherwise): several workers starting on a new file at once meet it (a worker of
    ``serve --workers 2`` failed to start so in CI)."""
    busy = error.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY  # BUSY_RECOVERY etc. too
    return busy and time.monotonic() < deadline


def connect(settings: Settings, *, must_exist: bool = False) -> sqlite3.Connection:
    """A connection for the calling thread alone (``sqlite3`` refuses any other), in
    autocommit mode: transactions are opened explicitly. ``must_exist``: fail (SQLITE_CANTOPEN)
    rather than make the file."""
    path = sqlite_path(settings.database)
    if must_exist:
        uri = f"file:{urllib.parse.quote(os.path.abspath(path))}?mode=rw"
        conn = sqlite3.connect(uri, isolation_level=None, uri=True)
    else:
        _create_private(path)
        conn = sqlite3.connect(path, isolation_level=None)
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    try:
        for pragma in _pragmas(settings):
            while True:
                try:
                    conn.execute(pragma)
                    break
                except sqlite3.OperationalError as error:
                    if not _locked(error, deadline):
                        raise
                    time.sleep(PRAGMA_RETRY_S)
    except BaseException:
        conn.close()
        raise
    return conn


def _create_private(path: str) -> None:
    """A new database file is made readable by its owner alone (it holds password and token
    hashes; SQLite gives its WAL and shared-memory files the file's mode). A file that exists
    keeps its mode; a path that cannot be made is left to SQLite to report. A symbolic link
    to a file not made yet: the file is made where it points (O_EXCL alone refuses the link,
    and SQLite then made the file with the umask's mode)."""
    with contextlib.suppress(OSError):
        target = os.path.realpath(path)
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def shared_mode(database: str) -> int | None:
    """The widest mode among a SQLite ``CHAT_DATABASE`` file and its ``-wal`` and ``-shm``
    files when users other than the owner have any access to one of them (made so before
    ``_create_private``, or by hand), or None (PostgreSQL, or all private)."""
    if database_kind(database) != "sqlite":
        return None
    path, widest = sqlite_path(database), 0
    for name in (path, f"{path}-wal", f"{path}-shm"):
        with contextlib.suppress(OSError):
            widest |= stat.S_IMODE(os.stat(name).st_mode)
    return widest if widest & 0o077 else None


async def connect_async(settings: Settings, *pragmas: str) -> aiosqlite.Connection:
    """A connection on a thread of its own (aiosqlite), for reads and checkpoints; ``pragmas``
    are run after the common ones."""
    conn = await aiosqlite.connect(sqlite_path(settings.database), isolation_level=None)
    try:
        # opened after the write connection (``Store.open``): the file is in WAL mode already,
        # so the journal_mode pragma changes nothing and cannot meet ``_locked``'s case
        for pragma in (*_pragmas(settings), *pragmas):
            await conn.execute(pragma)
    except BaseException:
        await conn.close()
        raise
    return conn


STORAGE_CODES = frozenset(
    (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN)
)
"""Primary result codes that say the file takes no writes now, whatever was asked of it."""

INDEX_ROW = "INSERT INTO messages_fts (rowid, text, room_key) VALUES (?, ?, 'r' || hex(?))"
"""A message's (id, text, room) into the index (migrations/0006: the room as one token)."""


class SqliteWriteDb:
    """The write connection (``chat.store.dialect.WriteDb``), made on the write thread."""

    kind: Kind = "sqlite"
    index_row: str | None = INDEX_ROW

    def __init__(self, settings: Settings) -> None:
        self.rooms: set[str] = set()
        self.public_rooms: set[str] = set()
        self._settings = settings
        self._reopen = False  # set by ``storage_problem``
        self.conn = self._sqlite = connect(settings)
        try:
            migrations.apply_pending(self._sqlite, settings.migrations_dir)
            self._no_autocheckpoint()
        except BaseException:
            self._sqlite.close()
            raise

    def _no_autocheckpoint(self) -> None:
        # Checkpoints run on a connection of their own (maintenance.py): in this
        # connection's COMMIT they stalled every write queued behind it.
        self._sqlite.execute("PRAGMA wal_autocheckpoint = 0")

    def storage_problem(self, error: BaseException) -> str | None:
        if not isinstance(error, sqlite3.Error):
            return None
        if getattr(error, "sqlite_errorcode", 0) & 0xFF not in STORAGE_CODES:
            return None
        self._reopen = True
        return str(error)

    def begin(self) -> int:
        if self._reopen:  # a connection opened on a read-only file stays read-only
            self._sqlite.close()
            # the file must be there: one moved or deleted meanwhile is not made anew, empty
            self.conn = self._sqlite = connect(self._settings, must_exist=True)
            self._no_autocheckpoint()
            self._reopen = False
        self._sqlite.execute("BEGIN IMMEDIATE")
        # Read under the write lock: ids follow commit order even across processes.
        row = self._sqlite.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = 'events'"
        ).fetchone()
        return (row[0] if row else 0) + 1

    def commit(self, first_id: int, next_id: int) -> None:
        self._sqlite.execute("COMMIT")  # AUTOINCREMENT has recorded the ids in sqlite_sequence

    def rollback(self) -> None:
        with contextlib.suppress(sqlite3.ProgrammingError):  # closed: nothing is open
            if self._sqlite.in_transaction:
                self._sqlite.execute("ROLLBACK")

    def insert_rows(self, queued: dict[str, list[tuple[Any, ...]]]) -> None:
        for statement, rows in queued.items():  # one prepared statement, run per row, in C
            self._sqlite.executemany(statement, rows)

    def index_range(self, first_id: int, last_id: int) -> None:
        # FTS5 indexes the rows of one INSERT ... SELECT far faster than as a statement each
        # (docs/design/performance.md, migrations/0003).
        self._sqlite.execute(
            "INSERT INTO messages_fts (rowid, text, room_key) "
            "SELECT id, text, 'r' || hex(room) FROM messages WHERE id BETWEEN ? AND ?",
            (first_id, last_id),
        )

    def unindex_range(self, first_id: int, last_id: int) -> None:
        # an external-content index is told what it indexed: the text and room as they are
        self._sqlite.execute(
            "INSERT INTO messages_fts (messages_fts, rowid, text, room_key) "
            "SELECT 'delete', id, text, 'r' || hex(room) FROM messages "
            "WHERE id BETWEEN ? AND ? AND deleted_at IS NULL",
            (first_id, last_id),
        )

    def close(self) -> None:
        self._sqlite.close()


class SqliteReadDb:
    """Reads on ``CHAT_DATABASE_POOL_SIZE`` connections of their own (``PRAGMA query_only``),
    each on its own aiosqlite thread, through its public API: one slow statement (a search
    over a large history) holds one of them, and replays and history pages go on the others.
    With WAL, a read sees the last committed state and neither waits for the write thread nor
    makes it wait.

    A read takes a free connection, or waits for one in arrival order (first come, first
    served) for at most ``wait_s``, then fails with ``Unavailable`` (503), as a read does
    while the store is closed."""

    matches = search.FTS5_MATCHES
    match = search.FTS5_MATCH
    match_id = search.FTS5_ID
    latest_id = "SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = 'events'"

    def __init__(self, conns: Sequence[aiosqlite.Connection], wait_s: float = READ_WAIT_S) -> None:
        if not conns:
            raise ValueError("at least one read connection")
        self._conns = tuple(conns)
        self._free = collections.deque(self._conns)
        self._waiting: collections.deque[asyncio.Future[aiosqlite.Connection]] = collections.deque()
        self._wait_s = wait_s
        self._open = True
        self._queued: dict[tuple[Any, ...], asyncio.Future[Any]] = {}  # reads sharing one run

    @classmethod
    async def open(cls, settings: Settings) -> SqliteReadDb:
        """All ``CHAT_DATABASE_POOL_SIZE`` connections, opened now; none stays open if one fails."""
        conns: list[aiosqlite.Connection] = []
        try:
            for _ in range(settings.database_pool_size):
                conns.append(await connect_async(settings, "PRAGMA query_only = 1"))
        except BaseException:
            await asyncio.gather(*(conn.close() for conn in conns), return_exceptions=True)
            raise
        return cls(conns)

    def search_query(self, text: str, room: str) -> str:
        return search.fts5_query(text, room)

    async def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        return await self.read(sql, params, list)

    async def read(self, sql: str, params: Sequence[Any], convert: Callable[[Rows], T]) -> T:
        """``convert`` of the statement's rows. A read that must wait for a connection joins
        an identical one (the same statement, parameters and ``convert``) that is still
        waiting, if there is one, and gets the same answer (the same object: it must not be
        changed): it runs once, when a connection frees up, later than both were asked, so
        each sees what was committed before it asked. After a deploy thousands of streams
        resume from the same ids at once; their replays then cost one statement a page, not
        one a stream (bench/storm.py)."""
        if self._open and self._free:  # it starts now: nothing to share
            return await self._run(self._free.popleft(), sql, params, convert)
        key = (sql, tuple(params), convert)
        try:
            shared = self._queued.get(key)
        except TypeError:  # a parameter that cannot be a key (a list, say): no sharing
            return await self._run(await self._take(), sql, params, convert)
        if shared is None:
            shared = asyncio.ensure_future(self._queue(key, sql, params, convert))
            shared.add_done_callback(_retrieved)
            self._queued[key] = shared
        return cast(T, await asyncio.shield(shared))  # a caller gone is not the others' loss

    async def _queue(
        self, key: tuple[Any, ...], sql: str, params: Sequence[Any], convert: Callable[[Rows], T]
    ) -> T:
        try:
            conn = await self._take()
        finally:
            del self._queued[key]  # from here on it sees no later commit: nobody joins it
        return await self._run(conn, sql, params, convert)

    async def _run(
        self,
        conn: aiosqlite.Connection,
        sql: str,
        params: Sequence[Any],
        convert: Callable[[Rows], T],
    ) -> T:
        try:
            rows = await conn.execute_fetchall(sql, params)  # a list, typed as an Iterable
        except (ValueError, sqlite3.ProgrammingError) as error:
            if self._open:
                raise
            # handed a connection as the store closed: aiosqlite's "Connection closed", or
            # sqlite3's, is the closed store's 503, not a failure of the service
            raise Unavailable("the store is not open") from error
        finally:
            self._give_back(conn)
        return convert(rows if isinstance(rows, list) else list(rows))

    async def _take(self) -> aiosqlite.Connection:
        if not self._open:
            raise Unavailable("the store is not open")
        if self._free:  # none is free while any read waits (``_give_back`` hands over)
            return self._free.popleft()
        waiter: asyncio.Future[aiosqlite.Connection] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            async with asyncio.timeout(self._wait_s):
                return await waiter
        except BaseException as error:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._give_back(waiter.result())  # handed over as this read gave up: pass it on
            else:
                waiter.cancel()
                if waiter in self._waiting:
                    self._waiting.remove(waiter)
            if isinstance(error, TimeoutError):
                raise Unavailable("every read connection is busy", retry_after_s=1) from None
            raise

    def _give_back(self, conn: aiosqlite.Connection) -> None:
        if not self._open:
            return  # ``close`` closes every connection, this one too
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(conn)  # the longest-waiting read gets it
                return
        self._free.append(conn)

    async def close(self) -> None:
        """Fail the reads still waiting for a connection, then close every connection (a
        statement running on one finishes first: aiosqlite runs the close after it)."""
        if not self._open:
            return
        self._open = False
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(Unavailable("the store is not open"))
        self._free.clear()
        results = await asyncio.gather(
            *(conn.close() for conn in self._conns), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result


def _retrieved(task: asyncio.Future[Any]) -> None:
    """A shared read's failure is its callers' (each gets it); none left is no one's."""
    if not task.cancelled():
        task.exception()
