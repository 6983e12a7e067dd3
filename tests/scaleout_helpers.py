"""Helpers of the scale-out tests: several service processes on one database (a shared SQLite
file, or PostgreSQL) sharing events through a real Redis, clients that follow a stream in the
background, and /proc look-ups.

Every wait is bounded; a helper that times out raises, so a test never hangs."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from chat.store.dialect import database_kind
from tests.live import LiveServer, SSEEvent, open_stream, scrape

Json = dict[str, Any]

# Short enough for tests; the names are the contract's settings.
BASE_ENV = {
    "CHAT_PRESENCE_GRACE_SECONDS": "0.2",
    "CHAT_HEARTBEAT_SECONDS": "5",
}


class Cluster:
    """Service processes sharing one database (and, with the redis broker, one Redis)."""

    def __init__(self, root: Path, redis_url: str, database: str | None = None) -> None:
        """``database``: the ``CHAT_DATABASE`` every process is given: a SQLite file, or a
        PostgreSQL URL (then the processes share no file at all). Default: a SQLite file in
        ``root/shared``."""
        self.root = root
        self.redis_url = redis_url
        self.shared = root / "shared"
        self.shared.mkdir(exist_ok=True)
        self.database: str | Path = database or self.shared / "chat.db"
        self.kind = database_kind(str(self.database))
        self.servers: list[LiveServer] = []

    def make(self, broker: str | None = None, args: Sequence[str] = (), **env: str) -> LiveServer:
        """A process of the cluster, not started yet (its own workdir, the shared database);
        ``broker``: ``CHAT_BROKER`` (default: the redis URL)."""
        workdir = self.root / f"p{len(self.servers)}"
        workdir.mkdir()
        settings = {**BASE_ENV, "CHAT_BROKER": broker or self.redis_url, **env}
        live = LiveServer(workdir, settings, database=self.database, args=args)
        self.servers.append(live)
        return live

    def start(self, count: int, **env: str) -> list[LiveServer]:
        """``count`` redis-broker processes, started: the first alone (it creates and migrates
        the database), the others side by side."""
        made = [self.make(**env) for _ in range(count)]
        made[0].start()
        rest = made[1:]
        if rest:
            with ThreadPoolExecutor(len(rest)) as pool:
                for future in [pool.submit(live.start) for live in rest]:
                    future.result(timeout=60)
        return made

    def close(self) -> None:
        """Kill every process still running, with whatever it started."""
        for live in self.servers:
            if live.proc is None:
                continue
            family = descendants(live.pid)
            live.kill()
            for pid in family:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def files(self) -> list[Path]:
        """Every file under the cluster's folder that a store could share: a SQLite database,
        its WAL or shared memory (none when the store is PostgreSQL)."""
        return sorted(p for p in self.root.rglob("*.db*") if p.is_file())

    def logs(self) -> str:
        return "\n".join(
            f"--- {live.workdir.name} {live.url}\n{live.log()}" for live in self.servers
        )


# -- /proc ---------------------------------------------------------------------------------


def children(pid: int) -> set[int]:
    """Direct children of ``pid``: from /proc/<pid>/task/*/children where the kernel has it,
    otherwise from the parent field of every /proc/<n>/stat."""
    found: set[int] = set()
    listed = list(Path(f"/proc/{pid}/task").glob("*/children"))
    if listed:
        for path in listed:
            with contextlib.suppress(OSError):
                found.update(int(n) for n in path.read_text().split())
        return found
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "(comm)": state, ppid, ...
        if int(fields[1]) == pid:
            found.add(int(entry.name))
    return found


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children(todo.pop()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def running(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def sockets_held_by(pid: int, port: int, state: str = "01") -> int:
    """TCP sockets of ``port`` (the local side) in process ``pid``'s file descriptors, in the
    given state: ``01`` established connections (the default), ``0A`` listening."""
    inodes: set[str] = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                parts = line.split()
                local, sock_state, inode = parts[1], parts[3], parts[9]
                if int(local.rsplit(":", 1)[1], 16) == port and sock_state == state:
                    count += inode in inodes
    return count


# -- HTTP ----------------------------------------------------------------------------------


async def post(client: httpx.AsyncClient, url: str, room: str, author: str, text: str) -> Json:
    response = await client.post(
        f"{url}/api/rooms/{room}/messages", json={"author": author, "text": text}
    )
    assert response.status_code == 201, (url, response.status_code, response.text)
    body: Json = response.json()
    return body


async def readyz(client: httpx.AsyncClient, url: str) -> httpx.Response:
    return await client.get(f"{url}/readyz")


async def metric(client: httpx.AsyncClient, url: str, name: str) -> float | None:
    """The value of a metric in /metrics, or None when it is not there."""
    return (await scrape(client, url)).get(name)


async def eventually(check: Any, timeout_s: float, what: str, every_s: float = 0.05) -> Any:
    """Call the coroutine function ``check`` until it returns something truthy (returned);
    fail after ``timeout_s`` with ``what`` and the last value."""
    last: Any = None
    deadline = time.monotonic() + timeout_s
    while True:
        last = await asyncio.wait_for(check(), timeout_s)
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s}s: {what} (last: {last!r})")
        await asyncio.sleep(every_s)


# -- a client following a stream -----------------------------------------------------------


class Follower:
    """A client following one stream in the background and keeping every event it receives.

    When its stream ends (EOF or a cut connection) and ``reconnect_url`` is set, it opens the
    same path there with ``Last-Event-ID`` set to the last id it saw, as EventSource does;
    otherwise the end is recorded and it stops (waiting for more then fails). ``since``: the
    first stream's ``Last-Event-ID``."""

    def __init__(
        self,
        url: str,
        path: str,
        params: Mapping[str, str] | None = None,
        *,
        name: str = "",
        since: int | None = None,
        reconnect_url: str | None = None,
    ) -> None:
        self.url = url
        self.path = path
        self.params = dict(params or {})
        self.name = name or f"{url}{path}?{self.params}"
        self.since = since
        self.reconnect_url = reconnect_url
        self.events: list[SSEEvent] = []
        self.opened: list[str] = []  # the url of each stream opened, in order
        self.ends: list[str] = []  # how each stream ended
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"Follower({self.name})"

    async def __aenter__(self) -> Follower:
        self._task = asyncio.create_task(self._run(), name=f"follow {self.name}")
        waiter = asyncio.create_task(self._connected.wait())
        try:
            await asyncio.wait(
                {waiter, self._task}, timeout=15, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waiter.cancel()
        if self._connected.is_set():
            return self
        try:
            if self._task.done():
                self._task.result()  # raises what went wrong
            raise AssertionError(f"{self}: not connected within 15s")
        finally:
            await self.close()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 10)

    async def _run(self) -> None:
        url = self.url
        async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as client:
            for _ in range(400):  # bounded: about 40 s of reconnecting at most
                ids = self.ids()
                last = ids[-1] if ids else self.since
                headers = {"Last-Event-ID": str(last)} if last is not None else {}
                opened = False
                try:
                    async with open_stream(
                        client, url + self.path, params=self.params, headers=headers
                    ) as stream:
                        opened = True
                        self.opened.append(url)
                        self._connected.set()
                        while True:
                            self.events.append(await stream.next(timeout_s=300))
                except (EOFError, httpx.TransportError) as exc:
                    if not self.opened:
                        raise  # the first stream could not be opened
                    if opened:
                        self.ends.append(f"{url}: {type(exc).__name__}: {exc}")
                    if self.reconnect_url is None:
                        return
                    url = self.reconnect_url
                    await asyncio.sleep(0.1)
            raise AssertionError(f"{self}: gave up reconnecting")

    def ids(self) -> list[int]:
        return [int(e.id) for e in self.events if e.id is not None]

    def of_type(self, type_: str) -> list[Json]:
        return [e.json() for e in self.events if e.event == type_]

    async def wait_for_id(self, last_id: int, timeout_s: float = 15.0) -> list[int]:
        """Wait until an id >= ``last_id`` has arrived; returns every id received."""
        deadline = time.monotonic() + timeout_s
        while True:
            ids = self.ids()
            if ids and ids[-1] >= last_id:
                return ids
            if self._task is not None and self._task.done():
                exc = None if self._task.cancelled() else self._task.exception()
                raise AssertionError(
                    f"{self}: stream stopped ({exc!r}, ends {self.ends}) waiting for id "
                    f"{last_id}; got {ids[-10:]}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self}: id {last_id} not received within {timeout_s}s; "
                    f"got {len(ids)} ids, the last {ids[-10:]}"
                )
            await asyncio.sleep(0.02)


async def wait_all(followers: Iterable[Follower], last_id: int, timeout_s: float = 15.0) -> None:
    await asyncio.gather(*(f.wait_for_id(last_id, timeout_s) for f in followers))


def check_sequence(ids: Sequence[int], expected: Sequence[int], who: object) -> None:
    """``ids`` is exactly ``expected``: every id once, in order; the message says what is
    missing, duplicated or out of order."""
    if list(ids) == list(expected):
        return
    missing = sorted(set(expected) - set(ids))
    extra = sorted(set(ids) - set(expected))
    duplicated = sorted({i for i in ids if list(ids).count(i) > 1})
    disordered = [(a, b) for a, b in itertools.pairwise(ids) if b <= a]
    raise AssertionError(
        f"{who}: {len(ids)} ids, expected {len(expected)}; missing {missing[:10]}, "
        f"unexpected {extra[:10]}, duplicated {duplicated[:10]}, "
        f"out of order {disordered[:5]}"
    )


async def wait_gone(pids: set[int], what: str) -> None:
    """Every one of these processes has exited (bounded: fails after 10 s)."""

    async def none_left() -> bool:
        return not any(running(pid) for pid in pids)

    await eventually(none_left, 10, f"no {what} left of {sorted(pids)}", 0.1)


def kill_left(pids: set[int]) -> None:
    """SIGKILL whatever of these is still running (a test's cleanup)."""
    for pid in pids:
        if running(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
