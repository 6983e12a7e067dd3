"""What bench/batch.py, bench/resume.py and bench/slowreader.py share on top of support.py:
the run harness (arguments, the server under test started with extra CHAT_* settings, a
SIGALRM backstop, the JSON line, the exit status), a keep-alive HTTP/1.1 client, a cheap SSE
reader (a raw asyncio protocol that keeps every read as it came), the parsing of a captured
stream after the measured window, and the sequence checks.

Exit status of every script: 0 all checks passed (a missed performance target is reported, not
a failure), 1 a correctness check failed (lost, duplicated, out-of-order or unexpected events,
a `reset`, a bad answer), 2 a refused --url, 3 the run could not be made (server did not
start, a phase timed out, interrupted), 4 the SIGALRM backstop fired.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import gc
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from support import (
    Dechunker,
    Server,
    dumps,
    loads,
    log_problems,
    read_head,
    split_head,
    start_server,
    stop_server,
    uvloop,
)

now_ns = time.time_ns
MIB = 1 << 20

# --- the server under test -------------------------------------------------------------------


def start_server_env(tmp: str, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    """support.start_server, with `env` added to the environment the server inherits
    (start_server passes os.environ on); os.environ is restored afterwards."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return start_server(tmp)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class RssSampler:
    """The server's VmRSS (KiB) every `interval` seconds, as (time.monotonic(), kb) pairs."""

    def __init__(self, srv: Server, interval: float = 0.05) -> None:
        self.srv, self.interval = srv, interval
        self.samples: list[tuple[float, int]] = []
        self.task: asyncio.Task[None] | None = None

    def sample(self) -> int | None:
        kb = self.srv.rss_kb()
        if kb is not None:
            self.samples.append((time.monotonic(), kb))
        return kb

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def peak(self, since: float, until: float | None = None) -> int | None:
        kbs = [kb for t, kb in self.samples if t >= since and (until is None or t <= until)]
        return max(kbs) if kbs else None


def add_common_args(ap: argparse.ArgumentParser, timeout: float) -> None:
    ap.add_argument("--timeout", type=float, default=timeout, help="limit for the whole run, s")
    ap.add_argument("--url", help="measure this running server (http://127.0.0.1:PORT)")
    ap.add_argument("--server-pid", type=int, help="with --url: pid for RSS and CPU")
    ap.add_argument("--keep", action="store_true", help="keep the temporary dir (db, log)")


class Failed(Exception):
    """The run could not be made (not a correctness failure: those go to out['failures'])."""


Measure = Callable[[argparse.Namespace, int, Server, dict], Awaitable[None]]


def install_backstop(out: dict, after_s: int, clean_up: Callable[[], None]) -> None:
    """After ``after_s`` seconds (SIGALRM), print ``out`` as it is, marked timed out, clean up
    (servers, temporary folders) and exit 4, whatever the run is waiting for; SIGTERM ends the
    run through its ``finally`` blocks."""

    def backstop(*_: object) -> None:
        out.update(timed_out=True, error="SIGALRM backstop")
        print(json.dumps(out, default=str), flush=True)
        clean_up()
        os._exit(4)

    def on_term(*_: object) -> None:
        raise SystemExit(143)

    signal.signal(signal.SIGALRM, backstop)
    signal.signal(signal.SIGTERM, on_term)
    signal.alarm(after_s)


def run(
    name: str,
    a: argparse.Namespace,
    env: dict[str, str],
    measure: Measure,
    report: Callable[[dict], str],
) -> int:
    """Start the server (or take --url), run `measure` on an event loop (uvloop if present),
    stop the server, print the report (stderr) and the JSON line (stdout), return the exit
    status. `measure(a, port, srv, out)` fills `out` and appends correctness failures to
    out['failures']."""
    u = urlsplit(a.url or "")
    if a.url and (u.scheme != "http" or u.hostname not in ("127.0.0.1", "localhost") or not u.port):
        print(json.dumps({"bench": name, "error": f"refusing {a.url}: only http://127.0.0.1:PORT"}))
        return 2
    t_begin = time.monotonic()
    out: dict = dict(bench=name, date=time.strftime("%Y-%m-%dT%H:%M:%S%z"), failures=[])
    out["server_env"] = env if not a.url else f"not applied (--url): {env}"
    proc, tmp = None, None

    def clean_up() -> None:
        if proc is not None:
            stop_server(proc, grace=2.0)
        if tmp and not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    install_backstop(out, int(a.timeout) + 20, clean_up)
    try:
        if a.url:
            port, srv = u.port, Server(a.server_pid)
        else:
            tmp = tempfile.mkdtemp(prefix=f"chat-{name}-")
            proc, port = start_server_env(tmp, env)
            srv = Server(proc.pid)
            time.sleep(0.3)
        out.update(url=f"http://127.0.0.1:{port}", uvloop=uvloop is not None)
        coro = _guarded(measure(a, port, srv, out))
        (uvloop.run if uvloop else asyncio.run)(coro)
    except (Exception, KeyboardInterrupt, SystemExit, asyncio.CancelledError) as e:
        gc.enable()
        out["error"] = f"{type(e).__name__}: {e}" if str(e) else f"interrupted: {type(e).__name__}"
    finally:
        if proc is not None and tmp is not None:
            stop_server(proc)
            out["server_log"] = log_problems(os.path.join(tmp, "server.log"))
        if tmp and not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    signal.alarm(0)
    out["elapsed_s"], out["timed_out"] = round(time.monotonic() - t_begin, 2), False
    if "error" in out:
        print(f"{name}: ERROR {out['error']}", file=sys.stderr)
    else:
        print(report(out), file=sys.stderr)
    for f in out["failures"]:
        print(f"{name}: FAILED {f}", file=sys.stderr)
    if out.get("server_log", {}).get("problems"):
        print(f"{name}: server log: {out['server_log']}", file=sys.stderr)
    if a.keep and tmp:
        print(f"kept {tmp} (chat.db, server.log)", file=sys.stderr)
    print(json.dumps(out, default=str), flush=True)
    if out["failures"]:
        return 1
    return 3 if "error" in out else 0


async def _guarded(coro: Awaitable[None]) -> None:
    """SIGTERM cancels the measurement (the JSON line is still printed)."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    await coro


# --- HTTP/1.1 client -------------------------------------------------------------------------


class Http:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1:port, one request at a time; reopened
    after the server answers `Connection: close` (Hypercorn does after 1,000 requests). A
    request is never retried (a retried POST could be committed twice)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.connections = 0

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        wait_s: float = 10.0,
    ) -> tuple[int, dict[bytes, bytes], bytes]:
        async with asyncio.timeout(wait_s):
            if self.conn is None:
                self.conn = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 22)
                self.connections += 1
            reader, writer = self.conn
            head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            for k, v in (headers or {}).items():
                head += f"{k}: {v}\r\n"
            if body is not None:
                head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            writer.write(head.encode() + b"\r\n" + (body or b""))
            try:
                parsed = split_head(await reader.readuntil(b"\r\n\r\n"))
                assert parsed is not None
                status, hdrs, _ = parsed
                if b"chunked" in hdrs.get(b"transfer-encoding", b""):
                    dechunk, parts = Dechunker(), []
                    while not dechunk.done:
                        parts.append(dechunk.feed(await reader.read(65536) or b"0\r\n\r\n"))
                    data = b"".join(parts)
                else:
                    data = await reader.readexactly(int(hdrs.get(b"content-length", b"0")))
            except BaseException:
                self.close()
                raise
            if hdrs.get(b"connection") == b"close":
                self.close()
            return status, hdrs, data

    def close(self) -> None:
        if self.conn is not None:
            self.conn[1].close()
            self.conn = None


async def ensure_room(port: int, room: str) -> None:
    http = Http(port)
    try:
        status, _, body = await http.request("PUT", f"/api/rooms/{room}", dumps({"title": room}))
        if status not in (200, 201):
            raise Failed(f"PUT /api/rooms/{room}: {status} {body[:200]!r}")
    finally:
        http.close()


async def post_batch(http: Http, room: str, author: str, texts: list[str]) -> list[int]:
    """One ``POST .../messages/batch`` of these texts: its events' ids, checked to be
    consecutive (a batch commits as one run); Failed on any answer but 201."""
    body = dumps({"messages": [{"author": author, "text": text} for text in texts]})
    status, _, answer = await http.request(
        "POST", f"/api/rooms/{room}/messages/batch", body, wait_s=30
    )
    if status != 201:
        raise Failed(f"batch into {room}: {status} {answer[:200]!r}")
    ids = [e["id"] for e in loads(answer)["events"]]
    if ids != list(range(ids[0], ids[0] + len(texts))):
        raise Failed(f"batch ids not consecutive: {ids[:3]}...{ids[-3:]}")
    return ids


# --- SSE reader ------------------------------------------------------------------------------

DATA = b"\ndata: "  # one per frame (event JSON is one line); comments and retry: have none


class SseReader(asyncio.Protocol):
    """One SSE stream. Inside the measured window a read costs a recv, two list appends (the
    bytes and time.time_ns()) and a count of b'\\ndata: '; everything else happens after.

    `connected` resolves at the `: connected` comment; `reached` when `frames` >= `target`;
    `first` at the first frame. With pause=True the transport stops reading at `: connected`
    (the kernel buffers fill up, the server's writes stall) until resume() is called."""

    def __init__(self, pause: bool = False) -> None:
        loop = asyncio.get_running_loop()
        self.connected: asyncio.Future[None] = loop.create_future()
        self.reached: asyncio.Future[None] = loop.create_future()
        self.first: asyncio.Future[int] = loop.create_future()
        self.ended: asyncio.Future[None] = loop.create_future()
        self.pause, self.streaming, self.closing, self.lost = pause, False, False, False
        self.status, self.chunked, self.frames, self.target = 0, False, 0, 1 << 62
        self.pieces: list[bytes] = []
        self.times: list[int] = []
        self.tail = b""
        self.sent_ns = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.pieces.append(data)
        self.times.append(now_ns())
        if self.streaming:  # the hot path
            n = data.count(DATA)
            if self.tail:
                n += (self.tail + data[:6]).count(DATA)  # a marker split between reads
            self.tail = data[-6:] if len(data) >= 6 else (self.tail + data)[-6:]
            if n:
                self._count(n)
            return
        if not read_head(self):
            return
        if self.connected.done():
            return
        if self.status != 200:
            self.connected.set_exception(ConnectionError(f"status {self.status}"))
            return
        body = b"".join(self.pieces)
        if b": connected" in body:
            self.streaming = True
            self.tail = body[-6:]
            self.connected.set_result(None)
            if body.count(DATA):
                self._count(body.count(DATA))
            if self.pause and self.transport is not None:
                self.transport.pause_reading()

    def _count(self, n: int) -> None:
        self.frames += n
        if not self.first.done():
            self.first.set_result(self.times[-1])
        if self.frames >= self.target and not self.reached.done():
            self.reached.set_result(None)

    def expect(self, target: int) -> None:
        """A new target: `reached` resolves once `frames` >= `target`."""
        self.target = target
        if self.reached.done():
            self.reached = asyncio.get_running_loop().create_future()
        if self.frames >= target:
            self.reached.set_result(None)

    def resume(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = not self.closing  # the server ended the stream
        if not self.connected.done():
            self.connected.set_exception(ConnectionError(f"closed before ': connected': {exc}"))
        if not self.ended.done():
            self.ended.set_result(None)


async def open_stream(
    port: int,
    path: str,
    headers: dict[str, str] | None = None,
    *,
    pause: bool = False,
    rcvbuf: int | None = None,
    wait_s: float = 10.0,
) -> SseReader:
    """GET `path` as an SSE stream; returns once `: connected` arrived. `rcvbuf` sets
    SO_RCVBUF on the socket before it connects (the kernel doubles the value)."""
    loop = asyncio.get_running_loop()
    reader = SseReader(pause)
    head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n"
    for k, v in (headers or {}).items():
        head += f"{k}: {v}\r\n"
    try:
        async with asyncio.timeout(wait_s):
            if rcvbuf is None:
                await loop.create_connection(lambda: reader, "127.0.0.1", port)
            else:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
                sock.setblocking(False)
                try:
                    await loop.sock_connect(sock, ("127.0.0.1", port))
                except BaseException:
                    sock.close()
                    raise
                await loop.create_connection(lambda: reader, sock=sock)
            assert reader.transport is not None
            reader.sent_ns = now_ns()
            reader.transport.write(head.encode() + b"\r\n")
            await reader.connected
    except BaseException:
        reader.close()
        raise
    return reader


async def open_streams(port: int, path: str, n: int, wait_s: float = 15.0) -> list[SseReader]:
    sem = asyncio.Semaphore(32)

    async def one() -> SseReader:
        async with sem:
            return await open_stream(port, path, wait_s=wait_s)

    return list(await asyncio.gather(*(one() for _ in range(n))))


async def wait_frames(readers: Iterable[SseReader], deadline: float, idle_s: float = 5.0) -> bool:
    """Until every reader has its target, `deadline` (loop time) passes, or no reader got a
    frame for `idle_s`. True when every target was reached."""
    readers = list(readers)
    loop = asyncio.get_running_loop()
    seen, changed = -1, loop.time()
    while loop.time() < deadline:
        if all(r.reached.done() for r in readers):
            return True
        count = sum(r.frames for r in readers)
        if count != seen:
            seen, changed = count, loop.time()
        elif loop.time() - changed > idle_s:
            break
        await asyncio.sleep(0.01)
    return all(r.reached.done() for r in readers)


# --- after the window ------------------------------------------------------------------------

FRAME = re.compile(rb"^(?:id: (\d+)\n)?event: ([^\n]*)\ndata: ([^\n]*)\n\n", re.M)


@dataclass
class Parsed:
    """A captured stream: per frame its id (None when ephemeral), type, data and the time of
    the read that completed it (ns); `bad` counts data lines no frame pattern matched."""

    ids: list[int | None] = field(default_factory=list)
    types: list[bytes] = field(default_factory=list)
    data: list[bytes] = field(default_factory=list)
    t_ns: list[int] = field(default_factory=list)
    bad: int = 0

    def persisted(self) -> list[int]:
        return [i for i in self.ids if i is not None]

    def time_of(self, event_id: int) -> int | None:
        for i, t in zip(reversed(self.ids), reversed(self.t_ns), strict=True):
            if i == event_id:
                return t
        return None

    def others(self, wanted: bytes) -> dict[str, int]:
        """Frames whose type is not `wanted`, counted by type (a `reset` shows up here)."""
        c: dict[str, int] = {}
        for t in self.types:
            if t != wanted:
                c[t.decode(errors="replace")] = c.get(t.decode(errors="replace"), 0) + 1
        return c


def parse(reader: SseReader, check_json: bool = True) -> Parsed:
    """Dechunk and parse everything `reader` captured; its raw pieces are released."""
    dechunk, parts, ends, total = Dechunker(), [], [], 0
    for piece in reader.pieces:
        part = dechunk.feed(piece) if reader.chunked else piece
        parts.append(part)
        total += len(part)
        ends.append(total)
    text = b"".join(parts)
    times = reader.times
    reader.pieces, parts = [], []
    p = Parsed()
    for m in FRAME.finditer(text):
        raw_id, typ, data = m.groups()
        p.ids.append(int(raw_id) if raw_id is not None else None)
        p.types.append(typ)
        p.data.append(data)
        p.t_ns.append(times[min(bisect.bisect_left(ends, m.end()), len(times) - 1)])
    p.bad = text.count(DATA) - len(p.ids)  # data lines that are not in a well-formed frame
    if check_json:
        for i, d in zip(p.ids, p.data, strict=True):
            try:
                event = loads(d)
                if event.get("id") != i:
                    p.bad += 1
            except (ValueError, AttributeError):
                p.bad += 1
    return p


def check_sequence(got: list[int], expected: list[int]) -> dict[str, int]:
    """How `got` (ids as received) differs from `expected` (ascending): ids missing, ids
    received twice, ids not larger than the one before, ids that were not expected."""
    want, have = set(expected), set(got)
    return dict(
        received=len(got),
        lost=len(want - have),
        duplicates=len(got) - len(have),
        out_of_order=sum(b <= a for a, b in itertools.pairwise(got)),
        unexpected=len(have - want),
    )


def add_check(out: dict, who: str, c: dict[str, int], bad: int = 0) -> None:
    """Record a correctness failure when `c` (from check_sequence) or `bad` shows one."""
    wrong = {k: v for k, v in c.items() if k != "received" and v}
    if bad:
        wrong["bad_frames"] = bad
    if wrong:
        out["failures"].append(f"{who}: {wrong} (received {c['received']})")


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def rnd(x: float | None, n: int = 3) -> float | None:
    return None if x is None else round(x, n)


def mib(kb: int | None) -> float | None:
    return None if kb is None else round(kb / 1024, 1)


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """The collector off inside a measured window (no pauses on the benchmark's side)."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def read_metrics(port: int, names: Iterable[str]) -> dict[str, float]:
    """The given series of GET /metrics (Prometheus text), by full name; missing ones left out."""
    http = Http(port)
    try:
        status, _, body = await http.request("GET", "/metrics", wait_s=10)
    finally:
        http.close()
    wanted, got = set(names), {}
    if status == 200:
        for line in body.decode(errors="replace").splitlines():
            name, _, value = line.partition(" ")
            if name in wanted:
                got[name] = float(value)
    return got


def rss_parts(srv: Server) -> dict[str, float]:
    """The server's RssAnon / RssFile / RssShmem in MiB (heap, mapped files, shared memory
    such as SQLite's WAL index), summed over its processes."""
    parts = dict.fromkeys(("RssAnon", "RssFile", "RssShmem"), 0)
    for pid in srv.pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
            for line in f:
                key = line.split(":", 1)[0]
                if key in parts:
                    parts[key] += int(line.split()[1])
    return {k: round(v / 1024, 1) for k, v in parts.items()}
