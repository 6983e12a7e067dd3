"""Batch publishing benchmark: C publisher connections POST /api/rooms/{room}/messages/batch
(500 items a request) while S subscribers read the room's SSE stream.

Measures, for M messages in all (M / 500 requests):
- committed/s: M / (first POST sent -> last 201 received);
- received/s per subscriber: M / (first POST sent -> the read that brought it the last id),
  and for all of them together (until the slowest has the last id);
- latency of each delivery from its request's POST (p50/p99/max), server and bench CPU, RSS.
Target (issue 7): >= 50,000 messages/s committed and broadcast (every subscriber has them).

Checks (any failure: exit 1): every request answered 201 with one event per item, consecutive
ids in the given order, of the right type and room; every subscriber received every committed
id exactly once, in id order, with nothing else (no `reset`, no ids from elsewhere), each SSE
`id:` equal to its JSON `id`; no subscriber stream was closed by the server.

    .venv/bin/python bench/batch.py                        # 100,000 messages, C=4, S=10
    .venv/bin/python bench/batch.py --kind activity        # .../activity/batch {"items": [...]}
    .venv/bin/python bench/batch.py -M 20000 -S 50 -C 2
    .venv/bin/python bench/batch.py --url http://127.0.0.1:8000 --server-pid PID

Without --url it starts its own server (support.start_server: fresh SQLite file in a temporary
directory, server on CPU 0, this script on CPU 1) with CHAT_MAX_BODY_BYTES=1000000 (500 items
need more than the default 64 KiB once texts are long); a --url server must allow such bodies.
Talks to 127.0.0.1 only; every wait has a timeout (--timeout, default 60 s, bounds the run).
Prints a short report on stderr and one JSON line on stdout; exit status: bench/common.py.
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
    add_check,
    add_common_args,
    check_sequence,
    dumps,
    ensure_room,
    loads,
    mib,
    no_gc,
    now_ns,
    open_streams,
    parse,
    pct,
    rnd,
    run,
    wait_frames,
)
from support import own_cpu

TARGET_PER_S = 50_000


def build_bodies(a: argparse.Namespace) -> list[tuple[int, bytes]]:
    """(items, body) for each request, encoded before the window. Item j of request r is
    tagged `r<r>-<j>` (in the text, or the activity's object) so the order can be checked."""
    bodies, left, r = [], a.messages, 0
    while left > 0:
        n = min(a.batch, left)
        if a.kind == "message":
            items = [
                {"author": f"pub-{r % a.publishers}", "text": f"r{r}-{j} ".ljust(a.text_bytes, "x")}
                for j in range(n)
            ]
            body = dumps({"messages": items})
        else:
            items = [
                {
                    "actor": "ci",
                    "verb": "built",
                    "object": f"r{r}-{j}",
                    "summary": "x" * a.text_bytes,
                }
                for j in range(n)
            ]
            body = dumps({"items": items})
        bodies.append((n, body))
        left, r = left - n, r + 1
    return bodies


def check_answer(r: int, n: int, status: int, body: bytes, a: argparse.Namespace, room: str):
    """The ids of one batch's 201, or a string saying what is wrong with it."""
    if status != 201:
        return f"request {r}: status {status} {body[:160]!r}"
    try:
        events = loads(body)["events"]
    except (ValueError, KeyError, TypeError):
        return f"request {r}: unparseable 201 {body[:160]!r}"
    if len(events) != n:
        return f"request {r}: {len(events)} events for {n} items"
    ids = [e.get("id") for e in events]
    if any(not isinstance(i, int) for i in ids) or ids != list(range(ids[0], ids[0] + n)):
        return f"request {r}: ids not consecutive: {ids[:3]}...{ids[-3:]}"
    for j, e in enumerate(events):
        tag = e.get("text", "").split(" ", 1)[0] if a.kind == "message" else e.get("object")
        if tag != f"r{r}-{j}" or e.get("type") != a.kind or e.get("room") != room:
            return f"request {r}: event {j} is {str(e)[:160]} (want tag r{r}-{j})"
    return ids


async def measure(a: argparse.Namespace, port: int, srv: Server, out: dict) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    room = f"batch-{random.getrandbits(32):08x}"
    path = f"/api/rooms/{room}/{'messages' if a.kind == 'message' else 'activity'}/batch"
    out.update(kind=a.kind, messages=a.messages, batch=a.batch, publishers=a.publishers)
    out.update(subscribers=a.subscribers, text_bytes=a.text_bytes, room=room)
    bodies = build_bodies(a)
    out["requests"] = len(bodies)
    out["request_bytes_avg"] = round(sum(len(b) for _, b in bodies) / len(bodies))

    await ensure_room(port, room)
    rss = RssSampler(srv, 0.1)
    rss.start()
    t = time.monotonic()
    try:
        subs = await open_streams(port, f"/api/rooms/{room}/events", a.subscribers, 15.0)
    except (OSError, TimeoutError) as e:
        raise Failed(f"subscribers could not connect: {type(e).__name__}: {e}") from e
    out["connect_s"] = round(time.monotonic() - t, 3)
    await asyncio.sleep(0.3)
    srv.refresh()
    rss_before = rss.sample()
    mark = time.monotonic()

    send_ns = [0] * len(bodies)
    recv_ns = [0] * len(bodies)
    answers: list[tuple[int, bytes] | None] = [None] * len(bodies)
    errors: list[str] = []
    nxt = iter(range(len(bodies)))
    pub_deadline = start + a.timeout - 25

    async def publisher() -> None:
        http = Http(port)
        for r in nxt:
            if loop.time() > pub_deadline:
                errors.append(f"request {r} and later not sent: --timeout")
                break
            send_ns[r] = now_ns()
            try:
                status, _, body = await http.request("POST", path, bodies[r][1], wait_s=20)
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as e:
                errors.append(f"request {r}: {type(e).__name__}: {e}"[:200])
                continue
            recv_ns[r] = now_ns()
            answers[r] = (status, body)
        http.close()

    cpu0, own0 = srv.cpu_s(), own_cpu()
    with no_gc():
        t0 = now_ns()
        await asyncio.gather(*(publisher() for _ in range(a.publishers)))
        t_commit = max(recv_ns)
        if not t_commit:
            raise Failed(f"no request was answered: {errors[:3]}")
        committed = sum(
            n for (n, _), ans in zip(bodies, answers, strict=True) if ans and ans[0] == 201
        )
        for s in subs:
            s.expect(committed)
        complete = await wait_frames(subs, start + a.timeout - 12, idle_s=5.0)
        cpu1, own1 = srv.cpu_s(), own_cpu()
        t_end = now_ns()
    rss.stop()
    rss_peak = rss.peak(mark)
    for s in subs:
        s.close()

    # --- after the window: the answers, then each subscriber's stream
    expected: list[int] = []
    id_sent: dict[int, int] = {}
    for r, ((n, _), ans) in enumerate(zip(bodies, answers, strict=True)):
        if ans is None:
            continue
        ids = check_answer(r, n, *ans, a, room)
        if isinstance(ids, str):
            errors.append(ids)
            continue
        expected.extend(ids)
        id_sent.update(dict.fromkeys(ids, send_ns[r]))
    expected.sort()
    if errors:
        out["failures"].append(f"publishing: {len(errors)} errors, first: {errors[:3]}")
    out.update(committed=len(expected), publish_errors=len(errors))
    if not complete:
        out["failures"].append("not every subscriber reached the last id before the deadline")
    commit_s = (t_commit - t0) / 1e9
    out["commit_s"] = rnd(commit_s)
    out["committed_per_s"] = round(len(expected) / commit_s) if commit_s > 0 else None

    last = expected[-1] if expected else None
    per_sub_s, lat = [], []
    totals = dict(received=0, lost=0, duplicates=0, out_of_order=0, unexpected=0, bad_frames=0)
    for k, s in enumerate(subs):
        p = parse(s)
        got = p.persisted()
        c = check_sequence(got, expected)
        others = p.others(a.kind.encode())
        add_check(out, f"subscriber {k}", c, p.bad)
        if others:
            out["failures"].append(f"subscriber {k}: other events {others}")
        if s.lost:
            out["failures"].append(f"subscriber {k}: the server closed its stream")
        for key in c:
            totals[key] += c[key]
        totals["bad_frames"] += p.bad
        t_last = p.time_of(last) if last is not None else None
        if t_last is not None:
            per_sub_s.append((t_last - t0) / 1e9)
        lat.extend(
            (t - id_sent[i]) / 1e6 for i, t in zip(p.ids, p.t_ns, strict=True) if i in id_sent
        )
    out.update(totals, disconnects=sum(s.lost for s in subs))
    if per_sub_s and len(per_sub_s) == len(subs):
        slowest = max(per_sub_s)
        out["received_s"] = rnd(slowest)
        out["received_per_s"] = round(len(expected) / slowest)  # every subscriber has them all
        out["received_per_s_per_sub"] = dict(
            min=round(len(expected) / slowest),
            median=round(len(expected) / pct(per_sub_s, 0.5)),
            max=round(len(expected) / min(per_sub_s)),
        )
        out["deliveries_per_s"] = round(len(expected) * len(subs) / slowest)
    else:
        out["received_s"] = out["received_per_s"] = None
    out["latency_ms"] = {
        q: rnd(pct(lat, v), 1) for q, v in (("p50", 0.5), ("p99", 0.99), ("max", 1))
    }
    window = (t_end - t0) / 1e9
    if cpu0 is not None and cpu1 is not None:
        out["server_cpu_s"], out["server_cpu_util"] = (
            rnd(cpu1 - cpu0, 2),
            rnd((cpu1 - cpu0) / window),
        )
    out["bench_cpu_util"] = rnd((own1 - own0) / window)
    out["rss_mib"] = dict(before=mib(rss_before), peak=mib(rss_peak))
    rate = min(out["committed_per_s"] or 0, out["received_per_s"] or 0)
    out["target_per_s"], out["target_met"] = TARGET_PER_S, rate >= TARGET_PER_S


def report(o: dict) -> str:
    lat = o["latency_ms"]
    return "\n".join(
        [
            f"batch: {o['committed']:,} {o['kind']} events in {o['requests']} requests of"
            f" <= {o['batch']} ({o['request_bytes_avg']:,} B) over {o['publishers']} connections,"
            f" {o['subscribers']} subscribers",
            f"  committed {o['committed_per_s'] or 0:,}/s ({o['commit_s']} s); received by every"
            f" subscriber {o['received_per_s'] or 0:,}/s ({o['received_s']} s; per subscriber"
            f" {o.get('received_per_s_per_sub')}); {o.get('deliveries_per_s', 0):,} deliveries/s",
            f"  latency from POST ms p50 {lat['p50']} p99 {lat['p99']} max {lat['max']}; server"
            f" CPU util {o.get('server_cpu_util')}, bench {o['bench_cpu_util']}; RSS MiB"
            f" {o['rss_mib']}",
            f"  checks: lost {o['lost']}, duplicates {o['duplicates']}, out of order"
            f" {o['out_of_order']}, unexpected {o['unexpected']}, bad frames {o['bad_frames']},"
            f" disconnects {o['disconnects']}, publish errors {o['publish_errors']}",
            f"  target >= {o['target_per_s']:,}/s committed and received:"
            f" {'met' if o['target_met'] else 'NOT met'}",
        ]
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-M", "--messages", type=int, default=100_000, help="events in all")
    ap.add_argument("-B", "--batch", type=int, default=500, help="items a request (1..500)")
    ap.add_argument("-C", "--publishers", type=int, default=4, help="publisher connections")
    ap.add_argument("-S", "--subscribers", type=int, default=10)
    ap.add_argument("--kind", choices=("message", "activity"), default="message")
    ap.add_argument("--text-bytes", type=int, default=32, help="text (or summary) length")
    add_common_args(ap, timeout=60.0)
    a = ap.parse_args()
    if not (1 <= a.batch <= 500 and a.messages >= 1 and a.publishers >= 1):
        ap.error("need 1 <= --batch <= 500, --messages >= 1, --publishers >= 1")
    if a.kind == "message" and not 8 <= a.text_bytes <= 4000:
        ap.error("a message text is 1..4000 characters (and needs room for its tag)")
    if a.kind == "activity" and not 0 <= a.text_bytes <= 1000:
        ap.error("an activity summary is at most 1000 characters")
    body_max = max(len(body) for _, body in build_bodies(a))
    env = {"CHAT_MAX_BODY_BYTES": str(max(1_000_000, body_max + 1024))}
    return run("batch", a, env, measure, report)


if __name__ == "__main__":
    sys.exit(main())
