"""The PostgreSQL store's reads: a pool of connections (``CHAT_DATABASE_POOL_SIZE``) made as
every connection is (``chat.store.postgres``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from chat.config import Settings
from chat.errors import Unavailable
from chat.store import search
from chat.store.postgres import UNREACHABLE, connection_options, placeholders

T = TypeVar("T")


class PgReadDb:
    """Reads on a pool of connections (``CHAT_DATABASE_POOL_SIZE``), each statement in
    autocommit: it sees what was committed when it began, and waits for no writer."""

    matches = search.PG_MATCHES
    match = search.PG_MATCH
    match_id = search.PG_ID
    latest_id = "SELECT last_id FROM event_ids"

    def __init__(
        self, pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]], timeout_s: float
    ) -> None:
        self._pool = pool
        self._timeout_s = timeout_s

    @classmethod
    async def open(cls, settings: Settings) -> PgReadDb:
        pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
            settings.database,
            min_size=1,
            max_size=settings.database_pool_size,
            kwargs={"autocommit": True, **connection_options(settings)},
            timeout=settings.database_connect_timeout_seconds,
            # A lost connection is retried with a growing backoff for 5 minutes by default,
            # and no other attempt starts meanwhile: reads stayed 503 long after an outage.
            # Give up soon instead; the next read that needs a connection starts a new one.
            reconnect_timeout=max(2 * settings.database_connect_timeout_seconds, 5.0),
            open=False,
            name="chat-reads",
        )
        await pool.open(wait=True, timeout=settings.database_connect_timeout_seconds)
        return cls(pool, settings.database_timeout_seconds)

    def search_query(self, text: str, room: str) -> str:
        return search.tsquery(text)  # the room is the query's own condition (reads.py)

    async def read(
        self, sql: str, params: Sequence[Any], convert: Callable[[Sequence[Sequence[Any]]], T]
    ) -> T:
        return convert(await self.rows(sql, params))

    async def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        statement = placeholders(sql)
        # A search is planned for its words each time: psycopg prepares a statement after a
        # few runs, and PostgreSQL then soon plans it once for any parameters. A plan that
        # cannot tell a rare word from a common one walked a room's messages newest first,
        # checking each one's words, for a word none of them holds: 125-210 ms at a million
        # events, against 4-6 ms planned for the word (bench/README.md).
        prepare = False if self.match in sql else None
        for attempt in (1, 2):  # a connection the pool held may have died since: once more
            try:
                async with asyncio.timeout(self._timeout_s):  # a hung database hangs no read
                    async with self._pool.connection() as conn:
                        cur = await conn.execute(statement, params, prepare=prepare)
                        return list(await cur.fetchall())
            except TimeoutError:
                raise Unavailable(f"{UNREACHABLE}: no answer", retry_after_s=1) from None
            except PoolTimeout as error:  # before its base class: waiting again would not help
                raise Unavailable(f"{UNREACHABLE}: {error}", retry_after_s=1) from None
            except psycopg.OperationalError as error:
                if attempt == 2:
                    raise Unavailable(f"{UNREACHABLE}: {error}".strip(), retry_after_s=1) from None
        raise AssertionError("unreachable")

    async def close(self) -> None:
        await self._pool.close()
