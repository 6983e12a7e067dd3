"""The access commands as an operator runs them: ``users``, ``tokens``, ``post``/``tail`` with a
token, and ``serve``'s protected start (ACCESS.md). Each runs the real ``python -m chat`` on a
real SQLite file, against a real service where it takes one; every wait is bounded."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest

from chat.cli import is_loopback
from tests.commands import CHAT, TailProcess, run_chat, without_chat_settings
from tests.live import LiveServer, free_port, spawn_and_wait

TOKEN_LINE = r"chat_[A-Za-z0-9_-]{43}\n"
REVOCATION_WAIT_S = 10.0  # the service polls revocations every 2 s


class Operator:
    """Runs the command line on one database (a server's, when given one)."""

    def __init__(self, cwd: Path, database: Path, url: str = "") -> None:
        self.cwd, self.database, self.url = cwd, database, url

    def __call__(self, *args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
        settings = {
            "CHAT_DATABASE": str(self.database),
            **({"CHAT_URL": self.url} if self.url else {}),
        }
        return run_chat(*args, cwd=self.cwd, stdin=stdin, **settings, **env)

    def ok(self, *args: str, stdin: str = "", **env: str) -> str:
        result = self(*args, stdin=stdin, **env)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout

    def add_user(self, name: str, password: str, *options: str) -> None:
        self.ok("users", "add", name, "--password-stdin", *options, stdin=password + "\n")

    def token(self, name: str, *options: str) -> str:
        result = self("tokens", "create", name, *options)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def tokens(self) -> list[dict[str, object]]:
        listed = json.loads(self.ok("tokens", "list", "--json"))
        assert isinstance(listed, list)
        return listed


@pytest.fixture
def operator(tmp_path: Path) -> Operator:
    return Operator(tmp_path, tmp_path / "chat.db")


@pytest.fixture
def required(make_server: Callable[..., LiveServer], tmp_path: Path) -> tuple[LiveServer, Operator]:
    """A service with CHAT_AUTH=required, and the command line on its database."""
    live = make_server(CHAT_AUTH="required")
    return live, Operator(tmp_path, live.database, live.url)


def sign_in(url: str, user: str, password: str) -> httpx.Response:
    return httpx.post(f"{url}/api/session", json={"user": user, "password": password}, timeout=10)


def who(url: str, token: str) -> httpx.Response:
    return httpx.get(f"{url}/api/session", headers={"Authorization": f"Bearer {token}"}, timeout=10)


def wait_for_status(
    url: str, token: str, status: int, timeout_s: float = REVOCATION_WAIT_S
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        seen = who(url, token).status_code
        if seen == status:
            return
        assert time.monotonic() < deadline, f"still {seen} after {timeout_s} s, not {status}"
        time.sleep(0.2)


# --- users ----------------------------------------------------------------------------------


def test_users_add_list_passwd_remove(operator: Operator) -> None:
    operator.add_user("alice", "correct horse")
    operator.add_user("root", "battery staple", "--admin")
    operator.add_user("ci-bot", "bot secret", "--role", "bot")

    again = operator("users", "add", "alice", "--password-stdin", stdin="other\n")
    assert again.returncode == 1
    assert "alice" in again.stderr and "exists" in again.stderr
    assert again.stdout == ""

    table = operator.ok("users", "list").splitlines()
    assert table[0].split() == ["USER", "ROLE", "CREATED_AT"]
    assert [line.split()[:2] for line in table[1:]] == [
        ["alice", "member"],
        ["ci-bot", "bot"],
        ["root", "admin"],
    ]
    listed = json.loads(operator.ok("users", "list", "--json"))
    assert [(u["user"], u["role"]) for u in listed] == [
        ("alice", "member"),
        ("ci-bot", "bot"),
        ("root", "admin"),
    ]
    assert all(datetime.fromisoformat(u["created_at"]) for u in listed)

    with sqlite3.connect(operator.database) as conn:
        stored = dict(conn.execute("SELECT name, password_hash FROM users").fetchall())
    assert all(encoded.startswith("$argon2id$") for encoded in stored.values())
    assert "correct horse" not in stored["alice"]

    operator.ok("users", "passwd", "alice", "--password-stdin", stdin="new password\n")
    with sqlite3.connect(operator.database) as conn:
        (changed,) = conn.execute("SELECT password_hash FROM users WHERE name = 'alice'").fetchone()
    assert changed.startswith("$argon2id$") and changed != stored["alice"]

    unknown = operator("users", "passwd", "nobody", "--password-stdin", stdin="x\n")
    assert unknown.returncode == 1 and "nobody" in unknown.stderr

    assert "alice" in operator.ok("users", "remove", "alice")
    gone = operator("users", "remove", "alice")
    assert gone.returncode == 1 and "no account" in gone.stderr
    assert [u["user"] for u in json.loads(operator.ok("users", "list", "--json"))] == [
        "ci-bot",
        "root",
    ]


def test_users_refuses_bad_names_and_passwords(operator: Operator) -> None:
    for name in (" ", "x" * 65, "tab\there"):
        bad = operator("users", "add", name, "--password-stdin", stdin="secret\n")
        assert bad.returncode == 2, name
        assert "invalid user name" in bad.stderr
    empty = operator("users", "add", "eve", "--password-stdin", stdin="\n")
    assert empty.returncode == 2 and "empty" in empty.stderr  # bad input, as a bad name
    both = operator("users", "add", "eve", "--admin", "--role", "bot", "--password-stdin")
    assert both.returncode == 2 and "not allowed with" in both.stderr
    assert json.loads(operator.ok("users", "list", "--json")) == []


def test_a_password_that_is_not_utf8_is_refused_in_one_line(operator: Operator) -> None:
    """A defect a probe found, fixed: a password line in Latin-1 (``caf\\xe9``) stopped
    ``users add`` and ``users passwd`` with a UnicodeEncodeError traceback."""
    operator.add_user("alice", "a good password")
    plain = {**without_chat_settings(), "CHAT_DATABASE": str(operator.database)}
    strict = {**plain, "PYTHONIOENCODING": "utf-8:strict"}  # a UTF-8 locale's stdin
    for args, env in (
        (("users", "add", "latin"), plain),
        (("users", "passwd", "alice"), plain),
        (("users", "add", "latin"), strict),
    ):
        result = subprocess.run(
            [*CHAT, *args, "--password-stdin"],
            cwd=operator.cwd,
            env=env,
            input=b"caf\xe9\n",
            capture_output=True,
            timeout=60,
        )
        assert result.returncode == 2, result
        assert b"not UTF-8" in result.stderr and b"Traceback" not in result.stderr
    assert [u["user"] for u in json.loads(operator.ok("users", "list", "--json"))] == ["alice"]


def test_a_new_password_signs_in_and_the_old_one_no_longer(
    required: tuple[LiveServer, Operator],
) -> None:
    live, operator = required
    operator.add_user("alice", "old password")
    first = sign_in(live.url, "alice", "old password")
    assert first.status_code == 201
    assert (first.json()["user"], first.json()["role"]) == ("alice", "member")

    operator.ok("users", "passwd", "alice", "--password-stdin", stdin="new password\n")
    assert sign_in(live.url, "alice", "old password").status_code == 401
    again = sign_in(live.url, "alice", "new password")
    assert again.status_code == 201 and again.json()["user"] == "alice"


# --- tokens ---------------------------------------------------------------------------------


def test_tokens_create_prints_the_token_alone_and_it_signs_in(
    required: tuple[LiveServer, Operator],
) -> None:
    live, operator = required
    created = operator("tokens", "create", "deploy-bot")
    assert created.returncode == 0, created.stderr
    assert re.fullmatch(TOKEN_LINE, created.stdout), created.stdout
    token = created.stdout.strip()
    answer = who(live.url, token)
    assert answer.status_code == 200
    assert answer.json() == {"user": "deploy-bot", "role": "bot", "guest": False}

    (row,) = operator.tokens()
    assert str(row["id"]) in created.stderr  # the id to revoke it with, on stderr
    assert (row["user"], row["role"], row["kind"], row["rooms"]) == (
        "deploy-bot",
        "bot",
        "api",
        None,
    )
    assert row["expires_at"] is None and row["revoked_at"] is None
    table = operator.ok("tokens", "list")
    assert table.split("\n")[0].split() == [
        "ID",
        "USER",
        "ROLE",
        "KIND",
        "ROOMS",
        "CREATED_AT",
        "EXPIRES_AT",
        "REVOKED_AT",
    ]
    assert str(row["id"]) in table and "deploy-bot" in table
    for listing in (table, operator.ok("tokens", "list", "--json")):
        assert token not in listing and token[5:] not in listing

    admin = operator.token("ops", "--role", "admin")
    assert who(live.url, admin).json() == {"user": "ops", "role": "admin", "guest": False}


def test_tokens_rooms_scope_and_time_to_live(required: tuple[LiveServer, Operator]) -> None:
    live, operator = required
    token = operator.token("carol", "--role", "member", "--rooms", "general,dev", "--ttl-days", "2")
    (row,) = operator.tokens()
    assert row["rooms"] == ["dev", "general"]
    expires = datetime.fromisoformat(str(row["expires_at"]))
    assert abs(expires - (datetime.now(UTC) + timedelta(days=2))) < timedelta(minutes=2)
    line = next(line for line in operator.ok("tokens", "list").splitlines() if "carol" in line)
    assert "dev,general" in line

    assert who(live.url, token).json() == {"user": "carol", "role": "member", "guest": False}
    inside = operator("post", "general", "in scope", "--token", token)
    assert inside.returncode == 0, inside.stderr
    outside = operator("post", "random", "out of scope", "--token", token)
    assert outside.returncode == 1
    assert "403" in outside.stderr

    bad_room = operator("tokens", "create", "carol", "--rooms", "general,Not A Room")
    assert bad_room.returncode == 2 and "invalid room name" in bad_room.stderr
    assert bad_room.stdout == ""
    for ttl in ("0", "-1"):
        bad_ttl = operator("tokens", "create", "carol", "--ttl-days", ttl)
        assert bad_ttl.returncode == 2 and "--ttl-days" in bad_ttl.stderr
    assert len(operator.tokens()) == 1


def test_a_revoked_token_is_refused_by_the_running_service(
    required: tuple[LiveServer, Operator],
) -> None:
    live, operator = required
    token = operator.token("bot-a")
    keep = operator.token("bot-b")
    assert who(live.url, token).status_code == 200  # known to the service (and cached)
    (row, _) = operator.tokens()
    revoked = operator("tokens", "revoke", str(row["id"]))
    assert revoked.returncode == 0, revoked.stderr
    assert f"revoked token {row['id']}" in revoked.stdout
    wait_for_status(live.url, token, 401)
    assert who(live.url, keep).status_code == 200
    (after, _) = operator.tokens()
    assert after["revoked_at"] is not None

    twice = operator("tokens", "revoke", str(row["id"]))
    assert twice.returncode == 0 and "already revoked" in twice.stdout
    unknown = operator("tokens", "revoke", "ffffffffffff")
    assert unknown.returncode == 1 and "no token" in unknown.stderr


def test_tokens_list_of_one_user_takes_the_name_as_the_service_does(operator: Operator) -> None:
    """``tokens list --user NAME`` lists that user's tokens, the name NFC-normalised as every
    user name is (a decomposed "zoë" typed on some keyboards listed nothing)."""
    operator.token("zo\u00eb")
    operator.token("bob")
    for typed in ("zo\u00eb", "zoe\u0308"):
        listed = json.loads(operator.ok("tokens", "list", "--user", typed, "--json"))
        assert [row["user"] for row in listed] == ["zo\u00eb"], typed
    assert json.loads(operator.ok("tokens", "list", "--user", "nobody", "--json")) == []


def with_stdout_closed(operator: Operator, *args: str) -> tuple[int, str]:
    """Run ``chat`` with the operator's database and its stdout closed before it writes, as
    a reader like ``head`` may close it; stdout buffered, as in a shell (it fails at the
    flush): (its exit status, what it said on stderr)."""
    env = {**without_chat_settings(), "CHAT_DATABASE": str(operator.database)}
    env.pop("PYTHONUNBUFFERED", None)
    command = subprocess.Popen(
        [*CHAT, *args], cwd=operator.cwd, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert command.stdout is not None and command.stderr is not None
    command.stdout.close()
    try:
        code = command.wait(timeout=30)
        return code, command.stderr.read().decode()
    finally:
        command.kill()
        command.stderr.close()


@pytest.mark.parametrize("listing", [("tokens", "list"), ("users", "list")])
def test_a_listing_into_a_reader_that_stopped_ends_quietly(
    operator: Operator, listing: tuple[str, str]
) -> None:
    """``tokens list | head -1`` ended with a BrokenPipeError traceback and exit 1 (a probe):
    the reader has what it wanted, so the command ends quietly, exit 0."""
    for n in range(3):
        operator.add_user(f"user{n}", "a long enough password")
        operator.token(f"user{n}")
    code, said = with_stdout_closed(operator, *listing)
    assert code == 0
    assert "Traceback" not in said and "BrokenPipe" not in said, said


def test_a_token_created_into_a_closed_output_says_so_in_one_line(operator: Operator) -> None:
    """``tokens create`` whose standard output was closed ended with a BrokenPipeError
    traceback (a probe); the token exists but was never shown, so the command says which one
    to revoke, in one line, and exits 1."""
    operator.add_user("frank", "a long enough password")
    code, said = with_stdout_closed(operator, "tokens", "create", "frank")
    assert code == 1
    (token,) = [t for t in operator.tokens() if t["user"] == "frank"]
    assert said.splitlines() == [
        f"error: token {token['id']} was created, but standard output was closed before it "
        f"could be shown, and it is shown only once: revoke it with "
        f"`python -m chat tokens revoke {token['id']}` and create another."
    ], said


def test_removing_a_user_revokes_its_tokens_and_sessions(
    required: tuple[LiveServer, Operator],
) -> None:
    live, operator = required
    operator.add_user("dave", "dave's password")
    operator.add_user("erin", "erin's password")
    operator.token("dave")
    (old,) = operator.tokens()
    assert "revoked token" in operator.ok("tokens", "revoke", str(old["id"]))
    operator.token("dave")
    expire = "UPDATE tokens SET expires_at = '2000-01-01T00:00:00.000Z' WHERE revoked_at IS NULL"
    if str(operator.database).startswith("postgresql"):  # one that expired
        with psycopg.connect(str(operator.database), autocommit=True) as pg:
            pg.execute(expire)
    else:
        with sqlite3.connect(operator.database) as conn:
            conn.execute(expire)
    api = operator.token("dave", "--role", "member")
    signed_in = sign_in(live.url, "dave", "dave's password")
    assert signed_in.status_code == 201
    session = signed_in.json()["token"]
    other = sign_in(live.url, "erin", "erin's password").json()["token"]
    for token in (api, session, other):
        assert who(live.url, token).status_code == 200

    removed = operator("users", "remove", "dave")
    assert removed.returncode == 0, removed.stderr
    # the two it ended (not the one revoked nor the one expired before: it once said 4)
    assert removed.stdout == "removed dave and revoked its tokens (2)\n"
    wait_for_status(live.url, api, 401)
    wait_for_status(live.url, session, 401)
    assert who(live.url, other).status_code == 200
    assert sign_in(live.url, "dave", "dave's password").status_code == 401


# --- post and tail with a token -------------------------------------------------------------


def test_post_with_a_token_posts_as_its_user(required: tuple[LiveServer, Operator]) -> None:
    _, operator = required
    token = operator.token("frank", "--role", "member")
    posted = operator("post", "lobby", "hello from frank", "--token", token)
    assert posted.returncode == 0, posted.stderr
    event = json.loads(posted.stdout)
    assert (event["author"], event["text"], event["room"]) == ("frank", "hello from frank", "lobby")

    from_env = operator("post", "lobby", "via CHAT_TOKEN", CHAT_TOKEN=token)
    assert from_env.returncode == 0, from_env.stderr
    assert json.loads(from_env.stdout)["author"] == "frank"

    other = operator("post", "lobby", "as someone else", "--token", token, "--author", "grace")
    assert other.returncode == 1
    assert "403 forbidden" in other.stderr and "frank" in other.stderr

    bad = operator("post", "lobby", "hi", "--token", "chat_" + "x" * 43)
    assert bad.returncode == 1
    assert "401 unauthorized" in bad.stderr and "unknown or revoked" in bad.stderr
    assert bad.stdout == ""

    guest = operator("post", "lobby", "hi", "--author", "grace")
    assert guest.returncode == 1 and "401 unauthorized" in guest.stderr
    nameless = operator("post", "lobby", "hi")
    assert nameless.returncode == 2 and "--author" in nameless.stderr


@pytest.fixture
def tails(tmp_path: Path) -> Iterator[Callable[..., TailProcess]]:
    started: list[TailProcess] = []

    def start(live: LiveServer, *args: str, **env: str) -> TailProcess:
        tail = TailProcess(live.url, list(args), tmp_path, env)
        started.append(tail)
        return tail

    yield start
    for tail in started:
        tail.stop()


def test_tail_with_a_token_follows_and_stops_when_it_is_revoked(
    required: tuple[LiveServer, Operator], tails: Callable[..., TailProcess]
) -> None:
    live, operator = required
    token = operator.token("watcher", "--role", "member")
    operator.ok("post", "news", "before", "--token", token)
    tail = tails(live, "news", "--json", "--since", "0", "--types", "message", CHAT_TOKEN=token)
    (first,) = tail.events(1)
    assert (first["author"], first["text"]) == ("watcher", "before")
    operator.ok("post", "news", "live", "--token", token)
    assert tail.events(1)[0]["text"] == "live"

    (row,) = operator.tokens()
    operator.ok("tokens", "revoke", str(row["id"]))
    # the service ends the stream; the reconnect is refused (401): tail exits, not retries
    assert tail.exit_status() == 1
    assert any("401 unauthorized" in line for line in tail.stderr), tail.stderr


def test_tail_refused_without_a_token_exits_at_once(
    required: tuple[LiveServer, Operator], tails: Callable[..., TailProcess]
) -> None:
    live, _ = required
    for tail in (tails(live, "news"), tails(live, "news", "--token", "chat_" + "y" * 43)):
        assert tail.exit_status() == 1
        assert any("401 unauthorized" in line for line in tail.stderr), tail.stderr


# --- protected start ------------------------------------------------------------------------


def test_serve_on_a_public_address_needs_chat_auth_chosen(tmp_path: Path) -> None:
    for extra in ([], ["--workers", "2"]):
        argv = ["serve", "--host", "0.0.0.0", "--port", str(free_port()), *extra]
        try:  # if it wrongly starts, subprocess.run kills it at the timeout
            refused = run_chat(*argv, cwd=tmp_path, CHAT_DATABASE="x.db")
        except subprocess.TimeoutExpired:
            pytest.fail(f"`{' '.join(argv)}` started without CHAT_AUTH")
        assert refused.returncode == 2, refused.stderr
        for word in ("CHAT_AUTH", "CHAT_AUTH=open", "CHAT_AUTH=required"):
            assert word in refused.stderr
        assert not (tmp_path / "x.db").exists()


@pytest.mark.parametrize("how", ["environment", "dotenv"])
def test_serve_on_a_public_address_starts_once_chat_auth_is_set(tmp_path: Path, how: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    env["CHAT_DATABASE"] = str(tmp_path / "chat.db")
    if how == "environment":
        env["CHAT_AUTH"] = "open"
    else:
        (tmp_path / ".env").write_text("CHAT_AUTH=required\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    argv = [sys.executable, "-m", "chat", "serve", "--host", "0.0.0.0", "--port", str(port)]
    proc = spawn_and_wait(argv, tmp_path / "serve.log", healthy, "serve", 20, cwd=tmp_path, env=env)
    try:
        mode = httpx.get(f"{url}/api/session/options", timeout=5).json()
        assert mode["auth"] == ("open" if how == "environment" else "required"), mode
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_loopback_addresses() -> None:
    for host in ("127.0.0.1", "127.9.8.7", "::1", "[::1]", "localhost", "LOCALHOST"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "10.0.0.1", "192.168.1.20", "example.com", "localhost.example"):
        assert not is_loopback(host), host
