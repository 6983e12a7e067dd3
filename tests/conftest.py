from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.live import LIMITS_OFF, LiveServer
from tests.redis_server import RedisServer

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
# Apps built in this process (Settings() reads the environment) run without the per-client
# limits too, like every LiveServer (tests/live.py).
os.environ.update(LIMITS_OFF)


def need(condition: bool, reason: str) -> None:
    """Skip when a part a test needs is missing, on a laptop; in CI, fail instead: a skip must
    never hide a failure there."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"missing in CI: {reason}")
    pytest.skip(reason)


def need_program(name: str) -> str:
    path = shutil.which(name)
    need(path is not None, f"{name} is not installed")
    assert path is not None
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One live server shared by a module's tests (use a fresh room name per test)."""
    live = LiveServer(tmp_path_factory.mktemp("server"))
    live.start()
    yield live
    if live.proc is not None:
        live.terminate()


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """A server of the test's own, with extra CHAT_* settings: ``make_server(CHAT_X="1")``."""
    started: list[LiveServer] = []

    def make(**env: str) -> LiveServer:
        live = LiveServer(tmp_path / f"s{len(started)}", env)
        live.workdir.mkdir()
        live.start()
        started.append(live)
        return live

    yield make
    for live in started:
        live.kill()


@pytest.fixture
async def client(server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as c:
        yield c


_room_counter = iter(range(1, 1_000_000))


@pytest.fixture
def room(request: pytest.FixtureRequest) -> str:
    """A room name no other test in the module uses."""
    name = request.node.name.lower()
    cleaned = "".join(ch if ch.isalnum() else "-" for ch in name)[:40].strip("-")
    return f"{cleaned or 'room'}-{next(_room_counter)}"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server of the test's own on a free port (``.ci/run`` installs it)."""
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = RedisServer(need_program("redis-server"), workdir)
    server.start()
    yield server
    server.stop()
