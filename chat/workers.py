"""``serve --workers N``: N worker processes on one port, and a parent that looks after them.

Each worker is a whole service process (``python -m chat serve``) that binds the port with
``SO_REUSEPORT``, so the kernel spreads new connections over the workers. They share events,
presence and the typing limit through the Redis broker, and the SQLite file through WAL. The
parent only supervises: a worker that dies is started again (a client of it reconnects and
resumes from another worker meanwhile), after a pause that doubles, up to 30 s, while it
keeps dying at once; a worker that fails its very first start stops them all (a setting is
wrong); SIGTERM or SIGINT is passed to every worker, each
ends its streams and finishes its requests, and the parent exits when they all have.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from types import FrameType

log = logging.getLogger(__name__)

STARTUP_S = 5.0  # a worker that fails sooner than this after its start is not restarted
POLL_S = 0.2
RESTART_BACKOFF_S = 1.0  # doubled for each restart in a row that fails at once
MAX_BACKOFF_S = 30.0
PR_SET_PDEATHSIG = 1


def _die_with(parent: int) -> Callable[[], None]:
    def arrange() -> None:
        """In the worker, before exec: if the parent dies (even by -9), SIGTERM the worker;
        if it died already, before this was arranged, stop here."""
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            os._exit(1)

    return arrange


class Supervisor:
    def __init__(self, host: str, port: int, count: int, grace_s: float) -> None:
        self.command = [
            sys.executable, "-m", "chat", "serve",
            "--host", host, "--port", str(port), "--worker-of", str(count),
        ]  # fmt: skip
        self.count = count
        self.grace_s = grace_s
        self.workers: list[subprocess.Popen[bytes] | None] = [None] * count
        self.started: list[float] = [0.0] * count
        self.restarts: list[int] = [0] * count  # in a row, each within STARTUP_S of its start
        self.restart_at: list[float] = [0.0] * count  # when a worker that died starts again
        self.stopping = False

    def _start(self, slot: int) -> None:
        self.workers[slot] = subprocess.Popen(self.command, preexec_fn=_die_with(os.getpid()))
        self.started[slot] = time.monotonic()
        log.info("worker %d started (pid %d)", slot + 1, self.workers[slot].pid)  # type: ignore[union-attr]

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping = True

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        for slot in range(self.count):
            self._start(slot)
        while not self.stopping:
            time.sleep(POLL_S)
            now = time.monotonic()
            for slot, proc in enumerate(self.workers):
                if self.stopping:
                    break
                if proc is None:  # waiting out its pause
                    if now >= self.restart_at[slot]:
                        self._start(slot)
                    continue
                code = proc.poll()
                if code is None:
                    continue
                early = now - self.started[slot] < STARTUP_S
                if early and not self.restarts[slot]:  # its first start: a setting is wrong
                    log.error("worker %d exited with %d at start; stopping", slot + 1, code)
                    self._stop_all()
                    return 1
                # A worker that ran, died and fails again at once (its database away, say)
                # is tried again ever more slowly; the others go on serving meanwhile (and are
                # looked after: the pause is a time to start it at, not a sleep).
                self.restarts[slot] = self.restarts[slot] + 1 if early else 1
                wait = min(RESTART_BACKOFF_S * 2 ** (self.restarts[slot] - 1), MAX_BACKOFF_S)
                log.warning(
                    "worker %d exited with %d; starting it again in %.0f s", slot + 1, code, wait
                )
                self.workers[slot], self.restart_at[slot] = None, now + wait
        return self._stop_all()

    def _stop_all(self) -> int:
        """SIGTERM to every worker; SIGKILL to one that outlives its own shutdown watchdog."""
        alive = [p for p in self.workers if p is not None and p.poll() is None]
        for proc in alive:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s + 5
        worst = 0
        for proc in alive:
            try:
                code = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            if code != 0 and not worst:
                worst = code if code > 0 else 1  # killed by a signal: not a clean stop
        return worst


def run_workers(host: str, port: int, count: int, grace_s: float) -> int:
    return Supervisor(host, port, count, grace_s).run()
