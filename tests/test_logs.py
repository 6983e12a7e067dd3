"""Structured logs (ACCESS.md, Logs): with CHAT_LOG_FORMAT=json every line on stderr is one
JSON object; one line a request and one per stream at its end, each with the request's id,
which answers and error bodies echo; no password, token or cookie ever reaches the log."""

from __future__ import annotations

import asyncio
import io
import logging
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from chat import logs
from chat.app import create_app
from chat.config import Settings
from tests.access_helpers import Seed, bearer
from tests.commands import run_chat
from tests.live import LiveServer, free_port, open_stream
from tests.postgres_server import PostgresServer
from tests.scaleout_helpers import eventually

PASSWORD = "correct-horse-battery-staple"


def json_lines(log: str) -> list[dict[str, Any]]:
    lines = [line for line in log.splitlines() if line.strip()]
    parsed = [orjson.loads(line) for line in lines]  # every line is JSON, or this fails
    for line in parsed:
        assert {"ts", "level", "logger", "message"} <= set(line), line
    return parsed


async def test_json_logs_a_line_per_request_and_per_stream_and_no_secret(
    make_server: Any,
) -> None:
    live = make_server(CHAT_LOG_FORMAT="json", CHAT_LOG_LEVEL="WARNING")
    async with Seed(live.database) as seed:
        await seed.user("alice", PASSWORD)
        token = await seed.token("bot-1", role="bot")
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        signed = await client.post("/api/session", json={"user": "alice", "password": PASSWORD})
        assert signed.status_code == 201
        cookie = signed.json()["token"]
        client.cookies.clear()  # the stream and the post below are the bot's
        params = {"access_token": token, "user": "bot-1"}
        async with open_stream(client, "/api/rooms/logged/events", params=params) as stream:
            posted = await client.post(
                "/api/rooms/logged/messages", json={"text": "hello"}, headers=bearer(token)
            )
            assert posted.status_code == 201
            event = await stream.next()
            while event.id is None:  # presence: the bot joined
                event = await stream.next()
            assert event.json()["text"] == "hello"
        missing = await client.get(
            "/api/rooms/nowhere/messages",
            headers={"X-Request-ID": "trace-404", "Cookie": f"chat_session={cookie}"},
        )
        assert missing.status_code == 404
        assert missing.headers["x-request-id"] == "trace-404"
        assert missing.json()["error"]["request_id"] == "trace-404"
        wrong = await client.post("/api/session", json={"user": "alice", "password": "guess-1"})
        assert wrong.status_code == 401

        async def stream_line() -> list[dict[str, Any]]:
            return [line for line in json_lines(live.log()) if line.get("event") == "stream"]

        streams = await eventually(stream_line, 10, "the stream's line in the log")
    lines = json_lines(live.log())
    requests = [line for line in lines if line.get("event") == "request"]
    by_id = {line["request_id"]: line for line in requests}
    post_line = by_id[posted.headers["x-request-id"]]
    assert post_line["method"] == "POST" and post_line["status"] == 201
    assert post_line["path"] == "/api/rooms/logged/messages"
    assert post_line["user"] == "bot-1" and post_line["client"] == "127.0.0.1"
    assert post_line["bytes"] == len(posted.content) and post_line["duration_ms"] >= 0
    error_line = by_id["trace-404"]
    assert error_line["status"] == 404 and error_line["user"] == "alice"
    stream_request = next(line for line in requests if "/events" in line["path"])
    assert "access_token=[redacted]" in stream_request["path"]
    (ended,) = streams  # its events: the bot's presence, then the message
    # the request line counts the whole body, written straight to the connection or not (a
    # probe: 0 over HTTP/1.1, where the body does not go through ASGI send): its first
    # bytes and the event frames at least
    assert stream_request["bytes"] >= len(b"retry: 3000\n: connected\n\n") + ended["bytes"]
    assert ended["rooms"] == "logged" and ended["reason"] == "client_closed"
    assert ended["events"] == 2 and ended["bytes"] > 0 and ended["duration_s"] > 0
    assert ended["user"] == "bot-1" and ended["request_id"] == stream_request["request_id"]
    log = live.log()
    for secret in (PASSWORD, "guess-1", token, cookie):
        assert secret not in log


async def test_a_500_is_logged_with_its_traceback_and_request_id(tmp_path: Path) -> None:
    """A failure the service did not expect: the client gets the envelope with the request's
    id, the log the traceback under the same id, as one JSON line."""
    app = create_app(Settings(database=str(tmp_path / "chat.db"), log_format="json"))

    @app.get("/boom")
    async def boom() -> str:
        raise RuntimeError("an unexpected failure")

    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.formatter("json"))
    chat_log = logging.getLogger("chat")
    chat_log.addHandler(handler)
    try:
        async with asyncio.timeout(10), app.test_app() as test_app:
            answer = await test_app.test_client().get(
                "/boom", headers={"X-Request-ID": "trace-500"}
            )
    finally:
        chat_log.removeHandler(handler)
    assert answer.status_code == 500
    assert orjson.loads(await answer.get_data())["error"]["request_id"] == "trace-500"
    failures = [
        line for line in json_lines(out.getvalue()) if line.get("request_id") == "trace-500"
    ]
    assert any(
        "RuntimeError: an unexpected failure" in line.get("exc_info", "") for line in failures
    )


def test_the_database_password_never_reaches_a_log_or_a_message(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    """A PostgreSQL CHAT_DATABASE carries its password in the URL (or in ``?password=``):
    the start-up line names the database without it, and so do the commands' errors."""
    url = postgres.new_database().replace("@", ":url-secret@", 1) + "?password=query-secret"
    live = LiveServer(tmp_path, {"CHAT_LOG_LEVEL": "INFO"}, database=url)  # trust: any password
    live.start()
    live.terminate()
    ready = [line for line in live.log().splitlines() if "chat ready: database" in line]
    assert len(ready) == 1 and "postgresql://chat@127.0.0.1:" in ready[0], live.log()
    unreachable = f"postgresql://chat:url-secret@127.0.0.1:{free_port()}/chat"
    runs = [(url, "migrate"), (unreachable, "migrate"), (unreachable, "users list")]
    for database, command in runs:
        result = run_chat(*command.split(), cwd=tmp_path, CHAT_DATABASE=database)
        said = result.stdout + result.stderr
        assert "postgresql://chat@127.0.0.1:" in said, (command, said)  # names the database
        assert "secret" not in said, (command, said)
    assert "secret" not in live.log()


@pytest.mark.parametrize(
    "query",
    [
        b"rooms=a&access_token=SECRET",
        b"z=access_token&access_toke%6E=SECRET",  # the name percent-encoded: the service reads it
        b"access%5Ftoken=SECRET",
        b"x=1;access_token=SECRET",
        b"ACCESS_TOKEN=SECRET&x=1",
        b"password=SECRET%26more&user=x",
        b"jwt=SECRET&token=SECRET",
    ],
)
def test_a_credential_in_the_query_never_reaches_the_request_line(query: bytes) -> None:
    """However its name is spelled or encoded, a credential's value is replaced in the path
    that the request line logs, and the rest of the query is kept as it came."""
    shown = logs.redacted_target("/api/rooms/r/events", query)
    assert "SECRET" not in shown and "[redacted]" in shown, shown
    assert shown.startswith("/api/rooms/r/events?")
    assert logs.redacted_target("/api/events", b"rooms=a,b&user=alice") == (
        "/api/events?rooms=a,b&user=alice"
    )


def test_a_path_cannot_write_a_line_of_its_own_into_a_text_log() -> None:
    """A probe: ``GET /x%0A2026-12-05 ... INFO chat.access: forged ...`` made two lines of the
    text log, the second as if another request had been answered (the server decodes the
    path). Its control characters are percent-encoded again in the request line."""
    shown = logs.redacted_target("/x\n2026-12-05 09:00:00,000 INFO chat.access: forged\r\x00", b"")
    assert shown == "/x%0A2026-12-05 09:00:00,000 INFO chat.access: forged%0D%00"
