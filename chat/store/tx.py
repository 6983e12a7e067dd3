"""One batch of writes as one transaction, run on the store's write thread.

``commit_batch`` opens the transaction holding the write lock (``WriteDb.begin``: ``BEGIN
IMMEDIATE`` on SQLite, the ``event_ids`` row on PostgreSQL), runs each write operation (a plain
function of a ``Tx``), writes their queued rows and commits. An operation's own failure must
undo that operation alone, which savepoints do; but a savepoint per operation costs two
statements (two round trips under the write lock on PostgreSQL), and operations rarely fail.
So a batch first runs without savepoints; if an operation fails, the transaction is rolled
back and the batch runs again, each operation inside a savepoint of its own. A batch of one
operation that refuses (a ``ChatError``) needs no second run: its failure rolled back a
transaction that was its alone. Any other failure may be the connection's (lost mid-batch):
the second run then begins on a new one.
A synchronous connection (``sqlite3``, psycopg): no event loop here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from chat.errors import ChatError, NotFound, Unwritable
from chat.events import Event, make_event, now_rfc3339
from chat.notifications import NOTIFYING_TYPES, Notice, notices
from chat.store import notify
from chat.store.dialect import Conn, Cursor, Rows, RowsFailed, WriteDb

T = TypeVar("T")

EVENT_ROW = "INSERT INTO events (id, room, type, author, created_at, data) VALUES (?,?,?,?,?,?)"


class _Flushing:
    """The write connection as an operation sees it: the queued rows are written before any
    statement of its own, so it reads what it and the operations before it wrote. (It holds
    the transaction's queue, not the ``Tx``: no reference cycle, which only the cyclic
    collector would free.)"""

    __slots__ = ("_conn", "_db", "_rows")

    def __init__(self, db: WriteDb, rows: Rows) -> None:
        self._db, self._conn, self._rows = db, db.conn, rows

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> Cursor:
        if self._rows:
            _write(self._db, self._rows)
        return self._conn.execute(sql, params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]], /) -> Any:
        if self._rows:
            _write(self._db, self._rows)
        return self._conn.executemany(sql, rows)


def _write(db: WriteDb, rows: Rows) -> None:
    """Write the queued rows, statement by statement in the order first queued (events
    before the rows that refer to them), and empty the queue."""
    db.insert_rows(_take(rows))


def _take(rows: Rows) -> Rows:
    """The queued rows, the queue emptied in place (``_Flushing`` holds it too)."""
    queued = dict(rows)
    rows.clear()
    return queued


class Tx:
    """What a write operation sees: the write connection inside the open transaction, and
    ``append`` to add an event with the next id.

    New rows are queued (``insert``) and written together (``WriteDb.insert_rows``: a few
    INSERTs of many rows each on SQLite, one round trip on PostgreSQL) before the next
    statement an operation runs (``conn``) and with the batch's COMMIT (``WriteDb.commit``:
    on PostgreSQL in its round trip): a batch of 500 messages is 16 statements, not 1,000,
    which pays (docs/design/performance.md)."""

    def __init__(self, db: WriteDb, next_id: int) -> None:
        self.db = db
        self.rows: Rows = {}  # the queue, emptied in place (``_Flushing`` holds it too)
        self.conn: Conn = _Flushing(db, self.rows)
        self.next_id = next_id
        self.committed_id = next_id - 1  # the newest id committed before this transaction
        self.now = now_rfc3339()
        self.events: list[Event] = []
        self.rooms: set[str] = set()  # rooms known to exist in this transaction
        self.writers: dict[tuple[str, str | None], bool] = {}  # (room, user) -> may write
        # (event id, room, created_at, notice) of the events appended, recorded at the end
        # of the batch (chat/store/notify.py)
        self.notices: list[tuple[int, str, str, Notice]] = []
        self.public: set[str] = set()  # rooms found public in this transaction

    def may_write(self, room: str, user: str | None) -> bool:
        """Whether ``user`` (None: a guest) may write into the room now: any room but a
        private one, whose members may. A room once found public is known so for every later
        transaction (privacy never changes); others are asked once per room and user in a
        transaction, until a membership change of that user there (``accounts``) forgets it."""
        if room in self.db.public_rooms:
            return True
        known = self.writers.get((room, user))
        if known is None:
            access = self.room_access(room, user)
            if access == "public":
                self.public.add(room)
            known = self.writers[(room, user)] = access != "closed"
        return known

    def room_access(self, room: str, user: str | None) -> str:
        """The room as the store has it now, for ``user``: ``"public"``, ``"none"`` (not
        created yet: anyone may write, and the first write makes it public), ``"member"`` (a
        private room ``user`` is a member of) or ``"closed"``."""
        row = self.conn.execute(
            "SELECT r.private, EXISTS (SELECT 1 FROM members m WHERE m.room = r.name "
            'AND m."user" = ?) FROM rooms r WHERE r.name = ?',
            (user, room),
        ).fetchone()
        if row is None:
            return "none"
        if not row[0]:
            return "public"
        return "member" if row[1] else "closed"

    def append(self, room: str, event_type: str, fields: dict[str, Any]) -> Event:
        event = make_event(event_type, room, fields, event_id=self.next_id, created_at=self.now)
        self.next_id += 1
        self.insert(EVENT_ROW, (event.id, room, event_type, event.author, self.now, event.json))
        self.events.append(event)
        if event_type in NOTIFYING_TYPES:
            for notice in notices(event_type, room, event.payload):
                self.notices.append((self.next_id - 1, room, self.now, notice))
        return event

    def insert(self, statement: str, row: tuple[Any, ...]) -> None:
        """Queue a row for ``statement`` (an INSERT), written at the next ``flush``."""
        rows = self.rows.get(statement)
        if rows is None:
            self.rows[statement] = [row]
        else:
            rows.append(row)

    def flush(self) -> None:
        """Write the queued rows now."""
        if self.rows:
            _write(self.db, self.rows)

    def ensure_room(self, room: str, *, create: bool) -> None:
        if room in self.rooms or room in self.db.rooms:
            return  # checked once per room, not per write (docs/design/performance.md)
        if create:
            self.conn.execute(
                "INSERT INTO rooms (name, title, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                (room, room, self.now),
            )
        elif self.conn.execute("SELECT 1 FROM rooms WHERE name = ?", (room,)).fetchone() is None:
            raise NotFound(f"no room {room!r}")
        self.rooms.add(room)


WriteOp = Callable[[Tx], T]

Outcome = tuple[list[tuple[bool, Any]], list[Event]]
"""Per operation (succeeded, its result or its exception), and the committed events by id."""


def commit_batch(db: WriteDb, ops: Sequence[WriteOp[Any]]) -> Outcome:
    """Run ``ops`` as one transaction. An operation's own exception undoes that operation
    alone and becomes its result; any other failure rolls the whole batch back and raises:
    ``Unwritable`` when the database takes no writes now (``WriteDb.storage_problem``)."""
    try:
        return _commit_batch(db, ops)
    except Exception as exc:
        problem = db.storage_problem(exc)
        if problem is None:
            raise
        raise Unwritable(problem) from exc


def _commit_batch(db: WriteDb, ops: Sequence[WriteOp[Any]]) -> Outcome:
    try:
        first_id = db.begin()  # under the write lock: ids follow commit order across processes
        tx = Tx(db, first_id)
        results: list[tuple[bool, Any]] = []
        try:
            for op in ops:
                results.append((True, op(tx)))
            notify.record(tx)
        except Exception as exc:
            return _failed(db, ops, exc)
        try:
            _commit(db, tx, first_id)  # with the rows still queued
        except RowsFailed as failed:  # a row of an operation, before the COMMIT ran
            return _failed(db, ops, failed.error)
    except BaseException:
        db.rollback()
        raise
    return results, tx.events


def _failed(db: WriteDb, ops: Sequence[WriteOp[Any]], exc: Exception) -> Outcome:
    """The batch after ``exc``, which an operation or its rows raised: rolled back, then
    whatever may still succeed run again."""
    db.rollback()
    if len(ops) == 1 and isinstance(exc, ChatError):  # the operation's own refusal
        return [(False, exc)], []
    if db.storage_problem(exc) is not None:
        raise exc  # the database's refusal, not an operation's: every one would meet it
    # Anything else may be the connection (lost mid-batch), not an operation: the batch
    # again, with savepoints (and a new connection, if the old one is gone).
    return _with_savepoints(db, ops)


def _with_savepoints(db: WriteDb, ops: Sequence[WriteOp[Any]]) -> Outcome:
    """The batch again, after one of its operations failed: each operation in a savepoint."""
    first_id = db.begin()
    tx = Tx(db, first_id)
    conn = db.conn
    results: list[tuple[bool, Any]] = []
    for op in ops:
        event_mark, id_mark, notice_mark = len(tx.events), tx.next_id, len(tx.notices)
        conn.execute("SAVEPOINT op")
        try:
            result = op(tx)
            tx.flush()
            results.append((True, result))
        except Exception as exc:
            if db.storage_problem(exc) is not None:
                raise
            conn.execute("ROLLBACK TO op")
            tx.rows.clear()
            tx.rooms.clear()  # a room it created is gone again
            del tx.events[event_mark:]
            del tx.notices[notice_mark:]
            tx.next_id = id_mark
            results.append((False, exc))
        conn.execute("RELEASE op")
    notify.record(tx)
    tx.flush()  # here, not with the COMMIT: a failure is the whole batch's now
    try:
        _commit(db, tx, first_id)
    except RowsFailed as failed:  # a statement before the COMMIT: the batch's failure too
        raise failed.error from None
    return results, tx.events


def _commit(db: WriteDb, tx: Tx, first_id: int) -> None:
    db.commit(first_id, tx.next_id, _take(tx.rows))
    db.rooms |= tx.rooms  # committed: they exist for every later batch (rooms are never deleted)
    db.public_rooms |= tx.public
