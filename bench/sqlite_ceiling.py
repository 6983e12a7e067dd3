"""What SQLite itself writes per second on this machine, for the generator's target (issue 17:
200,000 events/s, so 5 µs an event for everything), on the service's own schema and write
connection (``SqliteWriteDb``: every migration applied, the store's pragmas, no checkpoint in
its commits):

- 10^6 event rows (a recursive range, the generator's rooms, a short JSON) in one
  ``INSERT ... SELECT``, into ``events`` with its indexes, and into a second database whose
  events indexes were dropped;
- 10^6 short messages (the generator's words; their rows written first, not timed) added to
  the full-text index by the store's own statement (``SqliteWriteDb.index_range``, the one the
  generator and message batches run).

One transaction each: no more than the generator pays (bench/README.md, "The data generator").

    .venv/bin/python bench/sqlite_ceiling.py
"""

from __future__ import annotations

import os
import tempfile
import time

from chat.config import Settings
from chat.store.fill import WORDS  # the generator's vocabulary
from chat.store.sqlite import SqliteWriteDb

ROWS = 1_000_000
# Blocks of 20 ids, as the generator spreads them: every other block in one of ten busy rooms.
ROOM = "CASE WHEN i / 20 % 2 = 0 THEN i / 40 % 10 ELSE i / 40 * 7919 % 1000 END"
FILL_EVENTS = f"""WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS})
INSERT INTO events (id, room, type, author, created_at, data)
SELECT i, 'room-' || ({ROOM}), 'message', 'user' || (i * 31 % 5000),
    '2026-12-06T00:00:00.000Z', CAST('{{"id":' || i || ',"type":"message"}}' AS BLOB) FROM n"""
EVENTS_INDEXES = (  # those the migrations made (not the primary key's)
    "SELECT name FROM sqlite_schema "
    "WHERE type = 'index' AND tbl_name = 'events' AND sql IS NOT NULL"
)


def open_db(directory: str, name: str) -> SqliteWriteDb:
    return SqliteWriteDb(Settings(database=os.path.join(directory, name)))


def timed(db: SqliteWriteDb, statement: str | None) -> float:
    """One transaction: ``statement``, or (None) the store's full-text indexing of ids 1..ROWS."""
    start = time.perf_counter()
    db.conn.execute("BEGIN IMMEDIATE")
    if statement is not None:
        db.conn.execute(statement)
    else:
        db.index_range(1, ROWS)
    db.conn.execute("COMMIT")
    return time.perf_counter() - start


def events(directory: str, indexed: bool) -> float:
    db = open_db(directory, f"events-{indexed}.db")
    try:
        if not indexed:
            for (index,) in db.conn.execute(EVENTS_INDEXES).fetchall():
                db.conn.execute(f"DROP INDEX {index}")
        return timed(db, FILL_EVENTS)
    finally:
        db.close()


def word(n: int) -> str:
    return WORDS[n % len(WORDS)]


def search_index(directory: str) -> float:
    db = open_db(directory, "messages.db")
    try:
        db.conn.execute("BEGIN IMMEDIATE")
        db.conn.execute(FILL_EVENTS)  # the messages' events (a message row references one)
        db.conn.execute("CREATE TEMP TABLE texts (id INTEGER PRIMARY KEY, text TEXT)")
        texts = (
            (i, f"hello {word(i * 7)} {word(i * 13 + 5)} {word(i // 3)}")
            for i in range(1, ROWS + 1)
        )
        db.conn.executemany("INSERT INTO texts VALUES (?, ?)", texts)
        db.conn.execute(
            "INSERT INTO messages (id, room, author, text, created_at) "
            "SELECT e.id, e.room, e.author, t.text, e.created_at "
            "FROM events e JOIN texts t USING (id)"
        )
        db.conn.execute("COMMIT")
        return timed(db, None)
    finally:
        db.close()


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        for indexed in (True, False):
            seconds = events(directory, indexed)
            what = "with the events' indexes" if indexed else "with those indexes dropped"
            print(f"event rows {what}: {ROWS / seconds:,.0f}/s, {seconds / ROWS * 1e6:.2f} µs each")
        seconds = search_index(directory)
        print(
            f"messages into the full-text index: {ROWS / seconds:,.0f}/s, "
            f"{seconds / ROWS * 1e6:.2f} µs each"
        )


if __name__ == "__main__":
    main()
