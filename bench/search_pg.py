"""Search on PostgreSQL at scale: a throw-away cluster (tests/postgres_server.py) filled with
--events events over --rooms rooms by the store's own batch path (bench/generate.py, the mix of
chat/store/fill.py), ANALYZEd, then each kind of search below run --reps times in each of two
rooms through the store (``Store.history`` with ``q``, a page of 50), medians in ms.

    .venv/bin/python bench/search_pg.py                      # 1,000,000 events, ~2 minutes
    .venv/bin/python bench/search_pg.py --events 100000 --reps 5

Checks: the rare word (in the history's first message only) finds exactly that message in its
room and nothing in the other; the absent word finds nothing; every page of the common word
holds matches only. Prints a table on stderr and one JSON line on stdout. Exit status: 0 the
checks passed, 1 one failed, 3 the run could not be made (no PostgreSQL), 4 --timeout passed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chat.config import Settings  # noqa: E402
from chat.store import Store  # noqa: E402
from chat.store.fill import COMMON_WORD, RARE_WORD  # noqa: E402

SEARCHES = (
    ("a common word", COMMON_WORD),
    ("two common words", "deploy build"),
    ("the rare word", RARE_WORD),
    ("an absent word", "zyzzyva"),
    ("a prefix", "depl"),
    ("a two-letter word (whole)", "al"),
)


async def measure(url: str, reps: int, out: dict[str, Any]) -> None:
    store = Store(Settings(database=url, database_timeout_seconds=60), lambda events: None)
    await store.open()
    try:
        [first] = await store.events_after(None, 0, 1)
        rooms = [first.room, "room-7" if first.room != "room-7" else "room-8"]
        for label, q in SEARCHES:
            for room in rooms:
                times, page = [], []
                for _ in range(reps):
                    began = time.perf_counter()
                    page, _ = await store.history(room, before=None, after=None, limit=50, q=q)
                    times.append(time.perf_counter() - began)
                ids = [m["id"] for m in page]
                out["searches"].append(
                    {"search": label, "q": q, "room": room, "found": len(ids),
                     "median_ms": round(statistics.median(times) * 1e3, 2),
                     "max_ms": round(max(times) * 1e3, 2)}
                )  # fmt: skip
                if q == RARE_WORD and ids != ([first.id] if room == first.room else []):
                    out["failures"].append(f"{q!r} in {room}: {ids}")
                if q == "zyzzyva" and ids:
                    out["failures"].append(f"{q!r} in {room}: {ids}")
                if q == COMMON_WORD and any(q not in m["text"].lower() for m in page):
                    out["failures"].append(f"{q!r} in {room}: a page without the word")
    finally:
        await store.close()


def report(out: dict[str, Any]) -> str:
    lines = [
        f"{out['events']:,} events over {out['rooms']} rooms, filled at "
        f"{out['fill']['events_per_s']:,} events/s; medians of {out['reps']} runs, ms",
        "",
        "| search | room | found | median ms | max ms |",
        "|---|---|---:|---:|---:|",
    ]
    for s in out["searches"]:
        lines.append(
            f"| {s['search']} (`{s['q']}`) | {s['room']} | {s['found']} | {s['median_ms']} "
            f"| {s['max_ms']} |"
        )
    lines += ["", "failures: " + ("; ".join(out["failures"]) or "none")]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--rooms", type=int, default=100)
    ap.add_argument("--reps", type=int, default=15, help="runs of each search in each room")
    ap.add_argument("--timeout", type=float, default=1200, help="limit for the whole run, s")
    a = ap.parse_args()
    from generate import generate  # bench/ is on sys.path when this file runs

    from tests.postgres_server import PostgresServer, bindir

    out: dict[str, Any] = {
        "bench": "search_pg", "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "events": a.events, "rooms": a.rooms, "reps": a.reps, "searches": [], "failures": [],
    }  # fmt: skip
    programs = bindir()
    if programs is None:
        out["error"] = "needs Debian's postgresql (initdb, pg_ctl)"
        print(json.dumps(out))
        return 3
    pg = PostgresServer(programs)  # a folder of its own, removed by destroy()

    def give_up(*_: object) -> None:
        out["error"] = "timed out"
        print(json.dumps(out), flush=True)
        pg.destroy()
        os._exit(4)

    signal.signal(signal.SIGALRM, give_up)
    signal.alarm(int(a.timeout))
    try:
        pg.init()
        pg.start()
        url = pg.new_database()
        out["fill"] = asyncio.run(generate(url, a.events, rooms=a.rooms))
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ANALYZE")
        asyncio.run(measure(url, a.reps, out))
    finally:
        signal.alarm(0)
        pg.destroy()
    print(report(out), file=sys.stderr)
    print(json.dumps(out))
    return 1 if out["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
