"""How every connection to the database file is set up, the write thread's and the others."""

from __future__ import annotations

import sqlite3

import aiosqlite

from chat.config import Settings

BUSY_TIMEOUT_MS = 10_000  # another process's batch holds the write lock: wait, do not fail


def _pragmas(settings: Settings) -> tuple[str, ...]:
    return (
        f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}",
        "PRAGMA journal_mode = WAL",  # readers never block the writer, nor it them
        f"PRAGMA synchronous = {settings.sqlite_synchronous}",
    )


def connect(settings: Settings) -> sqlite3.Connection:
    """A connection for the calling thread alone (``sqlite3`` refuses any other), in
    autocommit mode: transactions are opened explicitly."""
    conn = sqlite3.connect(settings.database, isolation_level=None)
    try:
        for pragma in _pragmas(settings):
            conn.execute(pragma)
    except BaseException:
        conn.close()
        raise
    return conn


async def connect_async(settings: Settings, *pragmas: str) -> aiosqlite.Connection:
    """A connection on a thread of its own (aiosqlite), for reads and checkpoints; ``pragmas``
    are run after the common ones."""
    conn = await aiosqlite.connect(settings.database, isolation_level=None)
    try:
        for pragma in (*_pragmas(settings), *pragmas):
            await conn.execute(pragma)
    except BaseException:
        await conn.close()
        raise
    return conn
