"""A batch's transaction (chat/store/tx.py): one transaction per batch, a savepoint per
operation, and what one operation's failure undoes (run on a real SQLite file and a real
PostgreSQL database, without the server)."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from psycopg import pq

from chat.config import Settings
from chat.errors import NotFound
from chat.identity import Identity
from chat.store import accounts, writes
from chat.store.dialect import WriteDb
from chat.store.store import open_write_db
from chat.store.tx import Tx, WriteOp, commit_batch
from tests.live import LiveServer
from tests.postgres_server import PostgresServer


@pytest.fixture
def conn(database: str) -> Iterator[WriteDb]:
    """The write connection of a new store (SQLite, then PostgreSQL), migrated."""
    made = open_write_db(Settings(database=database))
    yield made
    made.close()


def rooms(conn: WriteDb) -> set[str]:
    return {name for (name,) in conn.conn.execute("SELECT name FROM rooms").fetchall()}


def fails_after(op: WriteOp[object]) -> WriteOp[object]:
    """``op``, then a failure: its savepoint is rolled back, the room it created with it."""

    def run(tx: Tx) -> object:
        op(tx)
        raise RuntimeError("the operation's own failure")

    return run


def test_a_room_created_by_a_failed_operation_is_created_again_by_the_next(
    conn: WriteDb,
) -> None:
    post = writes.post_message("fresh", "alice", "hi", None, create_room=True)
    results, events = commit_batch(conn, [fails_after(post), post])
    assert [ok for ok, _ in results] == [False, True]
    assert "fresh" in rooms(conn)
    assert [e.room for e in events] == ["fresh"]


def test_a_room_created_by_a_failed_operation_does_not_exist_for_the_next(
    conn: WriteDb,
) -> None:
    created = writes.post_activity("ghost", {"actor": "bot", "verb": "x"}, create_room=True)
    strict = writes.post_message("ghost", "alice", "hi", None, create_room=False)
    results, events = commit_batch(conn, [fails_after(created), strict])
    assert results[0][0] is False
    assert results[1][0] is False and isinstance(results[1][1], NotFound)
    assert "ghost" not in rooms(conn)
    assert events == []


def test_membership_changes_apply_to_the_writes_after_them_in_the_same_batch(
    conn: WriteDb,
) -> None:
    """A defect a probe found, fixed: a batch remembered who may write into a private room
    for its whole length, so a member removed in the batch still wrote after the removal
    (and one added was still refused). Access follows the event order (ACCESS.md)."""
    bob = Identity("bob")

    def post(text: str) -> WriteOp[object]:
        op = writes.post_message("secret", "bob", text, None, create_room=True)
        return accounts.guarded("secret", bob, op)

    made = commit_batch(conn, [accounts.create_room("secret", None, True, "alice")])
    assert made[0] == [(True, True)]
    results, events = commit_batch(
        conn,
        [
            post("refused"),
            accounts.add_member("secret", "bob", "member", "alice"),
            post("as a member"),
            accounts.remove_member("secret", "bob", "alice"),
            post("after the removal"),
        ],
    )
    assert [ok for ok, _ in results] == [False, True, True, True, False]
    assert isinstance(results[4][1], NotFound)
    assert [(e.type, e.payload.get("text")) for e in events] == [
        ("member.added", None),
        ("message", "as a member"),
        ("member.removed", None),
    ]
    # a room that does not exist yet, which anyone may write into, then created private in
    # the same batch (a review found the first answer remembered)
    early = writes.post_message("later", "bob", "early", None, create_room=False)
    late = writes.post_message("later", "bob", "late", None, create_room=False)
    results, events = commit_batch(
        conn,
        [
            accounts.guarded("later", bob, early),
            accounts.create_room("later", None, True, "alice"),
            accounts.guarded("later", bob, late),
        ],
    )
    assert [ok for ok, _ in results] == [False, True, False]
    assert all(e.type != "message" for e in events)


def test_many_posts_into_one_room_in_one_transaction(conn: WriteDb) -> None:
    ops = [writes.post_message("busy", "alice", f"m{i}", None, create_room=True) for i in range(5)]
    results, events = commit_batch(conn, ops)
    assert all(ok for ok, _ in results)
    assert [e.id for e in events] == [1, 2, 3, 4, 5]
    count = conn.conn.execute("SELECT count(*) FROM messages WHERE room = 'busy'").fetchone()
    assert tuple(count) == (5,)


async def test_a_running_server_checkpoints_its_wal_into_the_database_file(
    tmp_path: Path,
) -> None:
    """SQLite: the write connection never checkpoints (its COMMITs stay short); a connection
    of its own does, twice a second. Seen from outside: a committed message reaches the
    database file itself (not only its -wal) while the server runs."""
    live = LiveServer(tmp_path / "server")
    live.workdir.mkdir()
    live.start()
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        posted = await client.post(
            "/api/rooms/wal/messages", json={"author": "ann", "text": "into the file"}
        )
        assert posted.status_code == 201, posted.text
    copy = tmp_path / "main-file-only.db"  # the database file alone, without its WAL
    for _ in range(50):
        shutil.copyfile(live.database, copy)
        db = sqlite3.connect(copy)
        try:
            found = db.execute("SELECT text FROM messages").fetchall()
        except sqlite3.OperationalError:  # not even the schema is in the file yet
            found = []
        finally:
            db.close()
        copy.unlink()
        if found == [("into the file",)]:
            break
        await asyncio.sleep(0.1)
    try:
        assert found == [("into the file",)]
        assert live.proc is not None and live.proc.poll() is None
    finally:
        live.kill()


def test_a_failing_operation_alone_in_its_batch_leaves_nothing(conn: WriteDb) -> None:
    """A batch of one operation runs without a savepoint: its failure rolls the whole
    transaction back, the room it created and the id it took with it."""
    post = writes.post_message("solo", "alice", "hi", None, create_room=True)
    results, events = commit_batch(conn, [fails_after(post)])
    assert results[0][0] is False and isinstance(results[0][1], RuntimeError)
    assert events == [] and "solo" not in rooms(conn)
    results, events = commit_batch(conn, [post])
    assert results[0][0] is True and [e.id for e in events] == [1]
    assert "solo" in rooms(conn)


def queues_a_bad_row(value: object) -> WriteOp[object]:
    """An operation whose only fault is a row it queues, which fails when written (with
    the batch's COMMIT): a room named ``value`` where one named ``t`` exists already, or a
    value no database takes."""

    def run(tx: Tx) -> object:
        tx.insert("INSERT INTO rooms (name, title, created_at) VALUES (?, ?, ?)", (value, "x", "y"))
        return None

    return run


@pytest.mark.parametrize("value", ["t", object()], ids=["taken", "unwritable"])
def test_a_row_that_fails_with_the_commit_fails_its_operation_alone(
    conn: WriteDb, value: object
) -> None:
    """The rows an operation queued are written with the batch's COMMIT (on PostgreSQL in
    its round trip): one that fails there fails its operation, alone, as any failure of an
    operation does; the others are committed, and the store goes on."""
    post = writes.post_message("t", "ann", "kept", None, create_room=True)
    assert commit_batch(conn, [post])[0][0][0] is True
    results, events = commit_batch(conn, [post, queues_a_bad_row(value), post])
    assert [ok for ok, _ in results] == [True, False, True]
    assert [e.id for e in events] == [2, 3]
    results, events = commit_batch(conn, [queues_a_bad_row(value)])
    assert [ok for ok, _ in results] == [False] and events == []
    results, events = commit_batch(conn, [post])
    assert [e.id for e in events] == [4]
    texts = conn.conn.execute("SELECT id, text FROM messages ORDER BY id").fetchall()
    assert [tuple(row) for row in texts] == [(1, "kept"), (2, "kept"), (3, "kept"), (4, "kept")]
    assert rooms(conn) == {"t"}


def refuses(tx: Tx) -> object:
    """An operation that refuses before any statement (a ChatError, as a 404 is)."""
    raise NotFound("no such thing")


def test_postgresql_a_failed_round_trip_leaves_no_statement_named_in_vain(
    postgres: PostgresServer,
) -> None:
    """psycopg prepares a statement on its n-th run and counts it prepared as it queues it in
    a pipeline; when a row fails earlier in that round trip, the server skips it. psycopg
    forgets its count on a ROLLBACK only while it has not prepared the ROLLBACK itself (a few
    refused operations do that), so the store's rollback after a failed statement must make
    psycopg forget, or every later batch names a statement the server never made ("prepared
    statement does not exist") until the process restarts. (Found by a review; the
    ``prepare_threshold`` changes make psycopg prepare the ROLLBACKs and the commit's
    statements at their second run, in that order.)"""
    db = open_write_db(Settings(database=postgres.new_database()))
    try:
        raw = db.conn.raw  # type: ignore[attr-defined]
        raw.prepare_threshold = 100  # nothing prepared while every statement runs once
        assert [ok for ok, _ in commit_batch(db, [refuses])[0]] == [False]  # a ROLLBACK
        post = writes.post_message("t", "ann", "kept", None, create_room=True)
        results, events = commit_batch(db, [fails_after(post), post])  # a ROLLBACK TO
        assert [ok for ok, _ in results] == [False, True] and [e.id for e in events] == [1]
        raw.prepare_threshold = 1  # from here each statement is prepared at its next run
        results, events = commit_batch(db, [post, queues_a_bad_row("t"), post])
        assert [ok for ok, _ in results] == [True, False, True], results
        assert [e.id for e in events] == [2, 3]
        for expected in (4, 5):
            results, events = commit_batch(db, [post])
            assert results[0][0] is True, results
            assert [e.id for e in events] == [expected]
    finally:
        db.close()


def test_postgresql_commits_a_group_of_posts_in_two_round_trips(postgres: PostgresServer) -> None:
    """The write lock is held from a batch's first round trip to its COMMIT, and every
    process's writes wait for it: a group of POSTs takes two round trips, the lock (with its
    ids) and then its rows, search words, ids and COMMIT together. Seen in libpq's trace of
    the messages the connection sends: each round trip ends in a Query or a pipeline's Sync."""
    db = open_write_db(Settings(database=postgres.new_database()))
    try:
        ops = [writes.post_message("t", "ann", f"m{i}", None, create_room=True) for i in range(3)]
        commit_batch(db, ops)  # the room exists from here on: no statement of its own
        raw = db.conn.raw  # type: ignore[attr-defined]
        with tempfile.TemporaryFile("w+") as trace:
            raw.pgconn.trace(trace.fileno())
            raw.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
            try:
                results, events = commit_batch(db, ops)
            finally:
                raw.pgconn.untrace()
            trace.seek(0)
            sent = [line.split()[2] for line in trace if line.startswith("F\t")]
        assert all(ok for ok, _ in results) and [e.id for e in events] == [4, 5, 6]
        ends = [kind for kind in sent if kind in ("Query", "Sync")]
        assert ends == ["Query", "Sync"], " ".join(sent)
        assert sent.count("Execute") >= 5  # events, messages, words, counter, COMMIT
    finally:
        db.close()


def test_a_batch_whose_operations_succeed_runs_no_savepoint_and_writes_rows_together(
    tmp_path: Path,
) -> None:
    """Savepoints cost two statements per operation (two round trips under the write lock on
    PostgreSQL): a batch takes them only when one of its operations failed. Seen on SQLite's
    statement trace."""
    db = open_write_db(Settings(database=str(tmp_path / "trace.db")))
    statements: list[str] = []
    try:
        db.conn.set_trace_callback(statements.append)  # type: ignore[attr-defined]
        ops = [writes.post_message("t", "ann", f"m{i}", None, create_room=True) for i in range(3)]
        results, events = commit_batch(db, ops)
        assert all(ok for ok, _ in results) and [e.id for e in events] == [1, 2, 3]
        assert not any("SAVEPOINT" in s for s in statements)
        assert sum(s.startswith("INSERT INTO events") for s in statements) == 3  # one per row
        statements.clear()
        results, _ = commit_batch(db, [fails_after(ops[0]), ops[1]])
        assert [ok for ok, _ in results] == [False, True]
        assert sum(s.startswith("SAVEPOINT") for s in statements) == 2  # the second pass
    finally:
        db.close()


@pytest.mark.parametrize(("count", "replies"), [(2, True), (5, True), (21, True), (500, False)])
def test_sqlite_writes_many_rows_a_statement_and_every_row_as_given(
    tmp_path: Path, count: int, replies: bool
) -> None:
    """Each run of an INSERT costs SQLite its own work (AUTOINCREMENT's counter read and
    written, the GIL let go and taken back): a batch's rows go as a few statements of many
    rows each (chat/store/sqlite.py, CHUNKS), not one a row. Every row arrives as it was
    given, in its order, replies' and plain messages' alike (a reply writes what is queued
    first: it may answer a message of its own batch)."""
    reply = [1 if replies and i % 7 == 3 else None for i in range(count)]
    db = open_write_db(Settings(database=str(tmp_path / "rows.db")))
    statements: list[str] = []
    try:
        db.conn.set_trace_callback(statements.append)  # type: ignore[attr-defined]
        ops = [writes.post_message("t", "ann", "first", None, create_room=True, index=False)]
        ops += [
            writes.post_message(
                "t", f"u{i}", f"m{i} 𝄞 'q'", reply[i], create_room=True, index=False
            )
            for i in range(1, count)
        ]  # as POST .../messages/batch builds them: indexed at the end (index_messages)
        results, events = commit_batch(db, [writes.batch("messages", ops, writes.index_messages)])
        assert results[0][0] and [e.id for e in events] == list(range(1, count + 1))
        inserts = [s for s in statements if s.startswith("INSERT INTO events")]
        rows = db.conn.execute("SELECT id, author, text, reply_to FROM messages ORDER BY id")
        assert [tuple(r) for r in rows] == [(1, "ann", "first", None)] + [
            (i + 1, f"u{i}", f"m{i} 𝄞 'q'", reply[i]) for i in range(1, count)
        ]
        stored = db.conn.execute("SELECT id, type, author, data FROM events ORDER BY id")
        assert [(r[0], r[1], r[2], bytes(r[3])) for r in stored] == [
            (e.id, "message", e.author, e.json) for e in events
        ]
        found = db.conn.execute(
            "SELECT rowid FROM messages_fts WHERE messages_fts MATCH 'text : m5'"
        ).fetchall()
        assert [r[0] for r in found] == ([6] if count > 5 else [])
    finally:
        db.close()
    if not replies:  # 256 + 3 x 64 + 3 x 16 + 4 rows
        assert len(inserts) == 8


def test_sqlite_rows_a_statement_stay_within_the_builds_parameter_limit(tmp_path: Path) -> None:
    """SQLite before 3.32 binds at most 999 parameters a statement (a build may set any
    limit): 300 messages (6 and 5 columns a row) are still written, in chunks that fit."""
    db = open_write_db(Settings(database=str(tmp_path / "limit.db")))
    statements: list[str] = []
    try:
        db.conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)  # type: ignore[attr-defined]
        db.conn.set_trace_callback(statements.append)  # type: ignore[attr-defined]
        ops = [
            writes.post_message("t", "ann", f"m{i}", None, create_room=True, index=False)
            for i in range(300)
        ]
        results, events = commit_batch(db, [writes.batch("messages", ops, writes.index_messages)])
        assert results[0][0] and [e.id for e in events] == list(range(1, 301))
        count = db.conn.execute("SELECT count(*), max(id) FROM messages").fetchone()
        assert tuple(count) == (300, 300)
        inserts = [s for s in statements if s.startswith("INSERT INTO events")]
        assert len(inserts) == 9  # 4 x 64 + 2 x 16 + 3 x 4 rows: 256 rows are 1,536 parameters
    finally:
        db.close()


def test_sqlite_writes_a_statement_with_more_after_its_row_once_a_row(tmp_path: Path) -> None:
    """Only an INSERT that ends with its row of values is repeated into a multi-row one;
    anything after the row (``ON CONFLICT ...``) would land after each copy of it."""
    db = open_write_db(Settings(database=str(tmp_path / "conflict.db")))
    try:
        db.conn.execute("BEGIN IMMEDIATE")
        statement = (
            "INSERT INTO rooms (name, title, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"
        )
        db.insert_rows({statement: [("a", "A", "t"), ("b", "B", "t"), ("a", "again", "t")]})
        db.conn.execute("COMMIT")
        rows = db.conn.execute("SELECT name, title FROM rooms ORDER BY name").fetchall()
        assert [tuple(r) for r in rows] == [("a", "A"), ("b", "B")]
    finally:
        db.close()
