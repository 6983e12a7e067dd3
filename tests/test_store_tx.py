"""A batch's transaction (chat/store/tx.py): one BEGIN IMMEDIATE per batch, a savepoint per
operation, and what one operation's failure undoes (run on a real SQLite file, without the
server)."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from chat.errors import NotFound
from chat.migrations import apply_pending
from chat.store import writes
from chat.store.tx import Tx, WriteOp, commit_batch
from tests.live import LiveServer

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(tmp_path / "chat.db", isolation_level=None)
    apply_pending(connection, MIGRATIONS)
    yield connection
    connection.close()


def rooms(conn: sqlite3.Connection) -> set[str]:
    return {name for (name,) in conn.execute("SELECT name FROM rooms")}


def fails_after(op: WriteOp[object]) -> WriteOp[object]:
    """``op``, then a failure: its savepoint is rolled back, the room it created with it."""

    def run(tx: Tx) -> object:
        op(tx)
        raise RuntimeError("the operation's own failure")

    return run


def test_a_room_created_by_a_failed_operation_is_created_again_by_the_next(
    conn: sqlite3.Connection,
) -> None:
    post = writes.post_message("fresh", "alice", "hi", None, create_room=True)
    results, events = commit_batch(conn, [fails_after(post), post])
    assert [ok for ok, _ in results] == [False, True]
    assert "fresh" in rooms(conn)
    assert [e.room for e in events] == ["fresh"]


def test_a_room_created_by_a_failed_operation_does_not_exist_for_the_next(
    conn: sqlite3.Connection,
) -> None:
    created = writes.post_activity("ghost", {"actor": "bot", "verb": "x"}, create_room=True)
    strict = writes.post_message("ghost", "alice", "hi", None, create_room=False)
    results, events = commit_batch(conn, [fails_after(created), strict])
    assert results[0][0] is False
    assert results[1][0] is False and isinstance(results[1][1], NotFound)
    assert "ghost" not in rooms(conn)
    assert events == []


def test_many_posts_into_one_room_in_one_transaction(conn: sqlite3.Connection) -> None:
    ops = [writes.post_message("busy", "alice", f"m{i}", None, create_room=True) for i in range(5)]
    results, events = commit_batch(conn, ops)
    assert all(ok for ok, _ in results)
    assert [e.id for e in events] == [1, 2, 3, 4, 5]
    assert conn.execute("SELECT count(*) FROM messages WHERE room = 'busy'").fetchone() == (5,)


async def test_a_running_server_checkpoints_its_wal_into_the_database_file(
    make_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    """The write connection never checkpoints (its COMMITs stay short); a connection of its
    own does, twice a second. Seen from outside: a committed message reaches the database file
    itself (not only its -wal) while the server runs."""
    live = make_server()
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
    assert found == [("into the file",)]
    assert live.proc is not None and live.proc.poll() is None
