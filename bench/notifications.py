"""Notification feeds (issue 16): how a feed's cost grows with the data, and what a mention
adds to a POST, in one run.

(a) growth: two SQLite stores filled through the store's own batch path (batches of 500
    messages over --rooms rooms, in-process, no HTTP): *small*, 10,000 events of which 1,000
    mention the user; *large*, 1,000,000 events of which 100,000 do (every tenth message).
    For each, the feed's first page (limit 50) and its unread count, --reads times each, the
    two stores taking turns: in-process through the store (``Store.notifications``,
    ``Store.notifications_unread``), and over HTTP through a live server on each file.
    Medians, and large / small.
(b) POST cost: one live server, --messages POSTs whose text mentions a user and as many
    whose text (of the same length) does not, in alternating rounds of 200 over
    --concurrency keep-alive connections (after one round of each that warms the server up
    and is not counted): messages/s of each, and plain / mention (the
    issue's bound: a mention costs at most 10% more, a ratio of at most 1.10).

Checks (a failure: exit 1): the large feed's first page holds 50 unread mention groups, newest
first, and its count is 100,000 (1,000 small); every POST answers 201.

    .venv/bin/python bench/notifications.py                 # about 2 minutes
    .venv/bin/python bench/notifications.py --large 200000  # quicker, smaller
    .venv/bin/python bench/notifications.py --keep          # keep the databases

Read ratios within one run (the VM is noisy). Prints a markdown table on stderr and one JSON
line on stdout; exit status as bench/common.py says.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import Http, install_backstop
from support import start_server, stop_server

from chat.config import Settings
from chat.store import Store, writes

USER = "target"
BATCH = 500


async def fill(path: str, events: int, rooms: int) -> float:
    """``events`` messages into ``rooms`` rooms, every tenth mentioning USER; seconds taken."""
    store = Store(Settings(database=path), lambda committed: None)
    await store.open()
    began = time.perf_counter()
    try:
        for start in range(0, events, BATCH):
            room = f"room-{(start // BATCH) % rooms}"
            ops = [
                writes.post_message(
                    room,
                    f"user{n % 997}",
                    f"@{USER} look at {n}" if n % 10 == 0 else f"message number {n} here",
                    None,
                    create_room=True,
                    index=False,
                )
                for n in range(start, min(start + BATCH, events))
            ]
            await store.write(writes.batch("messages", ops, writes.index_messages))
    finally:
        await store.close()
    return time.perf_counter() - began


async def timed(samples: list[float], call: Any) -> Any:
    began = time.perf_counter()
    result = await call
    samples.append(time.perf_counter() - began)
    return result


async def read_in_process(paths: dict[str, str], reads: int) -> dict[str, dict[str, Any]]:
    """The first page and the unread count of each store, the stores taking turns (so that
    the VM's noise and the caches' warming hit them alike)."""
    stores = {
        size: Store(Settings(database=path), lambda committed: None) for size, path in paths.items()
    }
    for store in stores.values():
        await store.open()
    try:
        samples = {size: ([], []) for size in stores}  # type: dict[str, tuple[list[float], list[float]]]
        found: dict[str, dict[str, Any]] = {}
        for _ in range(reads):
            for size, store in stores.items():
                page_s, count_s = samples[size]
                groups, _ = await timed(page_s, store.notifications(USER, before=None, limit=50))
                unread = await timed(count_s, store.notifications_unread(USER))
                found[size] = {"groups": groups, "unread": unread}
        for size, (page_s, count_s) in samples.items():
            found[size]["page_ms"] = statistics.median(page_s) * 1000
            found[size]["unread_ms"] = statistics.median(count_s) * 1000
        return found
    finally:
        for store in stores.values():
            await store.close()


async def read_over_http(ports: dict[str, int], reads: int) -> dict[str, dict[str, float]]:
    """The same over HTTP, one live server per store, taking turns."""
    https = {size: Http(port) for size, port in ports.items()}
    samples = {size: ([], []) for size in https}  # type: dict[str, tuple[list[float], list[float]]]
    try:
        for _ in range(reads):
            for size, http in https.items():
                page_s, count_s = samples[size]
                for path, into in (("?limit=50", page_s), ("/unread", count_s)):
                    url = f"/api/users/{USER}/notifications{path}"
                    status, _, _ = await timed(into, http.request("GET", url))
                    assert status == 200, status
    finally:
        for http in https.values():
            http.close()
    return {
        size: {
            "http_page_ms": statistics.median(page_s) * 1000,
            "http_unread_ms": statistics.median(count_s) * 1000,
        }
        for size, (page_s, count_s) in samples.items()
    }


def served(tmp: str, path: str) -> tuple[Any, int]:
    os.environ["CHAT_DATABASE"] = path
    try:
        return start_server(tmp)
    finally:
        os.environ.pop("CHAT_DATABASE", None)


async def post_cost(port: int, messages: int, concurrency: int) -> dict[str, Any]:
    """Alternating rounds of mention / plain POSTs: messages/s of each."""
    conns = [Http(port) for _ in range(concurrency)]
    spent = {"mention": 0.0, "plain": 0.0}
    done = {"mention": 0, "plain": 0}
    errors = 0
    round_size = 200
    try:
        await conns[0].request("PUT", "/api/rooms/bench", b"{}")
        n = 0
        warm = False
        while done["plain"] < messages:
            # ABBA: each kind goes first every other round (no order effect)
            kinds = ("mention", "plain") if n // round_size % 2 == 0 else ("plain", "mention")
            for kind in kinds:
                texts = [
                    (f"@{USER} hello {n + i}" if kind == "mention" else f"x{USER} hello {n + i}")
                    for i in range(round_size)
                ]
                queue = list(texts)

                async def worker(http: Http, queue: list[str] = queue) -> int:
                    bad = 0
                    while queue:
                        body = json.dumps({"author": "poster", "text": queue.pop()}).encode()
                        status, _, _ = await http.request("POST", "/api/rooms/bench/messages", body)
                        bad += status != 201
                    return bad

                t = time.perf_counter()
                errors += sum(await asyncio.gather(*(worker(c) for c in conns)))
                if warm:  # the first round of each kind warms the server up: not counted
                    spent[kind] += time.perf_counter() - t
                    done[kind] += round_size
            n += round_size
            warm = True
    finally:
        for c in conns:
            c.close()
    rates = {kind: done[kind] / spent[kind] for kind in spent}
    return {
        "mention_per_s": rates["mention"],
        "plain_per_s": rates["plain"],
        "cost_ratio": rates["plain"] / rates["mention"],
        "errors": errors,
    }


async def main(a: argparse.Namespace, tmp: str, out: dict[str, Any]) -> None:
    procs: list[Any] = []
    try:
        if not a.post_only:
            sizes = {"small": a.small, "large": a.large}
            paths = {size: os.path.join(tmp, f"{size}.db") for size in sizes}
            fill_s = {
                size: await fill(paths[size], events, a.rooms) for size, events in sizes.items()
            }
            found = await read_in_process(paths, a.reads)
            ports = {}
            for size, path in paths.items():
                proc, ports[size] = served(os.path.join(tmp, size), path)
                procs.append(proc)
            over_http = await read_over_http(ports, a.reads)
            for size, events in sizes.items():
                groups, unread = found[size].pop("groups"), found[size].pop("unread")
                mentions = events // 10
                if unread != mentions:
                    out["failures"].append(f"{size}: unread {unread}, expected {mentions}")
                if len(groups) != 50 or not all(
                    g["kind"] == "mention" and g["unread"] for g in groups
                ):
                    out["failures"].append(f"{size}: the first page is not 50 unread mentions")
                ids = [g["latest_event_id"] for g in groups]
                if ids != sorted(ids, reverse=True):
                    out["failures"].append(f"{size}: the first page is not newest first")
                out[size] = {
                    "events": events,
                    "user_groups": mentions,
                    "fill_events_per_s": round(events / fill_s[size]),
                    **{k: round(v, 3) for k, v in (found[size] | over_http[size]).items()},
                }
            out["ratios"] = {
                key: round(out["large"][key] / out["small"][key], 2)
                for key in ("page_ms", "unread_ms", "http_page_ms", "http_unread_ms")
            }
            for proc in procs:
                stop_server(proc)
            procs.clear()
        proc, port = served(os.path.join(tmp, "post"), os.path.join(tmp, "post.db"))
        procs.append(proc)
        cost = await post_cost(port, a.messages, a.concurrency)
        if cost["errors"]:
            out["failures"].append(f"post: {cost['errors']} answers were not 201")
        out["post"] = {k: round(v, 3) for k, v in cost.items()}
    finally:
        for proc in procs:
            stop_server(proc)


def report(out: dict[str, Any]) -> str:
    rows = [
        "| store | events | the user's groups | first page ms (HTTP) | unread ms (HTTP) |",
        "|---|---:|---:|---:|---:|",
    ]
    for size in ("small", "large") if "ratios" in out else ():
        s = out[size]
        rows.append(
            f"| {size} | {s['events']:,} | {s['user_groups']:,} | {s['page_ms']:.3f} "
            f"({s['http_page_ms']:.3f}) | {s['unread_ms']:.3f} ({s['http_unread_ms']:.3f}) |"
        )
    r, p = out.get("ratios"), out["post"]
    if r is not None:
        rows.append(
            f"| large / small | | | {r['page_ms']} ({r['http_page_ms']}) | "
            f"{r['unread_ms']} ({r['http_unread_ms']}) |"
        )
    rows.append("")
    rows.append(
        f"POST: {p['plain_per_s']:.0f} plain messages/s, {p['mention_per_s']:.0f} with a "
        f"mention/s: a mention costs {p['cost_ratio']:.3f}x"
    )
    return "\n".join(rows)


def cli() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", type=int, default=10_000, help="events in the small store")
    ap.add_argument("--large", type=int, default=1_000_000, help="events in the large store")
    ap.add_argument("--rooms", type=int, default=100)
    ap.add_argument("--reads", type=int, default=200, help="reads of each kind per store")
    ap.add_argument("--messages", type=int, default=2_000, help="POSTs of each kind")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--post-only", action="store_true", help="only (b), the POST cost")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="chat-notifications-")
    for sub in ("small", "large", "post"):
        os.makedirs(os.path.join(tmp, sub))
    out: dict[str, Any] = {"bench": "notifications", "failures": []}

    def clean_up() -> None:
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    install_backstop(out, int(a.timeout), clean_up)
    try:
        asyncio.run(main(a, tmp, out))
    except Exception as e:  # reported in the JSON line
        out["error"] = f"{type(e).__name__}: {e}"
    finally:
        clean_up()
    if "error" in out:
        print(f"notifications: ERROR {out['error']}", file=sys.stderr)
    else:
        print(report(out), file=sys.stderr)
    for f in out["failures"]:
        print(f"notifications: FAILED {f}", file=sys.stderr)
    print(json.dumps(out), flush=True)
    return 1 if out["failures"] else 3 if "error" in out else 0


if __name__ == "__main__":
    sys.exit(cli())
