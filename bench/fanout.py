"""Fan-out benchmark: S subscribers on one room, M messages published as fast as accepted.

    .venv/bin/python bench/fanout.py                  # starts the service itself, defaults
    .venv/bin/python bench/fanout.py -S 200           # a quicker point
    .venv/bin/python bench/fanout.py --url http://127.0.0.1:8000 --server-pid PID
    CHAT_MAX_STREAMS=20500 .venv/bin/python bench/fanout.py --http2 -S 20000 -M 10  # over HTTP/2

Prints one JSON line on stdout and a short summary on stderr (fields: bench/README.md).
Talks to 127.0.0.1 only; every phase is bounded by --timeout, with a SIGALRM backstop.
Inside the measured window a subscriber read costs one recv and two list appends (the raw
bytes and time.time_ns()); chunked encoding, SSE and JSON are parsed after the window. Over
HTTP/2 (--http2) h2's parsing of the frames runs inside it too.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from urllib.parse import urlsplit

try:  # the HTTP/2 client of --http2 (the h2 package: Hypercorn's own dependency)
    import h2.config
    import h2.connection
    import h2.settings
    from h2.events import (
        ConnectionTerminated,
        DataReceived,
        ResponseReceived,
        StreamEnded,
        StreamReset,
    )
except ImportError:
    h2 = None  # type: ignore[assignment]

from support import (
    Dechunker,
    Server,
    client_tls,
    dumps,
    loads,
    log_problems,
    own_cpu,
    read_head,
    split_head,
    start_server,
    stop_server,
    uvloop,
)

DRAIN_IDLE_S = 3.0  # after the last publish, stop once no frame arrived for this long
now_ns = time.time_ns


class Subscriber(asyncio.Protocol):
    """One SSE stream: connected at the ': connected' comment, then every read is kept raw."""

    def __init__(self, ready: asyncio.Future[None]) -> None:
        self.ready, self.streaming, self.closing, self.lost = ready, False, False, False
        self.status, self.chunked, self.frames = 0, False, 0
        self.pieces: list[bytes] = []
        self.times: list[int] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.pieces.append(data)
        self.times.append(now_ns())
        if self.streaming:  # the hot path: a frame count is all that is looked at
            self.frames += data.count(b"data:")
            return
        if not read_head(self):
            return
        if self.ready.done():
            return
        if self.status != 200:
            self.ready.set_exception(ConnectionError(f"status {self.status}"))
        elif b": connected" in b"".join(self.pieces):
            self.streaming = True
            self.ready.set_result(None)

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = not self.closing  # the server ended the stream
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed before ': connected': {exc}"))


class H2Stream:
    """One SSE stream of an `H2Connection`, with the fields `analyse()` reads of a
    `Subscriber` (an HTTP/2 DATA frame's payload is the body itself: nothing is chunked)."""

    chunked = False

    def __init__(self, conn: H2Connection, ready: asyncio.Future[None]) -> None:
        self.conn, self.ready, self.streaming, self.lost, self.status = conn, ready, False, False, 0
        self.frames = 0
        self.pieces: list[bytes] = []
        self.times: list[int] = []

    def data(self, data: bytes, t: int) -> None:
        self.pieces.append(data)
        self.times.append(t)
        if self.streaming:
            self.frames += data.count(b"data:")
        elif b": connected" in b"".join(self.pieces) and not self.ready.done():
            self.streaming = True
            self.ready.set_result(None)

    def ended(self, why: str) -> None:
        """The stream is over: ``lost`` when the server ended it (kept once set: the close at
        the end of the run ends every stream again)."""
        self.lost = self.lost or not self.conn.closing
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"{why} before ': connected'"))

    def close(self) -> None:
        self.conn.close()


class H2Connection(asyncio.Protocol):
    """One TLS connection speaking HTTP/2 (the `h2` package, which Hypercorn brings) that
    opens `n` streams on `path` at once, as a browser's page multiplexes its EventSources.
    Its flow-control windows are opened to 2^31-1 at the start and topped up after each GiB
    received: no WINDOW_UPDATE per frame."""

    def __init__(self, path: str, n: int) -> None:
        assert h2 is not None  # main() refuses --http2 without it
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.path, self.closing, self.transport = path, False, None
        self.alpn: str | None = None
        self.unacknowledged = 0  # bytes received since the connection's window was topped up
        loop = asyncio.get_running_loop()
        self.streams = [H2Stream(self, loop.create_future()) for _ in range(n)]
        self.by_id: dict[int, H2Stream] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert h2 is not None
        self.transport = transport  # type: ignore[assignment]
        self.alpn = transport.get_extra_info("ssl_object").selected_alpn_protocol()
        if self.alpn != "h2":
            self.close()
            for st in self.streams:
                st.ended(f"the server chose {self.alpn!r}, not h2")
            return
        h2c, codes, wide = self.h2, h2.settings.SettingCodes, 2**31 - 1
        h2c.local_settings = h2.settings.Settings(  # before the preface sends them
            client=True,
            initial_values={
                codes.INITIAL_WINDOW_SIZE: wide,
                codes.ENABLE_PUSH: 0,
                codes.MAX_CONCURRENT_STREAMS: 100,
            },
        )
        h2c.initiate_connection()
        h2c.increment_flow_control_window(wide - 65535)
        for st in self.streams:
            sid = h2c.get_next_available_stream_id()
            self.by_id[sid] = st
            headers = [(":method", "GET"), (":scheme", "https"), (":authority", "127.0.0.1"),
                       (":path", self.path), ("accept", "text/event-stream")]  # fmt: skip
            h2c.send_headers(sid, headers, end_stream=True)
        transport.write(h2c.data_to_send())  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        t = now_ns()
        for e in self.h2.receive_data(data):
            st = self.by_id.get(getattr(e, "stream_id", 0) or 0)
            if type(e) is DataReceived and st is not None:
                st.data(e.data, t)
                self.unacknowledged += e.flow_controlled_length
            elif type(e) is ResponseReceived and st is not None:
                st.status = int(dict(e.headers)[b":status"])
                if st.status != 200:
                    st.ended(f"status {st.status}")
            elif type(e) in (StreamEnded, StreamReset) and st is not None:
                st.ended(type(e).__name__)
            elif type(e) is ConnectionTerminated:  # GOAWAY: the server ends them all
                for each in self.streams:
                    each.ended("GOAWAY")
        if self.unacknowledged > 2**30:
            self.h2.increment_flow_control_window(self.unacknowledged)
            self.unacknowledged = 0
        out = self.h2.data_to_send()
        if out and self.transport is not None:
            self.transport.write(out)

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        for st in self.streams:
            st.ended(f"connection lost: {exc}")


async def subscribe_h2(a: argparse.Namespace, port: int, room: str, out: dict) -> list[H2Stream]:
    """S streams over HTTP/2, `--h2-streams` on each connection (Hypercorn's limit: 100).
    A stream that did not get ': connected' in the connect phase is one connect error."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(a.timeout * 0.4, 60.0)
    sizes = [a.h2_streams] * (a.subscribers // a.h2_streams)
    sizes += [a.subscribers % a.h2_streams] if a.subscribers % a.h2_streams else []
    sem, subs, errors, h2_connections = asyncio.Semaphore(16), [], [], []

    async def one(n: int) -> None:
        async with sem:
            conn = H2Connection(f"/api/rooms/{room}/events", n)
            try:
                async with asyncio.timeout_at(deadline):
                    await loop.create_connection(
                        lambda: conn, "127.0.0.1", port, ssl=client_tls("h2")
                    )
                    await asyncio.wait([st.ready for st in conn.streams])
            except (OSError, TimeoutError) as e:
                failed = f"{type(e).__name__}: {e}"[:160]
            else:
                failed = "not connected"
            connected = 0
            for st in conn.streams:
                if st.ready.done() and not st.ready.cancelled() and st.ready.exception() is None:
                    subs.append(st)
                    connected += 1
                else:
                    exc = st.ready.exception() if st.ready.done() else None
                    errors.append(f"{type(exc).__name__}: {exc}"[:160] if exc else failed)
            if connected:  # a connection that carries streams (ALPN chose h2)
                h2_connections.append(conn)

    t = time.monotonic()
    await asyncio.gather(*(one(n) for n in sizes))
    out.update(connected=len(subs), connect_errors=len(errors), connect_error_samples=errors[:3])
    out.update(connect_s=round(time.monotonic() - t, 3), h2_connections=len(h2_connections))
    return subs


async def subscribe(a: argparse.Namespace, port: int, room: str, out: dict) -> list[Subscriber]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(a.timeout * 0.4, 30.0)
    request = (
        f"GET /api/rooms/{room}/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Accept: text/event-stream\r\n\r\n"
    ).encode()
    sem, subs, errors = asyncio.Semaphore(64), [], []

    async def one() -> None:
        async with sem:
            sub = Subscriber(loop.create_future())
            try:
                async with asyncio.timeout_at(deadline):
                    await loop.create_connection(lambda: sub, "127.0.0.1", port)
                    sub.transport.write(request)  # type: ignore[union-attr]
                    await sub.ready
                subs.append(sub)
            except (OSError, TimeoutError) as e:
                errors.append(f"{type(e).__name__}: {e}"[:160])
                sub.close()

    t = time.monotonic()
    await asyncio.gather(*(one() for _ in range(a.subscribers)))
    out.update(connected=len(subs), connect_errors=len(errors), connect_error_samples=errors[:3])
    out["connect_s"] = round(time.monotonic() - t, 3)
    return subs


async def publish(a: argparse.Namespace, port: int, room: str, deadline: float, out: dict):
    """M POSTs over C keep-alive connections, as fast as they are answered; the 201's ids.
    No POST starts after `deadline`; one in flight then gets 5 s more for its answer."""
    loop = asyncio.get_running_loop()
    head = (
        f"POST /api/rooms/{room}/messages HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    ).encode()
    pad = "x" * max(0, a.text_bytes - 20)  # the text: 19 digits of time.time_ns(), a space, pad
    ids: list[int] = []
    errors: list[str] = []
    count = {"next": 0, "retries": 0, "connections": 0}

    async def post(w: int, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> bool:
        """One POST; False when the server closes the connection after answering it."""
        body = dumps({"author": f"bench-{w}", "text": f"{now_ns()} {pad}"})
        conn[1].write(head % len(body) + body)
        async with asyncio.timeout_at(deadline + 5):
            status, headers, _ = split_head(await conn[0].readuntil(b"\r\n\r\n"))  # type: ignore[misc]
            resp = await conn[0].readexactly(int(headers.get(b"content-length", b"0")))
        if status == 201:
            ids.append(loads(resp)["id"])
        else:
            errors.append(f"status {status}: {resp[:120]!r}")
        return headers.get(b"connection") != b"close"  # Hypercorn: after 1000 requests

    async def worker(w: int) -> None:
        conn = None
        while count["next"] < a.messages and loop.time() < deadline:
            count["next"] += 1
            for attempt in (0, 1):  # a keep-alive connection found closed: retry once
                try:
                    if conn is None:
                        tls = client_tls() if a.http2 else None
                        conn = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
                        count["connections"] += 1
                    if not await post(w, conn):
                        conn[1].close()
                        conn = None
                    break
                except TimeoutError:  # before OSError, its base class
                    errors.append("publish timeout")
                    return
                except (OSError, asyncio.IncompleteReadError) as e:
                    conn = None
                    count["retries"] += attempt == 0
                    if attempt:
                        errors.append(f"{type(e).__name__}: {e}"[:160])
        if conn is not None:
            conn[1].close()

    t0 = time.time()
    await asyncio.gather(*(worker(w) for w in range(a.concurrency)))
    t1 = time.time()
    out.update(published=len(ids), publish_errors=len(errors), publish_error_samples=errors[:3])
    out.update(publish_retries=count["retries"], publish_connections=count["connections"])
    out.update(publish_s=round(t1 - t0, 3), publish_cut_by_timeout=loop.time() >= deadline)
    out["publishes_per_s"] = round(len(ids) / max(t1 - t0, 1e-9), 1)
    return ids, t0


async def measure(a: argparse.Namespace, port: int, srv: Server, out: dict, left: float):
    """Connect, publish, drain. Returns the subscribers, the published ids, the window's
    start, and samples of (server RSS KiB, server CPU s, own CPU s) at each step."""
    loop = asyncio.get_running_loop()
    hard = loop.time() + left
    loop.add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)  # type: ignore[union-attr]
    room = f"fanout-{random.getrandbits(32):08x}"
    marks = {"before": (srv.rss_kb(), srv.cpu_s(), own_cpu())}

    async def sample_rss() -> None:  # for the peak
        while True:
            srv.rss_kb()
            await asyncio.sleep(0.2)

    sampler = asyncio.create_task(sample_rss())
    subs = await (subscribe_h2 if a.http2 else subscribe)(a, port, room, out)
    if not subs:
        raise RuntimeError(f"no subscriber connected: {out['connect_error_samples']}")
    await asyncio.sleep(0.3)  # let the server settle after the last accept
    srv.refresh()
    out["server_fds_connected"] = srv.fds()
    marks["connected"] = (srv.rss_kb(), srv.cpu_s(), own_cpu())
    gc.disable()  # no collector pauses inside the window
    ids, t0 = await publish(a, port, room, hard - 15, out)
    out["expected_deliveries"] = expected = len(ids) * len(subs)
    seen, changed = -1, loop.time()
    while loop.time() < hard - 5:
        count = sum(s.frames for s in subs)
        if count >= expected:
            break
        if count != seen:
            seen, changed = count, loop.time()
        elif loop.time() - changed > DRAIN_IDLE_S:
            break
        await asyncio.sleep(0.02)
    marks["end"] = (srv.rss_kb(), srv.cpu_s(), own_cpu())
    sampler.cancel()
    for s in subs:
        s.close()
    gc.enable()
    return subs, ids, t0, marks


def analyse(subs: list[Subscriber], ids: list[int], t0: float) -> dict:
    """Parse every captured stream after the window: counts, and latency per delivery."""
    want = set(ids)
    c = dict(received=0, lost=0, duplicates=0, out_of_order=0, unexpected=0, bad_frames=0)
    c.update(mismatched_ids=0, other_events=0, disconnects=sum(s.lost for s in subs))
    c["rx_reads"] = sum(len(s.times) for s in subs)  # frames per read: how much coalesced
    lat: list[int] = []
    last_ns = 0
    for s in subs:
        dechunk, text, got = Dechunker(), b"", []
        for piece, t in zip(s.pieces, s.times, strict=True):
            text += dechunk.feed(piece) if s.chunked else piece
            *blocks, text = text.split(b"\n\n")
            for block in blocks:  # each completed by the read at time t
                fields = dict(ln.split(b": ", 1) for ln in block.split(b"\n") if b": " in ln)
                if b"data" not in fields:
                    continue  # comments, retry:
                if fields.get(b"event") != b"message":
                    c["other_events"] += 1
                    continue
                try:
                    event = loads(fields[b"data"])
                    ts = int(event["text"].split(" ", 1)[0])
                except (ValueError, KeyError, TypeError, AttributeError):
                    c["bad_frames"] += 1
                    continue
                c["mismatched_ids"] += fields.get(b"id") != str(event["id"]).encode()
                got.append(event["id"])
                lat.append(t - ts)
                last_ns = max(last_ns, t)
        unique = set(got)
        c["received"] += len(got)
        c["duplicates"] += len(got) - len(unique)
        c["out_of_order"] += sum(b <= a for a, b in itertools.pairwise(got))
        c["lost"] += len(want - unique)
        c["unexpected"] += len(unique - want)
        s.pieces, s.times = [], []
    window = max(last_ns / 1e9 - t0, 1e-9) if last_ns else None
    c["delivery_window_s"] = round(window, 3) if window else None
    c["deliveries_per_s"] = round(c["received"] / window, 1) if window else 0.0
    lat.sort()

    def pct(q: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(q * len(lat)))] / 1e6, 2) if lat else None

    c["latency_ms"] = dict(p50=pct(0.5), p90=pct(0.9), p99=pct(0.99), max=pct(1.0))
    return c


def summary(o: dict) -> str:
    lat, srv = o["latency_ms"], o.get("server") or {"cpu_util": None, "rss_peak_kb": 0}
    return (
        f"{o['connected']} subscribers, {o['published']} messages at {o['publishes_per_s']}/s ->"
        f" {o['received']}/{o['expected_deliveries']} deliveries at {o['deliveries_per_s']:,.0f}/s;"
        f" lost {o['lost']}, duplicates {o['duplicates']}, out of order {o['out_of_order']},"
        f" disconnects {o['disconnects']}; latency ms p50 {lat['p50']} p99 {lat['p99']} max"
        f" {lat['max']}; server CPU util {srv['cpu_util']}, RSS peak {srv['rss_peak_kb'] >> 10}"
        f" MiB; bench CPU util {o['bench']['cpu_util']}; server log {o.get('server_log', '-')}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-S", "--subscribers", type=int, default=1000)
    ap.add_argument("-M", "--messages", type=int, default=1000)
    ap.add_argument("-C", "--concurrency", type=int, default=8, help="publisher connections")
    ap.add_argument("--text-bytes", type=int, default=64, help="length of each message's text")
    ap.add_argument("--timeout", type=float, default=120.0, help="limit for the whole run, s")
    ap.add_argument("--url", help="measure this running server (http://127.0.0.1:PORT)")
    ap.add_argument("--server-pid", type=int, help="with --url: pid for RSS and CPU")
    ap.add_argument("--keep", action="store_true", help="keep the temporary dir (db, log)")
    ap.add_argument(
        "--http2",
        action="store_true",
        help="serve TLS and subscribe over HTTP/2, --h2-streams streams a connection",
    )
    ap.add_argument("--h2-streams", type=int, default=100, help="with --http2: streams each")
    a = ap.parse_args()
    if a.http2 and h2 is None:
        print(json.dumps({"error": "--http2 needs the h2 package (pip install h2)"}))
        return 2
    u = urlsplit(a.url or "")
    scheme = "https" if a.http2 else "http"
    if a.url and (u.scheme != scheme or u.hostname not in ("127.0.0.1", "localhost") or not u.port):
        print(json.dumps({"error": f"refusing {a.url}: only {scheme}://127.0.0.1:PORT"}))
        return 2
    t_begin = time.monotonic()
    out: dict = dict(date=time.strftime("%Y-%m-%dT%H:%M:%S%z"), subscribers=a.subscribers)
    out.update(messages=a.messages, concurrency=a.concurrency, text_bytes=a.text_bytes)
    proc, tmp = None, None

    def backstop(*_: object) -> None:
        print(json.dumps({**out, "timed_out": True, "error": "SIGALRM backstop"}), flush=True)
        if proc is not None:
            stop_server(proc, grace=2.0)
        if tmp and not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        os._exit(4)

    signal.signal(signal.SIGALRM, backstop)

    def on_term(*_: object) -> None:  # inside the event loop measure() cancels itself instead
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, on_term)
    signal.alarm(int(a.timeout) + 20)  # analyse() runs after the phases --timeout bounds
    try:
        if a.url:
            port, srv = u.port, Server(a.server_pid)
        else:
            tmp = tempfile.mkdtemp(prefix="chat-fanout-")
            proc, port = start_server(tmp, tls=a.http2)
            srv = Server(proc.pid)
            time.sleep(0.5)
        out.update(url=f"{scheme}://127.0.0.1:{port}", uvloop=uvloop is not None, http2=a.http2)
        left = a.timeout - (time.monotonic() - t_begin)
        subs, ids, t0, marks = (uvloop.run if uvloop else asyncio.run)(
            measure(a, port, srv, out, left)
        )
        signal.signal(signal.SIGTERM, on_term)  # the loop's handler is gone with the loop
        out.update(analyse(subs, ids, t0))
        window = out["delivery_window_s"] or max(out["publish_s"], 1e-3)
        (rss0, cpu0, _), (rss1, cpu1, own1), (rss2, cpu2, own2) = marks.values()
        if srv.pid:
            n = out["connected"] or 1
            out["server"] = dict(pid=srv.pid, rss_before_kb=rss0, rss_connected_kb=rss1)
            out["server"].update(rss_per_conn_kb=round((rss1 - rss0) / n, 2), rss_end_kb=rss2)
            out["server"].update(rss_peak_kb=srv.peak, cpu_connect_s=round(cpu1 - cpu0, 2))
            out["server"].update(cpu_run_s=round(cpu2 - cpu1, 2))
            out["server"]["cpu_util"] = round((cpu2 - cpu1) / window, 3)
        out["bench"] = dict(cpu_s=round(own2 - own1, 2), cpu_util=round((own2 - own1) / window, 3))
    except (Exception, KeyboardInterrupt, SystemExit, asyncio.CancelledError) as e:
        out["error"] = f"{type(e).__name__}: {e}" if str(e) else f"interrupted: {type(e).__name__}"
    finally:
        if proc is not None and tmp is not None:
            stop_server(proc)
            out["server_log"] = log_problems(os.path.join(tmp, "server.log"))
        if tmp and not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    signal.alarm(0)
    out["elapsed_s"], out["timed_out"] = round(time.monotonic() - t_begin, 2), False
    print(json.dumps(out), flush=True)
    print(out["error"] if "error" in out else summary(out), file=sys.stderr)
    if a.keep and tmp:
        print(f"kept {tmp} (chat.db, server.log)", file=sys.stderr)
    return 1 if "error" in out else 0


if __name__ == "__main__":
    sys.exit(main())
