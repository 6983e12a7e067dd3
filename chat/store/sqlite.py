"""The SQLite store: how every connection to the file is set up, the write connection (with
``BEGIN IMMEDIATE`` as the write lock) and the read connection.

SQLite in WAL mode: readers never block the writer, and the writer never blocks readers.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import aiosqlite

from chat import migrations
from chat.config import Settings
from chat.errors import Unavailable
from chat.store import search
from chat.store.dialect import sqlite_path

BUSY_TIMEOUT_MS = 10_000  # another process's batch holds the write lock: wait, do not fail


def _pragmas(settings: Settings) -> tuple[str, ...]:
    return (
        f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}",
        "PRAGMA journal_mode = WAL",  # readers never block the writer, nor it them
        f"PRAGMA synchronous = {settings.sqlite_synchronous}",
    )


def connect(settings: Settings) -> sqlite3.Connection:
    """A connection for the calling thread alone (``sqlite3`` refuses any other), in
    autocommit mode: transactions are opened explicitly."""
    conn = sqlite3.connect(sqlite_path(settings.database), isolation_level=None)
    try:
        for pragma in _pragmas(settings):
            conn.execute(pragma)
    except BaseException:
        conn.close()
        raise
    return conn


async def connect_async(settings: Settings, *pragmas: str) -> aiosqlite.Connection:
    """A connection on a thread of its own (aiosqlite), for reads and checkpoints; ``pragmas``
    are run after the common ones."""
    conn = await aiosqlite.connect(sqlite_path(settings.database), isolation_level=None)
    try:
        for pragma in (*_pragmas(settings), *pragmas):
            await conn.execute(pragma)
    except BaseException:
        await conn.close()
        raise
    return conn


INDEX_ROW = "INSERT INTO messages_fts (rowid, text) VALUES (?, ?)"


class SqliteWriteDb:
    """The write connection (``chat.store.dialect.WriteDb``), made on the write thread."""

    index_row: str | None = INDEX_ROW

    def __init__(self, settings: Settings) -> None:
        self.rooms: set[str] = set()
        self.public_rooms: set[str] = set()
        self.conn = self._sqlite = connect(settings)
        try:
            migrations.apply_pending(self._sqlite, settings.migrations_dir)
            # Checkpoints run on a connection of their own (maintenance.py): in this
            # connection's COMMIT they stalled every write queued behind it.
            self._sqlite.execute("PRAGMA wal_autocheckpoint = 0")
        except BaseException:
            self._sqlite.close()
            raise

    def begin(self) -> int:
        self._sqlite.execute("BEGIN IMMEDIATE")
        # Read under the write lock: ids follow commit order even across processes.
        row = self._sqlite.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = 'events'"
        ).fetchone()
        return (row[0] if row else 0) + 1

    def commit(self, first_id: int, next_id: int) -> None:
        self._sqlite.execute("COMMIT")  # AUTOINCREMENT has recorded the ids in sqlite_sequence

    def rollback(self) -> None:
        if self._sqlite.in_transaction:
            self._sqlite.execute("ROLLBACK")

    def insert_rows(self, queued: dict[str, list[tuple[Any, ...]]]) -> None:
        for statement, rows in queued.items():  # one prepared statement, run per row, in C
            self._sqlite.executemany(statement, rows)

    def index_range(self, first_id: int, last_id: int) -> None:
        # FTS5 indexes the rows of one INSERT ... SELECT far faster than as a statement each
        # (docs/design/performance.md, migrations/0003).
        self._sqlite.execute(
            "INSERT INTO messages_fts (rowid, text) "
            "SELECT id, text FROM messages WHERE id BETWEEN ? AND ?",
            (first_id, last_id),
        )

    def close(self) -> None:
        self._sqlite.close()


class SqliteReadDb:
    """Every read on one connection of its own (``PRAGMA query_only``), on aiosqlite's thread,
    through its public API. With WAL, a read sees the last committed state and neither waits
    for the write thread nor makes it wait."""

    matches = search.FTS5_MATCHES
    match = search.FTS5_MATCH
    latest_id = "SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = 'events'"

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn: aiosqlite.Connection | None = conn

    @classmethod
    async def open(cls, settings: Settings) -> SqliteReadDb:
        return cls(await connect_async(settings, "PRAGMA query_only = 1"))

    def search_query(self, text: str) -> str:
        return search.fts5_query(text)

    async def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        if self._conn is None:
            raise Unavailable("the store is not open")
        return list(await self._conn.execute_fetchall(sql, params))

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
