"""The event loop `serve` runs on (``CHAT_LOOP``): uvloop by default where it imports, asyncio's
own when asked or when uvloop cannot be imported, and a ``uvloop`` named that cannot be
imported refused with one line. Each loop serves a message to a stream, written straight to
the transport (``chat_stream_writers_total``). Every wait is bounded."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
import pytest

from tests.commands import run_chat
from tests.conftest import need
from tests.live import LiveServer, free_port, open_stream, scrape

pytestmark = pytest.mark.sqlite_only  # the loop, not the store: conftest.py

TIMEOUT_S = 10.0


def without_uvloop(tmp_path: Path, error: str = "ImportError") -> str:
    """A PYTHONPATH under which ``import uvloop`` raises ``error``: ImportError as where it is
    not installed, another as where it is installed but broken."""
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / "uvloop.py").write_text(f'raise {error}("hidden by the test")\n')
    return os.pathsep.join(filter(None, [str(hidden), os.environ.get("PYTHONPATH")]))


def uvloop_imports() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


async def round_trip(live: LiveServer) -> None:
    """A message posted reaches an open stream, and the stream was written to the transport."""
    async with httpx.AsyncClient(base_url=live.url, timeout=TIMEOUT_S) as client:
        async with open_stream(client, "/api/rooms/loop/events") as stream:
            posted = await asyncio.wait_for(
                client.post("/api/rooms/loop/messages", json={"author": "ann", "text": "hi"}),
                TIMEOUT_S,
            )
            assert posted.status_code == 201, posted.text
            event = await stream.next(TIMEOUT_S)
            assert (event.event, event.json()["text"]) == ("message", "hi")
        metrics = await asyncio.wait_for(scrape(client), TIMEOUT_S)
    assert metrics['chat_stream_writers_total{writer="transport"}'] == 1


def ready_line(live: LiveServer) -> str:
    lines = [line for line in live.log().splitlines() if "chat ready:" in line]
    assert len(lines) == 1, live.log()
    return lines[0]


@pytest.mark.parametrize(
    ("setting", "hidden", "loop"),
    [
        (None, None, "uvloop" if uvloop_imports() else "asyncio"),  # not on Windows
        ("asyncio", None, "asyncio"),
        ("uvloop", None, "uvloop"),
        ("auto", "ImportError", "asyncio"),  # not installed
        ("auto", "RuntimeError", "asyncio"),  # installed and broken
    ],
    ids=["default", "asyncio", "uvloop", "auto-without-uvloop", "auto-with-a-broken-uvloop"],
)
async def test_serve_runs_on_the_loop_chat_loop_names(
    tmp_path: Path, setting: str | None, hidden: str | None, loop: str
) -> None:
    if loop == "uvloop":  # a dependency but on Windows: a skip there, a failure in CI
        need(uvloop_imports(), "uvloop is not installed (pip install uvloop)")
    env = {"CHAT_LOG_LEVEL": "INFO"}
    if setting is not None:
        env["CHAT_LOOP"] = setting
    if hidden is not None:
        env["PYTHONPATH"] = without_uvloop(tmp_path, hidden)
    live = LiveServer(tmp_path, env)
    live.start()
    try:
        assert ready_line(live).endswith(f", loop {loop}")
        await round_trip(live)
    finally:
        exit_code = live.terminate()
    assert exit_code == 0, live.log()
    # a uvloop that is there but broken is said once; one that is not installed is not news
    warned = "uvloop failed to import (RuntimeError('hidden by the test')): serving on asyncio"
    assert live.log().count(warned) == (hidden == "RuntimeError"), live.log()


@pytest.mark.parametrize("error", ["ImportError", "RuntimeError"])
def test_a_uvloop_named_that_cannot_be_imported_is_refused_in_one_line(
    tmp_path: Path, error: str
) -> None:
    result = run_chat(
        "serve",
        "--port",
        str(free_port()),
        cwd=tmp_path,
        CHAT_LOOP="uvloop",
        CHAT_DATABASE=str(tmp_path / "chat.db"),
        PYTHONPATH=without_uvloop(tmp_path, error),
    )
    assert result.returncode == 2, result
    assert result.stderr.strip().splitlines() == [
        "CHAT_LOOP: Value error, uvloop cannot be imported (hidden by the test); `auto` falls "
        "back to asyncio's loop"
    ]
    assert not (tmp_path / "chat.db").exists()  # refused before the store was opened
