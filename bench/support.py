"""What bench/fanout.py needs besides the measurement itself: the server under test as a
process (start it pinned, over HTTP or HTTPS, read its memory and CPU from /proc, stop it) and
HTTP/1.1 response parsing (head, chunked body)."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from typing import Any

# orjson and uvloop make the benchmarks' own side cheaper; the standard library will do.
try:
    import orjson

    loads, dumps = orjson.loads, orjson.dumps
except ImportError:  # the standard library's json when orjson is missing
    loads = json.loads

    def dumps(obj: object) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()


try:
    import uvloop
except ImportError:
    uvloop = None

CLK_TCK = os.sysconf("SC_CLK_TCK")
PROBLEM = re.compile(rb"ERROR|WARNING|CRITICAL|Traceback|Exception")


class Server:
    """VmRSS and CPU of a pid and its descendants, read from /proc (nothing when pid is None)."""

    def __init__(self, pid: int | None) -> None:
        self.pid, self.pids, self.peak = pid, [pid] if pid else [], 0
        self.refresh()

    def refresh(self) -> None:
        """Find the descendants again (a Hypercorn worker, for instance)."""
        if not self.pid:
            return
        kids: dict[int, list[int]] = {}
        for d in filter(str.isdigit, os.listdir("/proc")):
            with contextlib.suppress(OSError), open(f"/proc/{d}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(d))
        self.pids, todo = [], [self.pid]
        while todo:
            self.pids.append(todo.pop())
            todo.extend(kids.get(self.pids[-1], []))

    def rss_kb(self) -> int | None:
        if not self.pid:
            return None
        total = 0
        for p in self.pids:
            with contextlib.suppress(OSError), open(f"/proc/{p}/status", "rb") as f:
                total += next((int(ln.split()[1]) for ln in f if ln.startswith(b"VmRSS:")), 0)
        self.peak = max(self.peak, total)
        return total

    def fds(self) -> int | None:
        """Files the pid and its descendants have open (/proc/PID/fd)."""
        if not self.pid:
            return None
        total = 0
        for p in self.pids:
            with contextlib.suppress(OSError):
                total += len(os.listdir(f"/proc/{p}/fd"))
        return total

    def cpu_s(self) -> float | None:
        if not self.pid:
            return None
        ticks = 0
        for p in self.pids:
            with contextlib.suppress(OSError), open(f"/proc/{p}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
                ticks += int(fields[11]) + int(fields[12])  # utime + stime
        return ticks / CLK_TCK


LIMITS_OFF = {
    "CHAT_WRITE_RATE_PER_S": "0",
    "CHAT_SIGNIN_RATE_PER_MIN": "0",
    "CHAT_MAX_STREAMS_PER_CLIENT": "0",
}


def start_server(
    tmp: str, *, pin: bool = True, wait_s: float = 20.0, tls: bool = False
) -> tuple[subprocess.Popen[bytes], int]:
    """`python -m chat serve` on a free port with its own database in `tmp` (one there is
    opened as it is), log appended to `tmp/server.log`; it returns once /healthz answers
    (polled every 5 ms: the wait is a start-up time's measure too). With ``pin``, taskset and
    two or more cores the server gets the first core and this process the second. With
    ``tls`` it serves HTTPS (HTTP/2 by ALPN) with a self-signed certificate made in `tmp`;
    `client_tls()` is what a client connects with.

    The port is one the kernel found free (``bind(0)``), from its ephemeral range, where
    another process's outgoing connection may take it before the server binds it (as the
    test suite, running benchmarks beside other tests, can see): a server that exits at
    start because the address is in use is started again on another port, twice at most."""
    for attempt in range(3):
        try:
            return _start_server(tmp, pin=pin, wait_s=wait_s, tls=tls)
        except AddressInUse:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


class AddressInUse(RuntimeError):
    """The server could not listen on the port it was given."""


def _start_server(
    tmp: str, *, pin: bool, wait_s: float, tls: bool
) -> tuple[subprocess.Popen[bytes], int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "chat", "serve", "--host", "127.0.0.1", "--port", str(port)]
    if tls:
        certfile, keyfile = make_cert(tmp)
        cmd += ["--certfile", certfile, "--keyfile", keyfile]
    cpus = sorted(os.sched_getaffinity(0))
    if pin and shutil.which("taskset") and len(cpus) >= 2:
        cmd = ["taskset", "-c", str(cpus[0]), *cmd]  # taskset execs: the pid is the server's
        os.sched_setaffinity(0, {cpus[1]})
    # A benchmark is one client on loopback: the per-client limits (ACCESS.md) are off by
    # their settings, as an operator turns them off for a load test, unless the caller's
    # environment sets them (bench/abuse.py turns them on).
    env = {**LIMITS_OFF, **os.environ, "CHAT_DATABASE": os.path.join(tmp, "chat.db")}
    log_path = os.path.join(tmp, "server.log")
    logged = os.path.getsize(log_path) if os.path.exists(log_path) else 0
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd, cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True,
        )  # fmt: skip
    began = time.monotonic()
    while time.monotonic() - began < wait_s:
        if proc.poll() is not None:
            with open(log_path, "rb") as f:
                f.seek(logged)
                if b"Address already in use" in f.read():
                    raise AddressInUse(f"port {port} was taken before the server bound it")
            raise RuntimeError(f"server exited with {proc.returncode}, see {tmp}/server.log")
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), 1) as raw,
            client_tls().wrap_socket(raw) if tls else raw as c,
        ):
            c.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            if c.recv(4096).startswith(b"HTTP/1.1 200"):
                return proc, port
        time.sleep(0.005)
    stop_server(proc)
    raise RuntimeError(f"server did not answer /healthz within {wait_s:.0f} s")


def make_cert(folder: str) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 and its key, written to `folder` by the
    ``openssl`` command (Debian's ``openssl`` package): (certfile, keyfile)."""
    certfile, keyfile = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    if not os.path.exists(certfile):
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext",
             "subjectAltName=IP:127.0.0.1", "-keyout", keyfile, "-out", certfile],
            check=True, capture_output=True,
        )  # fmt: skip
    return certfile, keyfile


@functools.cache
def client_tls(alpn: str = "http/1.1") -> ssl.SSLContext:
    """A client's TLS context for the benchmark's own server on loopback, offering `alpn`
    ("h2" or "http/1.1"), one for each (made once: ``create_default_context`` loads the
    system's certificates, tens of milliseconds). It does not verify the server's
    certificate: the benchmark made it itself, and what is measured is the service."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.set_alpn_protocols([alpn])
    return ctx


def stop_server(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM to the server's own session, SIGKILL after `grace` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)
            break
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # anything the server left in its session


def log_problems(path: str) -> dict[str, object]:
    """Lines of the server's log that say something went wrong (errors, warnings, tracebacks)."""
    with open(path, "rb") as f:
        bad = [ln.decode(errors="replace").rstrip() for ln in f if PROBLEM.search(ln)]
    return dict(problems=len(bad), samples=bad[:5])


def own_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def split_head(buf: bytes) -> tuple[int, dict[bytes, bytes], bytes] | None:
    """(status, lower-cased headers, what follows) once an HTTP response head is complete."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = buf[:end].split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        headers[k.strip().lower()] = v.strip().lower()
    return int(lines[0].split()[1]), headers, buf[end + 4 :]


class Dechunker:
    """Incremental decoder of an HTTP/1.1 chunked body."""

    def __init__(self) -> None:
        self.buf, self.left, self.skip, self.done = b"", 0, 0, False

    def feed(self, data: bytes) -> bytes:
        buf, pos, out = self.buf + data, 0, []
        while pos < len(buf) and not self.done:
            if self.left:  # inside a chunk's data
                take = min(self.left, len(buf) - pos)
                out.append(buf[pos : pos + take])
                pos, self.left = pos + take, self.left - take
            elif self.skip:  # the CRLF after a chunk's data
                take = min(self.skip, len(buf) - pos)
                pos, self.skip = pos + take, self.skip - take
            else:  # a chunk-size line
                nl = buf.find(b"\r\n", pos)
                if nl < 0:
                    break
                size = int(buf[pos:nl].split(b";")[0], 16)
                pos, self.left, self.skip, self.done = nl + 2, size, 2, size == 0
        self.buf = buf[pos:]
        return b"".join(out)


def read_head(sub: Any) -> bool:
    """For a raw SSE subscriber protocol (``status``, ``chunked``, ``pieces``, ``times``):
    parse the response head once it has all arrived. True once it has, with ``pieces`` (and
    their ``times``) cut down to the body."""
    if sub.status:
        return True
    parsed = split_head(b"".join(sub.pieces))
    if parsed is None:
        return False
    sub.status, headers, body = parsed
    sub.chunked = b"chunked" in headers.get(b"transfer-encoding", b"")
    sub.pieces, sub.times = [body], sub.times[-1:]  # keep the body only
    return True
