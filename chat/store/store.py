"""``Store``: the store's one interface, the parts it is made of opened and closed in order.

``CHAT_DATABASE`` chooses the database: a path (or ``sqlite:///path``) is SQLite, the
embedded default; a ``postgresql://`` URL is PostgreSQL (chat/store/dialect.py).

- writes: ``writer.Writer``, the store's own write thread (one transaction per batch);
- reads: ``reads.Reads``, on a connection of their own (SQLite) or a pool (PostgreSQL);
- checkpoints (SQLite): ``maintenance.Checkpointer``, on a third connection;
- the search backlog (PostgreSQL): a writer looks at it when it begins a batch, an idle one
  with an empty write every ``postgres_words.SWEEP_EVERY_S`` (``Store._tend_backlog``).

PostgreSQL's module (and psycopg with it) is imported only for a PostgreSQL store: SQLite's
start-up does not pay for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from typing import TypeVar

from chat import migrations
from chat.config import Settings
from chat.errors import Unavailable
from chat.events import Event
from chat.migrations import Migration, MigrationsError
from chat.store import sqlite, sqlite_reads
from chat.store.dialect import ReadDb, WriteDb, database_kind
from chat.store.maintenance import Checkpointer
from chat.store.reads import Reads
from chat.store.tx import WriteOp
from chat.store.writer import CLOSE_WAIT_S, Writer

T = TypeVar("T")


def database_errors(settings: Settings, opening: bool = True) -> tuple[type[Exception], ...]:
    """What opening or migrating ``CHAT_DATABASE`` raises when the database is unusable (a
    bad path or URL, a server that refuses): the commands report these in one line. With
    ``opening=False``, what a statement raises later (the driver's errors, no OSError: one
    of a command's own reads, a password from the terminal, is not the database's)."""
    os_errors: tuple[type[Exception], ...] = (OSError, MigrationsError) if opening else ()
    if database_kind(settings.database) == "postgresql":
        import psycopg

        return (psycopg.Error, *os_errors)
    return (sqlite3.Error, *os_errors)


def open_write_db(settings: Settings) -> WriteDb:
    """The write connection of ``CHAT_DATABASE``, migrated (on the thread that will use it)."""
    if database_kind(settings.database) == "postgresql":
        from chat.store import postgres

        return postgres.PgWriteDb(settings)
    return sqlite.SqliteWriteDb(settings)


def migrate(settings: Settings) -> list[Migration]:
    """Apply the pending migrations of ``CHAT_DATABASE`` (``python -m chat migrate``; the
    store applies them itself when it opens); returns what was applied."""
    if database_kind(settings.database) == "postgresql":
        from chat.store import postgres

        migrations.discover(postgres.migrations_folder(settings))  # no files: before connecting
        pg = postgres.connect(settings)
        try:
            return postgres.apply_pending(pg, postgres.migrations_folder(settings))
        finally:
            pg.close()
    migrations.discover(settings.migrations_dir)  # no files: said before a file is made
    conn = sqlite.connect(settings)
    try:
        return migrations.apply_pending(conn, settings.migrations_dir)
    finally:
        conn.close()


class Store(Reads):
    """``on_commit`` gets each batch's committed events, in id order, on the loop, before any
    caller of ``write`` learns that its write is committed."""

    def __init__(self, settings: Settings, on_commit: Callable[[list[Event]], None]) -> None:
        self.settings = settings
        self.kind = database_kind(settings.database)
        self._writer = Writer(settings, on_commit, open_write_db)
        self._checkpointer = Checkpointer(settings) if self.kind == "sqlite" else None
        self._tending: asyncio.Task[None] | None = None

    async def open(self) -> None:
        await self._writer.open()  # first: it applies the migrations the others read
        try:
            if self._checkpointer is not None:
                await self._checkpointer.start()
            self._read = await self._open_reads()
        except BaseException:
            await self.close()
            raise
        if self.kind == "postgresql":
            self._tending = asyncio.create_task(self._tend_backlog(), name="chat-search-backlog")

    async def _tend_backlog(self) -> None:
        """An empty write every sweep interval: a writer sweeps the search backlog when it
        begins a batch (chat/store/postgres_words.py), so what another process left is indexed
        here too while nobody writes. A busy writer puts it in its next batch of POSTs."""
        from chat.store import postgres_words

        while True:
            await asyncio.sleep(postgres_words.SWEEP_EVERY_S)
            # The database away, the store closing: the next interval tries. (The writer
            # turns every failure of a batch into Unavailable; ``_nothing`` never fails.)
            with contextlib.suppress(Unavailable):
                await self.maintain(_nothing)

    async def close(self) -> None:
        """Finish the writes already queued (up to 10 s), then close the connections: the
        write connection last, so that closing it checkpoints what is left."""
        tending, self._tending = self._tending, None
        if tending is not None:
            tending.cancel()
        await self._writer.drain(asyncio.get_running_loop().time() + CLOSE_WAIT_S)
        if tending is not None:  # after drain: the store refuses writes from close's first step
            await asyncio.wait([tending])
        if self._checkpointer is not None:
            await self._checkpointer.stop()
        read, self._read = self._read, None
        if read is not None:
            await read.close()
        await self._writer.close()

    async def _open_reads(self) -> ReadDb:
        if self.kind == "postgresql":
            from chat.store import postgres_reads

            return await postgres_reads.PgReadDb.open(self.settings)
        return await sqlite_reads.SqliteReadDb.open(self.settings)

    async def write(self, op: WriteOp[T]) -> T:
        """Queue a write; returns its result once committed (and its events published)."""
        return await self._writer.write(op)

    async def maintain(self, op: WriteOp[T]) -> T | None:
        """A write of the store's upkeep (a purge, a sweep), or None without it while the
        database takes no writes: one that changes nothing would pass on a full disk, and any
        write that passes ends that state (``unwritable``, which ``/readyz`` reports) until
        the next real write fails again."""
        if self.unwritable is not None:
            return None
        return await self._writer.write(op)

    @property
    def unwritable(self) -> str | None:
        """Why the last write found the database taking no writes (``errors.Unwritable``:
        read-only, full), until a write succeeds again; None while writes succeed."""
        return self._writer.unwritable

    @property
    def accepting_writes(self) -> bool:
        """True from ``open`` until ``close`` begins, unless the write thread has stopped."""
        return self._writer.accepting


def _nothing(tx: object) -> None:
    """A write of nothing (``Store._tend_backlog``)."""
