"""Reconnect storm (issue 17): after a deploy, every client reconnects at once, each some events
behind.

1. --rooms rooms (default 100) each get --behind messages (default 100) in one batch: the
   events every stream missed.
2. --streams streams (default 10,000; --rooms of them a room, spread evenly) reconnect within
   --spread seconds (default 1 s, evenly spaced), each with `Last-Event-ID` just before its
   room's missed events.
3. From the first reconnect a publisher POSTs one message every 1/--live-rate s (default 100/s)
   to the rooms in turn, for --live-s seconds (default 10): live events during the storm.

Measures: the time from the first reconnect until every stream has all of its room's missed
events (caught up) and until it has every live event (live too); the delay of each live event
(the POST's send -> its arrival, on every stream of its room): p50/p99/max; the same from when
the POST was sent or the stream asked (sent its GET), whichever was later: an event posted
before a stream reconnected is one it missed, and its wait until the stream asks is the
client's absence, not the server's delay (with a 1 s spread it alone puts the first figure's
p99 near 0.55 s at --live-s 10); the server's RSS before and after. Targets (issue 17): all
caught up within 10 s, live p99 under 1 s (the second figure).

Checks (any failure: exit 1): each stream received exactly its room's missed ids then its live
ids, ascending, each once, no `reset`, no other event; every POST answered 201.

    .venv/bin/python bench/storm.py                          # 10,000 streams, ~30 s
    .venv/bin/python bench/storm.py --streams 2000 --live-s 5  # quicker

Starts its own server (a fresh SQLite file, the server on CPU 0 and this script on CPU 1, the
per-client limits off); 127.0.0.1 only; every wait bounded (--timeout). Prints a report on
stderr and one JSON line on stdout; exit status as bench/common.py says. Each stream is one
connection of this process and of the server's: keep --streams under the open-files limit
(20,000 here), minus a few hundred.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
from typing import Any

from common import (
    Http,
    SseReader,
    add_check,
    add_common_args,
    check_sequence,
    dumps,
    loads,
    mib,
    now_ns,
    open_stream,
    parse,
    pct,
    post_batch,
    rnd,
    run,
    wait_frames,
)
from support import Server


async def backlog(port: int, rooms: list[str], behind: int) -> dict[str, list[int]]:
    """Each room's missed events, posted as one batch: room -> their ids."""
    http, missed = Http(port), {}
    try:
        for room in rooms:
            missed[room] = await post_batch(
                http, room, "bot", [f"missed {n}" for n in range(behind)]
            )
    finally:
        http.close()
    return missed


async def publish(
    port: int, rooms: list[str], rate: float, seconds: float, sent: dict[int, tuple[str, int]]
) -> int:
    """One POST every 1/rate s, rooms in turn: id -> (room, send time in ns). Returns failures."""
    http, failed = Http(port), 0
    loop = asyncio.get_running_loop()
    began, n = loop.time(), 0
    try:
        while loop.time() - began < seconds:
            room = rooms[n % len(rooms)]
            t = now_ns()
            status, _, answer = await http.request(
                "POST",
                f"/api/rooms/{room}/messages",
                dumps({"author": "live", "text": f"live {n}"}),
            )
            if status == 201:
                sent[loads(answer)["id"]] = (room, t)
            else:
                failed += 1
            n += 1
            await asyncio.sleep(max(0.0, began + n / rate - loop.time()))
    finally:
        http.close()
    return failed


async def reconnect(
    port: int, room: str, after: int, at: float, readers: list[SseReader], errors: list[str]
) -> None:
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, at - loop.time()))
    try:
        readers.append(
            await open_stream(
                port, f"/api/rooms/{room}/events", {"Last-Event-ID": str(after)}, wait_s=30
            )
        )
    except (OSError, TimeoutError, ConnectionError) as error:
        errors.append(f"{room}: {type(error).__name__}: {error}")


async def measure(a: argparse.Namespace, port: int, srv: Server, out: dict) -> None:
    rooms = [f"storm-{r}" for r in range(a.rooms)]
    missed = await backlog(port, rooms, a.behind)
    out["rss_before_mib"] = mib(srv.rss_kb())
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.5
    readers: dict[str, list[SseReader]] = {room: [] for room in rooms}
    errors: list[str] = []
    sent: dict[int, tuple[str, int]] = {}
    t0 = now_ns() + 500_000_000
    tasks = [
        reconnect(
            port,
            rooms[i % a.rooms],
            missed[rooms[i % a.rooms]][0] - 1,
            start + a.spread * i / a.streams,
            readers[rooms[i % a.rooms]],
            errors,
        )
        for i in range(a.streams)
    ]

    async def live() -> int:
        await asyncio.sleep(max(0.0, start - loop.time()))
        return await publish(port, rooms, a.live_rate, a.live_s, sent)

    async with asyncio.timeout(a.timeout - 5):
        *_, failed_posts = await asyncio.gather(*tasks, live())
        # until every stream has its room's live events too (or nothing more comes)
        last_live = {
            room: max((i for i, (r, _) in sent.items() if r == room), default=0) for room in rooms
        }
        for room, group in readers.items():
            target = a.behind + sum(1 for r, _ in sent.values() if r == room)
            for reader in group:
                reader.expect(target)
        await wait_frames([r for group in readers.values() for r in group], loop.time() + 30)
    out["rss_after_mib"] = mib(srv.rss_kb())
    out["reconnect_errors"] = len(errors)
    if errors:
        out["failures"].append(f"{len(errors)} streams could not reconnect: {errors[:3]}")
    if failed_posts:
        out["failures"].append(f"{failed_posts} live POSTs failed")
    caught, done, delays, served = [], [], [], []
    for room, group in readers.items():
        live_ids = sorted(i for i, (r, _) in sent.items() if r == room)
        expected = missed[room] + live_ids
        for reader in group:
            reader.close()
            p = parse(reader)
            got = p.persisted()
            add_check(out, f"stream on {room}", check_sequence(got, expected), p.bad)
            others = p.others(b"message")
            if others:
                out["failures"].append(f"stream on {room}: other events {others}")
            at_last_missed = p.time_of(missed[room][-1])
            if at_last_missed is not None:
                caught.append((at_last_missed - t0) / 1e9)
            if live_ids:
                at_last = p.time_of(last_live[room])
                if at_last is not None:
                    done.append((at_last - t0) / 1e9)
            for event_id, t in zip(p.ids, p.t_ns, strict=True):
                if event_id in sent:
                    posted = sent[event_id][1]
                    delays.append((t - posted) / 1e6)
                    # for a stream that asked after the POST, the event was a missed one:
                    # what the server adds is the time since the stream asked
                    served.append((t - max(posted, reader.sent_ns)) / 1e6)
    out.update(
        streams=a.streams,
        live_events=len(sent),
        caught_up_all_s=rnd(max(caught, default=None)),
        caught_up_p50_s=rnd(pct(caught, 0.5)),
        live_too_all_s=rnd(max(done, default=None)),
        live_delay_ms={
            "p50": rnd(pct(delays, 0.5), 1),
            "p99": rnd(pct(delays, 0.99), 1),
            "max": rnd(max(delays, default=None), 1),
            "deliveries": len(delays),
        },
        live_delay_asked_ms={
            "p50": rnd(pct(served, 0.5), 1),
            "p99": rnd(pct(served, 0.99), 1),
            "max": rnd(max(served, default=None), 1),
        },
    )


def report(o: dict[str, Any]) -> str:
    d, asked = o.get("live_delay_ms", {}), o.get("live_delay_asked_ms", {})
    met = (o.get("caught_up_all_s") or 99) <= 10 and (asked.get("p99") or 1e9) < 1000
    return (
        f"storm: {o.get('streams')} streams reconnected within {o.get('spread_s')} s, each "
        f"{o.get('behind')} behind: all caught up after {o.get('caught_up_all_s')} s "
        f"(median {o.get('caught_up_p50_s')} s), live too after {o.get('live_too_all_s')} s; "
        f"{o.get('live_events')} live events, delay p50 {d.get('p50')} ms, p99 {d.get('p99')} ms, "
        f"max {d.get('max')} ms over {d.get('deliveries')} deliveries; from when the POST was "
        f"sent or the stream asked, whichever was later (the server's part): p50 "
        f"{asked.get('p50')} ms, p99 {asked.get('p99')} ms, max {asked.get('max')} ms; RSS "
        f"{o.get('rss_before_mib')} -> {o.get('rss_after_mib')} MiB. "
        f"Target (all caught up <= 10 s, live p99 < 1 s from when the stream asked): "
        f"{'met' if met else 'NOT met'}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--streams", type=int, default=10_000)
    ap.add_argument("--rooms", type=int, default=100)
    ap.add_argument("--behind", type=int, default=100, help="events each stream missed")
    ap.add_argument("--spread", type=float, default=1.0, help="seconds the reconnects span")
    ap.add_argument("--live-rate", type=float, default=100.0, help="live messages per second")
    ap.add_argument("--live-s", type=float, default=10.0, help="seconds of live messages")
    add_common_args(ap, timeout=120.0)
    a = ap.parse_args()
    if a.streams > 19_000:
        ap.error("--streams above 19,000 would pass the open-files limit (20,000 a process)")

    def measure_with_args(a: argparse.Namespace, port: int, srv: Server, out: dict) -> Any:
        out.update(behind=a.behind, spread_s=a.spread)
        return measure(a, port, srv, out)

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # a connection per stream
    env = {"CHAT_MAX_STREAMS": str(max(15_000, a.streams + 100))}
    return run("storm", a, env, measure_with_args, report)


if __name__ == "__main__":
    sys.exit(main())
