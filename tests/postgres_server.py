"""A real PostgreSQL server (Debian's ``postgresql`` package): a throw-away cluster made by
``initdb`` in a temporary directory, started with ``pg_ctl`` on a free port of 127.0.0.1.

``initdb`` refuses to run as root, and CI runs as root: there every command runs as the
``postgres`` user the package creates (``runuser``), in a directory that user owns. The
cluster trusts connections from 127.0.0.1 (a test machine's loopback); ``fsync`` is off, which
loses nothing when a process is killed (only when the machine itself goes down).
``new_database`` gives each server of a test a database of its own."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from itertools import count
from pathlib import Path

import psycopg

from tests.live import free_port

SUPERUSER = "chat"


def bindir() -> Path | None:
    """Debian keeps the server's programs out of PATH, in /usr/lib/postgresql/<major>/bin."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_major)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _major(path: str) -> int:
    part = Path(path).parent.parent.name
    return int(part) if part.isdigit() else 0


class PostgresServer:
    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.as_root = os.geteuid() == 0
        # pytest's temporary folders are private to root: the cluster lives in one of its own
        self.dir = Path(tempfile.mkdtemp(prefix="chat-pg-"))
        self.data = self.dir / "data"
        self.log_path = self.dir / "postgres.log"
        self.port = free_port()
        self._names = count(1)
        if self.as_root:
            shutil.chown(self.dir, "postgres", "postgres")

    def _run(self, *command: str, timeout_s: float = 60) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if self.as_root else []
        done = subprocess.run(
            [*prefix, *command], capture_output=True, text=True, timeout=timeout_s, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        self._run(
            str(self.bin / "initdb"),
            "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
            "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync",
        )  # fmt: skip
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.dir}'\n"
                "fsync = off\n"
                "max_connections = 300\n"
                "shared_buffers = 64MB\n"
            )

    def start(self, timeout_s: float = 30) -> None:
        if not self.data.exists():
            self.init()
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log_path),
            "-w", "-t", str(int(timeout_s)), "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """``mode``: ``fast`` (ends every session, then a clean shutdown) or ``immediate``
        (every server process quits at once: a crash, recovered at the next start)."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        try:
            with psycopg.connect(self.url(), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def new_database(self) -> str:
        """A new, empty database; returns its URL (the service migrates it when it starts)."""
        name = f"chat_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
