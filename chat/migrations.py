"""Schema migrations: ``migrations/NNNN_name.sql`` applied in order, each in its own
transaction, its version recorded in ``schema_migrations``."""

from __future__ import annotations

import logging
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from chat.events import now_rfc3339

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(\d+)_([\w-]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    path: Path


class MigrationsError(ValueError):
    """The migration files cannot be applied as they are (reported in one line, exit 1)."""


def discover(folder: Path) -> list[Migration]:
    """The migrations of ``folder``, by version. A folder without any (a mistyped
    CHAT_MIGRATIONS_DIR) is an error: "up to date" over an empty database would be a lie."""
    found = []
    for path in folder.glob("*.sql"):
        match = _NAME.match(path.name)
        if match is None:
            raise MigrationsError(f"a migration file's name is not NNNN_name.sql: {path}")
        found.append(Migration(int(match[1]), match[2], path))
    if not found:
        raise MigrationsError(f"no migrations (NNNN_name.sql) in {folder}: see CHAT_MIGRATIONS_DIR")
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationsError(f"two migrations share a version in {folder}")
    return found


def warn_unknown(recorded: list[tuple[int, str]], known: list[Migration]) -> None:
    """Say so when the database records migrations newer than this code knows: a newer
    version of the service migrated it (a rolling upgrade, or a downgrade). Not refused: the
    migrations are additive, and the version before must keep running during an upgrade."""
    newest = max(m.version for m in known)
    newer = [f"{version:04d}_{name}" for version, name in recorded if version > newest]
    if newer:
        log.warning(
            "the database holds migrations this version does not know (%s): a newer version "
            "of the service migrated it",
            ", ".join(newer),
        )


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
    known = discover(folder)
    for migration in known:
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
    warn_unknown(conn.execute("SELECT version, name FROM schema_migrations").fetchall(), known)
    return applied
