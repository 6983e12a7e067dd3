"""What differs between the two stores, SQLite and PostgreSQL, seen from a write operation.

The write operations (``writes.py``, ``accounts.py``) and the reads (``reads.py``,
``account_reads.py``) are written once, in SQL both databases run: ``?`` placeholders (the
PostgreSQL connection turns them into its own), ``"user"`` quoted (a reserved word in
PostgreSQL), ``ON CONFLICT`` rather than ``INSERT OR IGNORE``, ``CASE`` rather than
two-argument ``min``/``max``. What cannot be written once is here: how a batch takes the next
event id under the write lock, and how a new message reaches the full-text index.

``database_kind`` reads ``CHAT_DATABASE``: a ``postgresql://`` (or ``postgres://``) URL is
PostgreSQL; a path, or ``sqlite:///path``, is SQLite.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol, TypeVar
from urllib.parse import unquote

T = TypeVar("T")

Kind = Literal["sqlite", "postgresql"]
Rows = dict[str, list[tuple[Any, ...]]]
"""Queued rows: an ``INSERT ... VALUES (?, ...)`` statement -> its rows, in the order first
queued."""


class RowsFailed(Exception):
    """``WriteDb.commit`` failed (the cause) before its COMMIT ran, in writing the rows it was
    given or in a statement sent with them (on PostgreSQL: the search words, the ids'
    counter): nothing of the batch was committed."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def write_before_commit(db: WriteDb, rows: Rows) -> None:
    """``db.insert_rows(rows)`` for a ``commit``, before its COMMIT is sent: any failure is
    ``RowsFailed``."""
    try:
        db.insert_rows(rows)
    except Exception as error:
        raise RowsFailed(error) from error


class Cursor(Protocol):
    """The part of a DB-API cursor the write operations use (``sqlite3`` and psycopg)."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Conn(Protocol):
    """The write connection, as a write operation sees it: ``?`` placeholders on both."""

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> Cursor: ...

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]], /) -> Any: ...


class WriteDb(Protocol):
    """The store's write connection, on the write thread, with what its dialect does
    differently; ``conn`` is valid after ``begin``."""

    @property
    def conn(self) -> Conn: ...

    kind: Kind
    """Which database it is (what a benchmark's bulk fill, chat/store/fill.py, needs to know)."""
    index_row: str | None
    """The INSERT that adds an (id, text) row to the full-text index; None: the store indexes
    each batch's messages itself (PostgreSQL: chat/store/postgres_words.py)."""

    rooms: set[str]
    """Rooms known to exist, from committed batches (a room is never deleted)."""

    public_rooms: set[str]
    """Rooms known to be public, from committed batches (a room's privacy never changes)."""

    def insert_rows(self, queued: Rows) -> None:
        """Write the rows of each ``INSERT ... VALUES (?, ...)`` statement, in order."""
        ...

    def begin(self) -> int:
        """Open the batch's transaction holding the write lock; returns the next event id."""
        ...

    def commit(self, first_id: int, next_id: int, rows: Rows) -> None:
        """Write ``rows`` (the batch's rows still queued, as for ``insert_rows``) and commit,
        recording the ids the batch took (``first_id`` .. ``next_id - 1``). A failure before
        the COMMIT ran raises ``RowsFailed`` from it: nothing was committed, and the caller
        rolls back and may run the batch again. Any other failure may have come after it."""
        ...

    def rollback(self) -> None:
        """Roll back the open transaction, if there is one."""
        ...

    def storage_problem(self, error: BaseException) -> str | None:
        """What ``error`` says, if it says that the database takes no writes now (read-only,
        full, an I/O error: the operator's to fix, ``errors.Unwritable``); None for any other
        error. Once it has said so, the next ``begin`` opens a new connection: one opened on
        a read-only file stays read-only after the file is fixed."""
        ...

    def index_range(self, first_id: int, last_id: int) -> None:
        """Add the messages with ids in [first_id, last_id] to the full-text index."""
        ...

    def unindex_range(self, first_id: int, last_id: int) -> None:
        """Take the messages with ids in [first_id, last_id] out of the full-text index (before
        their rows are deleted)."""
        ...

    def close(self) -> None: ...


class ReadDb(Protocol):
    """The store's reads: one statement, its rows (``?`` placeholders); and how a search
    reads: ``matches`` the messages a search finds, as ``m``; ``match`` the condition, whose
    parameter is ``search_query(text, room)`` (chat/store/search.py)."""

    matches: str
    match: str
    match_id: str
    """The id a search orders and pages by (the index's own where it has one)."""
    latest_id: str
    """The statement that reads the newest event id taken (0 before the first)."""

    def search_query(self, text: str, room: str) -> str: ...

    async def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]: ...

    async def read(
        self, sql: str, params: Sequence[Any], convert: Callable[[Sequence[Sequence[Any]]], T]
    ) -> T:
        """``convert`` of the statement's rows; identical reads may share one run and its
        answer (SQLite: chat/store/sqlite.py), which must then not be changed."""
        ...

    async def close(self) -> None: ...


def database_kind(database: str) -> Kind:
    if database.startswith(("postgresql://", "postgres://")):
        return "postgresql"
    return "sqlite"


def shown_database(database: str) -> str:
    """``CHAT_DATABASE`` as logs and messages show it: a PostgreSQL URL without its password
    and query (which may carry one: ``?password=``), so no secret reaches a log line."""
    if database_kind(database) == "sqlite":
        return database
    scheme, _, rest = database.partition("://")
    userinfo, at, hosts = rest.rpartition("@")  # the last '@': a password may hold any
    if at:
        rest = f"{userinfo.partition(':')[0]}@{hosts}"
    return f"{scheme}://{rest.partition('?')[0]}"


def without_secrets(text: str, database: str) -> str:
    """``text`` (a driver's error message) with the password of a PostgreSQL ``CHAT_DATABASE``
    taken out, as written in the URL and as decoded: libpq quotes the part of the URL it
    could not parse, password included (``invalid percent-encoded token: "s3cr%ZZet"``)."""
    if database_kind(database) != "postgresql":
        return text
    rest = database.partition("://")[2]
    userinfo, at, hosts = rest.rpartition("@")
    secrets = [userinfo.partition(":")[2]] if at else []
    secrets += [
        value for name, _, value in (p.partition("=") for p in hosts.partition("?")[2].split("&"))
        if name == "password"
    ]  # fmt: skip
    for secret in [*secrets, *(unquote(s) for s in secrets)]:
        if secret:
            text = text.replace(secret, "***")
    return text


def sqlite_path(database: str) -> str:
    """The file of a SQLite ``CHAT_DATABASE``: a path, or ``sqlite:///path``."""
    return database.removeprefix("sqlite://") if database.startswith("sqlite:///") else database
