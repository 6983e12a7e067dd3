"""The test helpers' own promises that the suite's reliability rests on."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests import live


def test_free_ports_are_outside_the_ephemeral_range_and_never_handed_out_twice() -> None:
    """A port from ``bind(0)`` may be taken by any process's next outgoing connection before
    the server binds it: CI once saw a server fail with "Address already in use"."""
    first_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [live.free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    if first_ephemeral > 20000:  # (Linux's default: 32768) room for the tests' ports below
        assert all(port < first_ephemeral for port in ports)
    for port in ports[:5]:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen()


def test_each_xdist_worker_has_ports_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    slices = []
    for worker in ("gw0", "gw1"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        slices.append(set(live._ports_for_this_worker()))
    assert slices[0] and slices[1]
    assert not slices[0] & slices[1]


def test_a_benchmark_server_whose_port_was_taken_starts_on_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bench/support.py (growth.py runs in CI) takes its port from ``bind(0)``; when something
    listens there before the server binds it, the server is started again elsewhere."""
    monkeypatch.syspath_prepend(str(live.ROOT / "bench"))
    import support  # bench/support.py

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        real_socket = socket.socket
        handed = []

        class FirstPortTaken(socket.socket):
            def getsockname(self) -> tuple[str, int]:
                if not handed:
                    handed.append(taken.getsockname()[1])
                    return ("127.0.0.1", handed[0])
                return real_socket.getsockname(self)  # type: ignore[no-any-return]

        with monkeypatch.context() as patched:
            patched.setattr(support.socket, "socket", FirstPortTaken)
            proc, port = support.start_server(str(tmp_path), pin=False)
    try:
        assert handed and port != handed[0]
        assert b"Address already in use" in (tmp_path / "server.log").read_bytes()
    finally:
        support.stop_server(proc)
