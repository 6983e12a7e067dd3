"""`serve` raises its soft limit of open files to the hard limit at start (every open stream
holds a socket; a soft limit of 1,024 would refuse the 1,025th connection)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import httpx

from tests.live import LIMITS_OFF, free_port, spawn_and_wait


def open_files_limits(pid: int) -> tuple[int, int]:
    """(soft, hard) of a running process, as the kernel reports them."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no 'Max open files' line")


def test_serve_raises_the_soft_open_files_limit_to_the_hard_one(tmp_path: Path) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft = min(256, hard)  # started lower than the hard limit, as a default shell would
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    env.update(LIMITS_OFF, CHAT_DATABASE=str(tmp_path / "chat.db"), CHAT_LOG_LEVEL="INFO")
    command = f'ulimit -Sn {soft} && exec "$0" -m chat serve --port {port}'
    url = f"http://127.0.0.1:{port}/healthz"

    def healthy() -> bool:
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    log = tmp_path / "server.log"
    proc = spawn_and_wait(
        ["bash", "-c", command, sys.executable], log, healthy, "server", 20, cwd=tmp_path, env=env
    )
    try:
        assert open_files_limits(proc.pid) == (hard, hard)
        if soft < hard:
            assert f"open files limit raised from {soft} to {hard}" in log.read_text()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
