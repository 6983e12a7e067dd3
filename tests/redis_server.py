"""A real ``redis-server`` (Debian's package) on a free port, for the scale-out tests.

Nothing is saved to disk: the service keeps everything durable in SQLite, and Redis only
carries events between processes. ``stop`` and ``start`` again keep the port, so a test can
take Redis away mid-run and bring it back where the service expects it."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from tests.live import free_port


class RedisServer:
    def __init__(self, program: str, workdir: Path) -> None:
        self.program = program
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the process keeps it
        options = {
            "port": str(self.port),
            "bind": "127.0.0.1",
            "save": "",
            "appendonly": "no",
            "daemonize": "no",
            "dir": str(self.workdir),
        }
        self.proc = subprocess.Popen(
            [self.program, *(part for k, v in options.items() for part in (f"--{k}", v))],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited:\n{self.log_path.read_text()}")
            if self.ping():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer in {timeout_s}s")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Kill it (SIGKILL: the worst case, connections cut without a goodbye)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None
