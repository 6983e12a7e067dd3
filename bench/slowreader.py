"""Slow-reader benchmark: the server's memory while one subscriber reads nothing at all.

On one room: a fast subscriber reads everything; --warmup-mib (default 30) MiB of message
text is posted and read, so the server's caches and allocator have settled; then a slow
subscriber connects (a socket with SO_RCVBUF --rcvbuf, default 4096, set before connect) and,
after its `: connected`, stops reading: its kernel buffers fill and the server's writes to it
stall. Now --mib (default 50) MiB of message text is posted (--text-bytes 3000 a message,
--batch 100 a request, over --publishers 2 connections; --batch 1 uses single POSTs) while
the server's RSS is sampled every 50 ms, until the fast subscriber has it all and --hold-s
(1 s) more. Then the slow subscriber starts reading and must receive every message posted
since it connected (the server drops what it queued for it past CHAT_SUBSCRIBER_BUFFER_BYTES
and catches it up from the store); the drain is bounded by --drain-s (default 30 s).

Reports the RSS peak growth while the slow reader stalls (peak - the RSS just before the
posting, after the warm-up), the publish rate, and the drain time. Target (issue 7): RSS grows
by less than 10 MiB. --no-slow runs the same without the slow subscriber, for comparison.

Checks (any failure: exit 1): every POST answered 201 (consecutive ids within a batch); the
fast subscriber received every id, the slow one every id posted after it connected, each
exactly once, in order, nothing else (no `reset`); neither stream was closed by the server.

    .venv/bin/python bench/slowreader.py                 # 50 MiB under a stalled reader
    .venv/bin/python bench/slowreader.py --no-slow       # the same posting, no slow reader
    .venv/bin/python bench/slowreader.py --batch 1 --publishers 4
    .venv/bin/python bench/slowreader.py --url http://127.0.0.1:8000 --server-pid PID

Without --url it starts its own server (support.start_server: fresh SQLite file in a temporary
directory, server on CPU 0, this script on CPU 1) with CHAT_MAX_BODY_BYTES large enough for a
batch (1000000 at the defaults). Talks to 127.0.0.1 only; every wait has a timeout (--timeout,
default 90 s, bounds the run). Prints a short report on stderr and one JSON line on stdout;
exit status: bench/common.py.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import sys
import time

from common import (
    MIB,
    Failed,
    Http,
    RssSampler,
    Server,
    SseReader,
    add_check,
    add_common_args,
    check_sequence,
    dumps,
    ensure_room,
    loads,
    mib,
    no_gc,
    now_ns,
    open_stream,
    parse,
    read_metrics,
    rnd,
    rss_parts,
    run,
)

TARGET_MIB = 10.0
METRICS = ("chat_slow_subscriber_catchups_total", "chat_replayed_events_total")


def bodies(a: argparse.Namespace, tag: str, total_mib: float) -> list[bytes]:
    """Request bodies carrying `total_mib` MiB of message text, built before they are sent."""
    count = -(-int(total_mib * MIB) // a.text_bytes)
    out = []
    for r, first in enumerate(range(0, count, a.batch)):
        n = min(a.batch, count - first)
        msgs = [
            {"author": "bulk", "text": f"{tag}{r}-{j} ".ljust(a.text_bytes, "x")} for j in range(n)
        ]
        out.append(dumps(msgs[0] if a.batch == 1 else {"messages": msgs}))
    return out


async def publish(a: argparse.Namespace, port: int, room: str, reqs: list[bytes], out: dict):
    """POST every body over --publishers connections; the ids committed, and the seconds."""
    path = f"/api/rooms/{room}/messages" + ("" if a.batch == 1 else "/batch")
    todo = iter(reqs)
    ids: list[int] = []
    errors: list[str] = []

    async def worker() -> None:
        http = Http(port)
        for body in todo:
            try:
                status, _, resp = await http.request("POST", path, body, wait_s=30)
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as e:
                errors.append(f"{type(e).__name__}: {e}"[:200])
                continue
            if status != 201:
                errors.append(f"status {status}: {resp[:160]!r}")
                continue
            got = loads(resp)
            got = [got["id"]] if a.batch == 1 else [e["id"] for e in got["events"]]
            if got != list(range(got[0], got[0] + len(got))):
                errors.append(f"batch ids not consecutive: {got[:3]}...{got[-3:]}")
            ids.extend(got)
        http.close()

    t = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(a.publishers)))
    if errors:
        out["failures"].append(f"publishing: {len(errors)} errors, first: {errors[:3]}")
    return sorted(ids), time.monotonic() - t


async def reach(sub: SseReader, target: int, seconds: float) -> bool:
    sub.expect(target)
    try:
        await asyncio.wait_for(asyncio.shield(sub.reached), seconds)
        return True
    except TimeoutError:
        return False


def check(who: str, sub: SseReader, expected: list[int], out: dict) -> tuple[int | None, int]:
    """Verify a captured stream; (time ns of the read that brought the last id, frames)."""
    p = parse(sub)
    got = p.persisted()
    add_check(out, who, check_sequence(got, expected), p.bad)
    others = p.others(b"message")
    if others:
        out["failures"].append(f"{who}: events other than messages: {others}")
    if sub.lost:
        out["failures"].append(f"{who}: the server closed the stream")
    return (p.time_of(expected[-1]) if expected else None), len(got)


async def measure(a: argparse.Namespace, port: int, srv: Server, out: dict) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    room = f"slow-{random.getrandbits(32):08x}"
    path = f"/api/rooms/{room}/events"
    out.update(slow_reader=not a.no_slow, mib=a.mib, warmup_mib=a.warmup_mib, room=room)
    out.update(text_bytes=a.text_bytes, batch=a.batch, publishers=a.publishers, rcvbuf=a.rcvbuf)
    warm_reqs, main_reqs = bodies(a, "w", a.warmup_mib), bodies(a, "m", a.mib)
    await ensure_room(port, room)
    rss = RssSampler(srv, 0.05)
    rss.start()
    srv.refresh()
    rss_cold = rss.sample()
    parts = {"cold": rss_parts(srv)}

    fast = await open_stream(port, path, wait_s=10)
    warm_ids, _ = await publish(a, port, room, warm_reqs, out) if warm_reqs else ([], 0.0)
    if not await reach(fast, len(warm_ids), 30):
        raise Failed(f"warm-up: the fast subscriber got {fast.frames} of {len(warm_ids)}")

    slow = None
    if not a.no_slow:
        slow = await open_stream(port, path, pause=True, rcvbuf=a.rcvbuf, wait_s=10)
        sock = slow.transport.get_extra_info("socket") if slow.transport else None
        rcvbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) if sock else None
        out["rcvbuf_effective"] = rcvbuf  # the kernel doubles what was asked
    await asyncio.sleep(0.5)
    srv.refresh()
    rss_base = rss.sample()
    parts["before"] = rss_parts(srv)
    m0 = await read_metrics(port, METRICS)
    t_mark = time.monotonic()

    with no_gc():
        ids, publish_s = await publish(a, port, room, main_reqs, out)
        out["published"] = len(ids)
        out["publish_s"] = rnd(publish_s)
        out["published_mib_per_s"] = rnd(len(ids) * a.text_bytes / MIB / publish_s, 1)
        left = a.timeout - (loop.time() - start) - a.drain_s - 10
        if not await reach(fast, len(warm_ids) + len(ids), max(5.0, left)):
            out["failures"].append(f"fast subscriber: {fast.frames} frames by the deadline")
        await asyncio.sleep(a.hold_s)  # the slow reader still stalled: RSS sampled on
    t_stall = time.monotonic()
    rss_stall_peak = rss.peak(t_mark, t_stall)
    rss_stall_end = rss.sample()
    parts["stall_end"] = rss_parts(srv)

    drain_s = None
    if slow is not None:
        t_resume = now_ns()
        slow.resume()
        left = a.timeout - (loop.time() - start) - 8
        if not await reach(slow, len(ids), min(a.drain_s, max(5.0, left))):
            out["failures"].append(
                f"slow subscriber: {slow.frames} of {len(ids)} frames by the drain's limit"
            )
        t_last, _ = check("slow subscriber", slow, ids, out)
        drain_s = rnd((t_last - t_resume) / 1e9) if t_last else None
        slow.close()
    rss.stop()
    rss_drain_peak = rss.peak(t_stall)
    parts["end"] = rss_parts(srv)
    m1 = await read_metrics(port, METRICS)
    fast.close()
    check("fast subscriber", fast, warm_ids + ids, out)

    growth = None if rss_stall_peak is None else (rss_stall_peak - rss_base) / 1024
    out["rss_mib"] = dict(
        cold=mib(rss_cold),
        before=mib(rss_base),
        stall_peak=mib(rss_stall_peak),
        stall_end=mib(rss_stall_end),
        drain_peak=mib(rss_drain_peak),
    )
    out["rss_growth_mib"] = rnd(growth, 1)
    out["rss_parts_mib"] = parts
    out["drain_s"] = drain_s
    out["server_metrics_delta"] = {k: m1.get(k, 0) - m0.get(k, 0) for k in METRICS}
    out["target_mib"] = TARGET_MIB
    out["target_met"] = growth is not None and growth < TARGET_MIB


def report(o: dict) -> str:
    r = o["rss_mib"]
    who = "a stalled reader" if o["slow_reader"] else "NO slow reader (--no-slow)"
    return "\n".join(
        [
            f"slowreader: {o['published']:,} messages of {o['text_bytes']} B"
            f" ({o['mib']} MiB of text) posted in {o['publish_s']} s"
            f" ({o['published_mib_per_s']} MiB/s) with {who} and a fast one",
            f"  server RSS MiB: cold {r['cold']}, before {r['before']}, peak while stalled"
            f" {r['stall_peak']} (growth {o['rss_growth_mib']} MiB), after {r['stall_end']},"
            f" peak while draining {r['drain_peak']}",
            f"  slow reader drained in {o['drain_s']} s; server counters"
            f" {o['server_metrics_delta']}",
            f"  target RSS growth < {o['target_mib']} MiB:"
            f" {'met' if o['target_met'] else 'NOT met'}; failures: {len(o['failures'])}",
        ]
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mib", type=float, default=50.0, help="MiB of message text to post")
    ap.add_argument("--warmup-mib", type=float, default=30.0, help="posted before the slow reader")
    ap.add_argument("--text-bytes", type=int, default=3000, help="length of each text (<= 4000)")
    ap.add_argument("-B", "--batch", type=int, default=100, help="items a request; 1: single POST")
    ap.add_argument("-C", "--publishers", type=int, default=2, help="publisher connections")
    ap.add_argument("--rcvbuf", type=int, default=4096, help="the slow reader's SO_RCVBUF")
    ap.add_argument("--hold-s", type=float, default=1.0, help="stall kept after the posting")
    ap.add_argument("--drain-s", type=float, default=30.0, help="limit of the final drain")
    ap.add_argument("--no-slow", action="store_true", help="no slow reader (a control run)")
    add_common_args(ap, timeout=90.0)
    a = ap.parse_args()
    if not (16 <= a.text_bytes <= 4000 and 1 <= a.batch <= 500 and a.publishers >= 1):
        ap.error("need 16 <= --text-bytes <= 4000, 1 <= --batch <= 500, --publishers >= 1")
    body_max = max(len(b) for b in bodies(a, "m", a.text_bytes * a.batch / MIB))
    env = {"CHAT_MAX_BODY_BYTES": str(max(1_000_000, body_max + 4096))}
    return run("slowreader", a, env, measure, report)


if __name__ == "__main__":
    sys.exit(main())
