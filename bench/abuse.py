"""A well-behaved client while another abuses the service (issue 14): its posts and its stream
must keep working, with latency within 2x of a quiet run.

The server runs with ACCESS.md's default limits and trusts 127.0.0.1 as a proxy, so that the
two clients are two addresses (``X-Forwarded-For``). The well-behaved client follows a room
and posts one message every 100 ms; each message's latency is from just before its POST to
its arrival on the stream. First a quiet phase, then the same with the abuser running in a
second process (so that it does not share this one's event loop): 16 connections posting
as fast as they can (all but the first burst refused with 429), reactions and typing among
them, sign-in attempts, and streams opened past the per-client cap.

    .venv/bin/python bench/abuse.py [--messages 150]

Reports p50/p99 of both phases and their ratio, the abuser's answers by status, and the
server's 429 counters. Exit status as bench/common.py says; a ratio over 2 is reported, not
a failure; a lost or duplicated message of the well-behaved client, or a refusal of one of
its posts, is a failure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

from common import (
    Http,
    add_common_args,
    check_sequence,
    ensure_room,
    open_stream,
    parse,
    pct,
    read_metrics,
    rnd,
    run,
)
from support import Server, dumps

GOOD = {"X-Forwarded-For": "10.0.0.7"}
ABUSER = {"X-Forwarded-For": "10.0.0.66"}
LIMITS = ("write", "signin", "streams")
ENV = {"CHAT_FORWARDED_ALLOW_IPS": "127.0.0.1"}  # every limit at its default


async def phase(port: int, room: str, messages: int, interval_s: float) -> dict[str, Any]:
    """The well-behaved client: a stream of ``room``, and ``messages`` posts."""
    await ensure_room(port, room)
    reader = await open_stream(port, f"/api/rooms/{room}/events", GOOD)
    http = Http(port)
    sent: dict[int, int] = {}
    refused = 0
    try:
        for i in range(messages):
            began = time.time_ns()
            status, _, body = await http.request(
                "POST",
                f"/api/rooms/{room}/messages",
                dumps({"author": "good", "text": f"m{i}"}),
                GOOD,
            )
            if status != 201:
                refused += 1
            else:
                sent[json.loads(body)["id"]] = began
            await asyncio.sleep(interval_s)
        reader.expect(len(sent))
        await asyncio.wait_for(reader.reached, 10)
    finally:
        http.close()
        reader.close()
    parsed = parse(reader)
    latencies = [
        (t - sent[i]) / 1e6
        for i, t in zip(parsed.ids, parsed.t_ns, strict=True)
        if i is not None and i in sent
    ]
    return {
        "posted": len(sent),
        "refused": refused,
        "sequence": check_sequence(parsed.persisted(), sorted(sent)),
        "p50_ms": rnd(pct(latencies, 0.5)),
        "p99_ms": rnd(pct(latencies, 0.99)),
    }


async def abuse(port: int, stop_at: float) -> dict[str, int]:
    """The abuser (run in its own process): floods writes, sign-ins and streams until
    ``stop_at``; returns its answers by status."""
    statuses: dict[str, int] = {}

    def note(status: int) -> None:
        statuses[str(status)] = statuses.get(str(status), 0) + 1

    async def writes(n: int) -> None:
        http = Http(port)
        kinds = [
            ("POST", "/api/rooms/abused/messages", {"author": "spam", "text": "x"}),
            ("POST", "/api/rooms/abused/typing", {"user": f"spam{n}"}),
            ("PUT", f"/api/rooms/spam-{n}-{time.time_ns()}", {}),
        ]
        i = 0
        while time.time() < stop_at:
            method, path, body = kinds[i % len(kinds)]
            i += 1
            status, _, _ = await http.request(method, path, dumps(body), ABUSER)
            note(status)
        http.close()

    async def sign_ins() -> None:
        http = Http(port)
        while time.time() < stop_at:
            body = dumps({"user": "good", "password": "guess"})
            note((await http.request("POST", "/api/session", body, ABUSER))[0])
        http.close()

    async def streams() -> None:
        held = []
        while time.time() < stop_at:
            try:
                held.append(await open_stream(port, "/api/rooms/abused/events", ABUSER))
                note(200)
            except ConnectionError as error:
                note(int(str(error).split()[-1]) if "status" in str(error) else 0)
                await asyncio.sleep(0.01)
        for reader in held:
            reader.close()

    await asyncio.gather(*(writes(n) for n in range(14)), sign_ins(), streams())
    return statuses


async def measure(a: argparse.Namespace, port: int, srv: Server, out: dict) -> None:
    quiet = await phase(port, "quiet", a.messages, a.interval)
    duration = a.messages * (a.interval + 0.01) + 5
    abuser = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--abuser",
        str(port),
        str(time.time() + duration),
        stdout=asyncio.subprocess.PIPE,
    )
    await asyncio.sleep(1.0)  # the abuse under way
    try:
        abused = await phase(port, "abused-room", a.messages, a.interval)
    finally:
        stdout, _ = await asyncio.wait_for(abuser.communicate(), duration + 30)
    out["quiet"], out["abused"] = quiet, abused
    out["abuser_answers"] = json.loads(stdout or b"{}")
    out["metrics"] = await read_metrics(
        port, [f'chat_rate_limited_total{{limit="{name}"}}' for name in LIMITS]
    )
    if quiet["p99_ms"] and abused["p99_ms"]:
        out["p99_ratio"] = rnd(abused["p99_ms"] / quiet["p99_ms"], 2)
        out["p50_ratio"] = rnd(abused["p50_ms"] / quiet["p50_ms"], 2)
    for name, result in (("quiet", quiet), ("abused", abused)):
        problems = {k: v for k, v in result["sequence"].items() if k != "received" and v}
        if result["refused"] or problems:
            out["failures"].append(f"{name}: {result}")


def report(out: dict) -> str:
    q, b = out["quiet"], out["abused"]
    return "\n".join(
        [
            "well-behaved client: post -> own stream latency, ms",
            f"  quiet:  p50 {q['p50_ms']}  p99 {q['p99_ms']}  ({q['posted']} posts)",
            f"  abused: p50 {b['p50_ms']}  p99 {b['p99_ms']}  ({b['posted']} posts)",
            f"  ratio:  p50 {out.get('p50_ratio')}  p99 {out.get('p99_ratio')} (target: <= 2)",
            f"abuser's answers by status: {out['abuser_answers']}",
            f"server's 429s: {out['metrics']}",
        ]
    )


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--abuser":
        result = asyncio.run(abuse(int(sys.argv[2]), float(sys.argv[3])))
        print(json.dumps(result))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=150)
    ap.add_argument("--interval", type=float, default=0.1, help="s between the good posts")
    add_common_args(ap, timeout=300)
    a = ap.parse_args()
    return run("abuse", a, dict(ENV), measure, report)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
