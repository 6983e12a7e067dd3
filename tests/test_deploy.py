"""The deployment files: docker-compose.yml, the Dockerfile, deploy/nginx.conf, deploy/bot.py.

No Docker engine is needed. The compose file and the Dockerfile are checked as text; the
topology they describe (Redis, two service processes on one SQLite file, nginx in front) runs
here with Debian's redis-server and nginx, and nginx runs the repository's deploy/nginx.conf
with only the upstream addresses and the listen port replaced. Every wait is bounded."""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from tests.conftest import need_program
from tests.live import ROOT, LiveServer, free_port, open_stream
from tests.redis_server import RedisServer

COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
NGINX_CONF = ROOT / "deploy" / "nginx.conf"
BOT = ROOT / "deploy" / "bot.py"
EXACT_VERSION = re.compile(r"\d+\.\d+\.\d+")  # a tag like 7.2.7-alpine, not 7.2 or latest

Json = dict[str, Any]


# --- docker-compose.yml ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> Json:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict) and isinstance(loaded.get("services"), dict)
    return loaded


def environment(service: Json) -> dict[str, str]:
    """A service's environment, whichever of compose's two spellings it uses."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def mounts(service: Json) -> dict[str, str]:
    """A service's volumes as {target: source}, short or long syntax."""
    found: dict[str, str] = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            found[volume["target"]] = volume["source"]
        else:
            source, target, *_ = volume.split(":")
            found[target] = source
    return found


def depends_on(service: Json) -> set[str]:
    needs = service.get("depends_on") or []
    return set(needs)  # a list of names, or a dict keyed by name


def test_compose_has_the_whole_topology(compose: Json) -> None:
    assert {"redis", "app1", "app2", "nginx", "bot"} <= set(compose["services"])


def test_compose_pins_every_image_to_an_exact_version(compose: Json) -> None:
    for name, service in compose["services"].items():
        assert "image" in service or "build" in service, name
        if "image" not in service:
            continue
        image = service["image"]
        reference, _, digest = image.partition("@")
        repository, _, tag = reference.rpartition(":")
        assert repository and "/" not in tag, f"{name}: {image!r} has no tag"
        assert tag != "latest" and EXACT_VERSION.search(tag), f"{name}: {image!r} floats"
        assert not digest or digest.startswith("sha256:"), image


def test_compose_apps_share_one_database_and_redis(compose: Json) -> None:
    services = compose["services"]
    app1, app2 = services["app1"], services["app2"]
    env1, env2 = environment(app1), environment(app2)
    # one SQLite file, on one named volume mounted at /data in both
    assert env1["CHAT_DATABASE"] == env2["CHAT_DATABASE"]
    assert env1["CHAT_DATABASE"].startswith("/data/")
    volume = mounts(app1).get("/data")
    assert volume is not None and mounts(app2).get("/data") == volume
    assert volume in (compose.get("volumes") or {}), f"{volume} is not a named volume"
    # every event through the compose file's Redis
    for env in (env1, env2):
        broker = urlsplit(env["CHAT_BROKER"])
        assert broker.scheme == "redis" and broker.hostname == "redis"
        assert (broker.port or 6379) == 6379
    for app in (app1, app2):
        assert "redis" in depends_on(app)
        assert "build" in app, "the apps run the repository's Dockerfile"


def test_compose_raises_the_apps_open_file_limit(compose: Json) -> None:
    """Every open stream is a file descriptor; the usual default of 1024 is far too few."""
    for name in ("app1", "app2"):
        nofile = compose["services"][name]["ulimits"]["nofile"]
        limits = [nofile] if isinstance(nofile, int) else [nofile["soft"], nofile["hard"]]
        assert all(int(limit) >= 65536 for limit in limits), (name, nofile)


def test_compose_nginx_publishes_8080_with_the_tested_config(compose: Json) -> None:
    nginx = compose["services"]["nginx"]
    published = {str(port).removesuffix("/tcp") for port in nginx["ports"]}
    assert "8080:80" in published, published
    assert "listen 80;" in NGINX_CONF.read_text()
    config_mounts = {
        target: source for target, source in mounts(nginx).items() if target.endswith(".conf")
    }
    # exactly the file test_nginx_* below runs, as a conf.d snippet (inside http { })
    assert config_mounts == {"/etc/nginx/conf.d/default.conf": "./deploy/nginx.conf"}
    assert (ROOT / config_mounts["/etc/nginx/conf.d/default.conf"]).resolve() == NGINX_CONF
    assert NGINX_CONF.is_file()
    assert {"app1", "app2"} <= depends_on(nginx)


def test_compose_has_healthchecks(compose: Json) -> None:
    for name in ("redis", "app1", "app2", "nginx"):
        check = compose["services"][name].get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), name
    for name in ("app1", "app2"):
        test = " ".join(compose["services"][name]["healthcheck"]["test"])
        assert re.search(r"127\.0\.0\.1:8000/(healthz|readyz)", test), test


def test_compose_bot_runs_the_repository_bot_against_the_service(compose: Json) -> None:
    bot = compose["services"]["bot"]
    command = bot["command"]
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    assert "deploy/bot.py" in argv and BOT.is_file()
    assert environment(bot).get("BOT_ROOM", "demo") == "demo"
    target = urlsplit(environment(bot)["BOT_URL"]).hostname
    assert target in compose["services"] and target in depends_on(bot)


# --- Dockerfile -----------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments left out."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):  # also inside a continuation, as Docker does
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends in a continuation"
    return instructions


def argv_of(arguments: str) -> list[str]:
    """CMD/ENTRYPOINT/HEALTHCHECK CMD arguments, exec (JSON) or shell form."""
    if arguments.startswith("["):
        parsed = json.loads(arguments)
        assert isinstance(parsed, list)
        return [str(part) for part in parsed]
    return shlex.split(arguments)


def all_of(instructions: list[tuple[str, str]], keyword: str) -> list[str]:
    return [arguments for kw, arguments in instructions if kw == keyword]


def test_dockerfile_builds_on_a_pinned_slim_python() -> None:
    froms = all_of(dockerfile_instructions(), "FROM")
    assert froms, "no FROM"
    image = froms[-1].split()[0]  # the stage that runs
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", image), image


def test_dockerfile_runs_as_a_user_that_is_not_root() -> None:
    users = all_of(dockerfile_instructions(), "USER")
    assert users, "no USER: the service would run as root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}, users[-1]


def test_dockerfile_serves_on_0_0_0_0_port_8000() -> None:
    instructions = dockerfile_instructions()
    exposed = [
        port.split("/")[0] for ports in all_of(instructions, "EXPOSE") for port in ports.split()
    ]
    assert "8000" in exposed
    command: list[str] = []
    for keyword in ("ENTRYPOINT", "CMD"):  # the container runs ENTRYPOINT + CMD
        found = all_of(instructions, keyword)
        command += argv_of(found[-1]) if found else []
    assert "chat" in command and "serve" in command, command
    assert command[command.index("chat") + 1] == "serve", command
    assert command[command.index("--host") + 1] == "0.0.0.0", command
    assert command[command.index("--port") + 1] == "8000", command


def test_dockerfile_healthcheck_asks_healthz_without_curl() -> None:
    checks = all_of(dockerfile_instructions(), "HEALTHCHECK")
    assert len(checks) == 1 and checks[0].upper() != "NONE"
    _, _, command = checks[0].partition("CMD")
    assert command, checks[0]
    argv = " ".join(argv_of(command.strip()))
    assert "127.0.0.1:8000/healthz" in argv, argv
    assert "urllib" in argv and "curl" not in argv and "wget" not in argv, argv


def test_dockerfile_keeps_the_database_on_a_volume_the_user_owns() -> None:
    instructions = dockerfile_instructions()
    envs = " ".join(all_of(instructions, "ENV"))
    assert re.search(r"CHAT_DATABASE[= ]/data/\S+", envs), envs
    assert any("/data" in volume for volume in all_of(instructions, "VOLUME"))
    user = all_of(instructions, "USER")[-1].split(":")[0]
    assert any(
        re.search(rf"chown[^&]*\b{user}\b[^&]*/data", run) for run in all_of(instructions, "RUN")
    )


def test_dockerfile_copies_files_that_exist_and_what_the_service_needs() -> None:
    instructions = dockerfile_instructions()
    ignored = set()
    if (ROOT / ".dockerignore").exists():
        ignored = {
            line.strip().rstrip("/")
            for line in (ROOT / ".dockerignore").read_text().splitlines()
            if line.strip() and not line.startswith("#")
        }
    copied: set[str] = set()
    for arguments in all_of(instructions, "COPY") + all_of(instructions, "ADD"):
        parts = argv_of(arguments)
        if any(part.startswith("--from") for part in parts):
            continue
        sources = [part for part in parts if not part.startswith("--")][:-1]
        assert sources, arguments
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
            assert source.split("/")[0] not in ignored, f"{source} is in .dockerignore"
            copied.add(source.rstrip("/"))
    # the package, what it finds next to itself at run time (chat/config.py MIGRATIONS_DIR,
    # chat/api/ops.py STATIC_DIR), and the demo bot
    needed = {"pyproject.toml", "chat", "migrations", "static", "deploy/bot.py"}
    assert "." in copied or needed <= copied, copied
    runs = " ".join(all_of(instructions, "RUN"))
    assert "pip install --no-cache-dir" in runs, runs


# --- nginx in front of two processes --------------------------------------------------------


def local_nginx_conf(app_ports: tuple[int, int], listen_port: int) -> bytes:
    """deploy/nginx.conf with app1/app2 and the listen port pointed at this machine; every other
    byte is the repository's."""
    text = NGINX_CONF.read_bytes()
    replacements = {
        b"app1:8000": f"127.0.0.1:{app_ports[0]}".encode(),
        b"app2:8000": f"127.0.0.1:{app_ports[1]}".encode(),
        b"listen 80;": f"listen 127.0.0.1:{listen_port};".encode(),
    }
    for old, new in replacements.items():
        assert text.count(old) == 1, f"deploy/nginx.conf should say {old.decode()!r} once"
        text = text.replace(old, new)
    return text


class Nginx:
    """Debian's nginx in the foreground, everything it writes under ``workdir``; runs as root
    (workers as root too, so they can use the temp folders) or as any other user."""

    def __init__(self, program: str, workdir: Path, app_ports: tuple[int, int]) -> None:
        self.program = program
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.snippet = workdir / "default.conf"
        self.snippet.write_bytes(local_nginx_conf(app_ports, self.port))
        self.config = workdir / "nginx.conf"
        self.error_log = workdir / "error.log"
        user = ""
        if os.geteuid() == 0:
            user = f"user {pwd.getpwuid(0).pw_name} {grp.getgrgid(0).gr_name};\n"
        temp_paths = "".join(
            f"    {kind}_temp_path {workdir / kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        # The official image's main nginx.conf, reduced: conf.d snippets go inside http { }.
        self.config.write_text(
            f"{user}daemon off;\nworker_processes 1;\npid {workdir / 'nginx.pid'};\n"
            f"error_log {self.error_log} notice;\n"
            "events {\n    worker_connections 1024;\n}\n"
            "http {\n"
            "    default_type application/octet-stream;\n"
            f"    access_log {workdir / 'access.log'};\n"
            "    sendfile on;\n    keepalive_timeout 65;\n"
            f"{temp_paths}"
            f"    include {self.snippet};\n"
            "}\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        argv = [self.program, "-p", str(self.workdir), "-e", str(self.error_log)]
        self.proc = subprocess.Popen(
            [*argv, "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited at start:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nginx did not listen in {timeout_s}s:\n{self.log()}")

    def log(self) -> str:
        return self.error_log.read_text(errors="replace") if self.error_log.exists() else ""

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGQUIT (graceful), then SIGKILL if it has not exited in time."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        finally:
            self.proc = None


@pytest.fixture
def nginx_program() -> str:
    return need_program("nginx")


@dataclass
class Topology:
    app1: LiveServer
    app2: LiveServer
    nginx: Nginx


@pytest.fixture
def topology(tmp_path: Path, redis_server: RedisServer, nginx_program: str) -> Iterator[Topology]:
    """docker-compose.yml's topology on this machine: Redis, two service processes on one
    SQLite file (heartbeat every second), nginx with the repository's config in front."""
    database = tmp_path / "shared" / "chat.db"
    database.parent.mkdir()
    apps: list[LiveServer] = []
    nginx: Nginx | None = None
    try:
        for name in ("app1", "app2"):  # one after the other: app1 migrates the database
            workdir = tmp_path / name
            workdir.mkdir()
            env = {"CHAT_BROKER": redis_server.url, "CHAT_HEARTBEAT_SECONDS": "1"}
            app = LiveServer(workdir, env, database=database)
            apps.append(app)
            app.start()
        (tmp_path / "nginx").mkdir()
        nginx = Nginx(nginx_program, tmp_path / "nginx", (apps[0].port, apps[1].port))
        nginx.start()
        yield Topology(apps[0], apps[1], nginx)
    finally:
        if nginx is not None:
            nginx.stop()
        for app in apps:
            app.kill()


@pytest.fixture
async def via_nginx(topology: Topology) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=topology.nginx.url, timeout=10) as client:
        yield client


async def subscribers(client: httpx.AsyncClient, app: LiveServer) -> float:
    """The open streams one process serves (its chat_subscribers gauge)."""
    response = await client.get(f"{app.url}/metrics")
    assert response.status_code == 200
    for line in response.text.splitlines():
        if line.startswith("chat_subscribers "):
            return float(line.split()[1])
    raise AssertionError("no chat_subscribers in /metrics")


def test_nginx_config_is_the_repository_file_with_only_addresses_replaced() -> None:
    local = local_nginx_conf((4101, 4102), 4103)
    original = NGINX_CONF.read_bytes()
    assert b"server 127.0.0.1:4101" in local and b"server 127.0.0.1:4102" in local
    assert b"listen 127.0.0.1:4103;" in local
    undone = (
        local.replace(b"127.0.0.1:4101", b"app1:8000")
        .replace(b"127.0.0.1:4102", b"app2:8000")
        .replace(b"listen 127.0.0.1:4103;", b"listen 80;")
    )
    assert undone == original


async def test_nginx_serves_the_page_and_readiness(
    topology: Topology, via_nginx: httpx.AsyncClient
) -> None:
    page = await via_nginx.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "<title>chat</title>" in page.text
    ready = await via_nginx.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}
    assert (await via_nginx.get("/healthz")).json() == {"status": "ok"}


async def test_streams_through_nginx_get_each_process_s_posts_promptly_in_order(
    topology: Topology, via_nginx: httpx.AsyncClient, room: str
) -> None:
    """Two streams through nginx (nginx's least_conn puts one on each process); messages posted
    straight to app1, then app2, one at a time, each reach both streams within a second of the
    POST's answer: a functional check that nothing between the app and the client holds an
    event back (buffering), not a benchmark."""
    async with (
        httpx.AsyncClient(timeout=10) as direct,
        open_stream(via_nginx, f"/api/rooms/{room}/events") as first,
        open_stream(via_nginx, f"/api/rooms/{room}/events") as second,
    ):
        streams = [first, second]
        for stream in streams:
            # unbuffered from the first byte: `: connected` came through before any event exists
            assert stream.comments[:1] == ["connected"]
            assert stream.response.headers["content-type"].startswith("text/event-stream")
        assert await subscribers(direct, topology.app1) == 1
        assert await subscribers(direct, topology.app2) == 1

        posted: list[int] = []
        received: dict[int, list[int]] = {0: [], 1: []}
        for round_ in range(3):
            for app in (topology.app1, topology.app2):
                text = f"round {round_} via {app.url}"
                response = await direct.post(
                    f"{app.url}/api/rooms/{room}/messages", json={"author": "alice", "text": text}
                )
                answered = time.monotonic()
                assert response.status_code == 201, response.text
                posted.append(response.json()["id"])
                for index, stream in enumerate(streams):
                    event = await stream.next(timeout_s=5)
                    delay = time.monotonic() - answered
                    assert event.event == "message" and event.json()["text"] == text
                    assert delay < 1.0, f"stream {index} got the event {delay:.2f}s after the POST"
                    received[index].append(int(event.id or 0))
        assert posted == sorted(posted) and len(set(posted)) == len(posted)
        assert received[0] == posted and received[1] == posted


async def test_an_idle_stream_through_nginx_gets_heartbeats_and_stays_open(
    topology: Topology, via_nginx: httpx.AsyncClient, room: str
) -> None:
    async with (
        httpx.AsyncClient(timeout=10) as direct,
        open_stream(via_nginx, "/api/events", params={"rooms": room}) as stream,
    ):
        stream.comments.clear()
        await stream.until_comment("ping", timeout_s=10)  # the apps ping every second
        response = await direct.post(
            f"{topology.app2.url}/api/rooms/{room}/messages",
            json={"author": "bob", "text": "still there?"},
        )
        assert response.status_code == 201
        event = await stream.next(timeout_s=5)
        assert event.json()["text"] == "still there?" and event.id == str(response.json()["id"])


async def test_nginx_own_errors_are_json(tmp_path: Path, nginx_program: str) -> None:
    """What nginx answers by itself (no app reachable, a body over its limit) follows the
    contract's error shape, like every answer of the apps."""
    nginx = Nginx(nginx_program, tmp_path, (free_port(), free_port()))  # nothing listens there
    nginx.start()
    try:
        async with httpx.AsyncClient(base_url=nginx.url, timeout=10) as client:
            down = await client.get("/api/rooms")
            assert down.status_code == 503
            assert down.headers["content-type"].startswith("application/json")
            assert down.json()["error"]["code"] == "unavailable"
            assert down.headers["retry-after"] == "1"
            huge = await client.post(
                "/api/rooms/general/messages",
                content=b'{"author": "a", "text": "' + b"x" * (2 << 20) + b'"}',
                headers={"Content-Type": "application/json"},
            )
            assert huge.status_code == 413
            assert huge.json()["error"]["code"] == "payload_too_large"
    finally:
        nginx.stop()


# --- deploy/bot.py --------------------------------------------------------------------------


def test_bot_waits_for_the_service_posts_activity_and_stops_on_sigterm(tmp_path: Path) -> None:
    workdir = tmp_path / "app"
    workdir.mkdir()
    server = LiveServer(workdir)  # not started yet: the bot starts first and has to wait
    bot_log = tmp_path / "bot.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOT_", "CHAT_"))}
    env.update({"BOT_URL": server.url, "BOT_INTERVAL_SECONDS": "0.2"})
    with open(bot_log, "wb") as log:
        bot = subprocess.Popen(
            [sys.executable, str(BOT)], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_for(lambda: "not reachable" in bot_log.read_text(), 10, "the bot's first retry")
        server.start()
        with httpx.Client(base_url=server.url, timeout=10) as client:

            def items() -> list[Json]:
                response = client.get("/api/rooms/demo/activity", params={"limit": 200})
                if response.status_code == 404:
                    return []
                assert response.status_code == 200
                listed: list[Json] = response.json()["items"]
                return listed

            wait_for(lambda: len(items()) >= 3, 30, "three activity items in room demo")
            bot.send_signal(signal.SIGTERM)
            assert bot.wait(timeout=10) == 0, bot_log.read_text()
            posted = items()
            room = client.get("/api/rooms/demo").json()
        assert room["title"]
        assert all(item["actor"] == "demo-bot" and item["summary"] for item in posted)
        numbers = [item["data"]["n"] for item in posted]
        assert numbers == list(range(1, len(posted) + 1)), numbers  # none lost, none twice
    finally:
        if bot.poll() is None:
            bot.kill()
            bot.wait(timeout=5)
        server.kill()


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll until ``condition()`` holds; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"no {what} within {timeout_s}s")
