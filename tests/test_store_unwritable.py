"""A database that takes no writes: writes are refused with 503 and ``Retry-After``, never a
500; nothing stored is lost; reads go on; ``/readyz`` says so; the log says it once, not once
a request; and once the operator has fixed it, the same process writes again, without a
restart.

Made read-only for real, on a live server: the SQLite file immutable (``chattr +i``, which
root cannot write past, where a file mode would not stop it), PostgreSQL's database with
``default_transaction_read_only``. A full disk is classified the same way (SQLITE_FULL,
PostgreSQL's class 53) but not made here: that needs a file system of its own."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg

from tests.conftest import need
from tests.live import LiveServer

MakeServer = Callable[..., LiveServer]
UNWRITABLE = "the database cannot be written now"


def _chattr(flag: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["chattr", flag, str(path)], capture_output=True, text=True, timeout=10, check=False
    )


@contextlib.contextmanager
def _read_only_sqlite(path: Path) -> Iterator[Callable[[], None]]:
    """The file made immutable; yields the operator's fix. Made writable again at the end
    whatever happens (pytest could not remove it otherwise)."""
    need(shutil.which("chattr") is not None, "chattr is not installed (Debian's e2fsprogs)")
    done = _chattr("+i", path)
    need(done.returncode == 0, f"chattr +i is refused here: {done.stderr.strip()}")
    try:
        yield lambda: _chattr("-i", path).check_returncode()
    finally:
        _chattr("-i", path)


def _set_read_only(url: str, on: bool) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET default_transaction_read_only = off")  # this session may change it
        conn.execute(
            f'ALTER DATABASE "{name}" SET default_transaction_read_only = {"on" if on else "off"}'
        )


@contextlib.contextmanager
def _read_only_postgresql(url: str) -> Iterator[Callable[[], None]]:
    """New sessions of the database read-only (the server is started after this); yields the
    operator's fix."""
    _set_read_only(url, True)
    try:
        yield lambda: _set_read_only(url, False)
    finally:
        _set_read_only(url, False)


async def _post(client: httpx.AsyncClient, text: str) -> httpx.Response:
    return await client.post("/api/rooms/kept/messages", json={"author": "ann", "text": text})


async def _texts(client: httpx.AsyncClient) -> list[str]:
    response = await client.get("/api/rooms/kept/messages")
    assert response.status_code == 200, response.text
    return [m["text"] for m in response.json()["messages"]]


async def test_a_database_that_takes_no_writes_is_503_and_the_same_process_recovers(
    make_server: MakeServer, store_kind: str
) -> None:
    live = make_server()
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        assert (await _post(client, "before")).status_code == 201
    assert await asyncio.to_thread(live.terminate, 20) == 0
    read_only = (
        _read_only_sqlite(Path(live.database))
        if store_kind == "sqlite"
        else _read_only_postgresql(str(live.database))
    )
    with read_only as fix:
        await asyncio.to_thread(live.start)
        async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
            refused = [await _post(client, f"refused {i}") for i in range(3)]
            for response in refused:
                assert response.status_code == 503, response.text
                assert response.headers["retry-after"] == "5"
                error = response.json()["error"]
                assert error["code"] == "unavailable"
                assert error["message"].startswith(UNWRITABLE), error
            # a batch and an activity item meet the same refusal, and leave nothing
            batch = await client.post(
                "/api/rooms/kept/messages/batch",
                json={"messages": [{"author": "ann", "text": "in a batch"}]},
            )
            assert batch.status_code == 503, batch.text
            item = {"actor": "ci", "verb": "built", "object": "main"}
            assert (await client.post("/api/rooms/kept/activity", json=item)).status_code == 503
            assert await _texts(client) == ["before"]  # reads go on; nothing lost or added
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["error"]["message"].startswith(UNWRITABLE)

            await asyncio.to_thread(fix)
            assert (await client.get("/readyz")).status_code == 200
            after = await _post(client, "after")
            assert after.status_code == 201, after.text
            assert await _texts(client) == ["before", "after"]
    log = live.log()
    assert "Traceback" not in log, log
    assert log.count(UNWRITABLE) == 1, log  # once, not once a request
    assert "the database takes writes again" in log, log
