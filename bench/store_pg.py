"""The PostgreSQL store beside SQLite (issue 15), in one run: each store behind two service
processes on two "hosts" (separate ports and working directories) that share nothing but the
store and one Redis (``CHAT_BROKER=redis://...``). SQLite: both processes on one file;
PostgreSQL: one database of a throw-away cluster (tests/postgres_server.py), no shared file.

Per rep and store, interleaved (rep 1 SQLite first, rep 2 PostgreSQL first, ...), so that the
VM's noise hits both:

(a) single POSTs: --concurrency (16) keep-alive publisher connections, half to each process,
    one POST in flight on each, --messages (3,000) into one room: messages/s (201s over
    first POST to last answer), p50/p99 of the request's round trip;
(b) batches: --batches (40) ``POST .../messages/batch`` of 500 messages over
    --batch-concurrency (4) connections, half to each process: messages/s committed (201s),
    and delivered (until both processes' subscribers had every one);
(c) resume: one message (its id L), then exactly --gap (10,000 = CHAT_REPLAY_LIMIT) messages
    in batches of 500, all through one process; then a stream with ``Last-Event-ID: L``
    through the other one: time from the request to the read that brought the 10,000th event.

Checks, every rep (a failure: exit 1): (a) and (b) one subscriber per process on the room,
opened before the first POST, gets every id of a 201 once and in ascending order, nothing
else; the ids of the 201s are unique; (a) the store's history (read through the second
process) holds each once; (b) every batch's ids are consecutive; (c) the resumed stream holds
exactly the 10,000 ids, ascending, no ``reset``. Non-201 answers and failed requests are
counted (``errors``), and every process's log is searched for ERROR/WARNING/Traceback.

    .venv/bin/python bench/store_pg.py                    # 5 reps, about 70 s
    .venv/bin/python bench/store_pg.py --reps 3 --messages 5000
    .venv/bin/python bench/store_pg.py --pg-fsync         # the cluster with fsync = on
    .venv/bin/python bench/store_pg.py --reps 1 --profile /tmp/prof   # + a rep under py-spy

Nothing is pinned: on a 2-core VM the four service processes, PostgreSQL, Redis and this
client share both cores, as they would on one small host; the CPU each used per message is
reported so that one can tell where it went. Read ratios within one run. Needs Debian's
``postgresql`` (initdb, pg_ctl; as root the cluster runs as the ``postgres`` user) and
``redis-server``; everything listens on 127.0.0.1. The servers run with the per-client limits
off (tests/live.py LIMITS_OFF), ``CHAT_LOG_LEVEL=WARNING`` and ``CHAT_MAX_BODY_BYTES=1000000``
(batches of 500). Every wait is bounded; --timeout (300 s) bounds the run (reps that would
start past it are skipped) and a SIGALRM 30 s later stops everything (exit 4). Prints a
markdown table on stderr and one JSON line on stdout; exit status as bench/common.py says.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from common import (
    Failed,
    Http,
    check_sequence,
    install_backstop,
    no_gc,
    now_ns,
    open_stream,
    parse,
    pct,
    rnd,
)
from support import CLK_TCK, Server, dumps, loads, log_problems, own_cpu, uvloop

ROOT = Path(__file__).resolve().parent.parent
STORES = ("sqlite", "postgresql")
BATCH = 500
SERVER_ENV = {"CHAT_MAX_BODY_BYTES": "1000000"}


# --- the deployments -------------------------------------------------------------------------


class Deployment:
    """One store behind two service processes (tests/live.py LiveServer)."""

    def __init__(self, store: str, servers: list[Any], db_pids: Callable[[], list[int]]) -> None:
        self.store, self.servers = store, servers
        self.ports = [s.port for s in servers]
        self.hosts = [Server(s.pid) for s in servers]
        self.db_pids = db_pids  # the database's own processes (none for SQLite)

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far: both service processes, the database server."""
        for h in self.hosts:
            h.refresh()
        db = 0.0
        for pid in self.db_pids():
            db += Server(pid).cpu_s() or 0.0
        return {"service": sum(h.cpu_s() or 0.0 for h in self.hosts), "db": db}


class Cluster:
    """Everything the run starts, so that whatever happens it can all be stopped."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.redis: Any = None
        self.pg: Any = None
        self.servers: list[Any] = []

    def pg_pids(self) -> list[int]:
        """The postmaster and its children (backends, checkpointer, WAL writer...)."""
        if self.pg is None:
            return []
        with contextlib.suppress(OSError, ValueError):
            pid = int((self.pg.data / "postmaster.pid").read_text().split()[0])
            return [pid]
        return []

    def start(self, a: argparse.Namespace) -> dict[str, Deployment]:
        sys.path.insert(0, str(ROOT))
        from tests.live import LiveServer
        from tests.postgres_server import PostgresServer, bindir
        from tests.redis_server import RedisServer

        programs, redis = bindir(), shutil.which("redis-server")
        if programs is None or redis is None:
            raise Failed("needs Debian's postgresql (initdb, pg_ctl) and redis-server")
        (self.tmp / "redis").mkdir()
        self.redis = RedisServer(redis, self.tmp / "redis")
        self.redis.start()
        self.pg = PostgresServer(programs)
        self.pg.init()
        if a.pg_fsync:
            with (self.pg.data / "postgresql.conf").open("a") as conf:
                conf.write("fsync = on\n")
        self.pg.start()
        databases = {"sqlite": str(self.tmp / "sqlite-shared" / "chat.db")}
        (self.tmp / "sqlite-shared").mkdir()
        databases["postgresql"] = self.pg.new_database()
        deployments = {}
        for store in STORES:
            env = {
                **SERVER_ENV,
                "CHAT_BROKER": self.redis.url,
                "CHAT_BROKER_PREFIX": f"bench-{store}",  # one Redis, two deployments
            }
            pair = []
            for host in range(2):
                workdir = self.tmp / f"{store}-host{host}"
                workdir.mkdir()
                live = LiveServer(workdir, env, database=databases[store])
                self.servers.append(live)
                live.start(timeout_s=30)  # the first alone: it creates and migrates the store
                pair.append(live)
            db_pids = self.pg_pids if store == "postgresql" else list
            deployments[store] = Deployment(store, pair, db_pids)
        return deployments

    def stop(self, out: dict[str, Any]) -> None:
        logs = {}
        for live in self.servers:
            if live.proc is not None:
                try:
                    code = live.terminate(timeout_s=15)
                    if code not in (0, -signal.SIGTERM):
                        out.setdefault("exit_codes", {})[live.workdir.name] = code
                except Exception:
                    live.kill()
            if live.log_path.exists():
                logs[live.workdir.name] = log_problems(str(live.log_path))
        out["server_logs"] = logs
        if self.redis is not None:
            self.redis.destroy()
        if self.pg is not None:
            pg_log = self.pg.log()
            out["postgres_log"] = [
                ln for ln in pg_log.splitlines() if "ERROR" in ln or "FATAL" in ln
            ][:5]
            self.pg.destroy()

    def kill(self) -> None:
        """From the SIGALRM backstop: no waiting."""
        for live in self.servers:
            with contextlib.suppress(Exception):
                live.kill()
        with contextlib.suppress(Exception):
            self.redis.destroy()
        with contextlib.suppress(Exception):
            self.pg.destroy()


# --- the scenarios ---------------------------------------------------------------------------


async def put_room(port: int, room: str) -> None:
    http = Http(port)
    try:
        status, _, body = await http.request("PUT", f"/api/rooms/{room}", dumps({"title": room}))
    finally:
        http.close()
    if status not in (200, 201):
        raise Failed(f"PUT /api/rooms/{room}: {status} {body[:200]!r}")


async def open_subscribers(dep: Deployment, room: str) -> list[Any]:
    await put_room(dep.ports[0], room)
    return [await open_stream(port, f"/api/rooms/{room}/events") for port in dep.ports]


async def check_streams(
    readers: list[Any], ids: list[int], wait_s: float, who: str, out: dict[str, Any]
) -> tuple[dict[str, int], int | None]:
    """Wait until every reader has len(ids) frames (or `wait_s`), then check each got every id
    once, ascending, nothing else. Returns the summed counts and the time (ns) of the last read
    that completed the set, over all readers."""
    for r in readers:
        r.expect(len(ids))
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(wait_s):
            await asyncio.gather(*(asyncio.shield(r.reached) for r in readers))
    await asyncio.sleep(0.05)  # anything extra (a duplicate) would arrive now
    total: Counter[str] = Counter()
    last: int | None = None
    expected = sorted(ids)
    for n, r in enumerate(readers):
        r.close()
        p = parse(r)
        c = check_sequence(p.persisted(), expected)
        others = p.others(b"message")
        wrong = {k: v for k, v in c.items() if k != "received" and v}
        if wrong or others or p.bad or r.lost:
            out["failures"].append(
                f"{who} stream {n}: {wrong} others {others} bad {p.bad} closed {r.lost}"
            )
        total.update(c)
        if expected and c["lost"] == 0:
            t = p.time_of(expected[-1])
            last = t if last is None or (t is not None and t > last) else last
    return dict(total), last


async def history_check(port: int, room: str, ids: list[int]) -> dict[str, int]:
    """Every message of the room from the store (200 a page), against the 201s' ids."""
    http = Http(port)
    got: list[int] = []
    after = 0
    try:
        while True:
            path = f"/api/rooms/{room}/messages?after={after}&limit=200"
            status, _, body = await http.request("GET", path, wait_s=10)
            if status != 200:
                raise Failed(f"GET {path}: {status} {body[:200]!r}")
            page = loads(body)
            got += [m["id"] for m in page["messages"]]
            if not page["has_more"] or not page["messages"]:
                break
            after = got[-1]
    finally:
        http.close()
    c = check_sequence(got, sorted(ids))
    return {"lost": c["lost"], "duplicates": c["duplicates"], "unexpected": c["unexpected"]}


def cpu_per_message(dep: Deployment, before: dict[str, float], client: float, n: int) -> dict:
    after = dep.cpu()
    n = max(n, 1)
    return {
        "service_us": rnd((after["service"] - before["service"]) / n * 1e6, 1),
        "db_us": rnd((after["db"] - before["db"]) / n * 1e6, 1),
        "client_us": rnd((own_cpu() - client) / n * 1e6, 1),
    }


async def singles(
    dep: Deployment, room: str, a: argparse.Namespace, n: int, out: dict[str, Any]
) -> dict[str, Any]:
    readers = await open_subscribers(dep, room)
    path = f"/api/rooms/{room}/messages"
    pad = "x" * max(0, a.text_bytes - 8)
    ks = itertools.count()
    latencies: list[int] = []
    ids: list[int] = []
    errors: Counter[str] = Counter()

    async def publisher(port: int) -> None:
        http = Http(port)
        try:
            while (k := next(ks)) < n:
                body = dumps({"author": "bench", "text": f"m{k} {pad}"})
                began = time.perf_counter_ns()
                try:
                    status, _, resp = await http.request("POST", path, body, wait_s=10)
                except Exception as e:
                    errors[type(e).__name__] += 1
                    continue
                latencies.append(time.perf_counter_ns() - began)
                if status == 201:
                    ids.append(loads(resp)["id"])
                else:
                    errors[str(status)] += 1
        finally:
            http.close()

    cpu, client = dep.cpu(), own_cpu()
    with no_gc():
        t0 = time.perf_counter()
        async with asyncio.timeout(a.phase_timeout):
            await asyncio.gather(*(publisher(dep.ports[i % 2]) for i in range(a.concurrency)))
        window = time.perf_counter() - t0
    used = cpu_per_message(dep, cpu, client, len(ids))
    stream, _ = await check_streams(readers, ids, 10, f"{dep.store} singles {room}", out)
    store = await history_check(dep.ports[1], room, ids)
    if any(store.values()) or len(set(ids)) != len(ids):
        out["failures"].append(f"{dep.store} singles {room}: store {store}, ids {len(ids)}")
    lat_ms = [x / 1e6 for x in latencies]
    return {
        "posted": len(ids),
        "errors": dict(errors),
        "per_s": rnd(len(ids) / window, 1),
        "p50_ms": rnd(pct(lat_ms, 0.5)),
        "p99_ms": rnd(pct(lat_ms, 0.99)),
        "window_s": rnd(window),
        "stream": stream,
        "store": store,
        "cpu": used,
    }


def batch_bodies(count: int, tag: str, text_bytes: int) -> list[bytes]:
    pad = "x" * max(0, text_bytes - 14)
    return [
        dumps(
            {"messages": [{"author": "bench", "text": f"{tag}{b}-{j} {pad}"} for j in range(BATCH)]}
        )
        for b in range(count)
    ]


async def post_batches(
    ports: list[int], room: str, bodies: list[bytes], conns: int, timeout_s: float
) -> tuple[list[int], Counter[str], list[str]]:
    """Every body to `room`, over `conns` connections taking turns over `ports`; the ids of the
    201s, the other answers by status, and what was wrong with the 201s."""
    todo = iter(bodies)
    ids: list[int] = []
    errors: Counter[str] = Counter()
    wrong: list[str] = []

    async def worker(port: int) -> None:
        http = Http(port)
        try:
            for body in todo:
                try:
                    status, _, resp = await http.request(
                        "POST", f"/api/rooms/{room}/messages/batch", body, wait_s=30
                    )
                except Exception as e:
                    errors[type(e).__name__] += 1
                    continue
                if status != 201:
                    errors[str(status)] += 1
                    continue
                got = [e["id"] for e in loads(resp)["events"]]
                if got != list(range(got[0], got[0] + BATCH)):
                    wrong.append(f"batch ids not consecutive: {got[:2]}...{got[-2:]}")
                ids.extend(got)
        finally:
            http.close()

    async with asyncio.timeout(timeout_s):
        await asyncio.gather(*(worker(ports[i % len(ports)]) for i in range(conns)))
    return ids, errors, wrong


async def batches(
    dep: Deployment, room: str, a: argparse.Namespace, count: int, out: dict[str, Any]
) -> dict[str, Any]:
    readers = await open_subscribers(dep, room)
    bodies = batch_bodies(count, "b", a.text_bytes)
    cpu, client = dep.cpu(), own_cpu()
    with no_gc():
        t0_ns = now_ns()
        t0 = time.perf_counter()
        ids, errors, wrong = await post_batches(
            dep.ports, room, bodies, a.batch_concurrency, a.phase_timeout
        )
        window = time.perf_counter() - t0
    used = cpu_per_message(dep, cpu, client, len(ids))
    who = f"{dep.store} batches {room}"
    out["failures"] += [f"{who}: {w}" for w in wrong[:3]]
    if len(set(ids)) != len(ids):
        out["failures"].append(f"{who}: {len(ids) - len(set(ids))} ids answered twice")
    stream, last_ns = await check_streams(readers, ids, 20, who, out)
    return {
        "posted": len(ids),
        "errors": dict(errors),
        "per_s": rnd(len(ids) / window, 1),
        "delivered_per_s": rnd(len(ids) / ((last_ns - t0_ns) / 1e9), 1) if last_ns else None,
        "window_s": rnd(window),
        "stream": stream,
        "cpu": used,
    }


async def resume(
    dep: Deployment, room: str, a: argparse.Namespace, writer: int, out: dict[str, Any]
) -> dict[str, Any]:
    """--gap events through process `writer`, then a resume through the other one."""
    wport, rport = dep.ports[writer], dep.ports[1 - writer]
    who = f"{dep.store} resume {room}"
    http = Http(wport)
    try:
        body = dumps({"author": "bench", "text": "before the gap"})
        status, _, resp = await http.request("POST", f"/api/rooms/{room}/messages", body)
    finally:
        http.close()
    if status != 201:
        raise Failed(f"{who}: POST: {status} {resp[:200]!r}")
    after = loads(resp)["id"]
    bodies = batch_bodies(a.gap // BATCH, "g", a.text_bytes)
    t0 = time.perf_counter()
    ids, errors, wrong = await post_batches([wport], room, bodies, 2, a.phase_timeout)
    post_s = time.perf_counter() - t0
    ids.sort()
    if errors or wrong or len(set(ids)) != a.gap or ids[0] <= after:
        raise Failed(f"{who}: backlog {len(ids)} ids from {ids[:1]}, {dict(errors)} {wrong[:1]}")
    http = Http(rport)
    try:
        status, _, resp = await http.request("GET", f"/api/rooms/{room}")
    finally:
        http.close()
    latest = loads(resp).get("last_event_id") if status == 200 else None
    if latest != ids[-1]:
        raise Failed(f"{who}: the room's last_event_id {latest} != {ids[-1]}: the gap not exact")
    await asyncio.sleep(0.2)
    path = f"/api/rooms/{room}/events"
    cpu = dep.cpu()
    with no_gc():
        sub = await open_stream(rport, path, {"Last-Event-ID": str(after)})
        sub.expect(a.gap)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(sub.reached), 10)
    await asyncio.sleep(0.1)  # anything extra would arrive now
    cpu_after = dep.cpu()
    sub.close()
    p = parse(sub)
    c = check_sequence(p.persisted(), ids)
    others = p.others(b"message")
    wrong_seq = {k: v for k, v in c.items() if k != "received" and v}
    if wrong_seq or others or p.bad or sub.lost:
        out["failures"].append(f"{who}: {wrong_seq} others {others} bad {p.bad} closed {sub.lost}")
    t_last = p.time_of(ids[-1]) if c["lost"] == 0 else None
    return {
        "after": after,
        "backlog_post_s": rnd(post_s),
        "first_s": rnd((p.t_ns[0] - sub.sent_ns) / 1e9) if p.t_ns else None,
        "last_s": rnd((t_last - sub.sent_ns) / 1e9) if t_last else None,
        "stream": c,
        "others": others,
        "cpu_s": {k: rnd(cpu_after[k] - cpu[k]) for k in cpu},
    }


def py_spy() -> str | None:
    """The py-spy program on PATH or beside this Python, if installed."""
    beside = Path(sys.executable).with_name("py-spy")
    return shutil.which("py-spy") or (str(beside) if beside.exists() else None)


@contextlib.asynccontextmanager
async def profiled(dep: Deployment, name: str, a: argparse.Namespace) -> AsyncIterator[None]:
    """With --profile: py-spy samples both service processes while the body runs (collapsed
    stacks, one file per process: DIR/<store>-<scenario>-host<n>.txt)."""
    if not a.profile:
        yield
        return
    spy = py_spy()
    assert spy is not None, "main() checks for py-spy before the run"
    procs = []
    for n, live in enumerate(dep.servers):
        target = Path(a.profile) / f"{dep.store}-{name}-host{n}.txt"
        argv = ["record", "--format", "raw", "--rate", "250", "--threads", "-o", str(target)]
        quiet = asyncio.subprocess.DEVNULL
        procs.append(
            await asyncio.create_subprocess_exec(
                spy, *argv, "-p", str(live.pid), stdout=quiet, stderr=quiet
            )
        )
    await asyncio.sleep(1.0)  # attached
    try:
        yield
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)  # py-spy writes its file and exits
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()


async def scenario(
    name: str, dep: Deployment, rep: int, a: argparse.Namespace, out: dict[str, Any]
) -> dict[str, Any]:
    room = f"{name}-{rep}"
    if name == "singles":
        return await singles(dep, room, a, a.messages, out)
    if name == "batches":
        return await batches(dep, room, a, a.batches, out)
    return await resume(dep, room, a, rep % 2, out)  # written through each process in turn


async def measure(a: argparse.Namespace, deps: dict[str, Deployment], out: dict) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + a.timeout
    # warm-up, not measured: connections, pools, caches, the first rooms
    for store in STORES:
        dep = deps[store]
        await singles(dep, "warm-singles", a, 200, out)
        await batches(dep, "warm-batches", a, 4, out)
    reps: list[dict[str, dict[str, Any]]] = []
    out["reps"] = reps
    for rep in range(a.reps):
        if rep and loop.time() + 1.5 * (out["rep_s"]) > deadline:
            out["cut_by_timeout"] = f"{rep} of {a.reps} reps"
            break
        began = loop.time()
        order = STORES if rep % 2 == 0 else STORES[::-1]
        result: dict[str, dict[str, Any]] = {store: {} for store in STORES}
        for name in ("singles", "batches", "resume"):
            for store in order:
                gc.collect()
                result[store][name] = await scenario(name, deps[store], rep, a, out)
                await asyncio.sleep(0.3)  # let the store settle (checkpoints, autovacuum)
        reps.append(result)
        out["rep_s"] = rnd(loop.time() - began, 1)
        print(f"rep {rep + 1}/{a.reps}: {brief(result)}", file=sys.stderr, flush=True)
    if a.profile and loop.time() + 2 * out["rep_s"] < deadline:
        profiled_rep: dict[str, dict[str, Any]] = {store: {} for store in STORES}
        for name in ("singles", "batches", "resume"):
            for store in STORES:
                async with profiled(deps[store], name, a):
                    profiled_rep[store][name] = await scenario(name, deps[store], -1, a, out)
        out["profiled_rep"] = profiled_rep  # disturbed by the sampling: not in the table
        print(f"profiled rep: {brief(profiled_rep)}", file=sys.stderr, flush=True)


# --- the report ------------------------------------------------------------------------------


def brief(result: dict[str, dict[str, Any]]) -> str:
    parts = []
    for store in STORES:
        r = result[store]
        parts.append(
            f"{store} singles {r['singles']['per_s']:.0f}/s, batches {r['batches']['per_s']:.0f}"
            f"/s, resume {r['resume']['last_s']} s"
        )
    return "; ".join(parts)


def series(reps: list[dict], store: str, scenario: str, key: str) -> list[float]:
    values = []
    for rep in reps:
        v = rep[store][scenario]
        for part in key.split("."):
            v = v.get(part) if isinstance(v, dict) else None
        if v is not None:
            values.append(v)
    return values


def summarise(out: dict[str, Any]) -> None:
    reps = out.get("reps") or []
    rows: dict[str, dict[str, Any]] = {}
    for label, scenario, key in (
        ("single POSTs, messages/s", "singles", "per_s"),
        ("single POSTs, p50 ms", "singles", "p50_ms"),
        ("single POSTs, p99 ms", "singles", "p99_ms"),
        ("single POSTs, service CPU µs/msg (2 processes)", "singles", "cpu.service_us"),
        ("single POSTs, PostgreSQL server CPU µs/msg", "singles", "cpu.db_us"),
        ("batches of 500, messages/s committed", "batches", "per_s"),
        ("batches of 500, messages/s delivered to both streams", "batches", "delivered_per_s"),
        ("batches, service CPU µs/msg (2 processes)", "batches", "cpu.service_us"),
        ("batches, PostgreSQL server CPU µs/msg", "batches", "cpu.db_us"),
        ("resume of 10,000: s to the last event", "resume", "last_s"),
        ("resume of 10,000: s to the first event", "resume", "first_s"),
    ):
        row: dict[str, Any] = {}
        for store in STORES:
            values = series(reps, store, scenario, key)
            row[store] = {
                "median": rnd(statistics.median(values), 3) if values else None,
                "min": min(values, default=None),
                "max": max(values, default=None),
            }
        s, p = row["sqlite"]["median"], row["postgresql"]["median"]
        row["ratio"] = rnd(p / s, 2) if s and p else None
        ratios = [  # per rep: the two stores of one rep ran back to back
            b / a
            for a, b in zip(
                series(reps, "sqlite", scenario, key),
                series(reps, "postgresql", scenario, key),
                strict=False,
            )
            if a
        ]
        row["rep_ratios"] = [rnd(r, 2) for r in ratios]
        rows[label] = row
    out["summary"] = rows
    lost: dict[str, Counter[str]] = {store: Counter() for store in STORES}
    errors: dict[str, Counter[str]] = {store: Counter() for store in STORES}
    for rep in reps:
        for store in STORES:
            for scenario in ("singles", "batches", "resume"):
                r = rep[store][scenario]
                for k in ("lost", "duplicates", "out_of_order", "unexpected"):
                    lost[store][k] += r["stream"].get(k, 0)
                    lost[store][f"store_{k}"] += r.get("store", {}).get(k, 0)
                errors[store].update(r.get("errors", {}))
    out["correctness"] = {s: dict(lost[s]) for s in STORES}
    out["errors"] = {s: dict(errors[s]) for s in STORES}


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}" if abs(v) < 1 else f"{v:.1f}"


def table(out: dict[str, Any]) -> str:
    rows = out.get("summary", {})
    n = len(out.get("reps") or [])
    lines = [
        f"medians of {n} reps (min-max); PostgreSQL / SQLite: ratio of the medians "
        "(per-rep ratios)",
        "",
        "| scenario | SQLite | PostgreSQL | PG / SQLite | target |",
        "|---|---:|---:|---:|---|",
    ]
    targets = {
        "single POSTs, messages/s": "PG >= 0.7x SQLite",
        "batches of 500, messages/s committed": "PG >= 30,000/s",
        "resume of 10,000: s to the last event": "< 1 s",
    }
    for label, row in rows.items():
        cells = []
        for store in STORES:
            c = row[store]
            cells.append(f"{fmt(c['median'])} ({fmt(c['min'])}-{fmt(c['max'])})")
        ratios = ", ".join(f"{r:.2f}" for r in row["rep_ratios"])
        ratio = f"{row['ratio']:.2f} ({ratios})" if row["ratio"] is not None else "-"
        lines.append(f"| {label} | {cells[0]} | {cells[1]} | {ratio} | {targets.get(label, '')} |")
    for store in STORES:
        c, e = out["correctness"][store], out["errors"][store]
        stream = "/".join(str(c[k]) for k in ("lost", "duplicates", "out_of_order", "unexpected"))
        hist = "/".join(str(c[f"store_{k}"]) for k in ("lost", "duplicates", "unexpected"))
        lines.append(
            f"\n{store}: streams lost/dup/out of order/unexpected {stream}; store (history) "
            f"lost/dup/unexpected {hist}; failed requests {e or 0}"
        )
    sysload = out.get("system", {})
    lines.append(
        f"\nthe VM over the run: {sysload.get('busy_cores')} cores busy on average, "
        f"{sysload.get('other_cores')} of them not this run's processes (interrupts "
        f"{sysload.get('irq_cores')} of those); "
        f"steal {sysload.get('steal_pct')}%; load average {sysload.get('loadavg')}"
    )
    return "\n".join(lines)


# --- the run ---------------------------------------------------------------------------------


def proc_stat() -> tuple[float, float, float]:
    """(busy, steal, irq + softirq) CPU seconds of the whole machine so far (/proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = v[:8]
    busy = user + nice + system + irq + softirq
    return busy / CLK_TCK, steal / CLK_TCK, (irq + softirq) / CLK_TCK


def ours(cluster: Cluster) -> float:
    """CPU seconds of every process this run started, and its own."""
    pids = [live.pid for live in cluster.servers if live.proc is not None]
    pids += cluster.pg_pids()
    if cluster.redis is not None and cluster.redis.proc is not None:
        pids.append(cluster.redis.proc.pid)
    return sum(Server(pid).cpu_s() or 0.0 for pid in pids) + own_cpu()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--messages", type=int, default=3000, help="single POSTs per rep and store")
    ap.add_argument("--concurrency", type=int, default=16, help="publisher connections, (a)")
    ap.add_argument("--batches", type=int, default=40, help="batches of 500 per rep and store")
    ap.add_argument("--batch-concurrency", type=int, default=4, help="connections, (b)")
    ap.add_argument("--gap", type=int, default=10_000, help="missed events to resume, (c)")
    ap.add_argument("--text-bytes", type=int, default=64, help="length of each message's text")
    ap.add_argument("--pg-fsync", action="store_true", help="PostgreSQL with fsync = on")
    ap.add_argument("--timeout", type=float, default=300, help="limit for the whole run, s")
    ap.add_argument("--phase-timeout", type=float, default=60, help="limit for one phase, s")
    ap.add_argument(
        "--profile",
        metavar="DIR",
        help="one more rep, not counted, with py-spy on the service processes (stacks in DIR)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the temporary dir (logs, db)")
    a = ap.parse_args()
    if a.gap % BATCH:
        ap.error(f"--gap must be a multiple of {BATCH}")
    if a.profile:
        if py_spy() is None:
            ap.error("--profile needs py-spy (not a dependency): .venv/bin/pip install py-spy")
        Path(a.profile).mkdir(parents=True, exist_ok=True)
    t_begin = time.monotonic()
    out: dict[str, Any] = dict(
        bench="store_pg",
        date=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        args=vars(a),
        failures=[],
        rep_s=60.0,
    )
    tmp = Path(tempfile.mkdtemp(prefix="chat-store-pg-"))
    cluster = Cluster(tmp)

    def clean_up() -> None:
        cluster.kill()
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    install_backstop(out, int(a.timeout) + 30, clean_up)
    busy0 = steal0 = irq0 = ours0 = wall0 = 0.0
    with open("/proc/loadavg") as f:
        load_before = f.read().split()[:3]
    try:
        deps = cluster.start(a)
        busy0, steal0, irq0 = proc_stat()
        ours0, wall0 = ours(cluster), time.monotonic()
        (uvloop.run if uvloop else asyncio.run)(measure(a, deps, out))
    except (Exception, KeyboardInterrupt, SystemExit, asyncio.CancelledError) as e:
        gc.enable()
        out["error"] = f"{type(e).__name__}: {e}" if str(e) else f"interrupted: {type(e).__name__}"
    finally:
        if wall0:
            busy1, steal1, irq1 = proc_stat()
            span = time.monotonic() - wall0
            with open("/proc/loadavg") as f:
                load_after = f.read().split()[:3]
            out["system"] = {
                "cpus": os.cpu_count(),
                "busy_cores": rnd((busy1 - busy0) / span, 2),
                "other_cores": rnd((busy1 - busy0 - (ours(cluster) - ours0)) / span, 2),
                "irq_cores": rnd((irq1 - irq0) / span, 2),  # in other_cores, mostly loopback
                "steal_pct": rnd((steal1 - steal0) / span / (os.cpu_count() or 1) * 100, 1),
                "loadavg": f"{' '.join(load_before)} before, {' '.join(load_after)} after",
            }
        cluster.stop(out)
        if a.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    signal.alarm(0)
    out["elapsed_s"], out["timed_out"] = round(time.monotonic() - t_begin, 1), False
    if out.get("reps"):
        summarise(out)
        print(table(out), file=sys.stderr)
    if "error" in out:
        print(f"store_pg: ERROR {out['error']}", file=sys.stderr)
    for f in out["failures"]:
        print(f"store_pg: FAILED {f}", file=sys.stderr)
    for name, found in out.get("server_logs", {}).items():
        if found["problems"]:
            print(f"store_pg: {name} log: {found}", file=sys.stderr)
    if out.get("postgres_log"):
        print(f"store_pg: postgres log: {out['postgres_log']}", file=sys.stderr)
    print(json.dumps(out, default=str), flush=True)
    if out["failures"]:
        return 1
    return 3 if "error" in out else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
