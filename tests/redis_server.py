"""A real ``redis-server`` (Debian's package) on a free port, for the scale-out tests.

Nothing is saved to disk: the service keeps everything durable in SQLite, and Redis only
carries events between processes. ``stop`` and ``start`` again keep the port, so a test can
take Redis away mid-run and bring it back where the service expects it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from tests.live import free_port, spawn_and_wait


class RedisServer:
    def __init__(self, program: str, workdir: Path) -> None:
        self.program = program
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "redis.log"
        # also on a Unix socket, in a short path (108 bytes at most, where pytest's are long)
        self.socket_dir = tempfile.mkdtemp(prefix="redis-")
        self.socket = os.path.join(self.socket_dir, "redis.sock")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def unix_url(self) -> str:
        return f"unix://{self.socket}?db=0"

    def start(self, timeout_s: float = 10.0) -> None:
        options = {
            "port": str(self.port),
            "bind": "127.0.0.1",
            "save": "",
            "appendonly": "no",
            "daemonize": "no",
            "dir": str(self.workdir),
            "unixsocket": self.socket,
            "unixsocketperm": "700",
        }
        self.proc = spawn_and_wait(
            [self.program, *(part for k, v in options.items() for part in (f"--{k}", v))],
            self.log_path,
            self.ping,
            "redis-server",
            timeout_s,
        )

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

    def destroy(self) -> None:
        """Stop it for good, and remove its socket's folder."""
        self.stop()
        shutil.rmtree(self.socket_dir, ignore_errors=True)
