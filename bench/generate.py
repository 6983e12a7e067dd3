"""Fill a store (SQLite, or PostgreSQL by its URL) with synthetic history (issue 17): N events
over R rooms and U users, the mix of chat/store/fill.py (messages, replies, mentions,
reactions, edits, deletions, activity), written by the store's writer in transactions of
--chunk events.

    .venv/bin/python bench/generate.py /tmp/big.db --events 10000000      # a few minutes
    .venv/bin/python bench/generate.py /tmp/big.db --events 1000000 --rooms 200
    .venv/bin/python bench/generate.py postgresql://chat@127.0.0.1:5432/big --events 1000000

The SQLite file is created if missing, and either store is migrated; events are appended after
what it holds. Time goes on from the newest event: --days spreads the whole history over that
many days before now. Prints the rate on stderr and one JSON line on stdout. Fill a store no
server is using (chat/store/fill.py says why).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from chat.config import Settings
from chat.store import Store
from chat.store.fill import fill

CHUNK = 200_000


async def generate(
    path: str,
    events: int,
    *,
    rooms: int = 1000,
    users: int = 5000,
    days: float = 365.0,
    total: int | None = None,
    chunk: int = CHUNK,
) -> dict[str, float]:
    """Append ``events`` events to the store at ``path`` (a SQLite file or a PostgreSQL URL);
    the history's ``total`` events (default: ``events``) span ``days`` days ending now.
    Returns the figures."""
    total = total or events
    step_s = days * 86400 / max(total, 1)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=step_s * total)
    store = Store(Settings(database=path), lambda committed: None)
    await store.open()
    began = time.perf_counter()
    first = last = 0
    try:
        for done in range(0, events, chunk):
            made = await store.write(
                fill(
                    min(chunk, events - done), rooms=rooms, users=users, start=start, step_s=step_s
                )
            )
            first, last = first or made[0], made[1]
    finally:
        await store.close()
    seconds = time.perf_counter() - began
    return {
        "first_id": first,
        "last_id": last,
        "seconds": round(seconds, 2),
        "events_per_s": round((last - first + 1) / seconds) if seconds else 0,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("database", help="a SQLite file (created if missing) or a PostgreSQL URL")
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--rooms", type=int, default=1000)
    ap.add_argument("--users", type=int, default=5000)
    ap.add_argument("--days", type=float, default=365.0, help="the history's time span")
    a = ap.parse_args()
    out = asyncio.run(generate(a.database, a.events, rooms=a.rooms, users=a.users, days=a.days))
    print(
        f"{out['last_id'] - out['first_id'] + 1:,} events in {out['seconds']} s: "
        f"{out['events_per_s']:,} events/s",
        file=sys.stderr,
    )
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
