"""The SQLite store's reads: a pool of read-only connections (``CHAT_DATABASE_POOL_SIZE``),
each on an aiosqlite thread of its own, set up as every connection is (``chat.store.sqlite``)."""

from __future__ import annotations

import asyncio
import collections
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

import aiosqlite

from chat.config import Settings
from chat.errors import Unavailable
from chat.store import search
from chat.store.sqlite import READ_WAIT_S, connect_async

T = TypeVar("T")
Rows = Sequence[Sequence[Any]]


class SqliteReadDb:
    """Reads on ``CHAT_DATABASE_POOL_SIZE`` connections of their own (``PRAGMA query_only``),
    each on its own aiosqlite thread, through its public API: one slow statement (a search
    over a large history) holds one of them, and replays and history pages go on the others.
    With WAL, a read sees the last committed state and neither waits for the write thread nor
    makes it wait.

    A read takes a free connection, or waits for one in arrival order (first come, first
    served) for at most ``wait_s``, then fails with ``Unavailable`` (503), as a read does
    while the store is closed."""

    matches = search.FTS5_MATCHES
    match = search.FTS5_MATCH
    match_id = search.FTS5_ID
    latest_id = "SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = 'events'"

    def __init__(self, conns: Sequence[aiosqlite.Connection], wait_s: float = READ_WAIT_S) -> None:
        if not conns:
            raise ValueError("at least one read connection")
        self._conns = tuple(conns)
        self._free = collections.deque(self._conns)
        self._waiting: collections.deque[asyncio.Future[aiosqlite.Connection]] = collections.deque()
        self._wait_s = wait_s
        self._open = True
        self._queued: dict[tuple[Any, ...], asyncio.Future[Any]] = {}  # reads sharing one run

    @classmethod
    async def open(cls, settings: Settings) -> SqliteReadDb:
        """All ``CHAT_DATABASE_POOL_SIZE`` connections, opened now; none stays open if one fails."""
        conns: list[aiosqlite.Connection] = []
        try:
            for _ in range(settings.database_pool_size):
                conns.append(await connect_async(settings, "PRAGMA query_only = 1"))
        except BaseException:
            await asyncio.gather(*(conn.close() for conn in conns), return_exceptions=True)
            raise
        return cls(conns)

    def search_query(self, text: str, room: str) -> str:
        return search.fts5_query(text, room)

    async def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        return await self.read(sql, params, list)

    async def read(self, sql: str, params: Sequence[Any], convert: Callable[[Rows], T]) -> T:
        """``convert`` of the statement's rows. A read that must wait for a connection joins
        an identical one (the same statement, parameters and ``convert``) that is still
        waiting, if there is one, and gets the same answer (the same object: it must not be
        changed): it runs once, when a connection frees up, later than both were asked, so
        each sees what was committed before it asked. After a deploy thousands of streams
        resume from the same ids at once; their replays then cost one statement a page, not
        one a stream (bench/storm.py)."""
        if self._open and self._free:  # it starts now: nothing to share
            return await self._run(self._free.popleft(), sql, params, convert)
        key = (sql, tuple(params), convert)
        try:
            shared = self._queued.get(key)
        except TypeError:  # a parameter that cannot be a key (a list, say): no sharing
            return await self._run(await self._take(), sql, params, convert)
        if shared is None:
            shared = asyncio.ensure_future(self._queue(key, sql, params, convert))
            shared.add_done_callback(_retrieved)
            self._queued[key] = shared
        return cast(T, await asyncio.shield(shared))  # a caller gone is not the others' loss

    async def _queue(
        self, key: tuple[Any, ...], sql: str, params: Sequence[Any], convert: Callable[[Rows], T]
    ) -> T:
        try:
            conn = await self._take()
        finally:
            del self._queued[key]  # from here on it sees no later commit: nobody joins it
        return await self._run(conn, sql, params, convert)

    async def _run(
        self,
        conn: aiosqlite.Connection,
        sql: str,
        params: Sequence[Any],
        convert: Callable[[Rows], T],
    ) -> T:
        try:
            rows = await conn.execute_fetchall(sql, params)  # a list, typed as an Iterable
        except (ValueError, sqlite3.ProgrammingError) as error:
            if self._open:
                raise
            # handed a connection as the store closed: aiosqlite's "Connection closed", or
            # sqlite3's, is the closed store's 503, not a failure of the service
            raise Unavailable("the store is not open") from error
        finally:
            self._give_back(conn)
        return convert(rows if isinstance(rows, list) else list(rows))

    async def _take(self) -> aiosqlite.Connection:
        if not self._open:
            raise Unavailable("the store is not open")
        if self._free:  # none is free while any read waits (``_give_back`` hands over)
            return self._free.popleft()
        waiter: asyncio.Future[aiosqlite.Connection] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            async with asyncio.timeout(self._wait_s):
                return await waiter
        except BaseException as error:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._give_back(waiter.result())  # handed over as this read gave up: pass it on
            else:
                waiter.cancel()
                if waiter in self._waiting:
                    self._waiting.remove(waiter)
            if isinstance(error, TimeoutError):
                raise Unavailable("every read connection is busy", retry_after_s=1) from None
            raise

    def _give_back(self, conn: aiosqlite.Connection) -> None:
        if not self._open:
            return  # ``close`` closes every connection, this one too
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(conn)  # the longest-waiting read gets it
                return
        self._free.append(conn)

    async def close(self) -> None:
        """Fail the reads still waiting for a connection, then close every connection (a
        statement running on one finishes first: aiosqlite runs the close after it)."""
        if not self._open:
            return
        self._open = False
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(Unavailable("the store is not open"))
        self._free.clear()
        results = await asyncio.gather(
            *(conn.close() for conn in self._conns), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result


def _retrieved(task: asyncio.Future[Any]) -> None:
    """A shared read's failure is its callers' (each gets it); none left is no one's."""
    if not task.cancelled():
        task.exception()
