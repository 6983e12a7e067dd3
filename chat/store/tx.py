"""One batch of writes as one transaction, run on the store's write thread.

``commit_batch`` opens the transaction holding the write lock (``WriteDb.begin``: ``BEGIN
IMMEDIATE`` on SQLite, the ``event_ids`` row on PostgreSQL), runs each write operation (a plain
function of a ``Tx``) inside a savepoint of its own, so one failing operation is undone alone,
and commits. A batch of one operation needs no savepoint: its failure rolls the transaction
back (two round trips fewer on PostgreSQL for a write that waited for no other).
A synchronous connection (``sqlite3``, psycopg): no event loop here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from chat.errors import NotFound
from chat.events import Event, make_event, now_rfc3339
from chat.store.dialect import WriteDb

T = TypeVar("T")

EVENT_ROW = "INSERT INTO events (id, room, type, author, created_at, data) VALUES (?,?,?,?,?,?)"


class Tx:
    """What a write operation sees: the write connection inside the open transaction, and
    ``append`` to add an event with the next id.

    New rows are queued (``insert``) and written with one ``executemany`` per statement at
    ``flush``: a batch of 500 messages is then two statements, not 1,000, which pays
    (docs/design/performance.md). ``flush`` runs after every operation, and an operation that
    reads what it (or an earlier item of its batch) inserted calls it first."""

    def __init__(self, db: WriteDb, next_id: int) -> None:
        self.db = db
        self.conn = db.conn
        self.next_id = next_id
        self.now = now_rfc3339()
        self.events: list[Event] = []
        self.rooms: set[str] = set()  # rooms known to exist in this transaction
        self.rows: dict[str, list[tuple[Any, ...]]] = {}  # statement -> rows, in order
        self.writers: dict[tuple[str, str | None], bool] = {}  # (room, user) -> may write

    def may_write(self, room: str, user: str | None) -> bool:
        """Whether ``user`` (None: a guest) may write into the room now: any room but a
        private one, whose members may (asked once per room and user in a transaction)."""
        known = self.writers.get((room, user))
        if known is None:
            row = self.conn.execute(
                "SELECT r.private, EXISTS (SELECT 1 FROM members m WHERE m.room = r.name "
                'AND m."user" = ?) FROM rooms r WHERE r.name = ?',
                (user, room),
            ).fetchone()
            known = self.writers[(room, user)] = row is None or not row[0] or bool(row[1])
        return known

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
            return  # a batch into one room checks it once (docs/design/performance.md)
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
    alone and becomes its result; any other failure rolls the whole batch back and raises."""
    try:
        first_id = db.begin()  # under the write lock: ids follow commit order across processes
        conn = db.conn
        tx = Tx(db, first_id)
        results: list[tuple[bool, Any]] = []
        if len(ops) == 1:  # the transaction is the operation's alone: no savepoint needed
            try:
                result = ops[0](tx)
                tx.flush()
            except Exception as exc:
                db.rollback()
                return [(False, exc)], []
            db.commit(first_id, tx.next_id)
            return [(True, result)], tx.events
        for op in ops:
            event_mark, id_mark = len(tx.events), tx.next_id
            conn.execute("SAVEPOINT op")
            try:
                result = op(tx)
                tx.flush()
                results.append((True, result))
            except Exception as exc:
                conn.execute("ROLLBACK TO op")
                tx.rows.clear()
                tx.rooms.clear()  # a room it created is gone again
                del tx.events[event_mark:]
                tx.next_id = id_mark
                results.append((False, exc))
            conn.execute("RELEASE op")
        db.commit(first_id, tx.next_id)
    except BaseException:
        db.rollback()
        raise
    return results, tx.events
