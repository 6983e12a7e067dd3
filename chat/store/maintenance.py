"""Keeping the database file in shape while the store runs: WAL checkpoints.

The write connection never checkpoints (``wal_autocheckpoint = 0``): a checkpoint copies the
WAL into the database file, with an fsync, and inside a batch's COMMIT it stalled every write
queued behind it (docs/design/performance.md). A connection of its own runs a PASSIVE
checkpoint twice a second instead: it copies what no reader still needs and never waits for
the writer, so the WAL stays small without the writer paying for it.

Old idempotency keys are purged by a write operation like any other
(``writes.purge_idempotency_keys``, next to ``writes.idempotent`` which stores them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3

import aiosqlite

from chat.config import Settings
from chat.store.sqlite import connect_async

log = logging.getLogger(__name__)

CHECKPOINT_EVERY_S = 0.5


class Checkpointer:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._conn: aiosqlite.Connection | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._conn = await connect_async(self._settings)
        self._task = asyncio.create_task(self._run(), name="chat-checkpoint")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
        await self._close()

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # a broken connection: gone all the same
                await conn.close()

    async def _run(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(CHECKPOINT_EVERY_S)
            try:
                if self._conn is None:
                    self._conn = await connect_async(self._settings)
                await self._conn.execute_fetchall("PRAGMA wal_checkpoint(PASSIVE)")
            except Exception as error:  # the next one catches up; the WAL only grows meanwhile
                if not failing:  # once, not twice a second; SQLite's own errors say enough
                    log.error(
                        "checkpointing the database failed (%s); trying again until it works",
                        error,
                        exc_info=not isinstance(error, sqlite3.Error),
                    )
                failing = True
                await self._close()  # one opened on a read-only file stays read-only: a new one
            else:
                if failing:
                    log.warning("checkpointing the database works again")
                failing = False
