"""Resume benchmark: how long a subscriber that was away takes to catch up with Last-Event-ID.

Each round (default 3, on one room):
1. a subscriber has read the room up to id L (round 1: it reads 20 fresh messages first;
   later rounds: the previous round's subscriber), then disconnects;
2. exactly --gap (default 10,000 = CHAT_REPLAY_LIMIT, the largest gap replayed rather than
   answered with `reset`) messages are posted into the room with the batch endpoint;
3. it reconnects with `Last-Event-ID: L`. From the moment its first replayed frame arrives
   a publisher POSTs single messages into the room at --live-rate (default 100/s) for
   --live-s (default 2 s): new events arrive while the replay runs and after it. (They
   start at the first replayed frame, not before: an event committed before the server
   counted the gap would make it 10,001 and rightly earn a `reset`.)

Measures per round the time from sending the reconnect request until the read that brought
the last missed event (and until the first one), and the delay of the live messages (201
sent -> received). Target (issue 7): all 10,000 missed events within 1 s of the reconnect.

Checks (any failure: exit 1): the round-1 reader got its 20 messages; every batch answered
201 with consecutive ids above L, and the room's last_event_id is the last of them (the gap
is exactly --gap persisted events); after the reconnect the stream holds exactly the missed
ids then the live ids, ascending, each once, nothing else: no `reset`, no other event; the
server did not close the stream.

    .venv/bin/python bench/resume.py                     # 3 rounds, 10,000 missed each
    .venv/bin/python bench/resume.py --rounds 5 --live-rate 200
    .venv/bin/python bench/resume.py --url http://127.0.0.1:8000 --server-pid PID

Without --url it starts its own server (support.start_server: fresh SQLite file in a temporary
directory, server on CPU 0, this script on CPU 1) with CHAT_MAX_BODY_BYTES=1000000 (more for
long --text-bytes). A --url server must keep the default CHAT_REPLAY_LIMIT (10000) or be given
a --gap no larger than its own. Talks to 127.0.0.1 only; every wait has a timeout (--timeout,
default 60 s). Prints a short report on stderr and one JSON line on stdout; exit status:
bench/common.py.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time

from common import (
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
    pct,
    post_batch,
    rnd,
    run,
)

TARGET_S = 1.0
FIRST_READ = 20  # messages the round-1 subscriber reads before it disconnects


async def post_one(http: Http, room: str, text: str) -> int:
    body = dumps({"author": "live", "text": text})
    status, _, resp = await http.request("POST", f"/api/rooms/{room}/messages", body, wait_s=10)
    if status != 201:
        raise Failed(f"POST message: {status} {resp[:200]!r}")
    return loads(resp)["id"]


async def post_backlog(port: int, room: str, a: argparse.Namespace, after: int) -> list[int]:
    """--gap messages in batches of 500 over 2 connections; their ids, checked."""
    sizes = [min(500, a.gap - k) for k in range(0, a.gap, 500)]
    pad = "x" * max(0, a.text_bytes - 12)
    batches = iter([f"b{r}-{j} {pad}" for j in range(n)] for r, n in enumerate(sizes))
    ids: list[int] = []

    async def worker() -> None:
        http = Http(port)
        try:
            for texts in batches:
                ids.extend(await post_batch(http, room, "backlog", texts))
        finally:
            http.close()

    await asyncio.gather(worker(), worker())
    ids.sort()
    if len(ids) != a.gap or len(set(ids)) != a.gap or ids[0] <= after:
        raise Failed(f"backlog: {len(ids)} ids from {ids[:1]}, want {a.gap} above {after}")
    http = Http(port)
    status, _, resp = await http.request("GET", f"/api/rooms/{room}")
    http.close()
    latest = loads(resp).get("last_event_id") if status == 200 else None
    if latest != ids[-1]:
        raise Failed(f"room's last_event_id {latest} != last backlog id {ids[-1]}: gap not exact")
    return ids


async def live(http: Http, room: str, rate: float, seconds: float, sent: dict[int, int]) -> None:
    """Single POSTs at `rate` per second for `seconds`; {id: send time ns} into `sent`."""
    loop = asyncio.get_running_loop()
    begin, k = loop.time(), 0
    while loop.time() - begin < seconds:
        t = now_ns()
        sent[await post_one(http, room, f"live-{k} {t}")] = t
        k += 1
        await asyncio.sleep(max(0.0, begin + k / rate - loop.time()))


async def one_round(
    a: argparse.Namespace, port: int, room: str, after: int, r: int, rss: RssSampler, out: dict
) -> tuple[dict, int]:
    """One disconnect / backlog / reconnect round from id `after`; (figures, last id read)."""
    path = f"/api/rooms/{room}/events"
    backlog = await post_backlog(port, room, a, after)
    await asyncio.sleep(0.2)
    rss_posted, t_reconnect = rss.sample(), time.monotonic()
    http = Http(port)
    sent: dict[int, int] = {}
    with no_gc():
        try:
            sub = await open_stream(port, path, {"Last-Event-ID": str(after)}, wait_s=10)
        except (OSError, TimeoutError) as e:
            raise Failed(f"round {r}: reconnect failed: {type(e).__name__}: {e}") from e
        sub.expect(a.gap)
        try:
            async with asyncio.timeout(10):
                await sub.first  # the gap is counted: live events may come now
            await asyncio.wait_for(live(http, room, a.live_rate, a.live_s, sent), a.live_s + 10)
            sub.expect(a.gap + len(sent))
            await asyncio.wait_for(asyncio.shield(sub.reached), 10)
        except TimeoutError:
            out["failures"].append(f"round {r}: timed out with {sub.frames} frames")
    http.close()
    sub.close()
    fig, last = check_round(sub, backlog, sent, r, out)
    fig["rss_mib"] = dict(before_reconnect=mib(rss_posted), peak=mib(rss.peak(t_reconnect)))
    return fig, last


def check_round(
    sub: SseReader, backlog: list[int], sent: dict[int, int], r: int, out: dict
) -> tuple[dict, int]:
    p = parse(sub)
    got = p.persisted()
    expected = backlog + sorted(sent)
    c = check_sequence(got, expected)
    add_check(out, f"round {r}", c, p.bad)
    others = p.others(b"message")
    if others:
        out["failures"].append(f"round {r}: events other than messages: {others}")
    if sub.lost:
        out["failures"].append(f"round {r}: the server closed the stream")
    if got and backlog and got[: len(backlog)] != backlog:
        out["failures"].append(f"round {r}: the missed events did not come first, in order")
    t_all = p.time_of(backlog[-1])
    t_first = p.t_ns[0] if p.t_ns else None
    live_ms = [(t - sent[i]) / 1e6 for i, t in zip(p.ids, p.t_ns, strict=True) if i in sent]
    during = sum(1 for i in sent if t_all is not None and sent[i] < t_all)
    fig = dict(
        round=r,
        missed=len(backlog),
        resume_s=rnd((t_all - sub.sent_ns) / 1e9) if t_all else None,
        first_frame_ms=rnd((t_first - sub.sent_ns) / 1e6, 1) if t_first else None,
        live_posted=len(sent),
        live_posted_during_replay=during,
        live_delay_ms=dict(p50=rnd(pct(live_ms, 0.5), 1), max=rnd(pct(live_ms, 1), 1)),
        **{k: v for k, v in c.items() if k != "received" and v},
    )
    return fig, got[-1] if got else 0


async def measure(a: argparse.Namespace, port: int, srv: Server, out: dict) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    room = f"resume-{random.getrandbits(32):08x}"
    out.update(gap=a.gap, rounds=a.rounds, live_rate=a.live_rate, live_s=a.live_s, room=room)
    await ensure_room(port, room)
    rss = RssSampler(srv, 0.05)
    rss.start()
    rss_before = rss.sample()

    # round 1's subscriber reads FIRST_READ messages, then goes away
    sub = await open_stream(port, f"/api/rooms/{room}/events", wait_s=10)
    sub.expect(FIRST_READ)
    http = Http(port)
    ids = [await post_one(http, room, f"first-{k}") for k in range(FIRST_READ)]
    http.close()
    try:
        await asyncio.wait_for(asyncio.shield(sub.reached), 10)
    except TimeoutError:
        out["failures"].append(f"first read: {sub.frames} of {FIRST_READ} frames in 10 s")
    sub.close()
    p = parse(sub)
    add_check(out, "first read", check_sequence(p.persisted(), ids), p.bad)
    after = p.persisted()[-1] if p.persisted() else 0

    rounds = []
    for r in range(1, a.rounds + 1):
        if loop.time() - start > a.timeout - 15:
            out["failures"].append(f"only {r - 1} rounds before --timeout")
            break
        fig, after = await one_round(a, port, room, after, r, rss, out)
        rounds.append(fig)
        print(f"resume: round {r}: {fig}", file=sys.stderr)
    rss.stop()
    out["round_figures"] = rounds
    times = [f["resume_s"] for f in rounds if f["resume_s"] is not None]
    out["resume_s"] = dict(min=min(times, default=None), median=pct(times, 0.5))
    out["resume_s"]["max"] = max(times, default=None)
    out["missed_per_s_median"] = round(a.gap / out["resume_s"]["median"]) if times else None
    out["rss_mib"] = dict(before=mib(rss_before), peak=mib(rss.peak(0)))
    out["target_s"] = TARGET_S
    out["target_met"] = bool(times) and len(times) == a.rounds and max(times) < TARGET_S


def report(o: dict) -> str:
    rs = o["resume_s"]
    return "\n".join(
        [
            f"resume: {len(o['round_figures'])} rounds, {o['gap']:,} missed events each, live"
            f" messages at {o['live_rate']}/s from the first replayed frame",
            f"  reconnect -> all missed received s: min {rs['min']} median {rs['median']} max"
            f" {rs['max']} ({o['missed_per_s_median'] or 0:,} events/s at the median); RSS MiB"
            f" {o['rss_mib']}",
            f"  target < {o['target_s']} s: {'met' if o['target_met'] else 'NOT met'};"
            f" failures: {len(o['failures'])}",
        ]
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--gap", type=int, default=10_000, help="missed events (<= replay limit)")
    ap.add_argument("--live-rate", type=float, default=100.0, help="live POSTs a second")
    ap.add_argument("--live-s", type=float, default=2.0, help="seconds of live POSTs a round")
    ap.add_argument("--text-bytes", type=int, default=64, help="length of the missed texts")
    add_common_args(ap, timeout=60.0)
    a = ap.parse_args()
    if a.rounds < 1 or a.gap < 1 or a.live_rate <= 0 or not 12 <= a.text_bytes <= 4000:
        ap.error("need --rounds >= 1, --gap >= 1, --live-rate > 0, 12 <= --text-bytes <= 4000")
    body_max = 500 * (a.text_bytes + 48) + 4096  # a batch of 500 backlog messages
    env = {"CHAT_MAX_BODY_BYTES": str(max(1_000_000, body_max))}
    return run("resume", a, env, measure, report)


if __name__ == "__main__":
    sys.exit(main())
