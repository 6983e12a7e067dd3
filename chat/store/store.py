"""``Store``: the store's one interface, the parts it is made of opened and closed in order.

- writes: ``writer.Writer``, the store's own write thread (one transaction per batch);
- reads: ``reads.Reads``, on a connection of their own;
- checkpoints: ``maintenance.Checkpointer``, on a third connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from chat.config import Settings
from chat.events import Event
from chat.store.connect import connect_async
from chat.store.maintenance import Checkpointer
from chat.store.reads import Reads
from chat.store.tx import WriteOp
from chat.store.writer import CLOSE_WAIT_S, Writer

T = TypeVar("T")


class Store(Reads):
    """``on_commit`` gets each batch's committed events, in id order, on the loop, before any
    caller of ``write`` learns that its write is committed."""

    def __init__(self, settings: Settings, on_commit: Callable[[list[Event]], None]) -> None:
        self.settings = settings
        self._writer = Writer(settings, on_commit)
        self._checkpointer = Checkpointer(settings)

    async def open(self) -> None:
        await self._writer.open()  # first: it applies the migrations the others read
        try:
            await self._checkpointer.start()
            self._read = await connect_async(self.settings, "PRAGMA query_only = 1")
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Finish the writes already queued (up to 10 s), then close the connections: the
        write connection last, so that closing it checkpoints what is left."""
        await self._writer.drain(asyncio.get_running_loop().time() + CLOSE_WAIT_S)
        await self._checkpointer.stop()
        read, self._read = self._read, None
        if read is not None:
            await read.close()
        await self._writer.close()

    async def write(self, op: WriteOp[T]) -> T:
        """Queue a write; returns its result once committed (and its events published)."""
        return await self._writer.write(op)

    @property
    def accepting_writes(self) -> bool:
        """True from ``open`` until ``close`` begins, unless the write thread has stopped."""
        return self._writer.accepting
