"""Test helpers: a real ``python -m chat serve`` on a free port, and a small SSE reader.

Every wait here is bounded; a helper that times out raises, so a test never hangs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg

from chat.store.dialect import database_kind, sqlite_path
from chat.store.postgres import placeholders
from tests.commands import CHAT, without_chat_settings

ROOT = Path(__file__).resolve().parent.parent


@contextlib.asynccontextmanager
async def loopback_server(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[str]:
    """A TCP server of the test's own on 127.0.0.1 that runs ``handle`` for each connection;
    yields its ``http://`` origin, and is closed at the end (waited for, bounded)."""
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), 10)


def _with_children(pid: int) -> set[int]:
    """``pid`` and the processes it started (``serve --workers N``: the workers listen)."""
    pids = {pid}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                after_name = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(after_name[1]) == pid:  # the parent's pid
                    pids.add(int(entry.name))
    return pids


def listens_on(pid: int, port: int) -> bool:
    """Whether process ``pid`` (or a process it started) holds the listening TCP socket on
    ``port``: a port that ``free_port`` gave out may be taken by another test's server
    before this one binds it, and that server would answer this one's readiness check. True
    where there is no /proc to ask (not Linux)."""
    if not Path("/proc/net/tcp").exists():
        return True
    for owner in _with_children(pid):
        held = set()
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{owner}/fd").iterdir():
                with contextlib.suppress(OSError):
                    held.add(fd.readlink().name)  # socket:[inode]
        # the process's own view: it may live in a network namespace of its own
        for table in (f"/proc/{owner}/net/tcp", f"/proc/{owner}/net/tcp6"):
            with contextlib.suppress(OSError):
                for line in Path(table).read_text().splitlines()[1:]:
                    fields = line.split()
                    on_port = int(fields[1].rsplit(":", 1)[1], 16) == port
                    if fields[3] == "0A" and on_port and f"socket:[{fields[9]}]" in held:
                        return True
    return False


def spawn_and_wait(
    argv: list[str],
    log_path: Path,
    ready: Callable[[], bool],
    name: str,
    timeout_s: float,
    *,
    port: int | None = None,
    **popen: Any,
) -> subprocess.Popen[bytes]:
    """Start a process with its output appended to ``log_path`` and wait until ``ready()``
    (and, given its ``port``, until it is the process listening there: ``listens_on``);
    raise (killing it) if it exits first or is not ready within ``timeout_s``."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, **popen)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited at start:\n{log_path.read_text(errors='replace')}")
        if (port is None or listens_on(proc.pid, port)) and ready():
            return proc
        time.sleep(0.05)
    proc.kill()
    proc.wait(timeout=10)
    text = log_path.read_text(errors="replace")
    raise RuntimeError(f"{name} was not ready in {timeout_s}s:\n{text}")


async def scrape(client: httpx.AsyncClient, url: str = "") -> dict[str, float]:
    """Every sample of /metrics (of ``url``, or of the client's base URL), by its series
    (``chat_requests_total{endpoint="messages.post",served_by="plain"}``)."""
    response = await client.get(f"{url}/metrics")
    assert response.status_code == 200, response.text
    values: dict[str, float] = {}
    for line in response.text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            values[series] = float(value)
    return values


def read_store(database: str | Path, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Rows of one statement (``?`` placeholders) on a connection of the test's own to a
    store's ``CHAT_DATABASE``, SQLite or PostgreSQL: it sees only what is committed."""
    url = str(database)
    if database_kind(url) == "postgresql":
        with psycopg.connect(url, autocommit=True) as pg:
            return [tuple(row) for row in pg.execute(placeholders(sql), params).fetchall()]
    db = sqlite3.connect(sqlite_path(url))
    try:
        return [tuple(row) for row in db.execute(sql, params).fetchall()]
    finally:
        db.close()


def _ports_for_this_worker() -> range:
    """The ports ``free_port`` hands out in this process: below the kernel's ephemeral range
    (``ip_local_port_range``), where no outgoing connection of any process is given a local
    port, and a slice of its own for each pytest-xdist worker, so that two workers never
    hand out the same port."""
    try:
        first_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        first_ephemeral = 32768
    low, high = 10000, max(first_ephemeral, 20000)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    index = int(worker) if worker.isdigit() else 0
    size = (high - low) // max(workers, index + 1)
    return range(low + index * size, low + (index + 1) * size)


_handed_out: set[int] = set()


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on, for a process the test starts later.

    Not the kernel's ``bind(0)``: that picks from the ephemeral range, from which any
    process's next outgoing connection may take the port before the server binds it
    (seen in CI: "Address already in use" at a server's start), or between a stop and a
    restart on the same port. See ``_ports_for_this_worker``; a port is handed out once."""
    ports = _ports_for_this_worker()
    for _ in range(1000):
        port = random.choice(ports)
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {ports}")


# The per-client limits (ACCESS.md), off: the tests are one client on loopback, and a limit
# is turned off by its setting, never by code. tests/test_abuse.py turns each on.
LIMITS_OFF = {
    "CHAT_WRITE_RATE_PER_S": "0",
    "CHAT_SIGNIN_RATE_PER_MIN": "0",
    "CHAT_MAX_STREAMS_PER_CLIENT": "0",
}


class LiveServer:
    """One service process on 127.0.0.1 with its own store (a SQLite file by default)."""

    def __init__(
        self,
        workdir: Path,
        env: Mapping[str, str] | None = None,
        *,
        database: str | Path | None = None,
        args: Sequence[str] = (),
    ) -> None:
        """``database``: its ``CHAT_DATABASE`` (default: a SQLite file in ``workdir``), or
        another server's, to share it; ``args``: more ``serve`` options
        (``["--workers", "2"]``)."""
        self.workdir = workdir
        self.database = database or workdir / "chat.db"
        self.args = list(args)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "server.log"

    def start(self, timeout_s: float = 20.0) -> None:
        env = without_chat_settings()
        env.update({"CHAT_DATABASE": str(self.database), "CHAT_LOG_LEVEL": "WARNING"})
        env.update(LIMITS_OFF)  # a test about a limit turns it on again in its own env
        env.update(self.extra_env)
        self.proc = spawn_and_wait(
            [*CHAT, "serve", "--port", str(self.port), *self.args],
            self.log_path,
            self.healthy,
            "server",
            timeout_s,
            port=self.port,
            cwd=self.workdir,
            env=env,
        )

    def healthy(self) -> bool:
        try:
            return httpx.get(self.url + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def terminate(self, timeout_s: float = 15.0) -> int:
        """SIGTERM, then wait; returns the exit code (SIGKILL and raise if it hangs)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
            raise
        finally:
            self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def restart(self) -> None:
        self.start()

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")


@dataclass
class SSEEvent:
    event: str | None
    data: str
    id: str | None

    def json(self) -> Any:
        return orjson.loads(self.data)


@dataclass
class SSEStream:
    """Reads a live ``text/event-stream`` response, frame by frame."""

    response: httpx.Response
    lines: AsyncIterator[str]
    comments: list[str] = field(default_factory=list)
    retry: int | None = None

    async def next(self, timeout_s: float = 10.0) -> SSEEvent:
        """The next event (comments and ``retry`` are recorded, not returned)."""
        async with asyncio.timeout(timeout_s):
            fields: dict[str, list[str]] = {}
            async for line in self.lines:
                if line == "":
                    if "data" in fields or "event" in fields:
                        return SSEEvent(
                            event=fields["event"][-1] if "event" in fields else None,
                            data="\n".join(fields.get("data", [])),
                            id=fields["id"][-1] if "id" in fields else None,
                        )
                    fields = {}
                    continue
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "retry":
                    self.retry = int(value)
                else:
                    fields.setdefault(name, []).append(value)
            raise EOFError("the stream ended")

    async def take(self, count: int, timeout_s: float = 10.0) -> list[SSEEvent]:
        async with asyncio.timeout(timeout_s):
            return [await self.next(timeout_s) for _ in range(count)]

    async def until_comment(self, text: str, timeout_s: float = 10.0, count: int = 1) -> None:
        """Read until ``count`` comments with this text have arrived (events read meanwhile
        are dropped)."""
        async with asyncio.timeout(timeout_s):
            while self.comments.count(text) < count:
                line = await anext(self.lines)
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())


@contextlib.asynccontextmanager
async def open_stream(
    client: httpx.AsyncClient,
    path: str,
    *,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
    timeout_s: float = 10.0,
) -> AsyncIterator[SSEStream]:
    """Open a stream and wait for its ``: connected`` comment, so that it is subscribed."""
    async with asyncio.timeout(timeout_s):
        request = client.build_request("GET", path, headers=headers, params=params)
        response = await client.send(request, stream=True)
    try:
        assert response.status_code == 200, (response.status_code, await response.aread())
        stream = SSEStream(response, response.aiter_lines())
        await stream.until_comment("connected", timeout_s)
        yield stream
    finally:
        await response.aclose()
