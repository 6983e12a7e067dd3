"""``python -m chat post`` and ``python -m chat tail`` as a user runs them: real processes
against a real server, with every read, wait and poll bounded."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.commands import CHAT, TailProcess, run_chat, tailing, without_chat_settings
from tests.live import LiveServer, free_port

pytestmark = pytest.mark.sqlite_only  # the post and tail commands, on SQLite alone: conftest.py


def post(http: httpx.Client, room: str, text: str, author: str = "alice") -> dict[str, Any]:
    response = http.post(f"/api/rooms/{room}/messages", json={"author": author, "text": text})
    assert response.status_code == 201, response.text
    return dict(response.json())


def activity(http: httpx.Client, room: str, actor: str, verb: str) -> dict[str, Any]:
    body = {"actor": actor, "verb": verb, "object": "build-7"}
    response = http.post(f"/api/rooms/{room}/activity", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def subscribers(http: httpx.Client, room: str) -> int:
    return int(http.get(f"/api/rooms/{room}").json()["subscribers"])


def wait_for(check: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def ids_texts(events: list[dict[str, Any]]) -> list[tuple[int, str]]:
    return [(e["id"], e["text"]) for e in events]


# --- post ------------------------------------------------------------------------------------


def test_post_prints_the_stored_event(server: LiveServer, room: str, tmp_path: Path) -> None:
    args = ["post", room, "hello from the shell", "--author", "carol", "--url", server.url]
    done = run_chat(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    event = json.loads(done.stdout)
    assert isinstance(event["id"], int)
    assert (event["type"], event["room"]) == ("message", room)
    assert (event["author"], event["text"]) == ("carol", "hello from the shell")
    history = httpx.get(f"{server.url}/api/rooms/{room}/messages", timeout=10).json()
    assert [(m["id"], m["text"]) for m in history["messages"]] == [(event["id"], event["text"])]


def test_post_to_a_bad_room_exits_1_with_the_code(server: LiveServer, tmp_path: Path) -> None:
    done = run_chat("post", "Bad_Room", "x", "--author", "carol", "--url", server.url, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("error: ") and "invalid_room" in done.stderr
    assert "Traceback" not in done.stderr


def test_post_to_an_unreachable_url_exits_1_cleanly(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = run_chat("post", "general", "x", "--author", "carol", "--url", url, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: cannot reach {url}")
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_ctrl_c_while_a_post_waits_for_its_answer_ends_it_cleanly(tmp_path: Path) -> None:
    """Ctrl-C while the POST waited for a server that never answers printed asyncio's
    KeyboardInterrupt traceback (a probe): now one line saying the message may or may not
    have been posted, and exit 130."""
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        command = [*CHAT, "post", "general", "x", "--author", "carol", "--url", url]
        posting = subprocess.Popen(
            command, cwd=tmp_path, env=without_chat_settings(), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        try:
            silent.settimeout(20)
            connection, _ = silent.accept()  # the POST is on its way
            with connection:
                posting.send_signal(signal.SIGINT)
                out, err = posting.communicate(timeout=20)
        finally:
            posting.kill()
    assert posting.returncode == 130, err
    assert err.strip() == "stopped: the message may or may not have been posted", err
    assert out == ""


# --- tail across a restart -------------------------------------------------------------------


def restart_while_away(
    live: LiveServer, tail: TailProcess, http: httpx.Client, room: str, how: str
) -> dict[str, Any]:
    """Stop the server, start it again, post before the tail is back; then wait until the
    tail has reconnected. Returns the event posted while it was away."""
    live.terminate() if how == "terminate" else live.kill()
    wait_for(lambda: any("reconnecting" in line for line in tail.stderr), "the tail to notice")
    tail.proc.send_signal(signal.SIGSTOP)  # hold it still: it cannot reconnect too early
    try:
        live.start()  # the same port and database
        missed = post(http, room, "while it was away")
        assert subscribers(http, room) == 0  # the tail has not reconnected yet
    finally:
        tail.proc.send_signal(signal.SIGCONT)
    wait_for(lambda: subscribers(http, room) == 1, "the tail to reconnect")
    return missed


@pytest.mark.parametrize("how", ["terminate", "kill"])
def test_tail_prints_every_message_once_across_a_restart(
    make_server: Callable[..., LiveServer], tmp_path: Path, how: str
) -> None:
    live = make_server(CHAT_RETRY_MS="200")
    room, sent = "ops", list[dict[str, Any]]()
    with httpx.Client(base_url=live.url, timeout=10) as http:
        sent += [post(http, room, f"before {i}") for i in range(3)]
        with tailing(live.url, room, "--json", "--since", "0", cwd=tmp_path) as tail:
            assert ids_texts(tail.events(3)) == ids_texts(sent)  # replayed history
            sent += [post(http, room, f"live {i}") for i in range(2)]
            assert ids_texts(tail.events(2)) == ids_texts(sent[3:])
            sent.append(restart_while_away(live, tail, http, room, how))
            sent.append(post(http, room, "once it reconnected"))
            assert ids_texts(tail.events(2)) == ids_texts(sent[5:])
            sent += [post(http, room, f"after {i}") for i in range(3)]
            assert ids_texts(tail.events(3)) == ids_texts(sent[7:])
            time.sleep(0.5)  # room for a late duplicate to show up
        printed = [json.loads(line) for line in tail.stdout]
    assert ids_texts(printed) == ids_texts(sent)  # all, in order, none twice
    assert all(e["type"] == "message" and e["room"] == room for e in printed)
    assert tail.proc.returncode == 0  # Ctrl-C ends it cleanly


def test_tail_without_since_keeps_messages_posted_while_it_was_away(
    make_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    live = make_server(CHAT_RETRY_MS="200")
    with httpx.Client(base_url=live.url, timeout=10) as http:
        assert http.put("/api/rooms/quiet", json={}).status_code == 201
        with tailing(live.url, "quiet", "--json", cwd=tmp_path) as tail:
            wait_for(lambda: subscribers(http, "quiet") == 1, "the tail to connect")
            missed = restart_while_away(live, tail, http, "quiet", "terminate")
            later = post(http, "quiet", "once it reconnected")
            assert ids_texts(tail.events(2, timeout_s=5)) == ids_texts([missed, later])


class Resender(BaseHTTPRequestHandler):
    """A misbehaving server: every connection replays ids 1..N from the start (N grows).
    (The tail runs with --since, so it never asks this server for /api/rooms.)"""

    protocol_version = "HTTP/1.0"  # the body ends when the connection closes
    resume_ids: list[str | None] = []

    def do_GET(self) -> None:
        self.resume_ids.append(self.headers.get("Last-Event-ID"))
        upto = 2 if len(self.resume_ids) == 1 else 4
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.end_headers()
        frames = ["retry: 50\n: connected\n\n"]
        for i in range(1, upto + 1):
            event = {"id": i, "type": "message", "room": "r", "author": "a", "text": f"m{i}"}
            frames.append(f"id: {i}\nevent: message\ndata: {json.dumps(event)}\n\n")
        self.wfile.write("".join(frames).encode())

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_tail_skips_ids_the_server_sends_again(tmp_path: Path) -> None:
    Resender.resume_ids = []
    fake = ThreadingHTTPServer(("127.0.0.1", 0), Resender)
    thread = threading.Thread(target=fake.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        url = f"http://127.0.0.1:{fake.server_port}"
        with tailing(url, "r", "--json", "--since", "0", cwd=tmp_path) as tail:
            assert [e["text"] for e in tail.events(4)] == ["m1", "m2", "m3", "m4"]
            wait_for(lambda: len(Resender.resume_ids) >= 3, "two reconnections")
            time.sleep(0.3)
    finally:
        fake.shutdown()
        fake.server_close()
        thread.join(timeout=10)
    assert [json.loads(line)["id"] for line in tail.stdout] == [1, 2, 3, 4]
    assert Resender.resume_ids[:3] == ["0", "2", "4"]  # it resumes with Last-Event-ID


# --- filters, several rooms, every room, the human format ------------------------------------


@pytest.mark.parametrize(
    ("option", "value"),
    [("--types", "activity"), ("--authors", "bob"), ("--mentions", "dave")],
)
def test_tail_filters(
    server: LiveServer, room: str, tmp_path: Path, option: str, value: str
) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as http:

        def mixed(tag: str) -> list[dict[str, Any]]:
            """Events of all kinds; returns the ones the filter lets through."""
            events = [
                post(http, room, f"{tag} plain"),
                post(http, room, f"{tag} hi @dave!"),
                post(http, room, f"{tag} by bob", author="bob"),
                post(http, room, f"{tag} @davey is not @dave-x"),
                activity(http, room, "alice", f"{tag}-deployed"),
                activity(http, room, "bob", f"{tag}-built"),
            ]
            keep = {"--types": [4, 5], "--authors": [2, 5], "--mentions": [1]}[option]
            return [events[i] for i in keep]

        first = mixed("early")
        with tailing(server.url, room, option, value, "--json", "--since", "0", cwd=tmp_path) as t:
            assert t.events(len(first)) == first  # replayed through the filter
            second = mixed("late")
            assert t.events(len(second)) == second  # live through the filter
            if option == "--mentions":
                last = post(http, room, "end @dave", author="bob")
            else:
                last = activity(http, room, "bob", "marker")
            assert t.events(1) == [last]  # nothing unwanted came before the marker


def test_tail_follows_two_rooms(server: LiveServer, room: str, tmp_path: Path) -> None:
    one, two, other = f"{room}-a", f"{room}-b", f"{room}-c"
    with httpx.Client(base_url=server.url, timeout=10) as http:
        start = post(http, one, "start")
        since = str(start["id"] - 1)
        with tailing(server.url, one, two, "--json", "--since", since, cwd=tmp_path) as tail:
            assert tail.events(1) == [start]
            with ThreadPoolExecutor(4) as pool:  # posts racing into both rooms (and a third)
                jobs = [(r, f"{r} {i}") for i in range(10) for r in (one, two, other)]
                sent = list(pool.map(lambda job: post(http, *job), jobs))
            wanted = sorted((e for e in sent if e["room"] != other), key=lambda e: e["id"])
            got = tail.events(len(wanted))
            end = post(http, two, "end")
            assert tail.events(1) == [end]
    assert ids_texts(got) == ids_texts(wanted)
    assert {e["room"] for e in got} == {one, two}


def test_tail_everywhere_sees_a_room_created_later(
    server: LiveServer, room: str, tmp_path: Path
) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        start = post(http, room, "start")
        since = str(start["id"] - 1)
        with tailing(server.url, "*", "--json", "--since", since, cwd=tmp_path) as tail:
            assert tail.events(1) == [start]  # replayed: so the tail is subscribed by now
            newcomer = f"{room}-new"
            assert http.get(f"/api/rooms/{newcomer}").status_code == 404
            fresh = post(http, newcomer, "first words in a new room", author="erin")
            assert tail.events(1) == [fresh]


def test_tail_human_format(server: LiveServer, room: str, tmp_path: Path) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        event = post(http, room, "hello there", author="frank")
        since = str(event["id"] - 1)
        with tailing(server.url, room, "--since", since, cwd=tmp_path) as tail:
            (line,) = tail.lines(1)
    assert tail.proc.returncode == 0 and not any("Traceback" in e for e in tail.stderr)
    assert line.startswith(f"#{event['id']} ") and f" {room} " in line
    assert "frank" in line and line.endswith("hello there") and not line.startswith("{")


def test_tail_shows_what_others_wrote_without_letting_it_forge_lines(
    server: LiveServer, room: str, tmp_path: Path
) -> None:
    """A probe: a message holding a line break printed a second line that read as another
    event (``#999 room root: please run ...``), and a right-to-left override reordered the
    rest of its line. A line break now starts an indented line, and controls are escaped;
    an activity whose summary names its actor printed the actor twice."""
    forged = f"ok\n#999 {room} root: please run it\u202e now"
    with httpx.Client(base_url=server.url, timeout=10) as http:
        event = post(http, room, forged, author="mallory")
        body = {"actor": "ci", "verb": "built", "object": "main", "summary": "ci built main"}
        act = http.post(f"/api/rooms/{room}/activity", json=body).json()
        with tailing(server.url, room, "--since", str(event["id"] - 1), cwd=tmp_path) as tail:
            lines = tail.lines(3)
    assert lines == [
        f"#{event['id']} {room} mallory: ok",
        f"    #999 {room} root: please run it\\u202e now",
        f"#{act['id']} {room} * ci built main",
    ]


def test_tail_says_why_history_was_reset(server: LiveServer, room: str, tmp_path: Path) -> None:
    """It said "events up to #N were skipped" for any reset, also for a resume point the
    server does not know (nothing was skipped): the reason is said now."""
    with httpx.Client(base_url=server.url, timeout=10) as http:
        event = post(http, room, "one")
    with tailing(server.url, room, "--since", str(event["id"] + 10**6), cwd=tmp_path) as tail:
        (line,) = tail.lines(1)
    assert "the server does not know the id it was to go on from" in line, line
    assert "skipped" not in line


def test_tail_into_a_reader_that_stops_ends_quietly(
    server: LiveServer, room: str, tmp_path: Path
) -> None:
    """``tail | head -1`` ended with a BrokenPipeError traceback (a probe)."""
    with httpx.Client(base_url=server.url, timeout=10) as http:
        for i in range(3):
            post(http, room, f"line {i}")
    command = [*CHAT, "tail", room, "--since", "0", "--url", server.url]
    tail = subprocess.Popen(
        command, cwd=tmp_path, env=without_chat_settings(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert tail.stdout is not None and tail.stderr is not None
    first = tail.stdout.readline()
    tail.stdout.close()  # the reader stops, as head does
    with httpx.Client(base_url=server.url, timeout=10) as http:
        for i in range(3, 40):  # what tail writes next meets the closed pipe
            post(http, room, f"line {i}")
    try:
        assert tail.wait(timeout=20) == 0
        said = tail.stderr.read()
    finally:
        tail.kill()
        tail.stderr.close()
    assert b"line 0" in first
    assert b"Traceback" not in said, said


def test_post_says_which_field_is_wrong(server: LiveServer, tmp_path: Path) -> None:
    """A 422 printed only "the body does not match the schema" (a probe): its details too."""
    result = run_chat("post", "ops", "", "--author", "ann", "--url", server.url, cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0].startswith("error: 422 validation_error"), lines
    assert len(lines) > 1 and lines[1].startswith("  text: "), lines


@pytest.mark.parametrize(
    ("args", "code"),
    [(["Bad_Room"], "invalid_room"), (["ops", "--types", "bogus"], "invalid_query")],
)
def test_tail_refused_by_the_server_exits_1(
    server: LiveServer, tmp_path: Path, args: list[str], code: str
) -> None:
    """A request the server refuses (4xx) cannot succeed by retrying: tail says why and stops."""
    result = run_chat("tail", *args, "--url", server.url, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and code in result.stderr
    assert "Traceback" not in result.stderr
