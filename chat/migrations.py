"""Schema migrations: ``migrations/NNNN_name.sql`` applied in order, each in its own
transaction, its version recorded in ``schema_migrations``."""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from chat.events import now_rfc3339

_NAME = re.compile(r"^(\d+)_([\w-]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    path: Path


def discover(folder: Path) -> list[Migration]:
    found = []
    for path in folder.glob("*.sql"):
        match = _NAME.match(path.name)
        if match is None:
            raise ValueError(f"migration file name not NNNN_name.sql: {path}")
        found.append(Migration(int(match[1]), match[2], path))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"two migrations share a version in {folder}")
    return found


def statements(script: str) -> list[str]:
    """Split a script into statements: a ``;`` ends one where ``sqlite3.complete_statement``
    agrees (not inside a string, a comment or a trigger body). Raises ValueError when the
    script ends inside a statement."""
    found, current = [], ""
    for piece in re.split(r"(?<=;)", script):
        current += piece
        if sqlite3.complete_statement(current):
            found.append(current.strip())
            current = ""
    rest = [line for line in current.splitlines() if line.strip() and not _is_comment(line)]
    if rest:
        raise ValueError(f"migration ends inside a statement: {rest[0][:80]!r}")
    return found


def _is_comment(line: str) -> bool:
    return line.strip().startswith("--")


def apply_pending(conn: sqlite3.Connection, folder: Path) -> list[Migration]:
    """Apply what the database has not seen yet, each file and its record in one transaction;
    returns what was applied. ``conn`` is in autocommit mode (``isolation_level=None``).
    Safe when several processes start at once: the version is checked under the write lock."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    applied = []
    for migration in discover(folder):
        conn.execute("BEGIN IMMEDIATE")
        try:
            seen = conn.execute(
                "SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)
            ).fetchone()
            if seen is None:
                for statement in statements(migration.path.read_text()):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, now_rfc3339()),
                )
                applied.append(migration)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return applied
