"""The SQLite store: how every connection to the file is set up, and the write connection (with
``BEGIN IMMEDIATE`` as the write lock); the read connections are ``chat.store.sqlite_reads``.

SQLite in WAL mode: readers never block the writer, and the writer never blocks readers.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import re
import sqlite3
import stat
import time
import urllib.parse

import aiosqlite

from chat import migrations
from chat.config import Settings
from chat.store.dialect import Kind, Rows, database_kind, sqlite_path, write_before_commit

# The sqlite3 module binds an int, float, str or bytearray as it is, and first offers any
# other value to the adapters registered for its type; with none there, it looks for
# ``__adapt__`` and ``__conform__`` and makes and drops an AttributeError for each (about
# 1,600 instructions a value, in CPython 3.11). Every event's JSON is bytes: adapted to itself
# (``bytes(b)`` is ``b``), it is bound as a BLOB as before, for a dictionary lookup.
sqlite3.register_adapter(bytes, bytes)

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


CHUNKS = (256, 64, 16, 4, 1)
"""The row counts of one multi-row INSERT, largest first: 500 rows go as 256, 64, 64, 64, 16,
16, 16 and 4."""


_ROWS = re.compile(r"(INSERT INTO .+ VALUES )(\((?:[^()']|'[^']*'|\([^()]*\))*\))", re.S)
"""An INSERT that ends with its one row of values (which may call a function: INDEX_ROW)."""


@functools.lru_cache(maxsize=64)
def rows_of(statement: str, count: int) -> str | None:
    """``statement`` (``INSERT ... VALUES (?, ...)``) with its row of values ``count`` times;
    None when anything follows the row (``ON CONFLICT ...``): such a one runs row by row."""
    found = _ROWS.fullmatch(statement)
    return None if found is None else found[1] + ", ".join([found[2]] * count)


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

    def commit(self, first_id: int, next_id: int, rows: Rows) -> None:
        if rows:
            write_before_commit(self, rows)
        self._sqlite.execute("COMMIT")  # AUTOINCREMENT has recorded the ids in sqlite_sequence

    def rollback(self) -> None:
        with contextlib.suppress(sqlite3.ProgrammingError):  # closed: nothing is open
            if self._sqlite.in_transaction:
                self._sqlite.execute("ROLLBACK")

    def insert_rows(self, queued: Rows) -> None:
        # Many rows a statement (``INSERT ... VALUES (...), (...), ...``), not a statement run
        # per row (executemany): each run of an INSERT into events also reads and rewrites
        # AUTOINCREMENT's counter, and each releases and takes back the GIL. Half the cost of
        # a batch's rows (docs/design/performance.md). Row counts in CHUNKS only, so that a
        # handful of statements is ever prepared (and cached) per table, and no more rows
        # than the build's limit of parameters allows (999 before SQLite 3.32).
        limit = self._sqlite.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        for statement, rows in queued.items():
            if len(rows) == 1:
                self._sqlite.execute(statement, rows[0])
                continue
            if rows_of(statement, 1) is None:
                self._sqlite.executemany(statement, rows)
                continue
            start, width = 0, len(rows[0])
            for size in CHUNKS:
                many = rows_of(statement, size)
                if many is None or (size > 1 and size * width > limit):
                    continue  # past the build's limit of parameters (None: never, see above)
                while len(rows) - start >= size:
                    values = list(itertools.chain.from_iterable(rows[start : start + size]))
                    self._sqlite.execute(many, values)
                    start += size

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
