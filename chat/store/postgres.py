"""The PostgreSQL store's write connection (a one-row counter as the write lock), with
psycopg 3; its reads are ``chat.store.postgres_reads``.

Ids in commit order across every process: a batch's transaction first locks the one row of
``event_ids`` (``SELECT ... FOR UPDATE``), takes its ids from there and writes the last one
back just before COMMIT. A second writer (another process) waits on the row lock until the
first has committed, then reads the id it wrote: so when id N is committed, every id below N
is committed too, which the broker and sequencer rely on. A plain sequence would not give
that: two transactions can take 7 and 8 and commit 8 first. The lock is held from a batch's
first statement to its COMMIT, which is what serialises writers, as ``BEGIN IMMEDIATE`` does
on SQLite (docs/design/store.md, with what it costs).

Search words are written after the lock's COMMIT (``chat.store.postgres_words``).

A connection lost between batches (PostgreSQL restarted, a network cut) is found at the next
batch's first statement, before anything of it was sent: the batch goes on a new connection.
A connection lost during a batch fails that batch with 503 (rolled back, nothing half
written; lost in the COMMIT's own round trip, the batch may have been committed whole, which
nobody can tell then: a retry with its idempotency key finds it); the next connects again.
Reads retry once on a fresh connection, then answer 503.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg import pq

from chat.config import Settings
from chat.errors import Unavailable
from chat.events import now_rfc3339
from chat.migrations import Migration, discover, warn_unknown
from chat.store import postgres_words
from chat.store.dialect import Kind, Rows, write_before_commit

log = logging.getLogger(__name__)
T = TypeVar("T")

MIGRATIONS_SUBDIR = "postgresql"
MIGRATION_LOCK = 0x63686174  # "chat": the advisory lock that serialises migrations
UNREACHABLE = "the database is unreachable"
BEGIN = "BEGIN; SELECT last_id FROM event_ids FOR UPDATE"
COPY_FROM_ROWS = 16  # from this many rows of one statement, COPY (below, one pipeline)
_INSERT = re.compile(r"INSERT INTO (\w+) \(([\w\", ]+)\) VALUES \(\?(?:\s*,\s*\?)*\)")


@functools.lru_cache(maxsize=512)
def placeholders(sql: str) -> str:
    """The store's SQL (``?`` placeholders) in psycopg's (``%s``), once per statement text;
    a literal ``%`` doubled. The store's statements carry no ``?`` inside a string literal.
    ``COLLATE BINARY`` (SQLite's byte order) is PostgreSQL's ``COLLATE "C"``: names sort the
    same on both stores whatever collation the database was made with."""
    return sql.replace("%", "%%").replace("?", "%s").replace(" COLLATE BINARY", ' COLLATE "C"')


class PgConn:
    """A psycopg connection that takes the store's SQL (``chat.store.dialect.Conn``)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.raw = conn

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> psycopg.Cursor[Any]:
        return self.raw.execute(placeholders(sql), params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]], /) -> None:
        with self.raw.cursor() as cur:
            cur.executemany(placeholders(sql), rows)


@functools.lru_cache(maxsize=64)
def copy_statement(sql: str) -> tuple[str, str] | None:
    """For an ``INSERT INTO table (columns) VALUES (?, ...)``: ``COPY table (columns) FROM STDIN``
    in the binary format, and a query whose description names those columns' types, which a
    binary ``COPY`` needs (None for any other statement). Binary, not text: a text ``COPY``
    sends ``bytea`` (an event's JSON) as hex that the server decodes, and has every number
    formatted and parsed; binary took a batch of 500 messages from 1.5 to 1.0 ms of the write
    thread's CPU and 4.5 to 4.1 ms of PostgreSQL's, under the write lock (bench/README.md)."""
    match = _INSERT.fullmatch(sql.strip())
    if match is None:
        return None
    table, columns = match[1], match[2]
    copy = f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)"
    return copy, f"SELECT {columns} FROM {table} WHERE false"


def _few(queued: Rows) -> postgres_words.Many | None:
    """The statements, in psycopg's placeholders, with their rows, when each has fewer than
    COPY_FROM_ROWS rows (one pipeline); None when some statement has more (``COPY``)."""
    if any(len(rows) >= COPY_FROM_ROWS for rows in queued.values()):
        return None
    return [(placeholders(statement), rows) for statement, rows in queued.items()]


def connection_options(settings: Settings) -> dict[str, Any]:
    """libpq parameters of every connection (the URL's own come first and stay): a name in
    ``pg_stat_activity``, the connect timeout, a deadline for each statement, and TCP
    settings that notice a peer gone silent (a network cut) within the same deadline."""
    timeout_ms = max(1, round(settings.database_timeout_seconds * 1000))
    return {
        "application_name": "chat",
        "connect_timeout": max(1, round(settings.database_connect_timeout_seconds)),
        "options": f"-c statement_timeout={timeout_ms}",
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 5,
        "keepalives_count": 3,
        "tcp_user_timeout": timeout_ms,
    }


def connect(settings: Settings) -> psycopg.Connection[Any]:
    """A connection in autocommit mode: transactions are opened explicitly."""
    return psycopg.connect(settings.database, autocommit=True, **connection_options(settings))


def migrations_folder(settings: Settings) -> Path:
    return settings.migrations_dir / MIGRATIONS_SUBDIR


def apply_pending(conn: psycopg.Connection[Any], folder: Path) -> list[Migration]:
    """Apply what the database has not seen yet, each file and its record in one transaction
    under an advisory lock (several processes may start at once); returns what was applied."""
    applied = []
    known = discover(folder)
    for migration in known:
        with conn.transaction():
            conn.execute("SET LOCAL statement_timeout = 0")  # an index on a big table takes time
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            # Created only when missing: CREATE ... IF NOT EXISTS needs the CREATE right even
            # when the table exists, which a service role without it (the owner migrated
            # with `python -m chat migrate`, deploy/README.md) does not have.
            found = conn.execute("SELECT to_regclass('schema_migrations')").fetchone()
            if found is None or found[0] is None:
                conn.execute(
                    "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
                    "name TEXT NOT NULL, applied_at TEXT NOT NULL)"
                )
            seen = conn.execute(
                "SELECT 1 FROM schema_migrations WHERE version = %s", (migration.version,)
            ).fetchone()
            if seen is None:
                # no parameters: psycopg sends the script as it is, several statements at once
                conn.execute(migration.path.read_text().encode())
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (%s, %s, %s)",
                    (migration.version, migration.name, now_rfc3339()),
                )
                applied.append(migration)
    warn_unknown(conn.execute("SELECT version, name FROM schema_migrations").fetchall(), known)
    return applied


def _refuses_writes(sqlstate: str | None) -> bool:
    """A read-only transaction (a standby, ``default_transaction_read_only``), class 53 (disk
    full, out of memory, too many connections) or an I/O error."""
    return sqlstate is not None and (sqlstate in ("25006", "58030") or sqlstate[:2] == "53")


class PgWriteDb:
    """The write connection (``chat.store.dialect.WriteDb``), made and used on the write
    thread; a lost connection is replaced at the next batch."""

    kind: Kind = "postgresql"
    index_row: str | None = None  # every batch's messages are indexed after its commit

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._reopen = False  # set by ``storage_problem``
        self.rooms: set[str] = set()
        self.public_rooms: set[str] = set()
        self._words = postgres_words.Words(self.rollback)
        self._column_types: dict[str, list[int]] = {}  # by describing query (copy_statement)
        raw = connect(settings)
        try:
            apply_pending(raw, migrations_folder(settings))
        except BaseException:
            raw.close()
            raise
        self.conn = PgConn(raw)
        self._words.catch_up(raw, everything=True)  # what a process killed before left behind

    def storage_problem(self, error: BaseException) -> str | None:
        if not isinstance(error, psycopg.Error) or not _refuses_writes(error.sqlstate):
            return None
        self._reopen = True  # a standby answers read-only; a new connection may find the primary
        return str(error).strip()

    def begin(self) -> int:
        raw = self.conn.raw
        if raw.closed or raw.broken or self._reopen:
            self._reopen = False
            raw = self._reconnect()
        self._words.catch_up(raw)  # before the lock, as every write of search words
        # The write lock: held until COMMIT, so ids follow commit order (the module's doc).
        # Two statements, one round trip (no parameters: psycopg sends them as they are).
        try:
            cur = raw.execute(BEGIN)
        except psycopg.OperationalError:
            if not raw.broken:
                raise
            # Lost since the last batch (a restart): nothing of this batch was sent, so it
            # goes on a new connection, and the first write after an outage succeeds.
            raw = self._reconnect()
            cur = raw.execute(BEGIN)
        cur.nextset()
        row = cur.fetchone()
        assert row is not None, "migrations/postgresql/0001 inserts the one row"
        return int(row[0]) + 1

    def _reconnect(self) -> psycopg.Connection[Any]:
        self.conn.raw.close()
        try:
            raw = connect(self._settings)
        except psycopg.OperationalError as error:
            log.warning("%s: %s", UNREACHABLE, error)
            raise Unavailable(UNREACHABLE, retry_after_s=1) from None
        self.conn = PgConn(raw)
        log.warning("connected to the database again")
        return raw

    def commit(self, first_id: int, next_id: int, rows: Rows) -> None:
        """A few rows (a group of POSTs) go in the COMMIT's round trip, one fewer under the
        write lock; many (a batch) are copied first (``insert_rows``)."""
        raw = self.conn.raw
        few = _few(rows)
        if few is None:
            write_before_commit(self, rows)
            few = []
        if next_id > first_id:  # with the search words (chat/store/postgres_words.py)
            self._words.commit(raw, first_id, next_id - 1, few)
        else:
            postgres_words.commit(raw, few)

    def rollback(self) -> None:
        raw = self.conn.raw
        if raw.closed or raw.broken:
            return  # nothing to roll back on a lost connection: the server has done it
        status = raw.info.transaction_status
        if status == pq.TransactionStatus.INERROR:
            # A statement failed: psycopg's rollback, which also forgets (and deallocates) the
            # statements psycopg prepared. psycopg counts a statement prepared as it queues it
            # in a pipeline, on its n-th run, and after a failed statement the server skipped
            # the rest: later batches could name a statement the server never made.
            raw.rollback()
        elif status != pq.TransactionStatus.IDLE:
            raw.execute("ROLLBACK")  # an operation's refusal: the prepared statements stay

    def insert_rows(self, queued: Rows) -> None:
        """A few rows (the writes of a batch of POSTs): every statement in one pipeline, one
        round trip. Many (a batch of 500 messages): a binary ``COPY`` per table, which takes the
        rows as a stream, where an INSERT with a row of parameters per row costs psycopg and
        the server a parse of thousands of placeholders (docs/design/store.md)."""
        raw = self.conn.raw
        few = _few(queued)
        if few is not None:
            postgres_words.send(raw, rows=few)
            return
        with raw.cursor() as cur:
            for statement, rows in queued.items():
                copy = copy_statement(statement) if len(rows) >= COPY_FROM_ROWS else None
                if copy is None:
                    cur.executemany(placeholders(statement), rows)
                    continue
                types = self._types(cur, copy[1])
                with cur.copy(copy[0]) as stream:
                    stream.set_types(types)
                    for row in rows:
                        stream.write_row(row)

    def _types(self, cur: psycopg.Cursor[Any], describe: str) -> list[int]:
        """The columns' types (OIDs), asked of the database once per statement."""
        types = self._column_types.get(describe)
        if types is None:
            cur.execute(describe)
            types = [column.type_code for column in cur.description or ()]
            self._column_types[describe] = types
        return types

    def index_range(self, first_id: int, last_id: int) -> None:
        pass  # ``commit`` indexes every batch's messages

    def unindex_range(self, first_id: int, last_id: int) -> None:
        self.conn.execute("DELETE FROM message_words WHERE id BETWEEN ? AND ?", (first_id, last_id))

    def close(self) -> None:
        self.conn.raw.close()
