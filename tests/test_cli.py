"""The command line as a user runs it: --help, migrate, serve's refusals."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.commands import run_chat
from tests.live import ROOT, LiveServer, free_port, open_stream
from tests.postgres_server import PostgresServer
from tests.redis_server import RedisServer


def test_help_lists_commands_and_options(tmp_path: Path) -> None:
    top = run_chat("--help", cwd=tmp_path)
    assert top.returncode == 0
    assert "serve" in top.stdout and "migrate" in top.stdout
    serve = run_chat("serve", "--help", cwd=tmp_path)
    assert serve.returncode == 0
    for option in ("--host", "--port", "--workers"):
        assert option in serve.stdout
    assert run_chat("migrate", "--help", cwd=tmp_path).returncode == 0


def test_migrate_creates_the_schema_once(tmp_path: Path) -> None:
    database = tmp_path / "fresh.db"
    first = run_chat("migrate", cwd=tmp_path, CHAT_DATABASE=str(database))
    assert first.returncode == 0, first.stderr
    assert "applied 0001_initial" in first.stdout
    with sqlite3.connect(database) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        versions = [row[0] for row in conn.execute("SELECT version FROM schema_migrations")]
    assert {
        "rooms",
        "events",
        "messages",
        "reactions",
        "messages_fts",
        "schema_migrations",
    } <= tables
    shipped = sorted(int(p.name.split("_")[0]) for p in (ROOT / "migrations").glob("*.sql"))
    assert versions == shipped == [1, 2, 3, 4, 5, 6, 7, 10]
    assert "messages_fts_insert" not in tables  # 0003: the writer indexes new messages
    second = run_chat("migrate", cwd=tmp_path, CHAT_DATABASE=str(database))
    assert second.returncode == 0
    assert "(0 applied)" in second.stdout


def test_migrate_on_postgresql_creates_the_schema_once_and_hides_the_url(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    url = postgres.new_database().replace("@", ":a-secret@", 1)  # trust ignores the password
    first = run_chat("migrate", cwd=tmp_path, CHAT_DATABASE=url)
    assert first.returncode == 0, first.stderr
    assert "applied 0001_initial" in first.stdout and "applied 0004_access" in first.stdout
    assert "a-secret" not in first.stdout + first.stderr
    with psycopg.connect(url) as conn:
        versions = [row[0] for row in conn.execute("SELECT version FROM schema_migrations")]
        tables = {row[0] for row in conn.execute("SELECT tablename FROM pg_tables")}
    shipped = sorted(
        int(p.name.split("_")[0]) for p in (ROOT / "migrations" / "postgresql").glob("*.sql")
    )
    assert sorted(versions) == shipped == [1, 2, 4, 5, 7, 8, 9, 11]
    assert {"rooms", "events", "messages", "reactions", "event_ids", "members"} <= tables
    second = run_chat("migrate", cwd=tmp_path, CHAT_DATABASE=url)
    assert second.returncode == 0, second.stderr
    assert "(0 applied)" in second.stdout


def test_migrate_says_when_postgresql_is_unreachable(tmp_path: Path) -> None:
    closed = f"postgresql://chat:a-secret@127.0.0.1:{free_port()}/chat"
    result = run_chat("migrate", cwd=tmp_path, CHAT_DATABASE=closed)
    assert result.returncode == 1
    assert result.stderr.startswith(
        "error: cannot migrate CHAT_DATABASE postgresql://chat@127.0.0.1:"
    )
    assert "connection failed" in result.stderr
    assert "Traceback" not in result.stderr and "a-secret" not in result.stderr


@pytest.mark.parametrize("database", ["", "  ", ":memory:"])
def test_a_database_that_would_store_nothing_is_refused(tmp_path: Path, database: str) -> None:
    """A defect a probe found, fixed: with an empty CHAT_DATABASE, ``tokens create`` exited 0
    and printed a token stored nowhere, and ``users list`` or ``serve`` gave a traceback."""
    for command in (("tokens", "create", "bob"), ("users", "list"), ("migrate",)):
        result = run_chat(*command, cwd=tmp_path, CHAT_DATABASE=database)
        assert result.returncode == 2, result
        assert result.stdout == ""  # no token
        assert result.stderr.startswith("CHAT_DATABASE: "), result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", [("migrate",), ("users", "list"), ("serve", "--port", "0")])
def test_a_database_it_cannot_open_is_one_line_without_its_password(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    """A probe: ``serve`` on a database it cannot open (a folder that does not exist, a file
    that is not a database, PostgreSQL down) printed a traceback of about 100 lines, and
    libpq's message for a URL it could not parse quoted its password, in every command."""
    garbage = tmp_path / "garbage.db"
    garbage.write_text("not a database\n" * 100)
    cases = {
        str(tmp_path / "missing" / "chat.db"): "unable to open database file",
        str(garbage): "file is not a database",
        f"postgresql://chat:s3cr%ZZet@127.0.0.1:{free_port()}/chat": 'token: "***"',
        f"postgresql://chat:a-secret@127.0.0.1:{free_port()}/chat": "connection failed",
    }
    verb = "migrate" if command == ("migrate",) else "open"
    for database, reason in cases.items():
        result = run_chat(*command, cwd=tmp_path, CHAT_DATABASE=database)
        assert result.returncode == 1, result
        assert result.stderr.startswith(f"error: cannot {verb} CHAT_DATABASE "), result.stderr
        assert reason in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
        assert "s3cr" not in result.stderr and "a-secret" not in result.stderr, result.stderr


def test_migrations_that_cannot_be_right_are_said(tmp_path: Path) -> None:
    """A probe: a CHAT_MIGRATIONS_DIR that does not exist was "up to date" over an empty
    database (``serve`` then failed on a missing table); a stray ``notes.sql`` there was a
    traceback; a database migrated by a newer version was used without a word."""
    nowhere = run_chat(
        "migrate", cwd=tmp_path, CHAT_DATABASE="x.db", CHAT_MIGRATIONS_DIR=str(tmp_path / "no")
    )
    assert nowhere.returncode == 1, nowhere
    assert "no migrations (NNNN_name.sql) in" in nowhere.stderr
    assert not (tmp_path / "x.db").exists()
    stray = tmp_path / "with-notes"
    shutil.copytree(ROOT / "migrations", stray)
    (stray / "notes.sql").write_text("-- not a migration\n")
    noted = run_chat("migrate", cwd=tmp_path, CHAT_DATABASE="x.db", CHAT_MIGRATIONS_DIR=str(stray))
    assert noted.returncode == 1, noted
    assert "a migration file's name is not NNNN_name.sql" in noted.stderr
    assert "Traceback" not in noted.stderr
    assert run_chat("migrate", cwd=tmp_path, CHAT_DATABASE="x.db").returncode == 0
    with sqlite3.connect(tmp_path / "x.db") as conn:
        conn.execute("INSERT INTO schema_migrations VALUES (9999, 'from_the_future', 'x')")
    newer = run_chat("migrate", cwd=tmp_path, CHAT_DATABASE="x.db")
    assert newer.returncode == 0, newer  # the version before keeps running in an upgrade
    assert "migrations this version does not know (9999_from_the_future)" in newer.stderr


def test_a_database_that_fails_a_command_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    """A defect a probe found, fixed: a database that refuses writes (read-only, damaged) gave
    every ``users`` and ``tokens`` command a raw sqlite3 traceback. Here the tokens table is
    gone from a migrated database."""
    database = tmp_path / "chat.db"
    assert run_chat("migrate", cwd=tmp_path, CHAT_DATABASE=str(database)).returncode == 0
    with sqlite3.connect(database) as conn:
        conn.execute("DROP TABLE tokens")
    for command in (("tokens", "create", "bob"), ("tokens", "list")):
        result = run_chat(*command, cwd=tmp_path, CHAT_DATABASE=str(database))
        assert result.returncode == 1, result
        assert result.stdout == ""
        assert result.stderr.startswith(f"error: CHAT_DATABASE {database} failed: "), result
        assert "no such table: tokens" in result.stderr
        assert "Traceback" not in result.stderr


def test_a_new_database_file_is_readable_by_its_owner_alone(tmp_path: Path) -> None:
    """It holds password hashes and token hashes: a new SQLite file (and its WAL, which SQLite
    makes with the file's mode) is 0600, whatever the umask lets others read (it was 0644).
    A file that exists keeps the mode its operator gave it."""
    database = tmp_path / "chat.db"
    assert run_chat("migrate", cwd=tmp_path, CHAT_DATABASE=str(database)).returncode == 0
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
    with sqlite3.connect(database) as conn:  # the WAL appears while a connection is open
        conn.execute("SELECT count(*) FROM users").fetchone()
        assert stat.S_IMODE((tmp_path / "chat.db-wal").stat().st_mode) == 0o600
    shared = tmp_path / "shared.db"
    shared.touch(mode=0o640)
    assert run_chat("migrate", cwd=tmp_path, CHAT_DATABASE=str(shared)).returncode == 0
    assert stat.S_IMODE(shared.stat().st_mode) == 0o640 & ~current_umask()


def test_serve_warns_of_a_database_file_others_may_read(tmp_path: Path) -> None:
    """A database made before files were made 0600 (or opened up by hand) is used as it is,
    with a warning that names it and says what to do."""
    database = tmp_path / "old.db"
    assert run_chat("migrate", cwd=tmp_path, CHAT_DATABASE=str(database)).returncode == 0
    database.chmod(0o644)
    live = LiveServer(tmp_path, database=database)
    live.start()
    try:
        assert f"CHAT_DATABASE {database} (or its -wal or -shm file) is mode 644" in live.log()
        assert "chmod 600 it and its -wal and -shm files" in live.log()
    finally:
        live.kill()
    private = LiveServer(tmp_path / "new", {})  # a new file: nothing to say
    (tmp_path / "new").mkdir()
    private.start()
    try:
        assert "other users of this machine" not in private.log()
    finally:
        private.kill()


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_serve_says_in_one_line_when_the_jwt_public_key_file_is_unusable(
    tmp_path: Path,
) -> None:
    """A defect a probe found, fixed: a CHAT_JWT_PUBLIC_KEY_FILE that is missing, a folder, not
    PEM, or a private key stopped ``serve`` with a traceback of the app's start."""
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key\n")
    p384 = tmp_path / "p384.pem"  # an EC key ES256 cannot use: every JWT would be a 401
    p384.write_bytes(
        ec.generate_private_key(ec.SECP384R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    private = tmp_path / "private.pem"
    private.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    for key_file in (tmp_path / "missing.pem", tmp_path, junk, p384, private):
        assert_serve_refuses(
            tmp_path,
            "CHAT_JWT_PUBLIC_KEY_FILE: cannot use ",
            CHAT_JWT_PUBLIC_KEY_FILE=str(key_file),
        )


def assert_serve_refuses(tmp_path: Path, said: str, **settings: str) -> None:
    """``serve`` with these settings stops before it starts: exit 2, one line that starts with
    ``said``, no traceback, no database made."""
    result = run_chat(
        "serve",
        "--port",
        str(free_port()),
        cwd=tmp_path,
        CHAT_DATABASE=str(tmp_path / "x.db"),
        **settings,
    )
    assert result.returncode == 2, result
    assert result.stderr.startswith(said), result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.db").exists()


def test_serve_refuses_a_short_jwt_secret_and_two_kinds_of_jwt_key(tmp_path: Path) -> None:
    """Left over from a probe, fixed: a CHAT_JWT_SECRET shorter than HS256's 32 bytes (RFC
    7518, 3.2: a MUST) was taken without a word, and with CHAT_JWT_PUBLIC_KEY_FILE set too the
    secret was silently ignored (every HS256 JWT a 401)."""
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    for settings, expected in (
        ({"CHAT_JWT_SECRET": "too short"}, "CHAT_JWT_SECRET: 9 bytes; HS256 needs at least 32"),
        ({"CHAT_JWT_SECRET": "s" * 40 + "\udcff"}, "CHAT_JWT_SECRET is not UTF-8 text"),
        (
            {"CHAT_JWT_SECRET": "s" * 40, "CHAT_JWT_PUBLIC_KEY_FILE": str(key_file)},
            "CHAT_JWT_SECRET and CHAT_JWT_PUBLIC_KEY_FILE are both set",
        ),
    ):
        assert_serve_refuses(tmp_path, expected, **settings)


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        (("--token", "t\u00f8ken"), "must be printable ASCII"),
        (("--url", "http://[::1"), "is not a URL"),
        (("--url", "http://127.0.0.1:abc/"), "is not a URL"),
        (("--url", "http://127.0.0.1:99999/"), "is not a URL"),
    ],
)
def test_post_and_tail_refuse_a_bad_token_or_url_in_one_line(
    tmp_path: Path, option: tuple[str, str], expected: str
) -> None:
    """A defect a probe found, fixed: a non-ASCII token, or a URL with an unclosed IPv6
    bracket, stopped ``post`` and ``tail`` with a traceback (UnicodeEncodeError, ValueError)."""
    for command in (("post", "r", "hi"), ("tail", "r")):
        result = run_chat(*command, *option, cwd=tmp_path)
        assert result.returncode == 2, result
        assert expected in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "setting", ["CHAT_RETENTION_DAYS", "CHAT_IDEMPOTENCY_TTL_HOURS", "CHAT_SESSION_TTL_HOURS"]
)
@pytest.mark.parametrize("value", ["inf", "nan", "1e308", "1e8"])
def test_a_duration_no_calendar_can_hold_is_refused(
    tmp_path: Path, setting: str, value: str
) -> None:
    """A defect a probe found, fixed: CHAT_RETENTION_DAYS=inf or 1e308 was accepted, and the
    retention task's date arithmetic would overflow and stop it without a word; the review
    found the same in the idempotency keys' purge and in every sign-in (a 500)."""
    result = run_chat("migrate", cwd=tmp_path, CHAT_DATABASE="x.db", **{setting: value})
    assert result.returncode == 2, result
    assert result.stderr.startswith(f"{setting}: "), result.stderr
    assert not (tmp_path / "x.db").exists()


def test_in_json_mode_a_start_refused_is_a_json_line(tmp_path: Path) -> None:
    """ACCESS.md: with CHAT_LOG_FORMAT=json, one JSON object a line on stderr. A probe: the
    one-line refusals of ``serve`` (a port in use, a database it cannot open, a setting) were
    plain text there."""
    cases = [
        ({"CHAT_DATABASE": str(tmp_path / "missing" / "x.db")}, ["--port", "0"], 1),
        ({"CHAT_DATABASE": "x.db", "CHAT_JWT_SECRET": "short"}, ["--port", "0"], 2),
        ({"CHAT_DATABASE": "x.db"}, ["--host", "0.0.0.0", "--port", "0"], 2),
    ]
    for env, args, code in cases:
        result = run_chat("serve", *args, cwd=tmp_path, CHAT_LOG_FORMAT="json", **env)
        assert result.returncode == code, result
        (line,) = result.stderr.strip().splitlines()
        said = json.loads(line)
        assert said["level"] == "ERROR" and said["logger"] == "chat.cli", said


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("CHAT_LOG_LEVEL", "LOUD"),
        ("CHAT_FORWARDED_ALLOW_IPS", "garbage"),
        ("CHAT_FORWARDED_ALLOW_IPS", "10.0.0.1, 10.0.0.0/33"),
        ("CHAT_DEAD_PEER_SECONDS", "inf"),
        ("CHAT_DEAD_PEER_SECONDS", "1e12"),
        ("CHAT_SHUTDOWN_GRACE_SECONDS", "inf"),
        ("CHAT_HEARTBEAT_SECONDS", "0.000001"),
        ("CHAT_STREAM_MAX_SECONDS", "nan"),
    ],
)
def test_a_setting_that_would_fail_at_run_time_is_refused_by_its_name(
    tmp_path: Path, setting: str, value: str
) -> None:
    """A probe: these were accepted, then were a traceback at the server's start (a log level
    logging does not know, a proxy address that is none, a duration the socket option or
    the shutdown watchdog's timer overflowed on), or a ping 33,000 times in 2 s."""
    env = {"CHAT_DATABASE": "x.db", setting: value}
    result = run_chat("serve", "--port", "0", cwd=tmp_path, **env)
    assert result.returncode == 2, result
    assert result.stderr.startswith(f"{setting}: "), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "x.db").exists()


def test_a_log_level_is_read_in_any_case(tmp_path: Path) -> None:
    result = run_chat("migrate", cwd=tmp_path, CHAT_DATABASE="x.db", CHAT_LOG_LEVEL="warning")
    assert result.returncode == 0, result


def test_an_empty_database_setting_is_one_line(tmp_path: Path) -> None:
    """It was followed by a second, puzzling line about CHAT_DATABASE_POOL_SIZE (a default
    made from the setting in error)."""
    result = run_chat("migrate", cwd=tmp_path, CHAT_DATABASE="")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "CHAT_DATABASE: Value error, name a SQLite file (a path, or sqlite:///path) or a "
        "PostgreSQL URL"
    ]


def test_a_database_made_through_a_symbolic_link_is_private(tmp_path: Path) -> None:
    """A probe: CHAT_DATABASE a symbolic link to a file not made yet: the file was made with
    the umask's mode (readable by others), where a new database is its owner's alone."""
    (tmp_path / "link.db").symlink_to(tmp_path / "target.db")
    result = run_chat("migrate", cwd=tmp_path, CHAT_DATABASE=str(tmp_path / "link.db"))
    assert result.returncode == 0, result
    assert stat.S_IMODE((tmp_path / "target.db").stat().st_mode) == 0o600


def test_a_command_that_makes_a_new_database_says_so(tmp_path: Path) -> None:
    """A probe: ``tokens create`` with a mistyped CHAT_DATABASE made a new database and kept
    the token there without a word (the service then refused it)."""
    made = run_chat("tokens", "create", "bob", cwd=tmp_path, CHAT_DATABASE="typo.db")
    assert made.returncode == 0, made
    assert made.stderr.startswith("note: CHAT_DATABASE typo.db did not exist"), made.stderr
    again = run_chat("tokens", "list", cwd=tmp_path, CHAT_DATABASE="typo.db")
    assert again.returncode == 0 and "did not exist" not in again.stderr, again


def test_several_workers_need_a_shared_broker(tmp_path: Path) -> None:
    result = run_chat("serve", "--workers", "2", cwd=tmp_path, CHAT_DATABASE="x.db")
    assert result.returncode == 2
    assert "CHAT_BROKER" in result.stderr
    assert not (tmp_path / "x.db").exists()


def test_serve_says_in_one_line_when_it_cannot_listen(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """A port in use (or an address not of this machine) was a traceback of the server's
    start; and a second ``serve --workers 2`` on the port of a running one started without
    a word, its workers bound beside the first's (SO_REUSEPORT), and the kernel shared the
    connections between two services on two databases (a probe saw 20 posts split 9/11)."""
    broker = {"CHAT_BROKER": redis_server.url}
    first = LiveServer(tmp_path / "first", broker, args=["--workers", "2"])
    (tmp_path / "first").mkdir()
    first.start()
    try:
        for args in (["--workers", "2"], []):
            result = run_chat(
                "serve", "--port", str(first.port), *args, cwd=tmp_path, **broker,
                CHAT_DATABASE="second.db", CHAT_BROKER_PREFIX="second",
            )  # fmt: skip
            assert result.returncode == 1, result
            lines = result.stderr.strip().splitlines()
            assert lines == [f"cannot listen on 127.0.0.1:{first.port}: Address already in use"]
        refused = run_chat("serve", "--port", "65536", cwd=tmp_path, CHAT_DATABASE="third.db")
        assert refused.returncode == 2 and "is not a port (0-65535)" in refused.stderr, refused
        assert not (tmp_path / "second.db").exists() and not (tmp_path / "third.db").exists()
    finally:
        first.terminate()


async def test_a_broker_on_a_unix_socket_carries_events(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """``CHAT_BROKER=unix:///path`` was accepted but never connected (redis-py's Unix
    connection refuses the TCP keepalive option): /readyz stayed 503 and the log repeated
    the error; start-up named it ``unix://None:None`` (a probe). Two processes on one
    database, the broker between them: a post to one reaches a stream of the other."""
    env = {"CHAT_BROKER": redis_server.unix_url}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one = LiveServer(
        tmp_path / "a", {**env, "CHAT_LOG_LEVEL": "INFO"}, database=tmp_path / "chat.db"
    )
    two = LiveServer(tmp_path / "b", env, database=tmp_path / "chat.db")
    one.start()
    two.start()
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            for live in (one, two):
                ready = await client.get(f"{live.url}/readyz")
                assert ready.status_code == 200, ready.text
            async with open_stream(client, f"{two.url}/api/rooms/sock/events") as stream:
                posted = await client.post(
                    f"{one.url}/api/rooms/sock/messages", json={"author": "a", "text": "via"}
                )
                assert posted.status_code == 201, posted.text
                assert int((await stream.next()).id or 0) == posted.json()["id"]
        assert f"broker unix://{redis_server.socket}" in one.log(), one.log()
        assert "no Redis broker" not in one.log() + two.log()
    finally:
        one.terminate()
        two.terminate()


def test_a_broker_url_whose_port_is_not_a_number_is_a_bad_setting(tmp_path: Path) -> None:
    result = run_chat("migrate", cwd=tmp_path, CHAT_BROKER="redis://127.0.0.1:abc/0")
    assert result.returncode == 2, result
    assert result.stderr.startswith("CHAT_BROKER: "), result.stderr


def test_readme_opens_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    head = readme.split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in head.strip().splitlines()]
    assert commands == ["scripts/serve", "bash .ci/run"]
    assert os.access(ROOT / "scripts" / "serve", os.X_OK)
    assert "scripts/install test" in (ROOT / ".ci" / "run").read_text()


def test_readme_lists_every_setting() -> None:
    from chat.config import Settings

    readme = (ROOT / "README.md").read_text()
    missing = [
        f"CHAT_{name.upper()}"
        for name in Settings.model_fields
        if f"`CHAT_{name.upper()}`" not in readme
    ]
    assert missing == []


def test_docs_show_every_feature_with_curl(tmp_path: Path) -> None:
    """/openapi.json (rendered by /docs) documents each route and opens with curl examples."""
    import asyncio

    from chat.app import create_app
    from chat.config import Settings

    async def fetch() -> tuple[dict[str, object], int, int, set[str]]:
        app = create_app(Settings(database=str(tmp_path / "docs.db")))
        rules = {re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", r.rule) for r in app.url_map.iter_rules()}
        async with app.test_app() as test_app:
            client = test_app.test_client()
            spec = await (await client.get("/openapi.json")).get_json()
            page = await client.get("/docs")
            asset = await client.get("/docs/assets/swagger-ui-bundle.js")
            return spec, page.status_code, asset.status_code, rules

    spec, page_status, asset_status, rules = asyncio.run(asyncio.wait_for(fetch(), 30))
    assert (page_status, asset_status) == (200, 200)  # served locally: works offline
    description = str(spec["info"]["description"])  # type: ignore[index]
    for path in (
        "/messages",
        "/reactions",
        "/activity",
        "/typing",
        "/presence",
        "/read",
        "/unread",
        "q=",
        "Idempotency-Key",
        "Last-Event-ID",
        "rooms=*",
        "mentions=",
    ):
        assert path in description, path
    # every route of the API under the path it is served at (a placeholder without a converter
    # followed by another once made quart-schema list /api/rooms/{event_id})
    undocumented = {"/", "/docs", "/docs/assets/{name}", "/metrics", "/openapi.json"}
    assert set(spec["paths"]) == rules - undocumented - {"/static/{filename}"}  # type: ignore[arg-type]


START_UP = """
import asyncio, json, sys
import chat.serve  # all that `python -m chat serve` imports
from chat import credentials
from chat.app import create_app
from chat.config import Settings
from chat.store import Store

settings = Settings(database=sys.argv[1], jwt_secret=sys.argv[2] or None)
create_app(settings)

async def main():
    store = Store(settings, on_commit=lambda events: None)
    await store.open()
    await store.close()

asyncio.run(main())
hashes = credentials.dummy_hash.cache_info().currsize
loaded = {name: name in sys.modules for name in ("psycopg", "jwt", "cryptography")}
print(json.dumps({**loaded, "hashes": hashes}))
"""


def test_start_up_loads_only_what_its_settings_need_and_hashes_no_password(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    """What every start pays (the service, each worker a supervisor restarts, each command):
    no PostgreSQL driver for a SQLite store, no JWT library (PyJWT, cryptography) unless JWTs
    are configured, and no Argon2 hash before a sign-in needs one."""
    for database, jwt_secret, loads in (
        (str(tmp_path / "chat.db"), "", False),
        (postgres.new_database(), "a shared secret of the host application", True),
    ):
        ran = subprocess.run(
            [sys.executable, "-c", START_UP, database, jwt_secret],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ran.returncode == 0, ran.stderr
        expected = {"psycopg": loads, "jwt": loads, "cryptography": loads, "hashes": 0}
        assert json.loads(ran.stdout) == expected, database
