"""Dead peers (``CHAT_DEAD_PEER_SECONDS``): a client whose network vanished without a FIN is
released within the bound, through TCP keepalive and TCP_USER_TIMEOUT set on the listening
socket (``chat.serve.listening_socket``), which accepted connections inherit.

- The options: the plan's arithmetic, and an accepted connection read back with getsockopt.
- The release, for real: the server and its client run in a network namespace of their own
  (made here with unshare(2), on a thread, so nothing outside it sees the traffic or the
  firewall rule), the client opens a stream, and an nftables rule then drops every packet of
  that connection, both ways: the client vanishes without a FIN. The room's subscriber count
  (``GET /api/rooms/{room}``, over another connection) must fall to 0 within the bound plus
  a margin; the kernel's defaults would take 15 minutes (data in flight) or over 2 hours
  (an idle connection). Needs root, Linux and ``nft`` (Debian's nftables).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import errno
import fcntl
import os
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from chat.serve import dead_peer_plan, listening_socket
from tests.conftest import need, need_program
from tests.live import LiveServer, scrape

T = TypeVar("T")

DEAD_PEER_S = 3
MARGIN_S = 4.0  # the kernel's timer slack, the server noticing, the polling
CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


# The options ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seconds", [1, 1.5, 2, 2.5, 3, 7, 10, 60, 3600, 1e9])
def test_the_plan_fits_inside_the_bound(seconds: float) -> None:
    plan = dead_peer_plan(seconds)
    assert plan is not None
    assert plan.idle_s >= 1 and plan.interval_s >= 1 and 1 <= plan.probes <= 3
    silence = plan.idle_s + plan.interval_s * plan.probes  # keepalive's last probe
    assert silence <= max(seconds, 2)
    assert plan.user_timeout_ms <= max(seconds, 2) * 1000
    assert plan.user_timeout_ms <= silence * 1000  # the last probe is where it ends
    assert plan.bound_s <= max(seconds, 2)
    assert plan.idle_s <= 32767 and plan.interval_s <= 32767


def test_the_default_plan() -> None:
    plan = dead_peer_plan(60)
    assert plan is not None
    assert (plan.idle_s, plan.interval_s, plan.probes, plan.user_timeout_ms) == (30, 10, 3, 60000)
    assert dead_peer_plan(0) is None


def _accepted_options(host: str, dead_peer_seconds: float) -> dict[str, int]:
    """Listen with the project's socket, accept a loopback connection, and read its options."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with listening_socket(host, 0, dead_peer_seconds=dead_peer_seconds) as server:
        server.listen()
        port = server.getsockname()[1]
        with socket.create_connection((host.strip("[]"), port), timeout=5) as client:
            accepted, _ = server.accept()
            with accepted:
                assert accepted.family == family == server.family
                assert client.getsockname()[1] != port
                tcp = socket.IPPROTO_TCP
                return {
                    "keepalive": accepted.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                    "idle": accepted.getsockopt(tcp, socket.TCP_KEEPIDLE),
                    "interval": accepted.getsockopt(tcp, socket.TCP_KEEPINTVL),
                    "probes": accepted.getsockopt(tcp, socket.TCP_KEEPCNT),
                    "user_timeout": accepted.getsockopt(tcp, socket.TCP_USER_TIMEOUT),
                    "nodelay": accepted.getsockopt(tcp, socket.TCP_NODELAY),
                }


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "[::1]"])
def test_an_accepted_connection_inherits_the_options(host: str) -> None:
    need(sys.platform == "linux", "TCP_USER_TIMEOUT and option inheritance are Linux's")
    if ":" in host:
        need(socket.has_ipv6 and Path("/proc/net/if_inet6").exists(), "no IPv6 on this machine")
    options = _accepted_options(host, 60)
    assert options == {
        "keepalive": 1,
        "idle": 30,
        "interval": 10,
        "probes": 3,
        "user_timeout": 60000,
        "nodelay": 1,
    }


def test_zero_leaves_the_kernel_defaults() -> None:
    need(sys.platform == "linux", "TCP_USER_TIMEOUT is Linux's")
    options = _accepted_options("127.0.0.1", 0)
    assert options["keepalive"] == 0
    assert options["user_timeout"] == 0


# The release, in a network namespace -------------------------------------------------------


def _loopback_up() -> None:
    """``ip link set lo up``, without iproute2."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(sock, SIOCGIFFLAGS, request)[:18])[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


class Netns:
    """A thread in a network namespace of its own, running an event loop. Sockets made on it,
    and processes started from it, are in the namespace; the namespace goes away with them."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.entered = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name="netns", daemon=True)

    def __enter__(self) -> Netns:
        self.thread.start()
        if not self.entered.wait(10):
            raise RuntimeError("the namespace thread did not start")
        if self.error is not None:
            self.thread.join(10)
            self.loop.close()
            raise self.error
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def _main(self) -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.unshare(CLONE_NEWNET) != 0:
                code = ctypes.get_errno()
                raise OSError(code, f"unshare(CLONE_NEWNET): {os.strerror(code)}")
            _loopback_up()
        except BaseException as error:
            self.error = error
            self.entered.set()
            return
        self.entered.set()
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float) -> T:
        """Run a coroutine on the namespace's loop and wait for its result."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def call(self, function: Callable[[], T], timeout_s: float) -> T:
        """Call a blocking function on the namespace's thread (a process it starts is in the
        namespace)."""

        async def call() -> T:
            return function()

        return self.run(call(), timeout_s)


def _nft(ruleset: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["nft", "-f", "-"], input=ruleset, capture_output=True, text=True, timeout=10
    )


def drop_connection(port: int) -> None:
    """Drop every packet to or from the client's port, both ways, as they arrive: the server's
    packets never reach the client, and nothing of the client reaches the server."""
    done = _nft(
        f"table inet vanish{port} {{\n"
        "  chain input {\n"
        "    type filter hook input priority 0; policy accept;\n"
        f"    tcp sport {port} drop\n"
        f"    tcp dport {port} drop\n"
        "  }\n"
        "}\n"
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def netns_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Netns, LiveServer]]:
    need(sys.platform == "linux", "network namespaces are Linux's")
    need(os.geteuid() == 0, "a network namespace and a firewall rule need root")
    need_program("nft")
    workdir = tmp_path_factory.mktemp("dead-peer")
    try:
        netns = Netns().__enter__()
    except OSError as error:
        need(error.errno not in (errno.EPERM, errno.EINVAL), f"no network namespace: {error}")
        raise
    try:
        probe = netns.call(lambda: _nft("table inet probe {}\ndelete table inet probe\n"), 15)
        need(probe.returncode == 0, f"nftables does not work here: {probe.stderr.strip()}")
        live = LiveServer(workdir, {"CHAT_DEAD_PEER_SECONDS": str(DEAD_PEER_S)})
        netns.call(live.start, 30)
        try:
            yield netns, live
        finally:
            live.kill()
    finally:
        netns.__exit__(None, None, None)


async def _subscribers(client: httpx.AsyncClient, room: str) -> int:
    response = await asyncio.wait_for(client.get(f"/api/rooms/{room}"), 5)
    assert response.status_code == 200, response.text
    count = response.json()["subscribers"]
    assert isinstance(count, int)
    return count


async def _vanish(live: LiveServer, room: str, *, data_in_flight: bool) -> float:
    """Open a stream, make its client vanish, and return how long the server took to release
    it (raises if it took longer than the bound and the margin)."""
    loop = asyncio.get_running_loop()
    async with httpx.AsyncClient(base_url=live.url, timeout=5) as client:
        created = await asyncio.wait_for(client.put(f"/api/rooms/{room}", json={}), 5)
        assert created.status_code == 201, created.text
        async with asyncio.timeout(5):
            reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
        try:
            writer.write(f"GET /api/rooms/{room}/events HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            async with asyncio.timeout(5):
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200"), head
                await reader.readuntil(b": connected\n")
            assert await _subscribers(client, room) == 1
            await asyncio.sleep(0.3)  # the client's ACK of all it got reaches the server
            drop_connection(writer.get_extra_info("sockname")[1])
            vanished = loop.time()
            assert await _subscribers(client, room) == 1  # held, until the kernel gives up
            if data_in_flight:  # an event the server sends and the client never acknowledges
                posted = await asyncio.wait_for(
                    client.post(f"/api/rooms/{room}/messages", json={"author": "a", "text": "x"}),
                    5,
                )
                assert posted.status_code == 201, posted.text
            async with asyncio.timeout(DEAD_PEER_S + MARGIN_S):
                while await _subscribers(client, room) != 0:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
            return loop.time() - vanished
        finally:
            writer.close()  # its FIN is dropped too
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 2)


def test_an_idle_stream_whose_client_vanished_is_released_by_keepalive(
    netns_server: tuple[Netns, LiveServer],
) -> None:
    """Nothing in flight (the default heartbeat, 15 s, does not come before the bound):
    keepalive probes go unanswered, and the connection ends within the bound."""
    netns, live = netns_server
    elapsed = netns.run(_vanish(live, "idle", data_in_flight=False), DEAD_PEER_S + MARGIN_S + 20)
    assert elapsed < DEAD_PEER_S + MARGIN_S


def test_a_stream_whose_client_vanished_with_data_in_flight_is_released(
    netns_server: tuple[Netns, LiveServer],
) -> None:
    """An event is sent after the client vanished and never acknowledged: TCP_USER_TIMEOUT
    ends the connection within the bound (keepalive does not probe while data is in
    flight)."""
    netns, live = netns_server
    elapsed = netns.run(_vanish(live, "busy", data_in_flight=True), DEAD_PEER_S + MARGIN_S + 20)
    assert elapsed < DEAD_PEER_S + MARGIN_S


def test_hypercorn_ending_a_timed_out_connection_is_not_logged_as_an_error(
    netns_server: tuple[Netns, LiveServer],
) -> None:
    """After the releases above: Hypercorn's connection task ends with the TimeoutError of the
    timed-out socket, and ``chat.serve.connection_errors_quietly`` keeps it out of the log."""
    _netns, live = netns_server
    assert "client_connected_cb" not in live.log(), live.log()


def test_a_released_stream_is_not_logged_as_an_error(
    netns_server: tuple[Netns, LiveServer],
) -> None:
    _netns, live = netns_server
    assert "Traceback" not in live.log(), live.log()


def test_the_releases_are_counted_as_dead_peers(netns_server: tuple[Netns, LiveServer]) -> None:
    """The two streams above ended because their clients vanished: /metrics says so
    (chat_streams_ended_total{reason="dead_peer"}), not that their clients closed them."""
    _netns, live = netns_server

    async def ended() -> dict[str, float]:
        async with httpx.AsyncClient(base_url=live.url, timeout=5) as client:
            metrics = await asyncio.wait_for(scrape(client), 5)
        return {k: v for k, v in metrics.items() if k.startswith("chat_streams_ended_total")}

    counts = _netns.run(ended(), 10)
    assert counts.get('chat_streams_ended_total{reason="dead_peer"}') == 2, counts
