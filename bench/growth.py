"""Growth (issue 17): what each read and write path costs as the history grows, in one run.

One SQLite store grows through --sizes (default 10^4, 10^5, 10^6, 10^7 events; the generator
of bench/generate.py, 1,000 rooms, 5,000 users). At each size a live server is started on the
file (its start-up timed), and each path is timed --reps times over HTTP on one keep-alive
connection (the median counts):

- history: the newest page of the busiest room (limit 50), and an old page by cursor (the 50
  messages before its 60th oldest);
- a room's info; the room list's first page and a deep page (after ``room-900``, limit 100);
- the unread counts of a user with a read marker in each of the 1,000 rooms (each a few
  events behind, set anew at each size);
- search in the busiest room: a common word (every message has it), as typed (a prefix),
  a rare word (only the history's first message has it), a one-letter word;
- a resume 100 messages back on the busiest room, 100 events back on ``rooms=*``, and a
  ``mentions=`` stream on ``rooms=*`` 10,000 events back (the replay limit): from the
  request until a message posted right after the stream opened arrives (it comes after the
  whole replay);
- a single message POST, a batch of 500;
- start-up: from ``python -m chat serve`` to its first answer on /healthz;
- the database's bytes per event (file and WAL).

Prints a table on stderr (milliseconds, and each size's cost / the first size's) and one JSON
line on stdout. Checks (a failure: exit 1): every answer's status, full history pages, the
rare word's one match, each resume delivers
its marker. Exit status as bench/common.py says.

    .venv/bin/python bench/growth.py                              # 10^4 .. 10^7: ~15 minutes
    .venv/bin/python bench/growth.py --sizes 10000,100000 --reps 5  # the CI smoke test
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import Failed, Http, install_backstop, open_stream
from generate import generate
from support import dumps, loads, start_server, stop_server

from chat.config import Settings
from chat.store import Store

ROOM = "room-0"  # the busiest room (chat/store/fill.py)
READER = "reader"
ROOMS = 1000
READ_PATHS = (
    "history_newest",
    "history_old",
    "room",
    "rooms_first",
    "rooms_deep",
    "unread_1000_rooms",
    "search_common",
    "search_rare",
    "search_one_letter",
    "resume_room_100",
    "resume_all_100",
    "resume_mentions_10000",
)
WRITE_PATHS = ("post", "batch_500")
BOUND = {"read": 2.0, "write": 1.5}  # the bounds at 10^7 vs 10^4


def serve(tmp: str) -> tuple[subprocess.Popen[bytes], int, float]:
    """The server on ``tmp/chat.db``, unpinned: (process, port, seconds until /healthz
    answered)."""
    began = time.perf_counter()
    try:
        proc, port = start_server(tmp, pin=False, wait_s=60)
    except RuntimeError as error:
        raise Failed(str(error)) from None
    return proc, port, time.perf_counter() - began


class Paths:
    """The timed paths of one size, on one live server."""

    def __init__(self, port: int, out: dict[str, Any]) -> None:
        self.port, self.http, self.failures = port, Http(port), out["failures"]
        self.marker = 0
        self.latest = 0  # the newest event id: every write here moves it

    async def get(self, path: str) -> Any:
        status, _, body = await self.http.request("GET", path)
        if status != 200:
            raise Failed(f"GET {path}: {status} {body[:200]!r}")
        return loads(body)

    async def post(self, path: str, body: Any, expect: int = 201) -> Any:
        status, _, answer = await self.http.request("POST", path, dumps(body), wait_s=30)
        if status != expect:
            raise Failed(f"POST {path}: {status} {answer[:200]!r}")
        got = loads(answer)
        self.latest = max(self.latest, *(e["id"] for e in got.get("events", [got])))
        return got

    async def prepare(self, size: int) -> dict[str, Any]:
        """Read markers a few events behind in every room; the cursors the reads use."""
        rooms = (await self.get(f"/api/rooms?limit={ROOMS}"))["rooms"]
        for room in rooms:  # (a room without events yet gets a marker at 0)
            newest = room["last_event_id"]
            status, _, body = await self.http.request(
                "PUT",
                f"/api/rooms/{room['name']}/read",
                dumps({"user": READER, "last_read_id": max(0, newest - 30)}),
            )
            if status != 204:
                raise Failed(f"PUT read: {status} {body[:200]!r}")
        oldest = (await self.get(f"/api/rooms/{ROOM}/messages?after=0&limit=60"))["messages"]
        newest = (await self.get(f"/api/rooms/{ROOM}/messages?limit=100"))["messages"]
        self.latest = max(room["last_event_id"] for room in rooms)
        return {"old_cursor": oldest[-1]["id"], "room_resume": newest[0]["id"] - 1}

    async def resume(self, make_path: Callable[[], str], mention: bool) -> None:
        """Open the stream, post a marker it matches, wait for it (after the whole replay)."""
        self.marker += 1
        token = f"marker{self.marker}x{time.monotonic_ns()}"
        path = make_path()
        reader = await open_stream(self.port, path, wait_s=30)
        try:
            text = f"{token} @{READER}" if mention else token
            await self.post(f"/api/rooms/{ROOM}/messages", {"author": "bench", "text": text})
            needle, seen = token.encode(), 0
            try:
                async with asyncio.timeout(30):
                    while True:
                        joined = b"".join(reader.pieces[max(0, seen - 1) :])
                        if needle in joined:
                            if b"event: reset" in b"".join(reader.pieces):
                                raise Failed(f"{path}: `reset` instead of a replay")
                            return
                        seen = len(reader.pieces)
                        if reader.ended.done():
                            raise Failed(f"{path}: the stream ended before the marker")
                        await asyncio.sleep(0.002)
            except TimeoutError:
                got = b"".join(reader.pieces)
                raise Failed(
                    f"{path}: no marker {token} within 30 s; {reader.frames} frames, "
                    f"{len(got)} bytes, ending {got[-600:]!r}"
                ) from None
        finally:
            reader.close()

    def calls(self, c: dict[str, Any]) -> dict[str, Callable[[], Awaitable[Any]]]:
        batch = {"messages": [{"author": "bench", "text": f"hello batch {n}"} for n in range(500)]}
        return {
            "history_newest": lambda: self.page(f"/api/rooms/{ROOM}/messages?limit=50", 50),
            "history_old": lambda: self.page(
                f"/api/rooms/{ROOM}/messages?limit=50&before={c['old_cursor']}", 50
            ),
            "room": lambda: self.get(f"/api/rooms/{ROOM}"),
            "rooms_first": lambda: self.get("/api/rooms?limit=100"),
            "rooms_deep": lambda: self.get("/api/rooms?after=room-900&limit=100"),
            "unread_1000_rooms": lambda: self.get(f"/api/users/{READER}/unread"),
            "search_common": lambda: self.page(f"/api/rooms/{ROOM}/messages?q=hello&limit=50", 50),
            "search_rare": lambda: self.get(f"/api/rooms/{ROOM}/messages?q=quokka&limit=50"),
            "search_one_letter": lambda: self.get(f"/api/rooms/{ROOM}/messages?q=h&limit=50"),
            # resume points taken as the stream opens: the writes measured move the newest id.
            # "10,000 back" is 9,990: CHAT_REPLAY_LIMIT is 10,000, and the marker may be
            # committed before the server counts the gap (one more and it answers `reset`)
            "resume_room_100": lambda: self.resume(
                lambda: f"/api/rooms/{ROOM}/events?last_event_id={c['room_resume']}", False
            ),
            "resume_all_100": lambda: self.resume(
                lambda: f"/api/events?rooms=*&last_event_id={self.latest - 100}", False
            ),
            "resume_mentions_10000": lambda: self.resume(
                lambda: (
                    f"/api/events?rooms=*&mentions={READER}&last_event_id={self.latest - 9_990}"
                ),
                True,
            ),
            "post": lambda: self.post(
                f"/api/rooms/{ROOM}/messages", {"author": "bench", "text": "hello one"}
            ),
            "batch_500": lambda: self.post(f"/api/rooms/{ROOM}/messages/batch", batch),
        }

    async def page(self, path: str, full: int) -> None:
        got = len((await self.get(path))["messages"])
        if got != full:
            self.failures.append(f"GET {path}: {got} messages, not {full}")


async def measure_size(port: int, size: int, reps: int, out: dict[str, Any]) -> dict[str, float]:
    paths = Paths(port, out)
    try:
        cursors = await paths.prepare(size)
        rare = await paths.get(f"/api/rooms/{ROOM}/messages?q=quokka&limit=200")
        if [m["id"] for m in rare["messages"]] != [1]:
            out["failures"].append(f"{size}: the rare word found {rare['messages'][:3]}, not 1")
        calls = paths.calls(cursors)
        samples: dict[str, list[float]] = {name: [] for name in calls}
        for warm in calls.values():  # a round not counted: the caches of a server in use
            await warm()
        for _ in range(reps):  # each path once a round: the VM's noise spreads over them alike
            for name, call in calls.items():
                began = time.perf_counter()
                await call()
                samples[name].append(time.perf_counter() - began)
        return {name: statistics.median(s) * 1000 for name, s in samples.items()}
    finally:
        paths.http.close()


def db_bytes(tmp: str) -> int:
    base = os.path.join(tmp, "chat.db")
    return sum(os.path.getsize(base + s) for s in ("", "-wal") if os.path.exists(base + s))


async def run(a: argparse.Namespace, tmp: str, out: dict[str, Any]) -> None:
    have = 0
    path = os.path.join(tmp, "chat.db")
    for size in a.sizes:
        made = await generate(path, size - have, rooms=ROOMS, total=max(a.sizes))
        out["generator"].append({"events": size - have, **made})
        proc, port, startup = serve(tmp)
        try:
            figures = await measure_size(port, size, a.reps, out)
        finally:
            stop_server(proc)
        figures["startup"] = startup * 1000
        have = await latest(path)  # the measured writes appended events too
        figures["bytes_per_event"] = db_bytes(tmp) / have
        out["sizes"][str(size)] = {k: round(v, 3) for k, v in figures.items()}
        print(f"growth: {size:,} events measured", file=sys.stderr, flush=True)


async def latest(path: str) -> int:
    store = Store(Settings(database=path), lambda committed: None)
    await store.open()
    try:
        return await store.latest_id()
    finally:
        await store.close()


def report(out: dict[str, Any]) -> str:
    sizes = list(out["sizes"])
    if not sizes:
        return "growth: nothing measured"
    first = out["sizes"][sizes[0]]
    head = "| path (ms) | " + " | ".join(f"{int(s):,}" for s in sizes) + " | ratio at the last |"
    lines = [head, "|---" * (len(sizes) + 2) + "|"]
    for name in (*READ_PATHS, *WRITE_PATHS, "startup", "bytes_per_event"):
        row = [out["sizes"][s].get(name) for s in sizes]
        base = first.get(name)
        ratio = row[-1] / base if base and row[-1] is not None else None
        cells = " | ".join(f"{v:.2f}" if v is not None else "" for v in row)
        bound = BOUND["read"] if name in READ_PATHS else BOUND["write"]
        over = " (over the bound)" if ratio and ratio > bound and name != "bytes_per_event" else ""
        shown = f"{ratio:.2f}x{over}" if ratio else ""
        lines.append(f"| {name} | {cells} | {shown} |")
    rates = ", ".join(f"{g['events']:,} at {g['events_per_s']:,}/s" for g in out["generator"])
    lines.append(f"\ngenerator: {rates}")
    return "\n".join(lines)


def ratios(out: dict[str, Any]) -> dict[str, float]:
    sizes = list(out["sizes"])
    first, last = out["sizes"][sizes[0]], out["sizes"][sizes[-1]]
    return {k: round(last[k] / first[k], 2) for k in first if first[k]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--sizes",
        default="10000,100000,1000000,10000000",
        type=lambda s: sorted(int(x) for x in s.split(",")),
    )
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--keep", action="store_true", help="keep the database and the server log")
    a = ap.parse_args()
    out: dict[str, Any] = {"bench": "growth", "sizes": {}, "generator": [], "failures": []}
    tmp = tempfile.mkdtemp(prefix="chat-growth-")

    def clean_up() -> None:
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    install_backstop(out, int(a.timeout), clean_up)
    try:
        asyncio.run(run(a, tmp, out))
        out["ratios"] = ratios(out)
    except (Failed, TimeoutError, OSError) as error:
        out["error"] = f"{type(error).__name__}: {error}"
        traceback.print_exc()
    finally:
        clean_up()
    print(report(out), file=sys.stderr)
    for failure in out["failures"]:
        print(f"growth: FAILED {failure}", file=sys.stderr)
    if a.keep:
        print(f"kept {tmp}", file=sys.stderr)
    print(json.dumps(out))
    return 1 if out["failures"] else 3 if "error" in out else 0


if __name__ == "__main__":
    sys.exit(main())
