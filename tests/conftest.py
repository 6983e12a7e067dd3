from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.live import LIMITS_OFF, LiveServer
from tests.postgres_server import PostgresServer, bindir
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


@contextlib.contextmanager
def postgres_cluster() -> Iterator[PostgresServer]:
    """A throw-away PostgreSQL cluster, started, destroyed at the end (``.ci/run`` installs
    Debian's ``postgresql``)."""
    programs = bindir()
    need(programs is not None, "PostgreSQL is not installed (Debian's postgresql package)")
    assert programs is not None
    cluster = PostgresServer(programs)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One cluster for the session; each store gets a database of its own
    (``new_database``)."""
    with postgres_cluster() as cluster:
        yield cluster


STORES = ("sqlite", "postgresql")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "sqlite_only: the module's servers run on SQLite alone (see pytest_collection_modifyitems)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A module marked ``sqlite_only`` (``pytestmark = pytest.mark.sqlite_only``) tests what
    does not depend on the store: the page, the clients, the HTTP layer (headers, CORS, the
    pipeline, stream writes, limits). Its PostgreSQL runs are deselected: the API answers
    alike on both stores, which the API and store tests show by running on both (and
    test_page.py runs the page's core flows on both). On both stores these modules cost
    about 15% of a run a second time (.ci/run, 2026-12-04)."""
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_postgresql = callspec is not None and callspec.params.get("store_kind") == "postgresql"
        (dropped if on_postgresql and item.get_closest_marker("sqlite_only") else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(scope="module", params=STORES)
def store_kind(request: pytest.FixtureRequest) -> str:
    """Which store the module's servers and stores use: every test that takes ``server``,
    ``make_server``, ``database`` or ``new_database`` runs on both (one module at a time)."""
    return str(request.param)


@pytest.fixture(scope="module")
def new_database(store_kind: str, request: pytest.FixtureRequest) -> Callable[[Path], str]:
    """``new_database(folder)``: a ``CHAT_DATABASE`` for a new, empty store of the module's
    kind: a SQLite file in ``folder``, or a PostgreSQL database of its own."""
    if store_kind == "postgresql":
        cluster: PostgresServer = request.getfixturevalue("postgres")
        return lambda folder: cluster.new_database()
    return lambda folder: str(folder / "chat.db")


@pytest.fixture
def database(new_database: Callable[[Path], str], tmp_path: Path) -> str:
    """A ``CHAT_DATABASE`` for a new, empty store, on each store in turn."""
    return new_database(tmp_path)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, new_database: Callable[[Path], str]
) -> Iterator[LiveServer]:
    """One live server shared by a module's tests (use a fresh room name per test)."""
    folder = tmp_path_factory.mktemp("server")
    live = LiveServer(folder, database=new_database(folder))
    live.start()
    yield live
    if live.proc is not None:
        live.terminate()


@pytest.fixture
def make_server(
    tmp_path: Path, new_database: Callable[[Path], str]
) -> Iterator[Callable[..., LiveServer]]:
    """A server of the test's own, with extra CHAT_* settings: ``make_server(CHAT_X="1")``."""
    started: list[LiveServer] = []

    def make(**env: str) -> LiveServer:
        folder = tmp_path / f"s{len(started)}"
        folder.mkdir()
        live = LiveServer(folder, env, database=new_database(folder))
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
    server.destroy()


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """One headless Chromium (Debian's, through Playwright) for a browser test, closed after
    it (tests/page_helpers.py: skipped without it on a laptop, a failure in CI)."""
    from tests.page_helpers import chromium  # here: page_helpers imports this module

    async with chromium() as b:
        yield b
