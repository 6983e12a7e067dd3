"""One message POST's transaction, and the hop to the store's write thread and back, measured
back to back and after the process has been idle (as it is between messages at 50 msg/s, the
yardstick's latency-lo scenario): the same work costs several times as much on a CPU that
waited 20 ms (docs/design/performance.md, "Issue 17: the latency tail against the floor").

    taskset -c 0 .venv/bin/python bench/cold_commit.py

For each gap between messages (0 and 20 ms), 300 messages, p50 and p99 in µs of:
- ``write, awaited``: ``Writer.write`` awaited as the route awaits it, split into the hop to
  the write thread (until its transaction begins there), the transaction (``BEGIN
  IMMEDIATE`` to ``COMMIT``) and the hand-back (until the awaiting caller runs again);
- ``inline``: ``commit_batch`` run on the event loop's own thread (a connection of its own),
  which the service does not do (ARCHITECTURE.md's rule 4: one hop to the write thread); shown
  for what the hop costs."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from typing import Any

import uvloop

from chat.config import Settings
from chat.store import writes
from chat.store.dialect import Rows
from chat.store.sqlite import SqliteWriteDb
from chat.store.tx import commit_batch
from chat.store.writer import Writer

MESSAGES = 300
GAPS_S = (0.0, 0.02)


def quantiles(ns: list[int]) -> str:
    ns = sorted(ns)
    return f"p50 {ns[len(ns) // 2] / 1000:7.1f}  p99 {ns[int(len(ns) * 0.99)] / 1000:7.1f}"


def message(i: int) -> Any:
    text = f"hello world, message {i} with a few words"
    return writes.post_message("room", "alice", text, None, create_room=True)


class TimedDb(SqliteWriteDb):
    """The store's write connection, noting when each transaction begins and commits."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.began = self.committed = 0

    def begin(self) -> int:
        self.began = time.perf_counter_ns()  # on the write thread, before BEGIN IMMEDIATE
        return super().begin()

    def commit(self, first_id: int, next_id: int, rows: Rows) -> None:
        super().commit(first_id, next_id, rows)
        self.committed = time.perf_counter_ns()


async def through_writer(directory: str, gap_s: float) -> list[tuple[int, int, int]]:
    """Per message: (the hop to the write thread, until its transaction begins; the
    transaction, BEGIN IMMEDIATE to COMMIT; the hand-back, until the awaiting caller runs)."""
    settings = Settings(database=os.path.join(directory, f"writer-{gap_s}.db"))
    made: list[TimedDb] = []

    def open_db(settings: Settings) -> TimedDb:
        made.append(TimedDb(settings))
        return made[0]

    writer = Writer(settings, lambda events: None, open_db)
    await writer.open()
    times: list[tuple[int, int, int]] = []
    try:
        for i in range(MESSAGES):
            await asyncio.sleep(gap_s)
            start = time.perf_counter_ns()
            await writer.write(message(i))
            end = time.perf_counter_ns()
            db = made[0]
            times.append((db.began - start, db.committed - db.began, end - db.committed))
    finally:
        await writer.drain(asyncio.get_running_loop().time() + 5)
        await writer.close()
    return times


async def inline(directory: str, gap_s: float) -> list[int]:
    db = SqliteWriteDb(Settings(database=os.path.join(directory, f"inline-{gap_s}.db")))
    times: list[int] = []
    try:
        for i in range(MESSAGES):
            await asyncio.sleep(gap_s)
            op = message(i)
            start = time.perf_counter_ns()
            commit_batch(db, [op])
            times.append(time.perf_counter_ns() - start)
    finally:
        db.close()
    return times


async def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        for gap_s in GAPS_S:
            times = await through_writer(directory, gap_s)
            alone = await inline(directory, gap_s)
            awaited = [sum(t) for t in times]
            print(f"gap {gap_s * 1000:2.0f} ms: write, awaited          {quantiles(awaited)}")
            print(f"           the hop to the thread    {quantiles([t[0] for t in times])}")
            print(f"           the transaction          {quantiles([t[1] for t in times])}")
            print(f"           the hand-back            {quantiles([t[2] for t in times])}")
            print(f"           inline (not the service) {quantiles(alone)}")


if __name__ == "__main__":
    uvloop.run(main())
