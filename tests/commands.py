"""Test helpers: the command line as a user runs it (``python -m chat ...``), once to its end
or kept running (``chat tail``). Every wait is bounded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pytest

CHAT = [sys.executable, "-m", "chat"]


def without_chat_settings() -> dict[str, str]:
    """This process's environment without any ``CHAT_*`` setting: a command or server sees only
    the settings its test gives it."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}


def run_chat(
    *args: str, cwd: Path, stdin: str = "", **env: str
) -> subprocess.CompletedProcess[str]:
    """``python -m chat ARGS`` in ``cwd`` with only the ``CHAT_*`` settings in ``env``, ``stdin``
    on its standard input; its exit status and output (a minute at most)."""
    return subprocess.run(
        [*CHAT, *args],
        cwd=cwd,
        env={**without_chat_settings(), **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


class TailProcess:
    """A running ``chat tail ARGS --url URL`` with only the ``CHAT_*`` settings in ``env``;
    threads collect its stdout and stderr lines."""

    def __init__(
        self, url: str, args: list[str], cwd: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.proc = subprocess.Popen(
            [*CHAT, "tail", *args, "--url", url],
            cwd=cwd,
            env={**without_chat_settings(), **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
        self.stdout: list[str] = []  # every line it printed
        self.stderr: list[str] = []
        self.taken = 0  # stdout lines handed to the test so far
        self.threads = [
            threading.Thread(target=self._drain, args=(pipe, into), daemon=True)
            for pipe, into in ((self.proc.stdout, self.stdout), (self.proc.stderr, self.stderr))
        ]
        for thread in self.threads:
            thread.start()

    @staticmethod
    def _drain(pipe: IO[str], into: list[str]) -> None:
        for line in pipe:
            into.append(line.rstrip("\n"))

    def lines(self, count: int, timeout_s: float = 20.0) -> list[str]:
        """The next ``count`` stdout lines; fails if they do not all come in time."""
        want, deadline = self.taken + count, time.monotonic() + timeout_s
        while len(self.stdout) < want:
            if time.monotonic() > deadline:
                seen = self.stdout[self.taken :]
                pytest.fail(f"wanted {count} lines, tail printed {seen}; stderr: {self.stderr}")
            time.sleep(0.02)
        got, self.taken = self.stdout[self.taken : want], want
        return got

    def events(self, count: int, timeout_s: float = 20.0) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines(count, timeout_s)]

    def exit_status(self, timeout_s: float = 30.0) -> int:
        """Its exit status once it has ended by itself (within ``timeout_s``), with all it
        printed collected."""
        status = self.proc.wait(timeout=timeout_s)
        for thread in self.threads:
            thread.join(timeout=10)
        return status

    def stop(self) -> None:
        """Ctrl-C (SIGKILL if that does not do), then close the pipes."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a stopped process would not act on it
            self.proc.send_signal(signal.SIGINT)  # as a user ends a tail
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for thread in self.threads:
            thread.join(timeout=10)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


@contextmanager
def tailing(
    url: str, *args: str, cwd: Path, env: Mapping[str, str] | None = None
) -> Iterator[TailProcess]:
    """A ``chat tail`` for the length of the block, stopped (Ctrl-C) at its end."""
    tail = TailProcess(url, list(args), cwd, env)
    try:
        yield tail
    finally:
        tail.stop()
        assert tail.proc.returncode is not None, "the tail process is still running"
