"""What SQLite itself writes per second on this machine, for the generator's target (issue 17:
200,000 events/s, so 5 µs an event for everything): 10^6 rows shaped like the events (a
recursive range, the generator's rooms, a short JSON) into a table with the events' two indexes
(migrations 0001 and 0010; the access index is partial, and no generated event enters it),
and the same without them; then 10^6 short messages into the full-text index, without and
with the prefix indexes of migration 0006. One transaction each, ``synchronous=OFF``: no
more than the generator pays (bench/README.md, "The data generator").

    .venv/bin/python bench/sqlite_ceiling.py
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time

from chat.store.fill import WORDS  # the generator's vocabulary

ROWS = 1_000_000
EVENTS = """CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, room TEXT NOT NULL,
    type TEXT NOT NULL, author TEXT, created_at TEXT NOT NULL, data BLOB NOT NULL)"""
INDEXES = (
    "CREATE INDEX events_room_id ON events (room, id)",
    "CREATE INDEX events_access ON events (author, id) "
    "WHERE (type = 'room.created' OR type = 'member.added' OR type = 'member.removed')",
)
FILL_EVENTS = f"""WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS})
INSERT INTO events (id, room, type, author, created_at, data)
SELECT i, 'room-' || (CASE WHEN i / 20 % 2 = 0 THEN i / 40 % 10 ELSE i / 40 * 7919 % 1000 END),
    'message', 'user' || (i * 31 % 5000),
    '2026-12-06T00:00:00.000Z', CAST('{{"id":' || i || ',"type":"message"}}' AS BLOB) FROM n"""


def room(i: int) -> int:
    """As the generator spreads its blocks of 20: every other one in one of ten busy rooms."""
    block = i // 20
    return block // 2 % 10 if block % 2 == 0 else block // 2 * 7919 % 1000


def word(n: int) -> str:
    return WORDS[n % len(WORDS)]


def connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA wal_autocheckpoint = 0")  # as the store's writer (checkpoints apart)
    return conn


def timed(conn: sqlite3.Connection, *statements: str) -> float:
    start = time.perf_counter()
    conn.execute("BEGIN")
    for statement in statements:
        conn.execute(statement)
    conn.execute("COMMIT")
    return time.perf_counter() - start


def events(directory: str, indexed: bool) -> float:
    conn = connect(os.path.join(directory, f"events-{indexed}.db"))
    conn.execute(EVENTS)
    for index in INDEXES if indexed else ():
        conn.execute(index)
    return timed(conn, FILL_EVENTS)


def search_index(directory: str) -> list[tuple[str, float]]:
    conn = connect(os.path.join(directory, "messages.db"))
    conn.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY, room TEXT, text TEXT)")
    rows = (
        (i, f"room-{room(i)}", f"hello {word(i * 7)} {word(i * 13 + 5)} {word(i // 3)}")
        for i in range(1, ROWS + 1)
    )
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO messages VALUES (?, ?, ?)", rows)
    conn.execute("COMMIT")
    results = []
    for name, prefix in (
        ("without prefix indexes", ""),
        ("prefix = '3 4 5 6'", ", prefix = '3 4 5 6'"),
    ):
        conn.execute("DROP TABLE IF EXISTS messages_fts")
        conn.execute(
            "CREATE VIRTUAL TABLE messages_fts USING fts5 (text, room_key, "
            f"content = 'messages', content_rowid = 'id'{prefix})"
        )
        fill = (
            "INSERT INTO messages_fts (rowid, text, room_key) "
            "SELECT id, text, 'r' || hex(room) FROM messages"
        )
        results.append((name, timed(conn, fill)))
    return results


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        for indexed in (True, False):
            seconds = events(directory, indexed)
            what = "with the events' two indexes" if indexed else "without indexes"
            print(f"event rows {what}: {ROWS / seconds:,.0f}/s, {seconds / ROWS * 1e6:.2f} µs each")
        for name, seconds in search_index(directory):
            print(
                f"full-text index, {name}: {ROWS / seconds:,.0f} messages/s, "
                f"{seconds / ROWS * 1e6:.2f} µs each"
            )


if __name__ == "__main__":
    main()
