"""Schema migrations: discovery, statement splitting, applying each once."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from chat.migrations import apply_pending, discover, statements
from chat.store.account_reads import ACCESS_TYPES
from chat.store.reads import ACCESS_OF_USER
from chat.store.sqlite import rows_of
from chat.store.tx import EVENT_ROW
from chat.store.writes import MESSAGE_ROW, REPLY_ROW

REAL = Path(__file__).resolve().parent.parent / "migrations"


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(tmp_path / "chat.db", isolation_level=None)
    yield connection
    connection.close()


def write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def tables(conn: sqlite3.Connection) -> set[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {name for (name,) in rows if not name.startswith("sqlite_")}


def recorded(conn: sqlite3.Connection) -> list[tuple[int, str]]:
    return conn.execute("SELECT version, name FROM schema_migrations ORDER BY version").fetchall()


def test_discover_orders_by_number_not_by_name(tmp_path: Path) -> None:
    folder = write(
        tmp_path / "m",
        {"10_ten.sql": "", "0002_two.sql": "", "9_nine.sql": "", "README.md": "ignored"},
    )
    found = discover(folder)
    assert [(m.version, m.name) for m in found] == [(2, "two"), (9, "nine"), (10, "ten")]
    assert [m.path for m in found] == [
        folder / "0002_two.sql",
        folder / "9_nine.sql",
        folder / "10_ten.sql",
    ]


def test_discover_real_folder_starts_at_one() -> None:
    found = discover(REAL)
    assert found and found[0].version == 1 and found[0].name == "initial"
    versions = [m.version for m in found]
    assert versions == sorted(set(versions))


@pytest.mark.parametrize(
    "bad", ["initial.sql", "0001-initial.sql", "0001_.sql", "_x.sql", "0001_a b.sql", "v1_x.sql"]
)
def test_discover_rejects_bad_names(tmp_path: Path, bad: str) -> None:
    folder = write(tmp_path / "m", {"0001_ok.sql": "", bad: ""})
    with pytest.raises(ValueError, match="NNNN_name"):
        discover(folder)


def test_discover_rejects_two_files_with_one_version(tmp_path: Path) -> None:
    folder = write(tmp_path / "m", {"0001_a.sql": "", "1_b.sql": ""})
    with pytest.raises(ValueError, match="share a version"):
        discover(folder)


def test_apply_real_migrations_to_a_fresh_database(conn: sqlite3.Connection) -> None:
    applied = apply_pending(conn, REAL)
    assert [m.version for m in applied] == [m.version for m in discover(REAL)]
    assert {"schema_migrations", "rooms", "events", "messages"} <= tables(conn)
    assert recorded(conn) == [(m.version, m.name) for m in applied]
    (stamp,) = conn.execute("SELECT applied_at FROM schema_migrations").fetchone()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp)
    assert not conn.in_transaction
    conn.execute("INSERT INTO rooms VALUES ('r', 'R', 'now', 1)")  # the schema is usable


def test_second_run_applies_nothing(tmp_path: Path, conn: sqlite3.Connection) -> None:
    assert apply_pending(conn, REAL)
    before = recorded(conn)
    assert apply_pending(conn, REAL) == []
    assert recorded(conn) == before
    other = sqlite3.connect(tmp_path / "chat.db", isolation_level=None)  # another process
    try:
        assert apply_pending(other, REAL) == []
    finally:
        other.close()


def test_only_new_migrations_are_applied(tmp_path: Path, conn: sqlite3.Connection) -> None:
    folder = write(tmp_path / "m", {"0001_a.sql": "CREATE TABLE a (x);"})
    assert [m.name for m in apply_pending(conn, folder)] == ["a"]
    write(folder, {"0002_b.sql": "CREATE TABLE b (x);\nINSERT INTO a VALUES (1);"})
    assert [m.name for m in apply_pending(conn, folder)] == ["b"]
    assert conn.execute("SELECT x FROM a").fetchall() == [(1,)]
    assert recorded(conn) == [(1, "a"), (2, "b")]


def test_failing_migration_rolls_back_and_is_not_recorded(
    tmp_path: Path, conn: sqlite3.Connection
) -> None:
    folder = write(
        tmp_path / "m",
        {"0001_a.sql": "CREATE TABLE a (x);", "0002_b.sql": "CREATE TABLE b (x);\nNOT SQL;"},
    )
    with pytest.raises(sqlite3.OperationalError):
        apply_pending(conn, folder)
    assert not conn.in_transaction
    assert recorded(conn) == [(1, "a")]
    assert tables(conn) == {"schema_migrations", "a"}  # b's first statement rolled back
    write(folder, {"0002_b.sql": "CREATE TABLE b (x);"})
    assert [m.name for m in apply_pending(conn, folder)] == ["b"]


def test_statements_one_per_semicolon_across_lines() -> None:
    script = "CREATE TABLE a (\n  x INTEGER\n);\n\nCREATE INDEX ax ON a (x);\n"
    assert statements(script) == ["CREATE TABLE a (\n  x INTEGER\n);", "CREATE INDEX ax ON a (x);"]


def test_statements_ignore_semicolons_in_strings_and_comments(conn: sqlite3.Connection) -> None:
    script = (
        "-- a comment; with a semicolon\n"
        "CREATE TABLE t (s TEXT); -- trailing; comment\n"
        "/* block; comment\n   over lines; */\n"
        "INSERT INTO t VALUES ('semi;colon');\n"
        "INSERT INTO t VALUES ('multi\nline; string');\n"
        "INSERT INTO t VALUES ('it''s; quoted');\n"
        "-- the end\n"
    )
    found = statements(script)
    assert len(found) == 4
    for statement in found:
        conn.execute(statement)
    values = [s for (s,) in conn.execute("SELECT s FROM t ORDER BY rowid")]
    assert values == ["semi;colon", "multi\nline; string", "it's; quoted"]


def test_statements_keep_a_trigger_body_whole() -> None:
    script = (
        "CREATE TRIGGER t AFTER INSERT ON a BEGIN\n"
        "  INSERT INTO b VALUES (1);\n"
        "  INSERT INTO b VALUES (2);\n"
        "END;\n"
    )
    assert statements(script) == [script.strip()]


def test_statements_of_empty_and_comment_only_scripts() -> None:
    assert statements("") == []
    assert statements("\n-- nothing here\n") == []


def test_statements_reject_an_unterminated_last_statement() -> None:
    with pytest.raises(ValueError, match="inside a statement"):
        statements("CREATE TABLE a (x);\nCREATE TABLE b (y)\n")


def test_statements_reject_an_unterminated_statement_after_a_comment() -> None:
    with pytest.raises(ValueError, match="inside a statement"):
        statements("CREATE TABLE a (x);\n-- then b\nCREATE TABLE b (y)\n")


def test_two_statements_on_one_line(tmp_path: Path, conn: sqlite3.Connection) -> None:
    folder = write(tmp_path / "m", {"0001_ab.sql": "CREATE TABLE a (x); CREATE TABLE b (y);\n"})
    apply_pending(conn, folder)
    assert {"a", "b"} <= tables(conn)


def test_the_rows_written_per_event_build_no_temporary_table(conn: sqlite3.Connection) -> None:
    """A statement that builds a temporary b-tree (``OpenEphemeral``: a partial index's
    ``IN`` list of three types did, migrations/0010) built it for every event the writer
    inserted, ~2 µs an event."""
    apply_pending(conn, REAL)
    rows = {
        EVENT_ROW: (1, "r", "message", "ann", "t", b"{}"),
        MESSAGE_ROW: (1, "r", "ann", "hi", "t"),
        REPLY_ROW: (2, "r", "ann", "hi", 1, "t"),
    }
    for statement, row in rows.items():  # as one row, and as the writer sends several
        for count in (1, 4):
            many = rows_of(statement, count)
            assert many is not None
            program = [op for _, op, *_ in conn.execute("EXPLAIN " + many, row * count)]
            assert "Insert" in program or "IdxInsert" in program  # the program of an insert
            assert "OpenEphemeral" not in program, many


def test_the_access_queries_read_the_partial_index(conn: sqlite3.Connection) -> None:
    """A user's access events are read through ``events_access``, which SQLite uses only
    when the query's condition implies the index's: the queries spell the types as it does
    (an ``IN`` list would not use the index of migrations/0010)."""
    apply_pending(conn, REAL)
    queries = {  # chat/store/account_reads.py membership_at, reads.py events_after
        f"SELECT room, type FROM events WHERE author = ? AND id <= ? AND {ACCESS_TYPES} "
        "ORDER BY id": ("ann", 10),
        f"SELECT data FROM events WHERE (room IN (?) OR ({ACCESS_OF_USER})) AND id > ? "
        "ORDER BY id LIMIT ?": ("r", "ann", 0, 10),
    }
    for sql, params in queries.items():
        plan = " | ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params))
        assert "USING INDEX events_access (author=?" in plan, plan
