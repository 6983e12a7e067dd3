"""The deployment files, run rather than read: the Dockerfile, docker-compose.yml,
deploy/nginx.conf, deploy/bot.py, and the lock files the installs use.

No Docker engine is needed. The image's files are laid out from the Dockerfile's COPY lines
(.dockerignore applied), and its CMD runs there with its ENV, on the port it EXPOSEs, with each
VOLUME a temporary directory; its HEALTHCHECK, and compose's, run against it. The compose
topology (PostgreSQL, Redis, two service processes sharing no volume, nginx in front, the bot)
runs with Debian's postgresql, redis-server and nginx, every process set up from
docker-compose.yml with only the addresses replaced (the apps' database: a new one in a
throw-away cluster); nginx runs the very file compose mounts, and compose's PostgreSQL
healthcheck runs against that cluster. Every wait is bounded."""

from __future__ import annotations

import atexit
import contextlib
import grp
import importlib.metadata
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import zipfile
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from chat.config import Settings
from chat.migrations import discover
from tests.commands import run_chat
from tests.conftest import need, need_program
from tests.live import ROOT, LiveServer, free_port, open_stream, read_store, spawn_and_wait
from tests.postgres_server import PostgresServer, bindir
from tests.redis_server import RedisServer

COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKER_STOP_TIMEOUT_S = 10.0  # `docker stop` (and compose's stop_grace_period) before SIGKILL

Json = dict[str, Any]


# --- the lock files -------------------------------------------------------------------------


def lock_pins(name: str) -> dict[str, Version]:
    """{package: version} of a lock file; every entry an exact pin with at least one hash, and
    no options (no index of its own: it installs from whichever index pip is given)."""
    pins: dict[str, Version] = {}
    for line in (ROOT / name).read_text().replace("\\\n", " ").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        requirement, *options = re.split(r"\s+(?=--)", line.strip())
        parsed = Requirement(requirement)
        specifiers = list(parsed.specifier)
        assert len(specifiers) == 1 and specifiers[0].operator == "==", f"{name}: {line[:80]}"
        assert options and all(o.startswith("--hash=sha256:") for o in options), f"{name}: {line}"
        pins[canonicalize_name(parsed.name)] = Version(specifiers[0].version)
    return pins


def locked_closure(name: str, pins: dict[str, Version], roots: list[str]) -> set[str]:
    """Every package ``roots`` need, walked through the metadata installed here; each must be
    pinned in the lock to a version its dependents accept, and installed at that version."""
    reached: set[str] = set()
    queue = [Requirement(root) for root in roots]
    while queue:
        requirement = queue.pop()
        package = canonicalize_name(requirement.name)
        assert package in pins, f"{name} does not pin {requirement} (needed, not locked)"
        pinned = pins[package]
        assert requirement.specifier.contains(pinned, prereleases=True), (
            f"{name} pins {package}=={pinned}, outside {requirement}: run scripts/lock"
        )
        if package in reached:
            continue
        reached.add(package)
        installed = Version(importlib.metadata.version(package))
        assert installed == pinned, (
            f"{package} {installed} is installed here, {name} pins {pinned}: scripts/install test"
        )
        for text in importlib.metadata.requires(package) or []:
            needed = Requirement(text)
            extras = ("", *requirement.extras)
            if needed.marker is None or any(needed.marker.evaluate({"extra": e}) for e in extras):
                queue.append(needed)
    return reached


def test_the_locks_pin_all_the_project_needs_with_hashes_for_the_image_s_python() -> None:
    """requirements.lock (the image, scripts/install) and requirements-test.lock (CI) hold the
    whole dependency tree of pyproject.toml's ranges and nothing else, one version of each shared
    package, each at the version this environment runs; both were made for the Python the
    Dockerfile's image has. A pyproject.toml edited without scripts/lock fails here."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    runtime_roots: list[str] = project["project"]["dependencies"]
    test_roots = runtime_roots + project["project"]["optional-dependencies"]["test"]
    build = [Requirement(r) for r in project["build-system"]["requires"]]
    (image,) = all_of(dockerfile_instructions(), "FROM")
    image_python = re.match(r"python:(\d+\.\d+)\.", image)
    assert image_python, image
    runtime = lock_pins("requirements.lock")
    test = lock_pins("requirements-test.lock")
    for name, pins, roots in [
        ("requirements.lock", runtime, runtime_roots),
        ("requirements-test.lock", test, test_roots),
    ]:
        text = (ROOT / name).read_text()
        assert f"with Python {image_python[1]}\n" in text, f"{name} is not for {image}"
        reached = locked_closure(name, pins, roots)
        for requirement in build:  # `pip install --no-build-isolation -e .` builds with these
            package = canonicalize_name(requirement.name)
            assert package in pins and requirement.specifier.contains(pins[package]), name
            reached.add(package)
        assert set(pins) == reached, f"{name} pins what nothing needs: {set(pins) - reached}"
    assert {p: v for p, v in runtime.items() if test[p] != v} == {}


def test_a_wheel_of_the_project_ships_every_package_of_chat(tmp_path: Path) -> None:
    """``pip install .`` (docs/client-python.md) installs a wheel, not the source tree: every
    package under chat/ must be in it (``chat.client`` and ``chat.activitystreams`` were left
    out once, when they became packages), with the package data the code reads. Built as the
    image builds the project (``--no-build-isolation``, the locked setuptools), from a copy, so
    that the source tree gets no build folders."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "chat", source / "chat", ignore=shutil.ignore_patterns("__pycache__"))
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    built = subprocess.run(
        [*pip_wheel, "--wheel-dir", str(tmp_path / "wheel"), str(source)],
        capture_output=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stderr.decode()
    (wheel,) = (tmp_path / "wheel").glob("chat-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = set(archive.namelist())
    packages = {str(init.parent.relative_to(ROOT)) for init in (ROOT / "chat").rglob("__init__.py")}
    assert {"chat", "chat/api", "chat/store", "chat/client"} <= packages  # the scan works
    missing = {
        str(path.relative_to(ROOT))
        for package in packages
        for path in (ROOT / package).iterdir()
        if path.suffix == ".py" or path.name in ("py.typed", "curl.md")
    } - shipped
    assert missing == set(), f"the wheel leaves out {sorted(missing)}"


# --- the Dockerfile -------------------------------------------------------------------------


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
    """CMD/ENTRYPOINT/HEALTHCHECK CMD/VOLUME arguments, exec (JSON) or shell form."""
    if arguments.startswith("["):
        parsed = json.loads(arguments)
        assert isinstance(parsed, list)
        return [str(part) for part in parsed]
    return shlex.split(arguments)


def all_of(instructions: list[tuple[str, str]], keyword: str) -> list[str]:
    return [arguments for kw, arguments in instructions if kw == keyword]


def seconds(duration: str) -> float:
    """A Docker duration: 3s, 1m30s, 500ms."""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(number) * units[unit] for number, unit in parts)


def image_port() -> int:
    """The one port the image EXPOSEs: where the service listens in its container."""
    ports = [
        int(port.split("/")[0])
        for arguments in all_of(dockerfile_instructions(), "EXPOSE")
        for port in arguments.split()
    ]
    assert len(ports) == 1, ports
    return ports[0]


def dockerignore() -> list[re.Pattern[str]]:
    """.dockerignore's patterns (Go's filepath.Match, plus ``**``), as regular expressions."""
    path = ROOT / ".dockerignore"
    lines = path.read_text().splitlines() if path.exists() else []
    patterns = [line.strip().strip("/") for line in lines if line.strip()]
    patterns = [pattern for pattern in patterns if not pattern.startswith("#")]
    assert not any(p.startswith("!") for p in patterns), "exceptions (!) are not handled here"
    compiled = []
    for pattern in patterns:
        tokens = re.split(r"(\*\*/|\*\*|\*|\?)", pattern)
        regex = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
        compiled.append(re.compile("".join(regex.get(t, re.escape(t)) for t in tokens)))
    return compiled


def ignored(relative: str, patterns: list[re.Pattern[str]]) -> bool:
    """Whether the build context leaves this path out (it, or a folder it is in, matches)."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    return any(pattern.fullmatch(prefix) for pattern in patterns for prefix in prefixes)


def lay_out_image(root: Path, instructions: list[tuple[str, str]]) -> Path:
    """The image's files under ``root`` as the COPY lines place them, from the build context
    (the repository, less what .dockerignore leaves out); returns the WORKDIR there."""
    patterns = dockerignore()
    workdir = "/"
    for keyword, arguments in instructions:
        if keyword == "WORKDIR":
            workdir = os.path.join(workdir, arguments)
        if keyword not in {"COPY", "ADD"}:
            continue
        parts = argv_of(arguments)
        assert not any(part.startswith("--from") for part in parts), "one stage only here"
        *sources, destination = [part for part in parts if not part.startswith("--")]
        assert sources, f"{keyword} {arguments}"
        target = root / os.path.join(workdir, destination).lstrip("/")
        into = destination.endswith("/") or len(sources) > 1
        for source in sources:
            relative = os.path.normpath(source)
            path = ROOT / relative
            assert path.exists(), f"{keyword} {source}: no such file in the repository"
            assert relative == "." or not ignored(relative, patterns), f"{source}: .dockerignore"
            if path.is_dir():  # a folder's contents go into the destination
                for file in sorted(path.rglob("*")):
                    if file.is_file() and not ignored(file.relative_to(ROOT).as_posix(), patterns):
                        copied = target / file.relative_to(path)
                        copied.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(file, copied)
            else:
                copied = target / path.name if into else target
                copied.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, copied)
    return root / workdir.lstrip("/")


def here(argv: list[str]) -> list[str]:
    """An image's command run here: its ``python`` is this interpreter, the one the lock is
    installed in (the image's is too)."""
    assert argv and argv[0] in {"python", "python3"}, f"only python commands run here: {argv}"
    return [sys.executable, *argv[1:]]


@dataclass
class Image:
    """The Dockerfile's image, as far as it runs without Docker."""

    workdir: Path  # WORKDIR, holding what COPY put there
    env: dict[str, str]  # this environment (no CHAT_*) plus ENV, with its paths made local
    volumes: dict[str, Path]  # VOLUME path: the local folder standing in for it
    command: list[str]  # ENTRYPOINT + CMD
    port: int  # EXPOSE
    healthcheck: list[str]
    healthcheck_timeout_s: float
    stop_signal: signal.Signals

    def run(self, argv: list[str], timeout_s: float) -> subprocess.CompletedProcess[bytes]:
        """A command in the image (cwd WORKDIR, its environment); raises past ``timeout_s``."""
        return subprocess.run(
            here(argv), cwd=self.workdir, env=self.env, capture_output=True, timeout=timeout_s
        )


@pytest.fixture
def image(tmp_path: Path) -> Image:
    instructions = dockerfile_instructions()
    assert len(all_of(instructions, "FROM")) == 1, "one stage only here"
    root = tmp_path / "image"
    workdir = lay_out_image(root, instructions)
    volumes: dict[str, Path] = {}
    for arguments in all_of(instructions, "VOLUME"):
        for target in argv_of(arguments):
            volumes[target.rstrip("/")] = tmp_path / "volumes" / target.strip("/")
            volumes[target.rstrip("/")].mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    for arguments in all_of(instructions, "ENV"):
        parts = shlex.split(arguments)
        if "=" in parts[0]:
            pairs = [(part.partition("=")[0], part.partition("=")[2]) for part in parts]
        else:  # the old `ENV NAME value` form
            pairs = [(parts[0], arguments.split(None, 1)[1])]
        for name, value in pairs:
            volume = [t for t in volumes if value == t or value.startswith(t + "/")]
            if volume:
                value = str(volumes[volume[0]]) + value[len(volume[0]) :]
            elif value.startswith("/") and (root / value.lstrip("/")).parent.is_dir():
                value = str(root / value.lstrip("/"))  # a path among the image's files
            env[name] = value
    command: list[str] = []
    for keyword in ("ENTRYPOINT", "CMD"):  # the container runs ENTRYPOINT + CMD
        found = all_of(instructions, keyword)
        command += argv_of(found[-1]) if found else []
    (healthcheck,) = all_of(instructions, "HEALTHCHECK")
    parsed = re.fullmatch(r"((?:--\S+\s+)*)CMD\s+(.+)", healthcheck)
    assert parsed, f"HEALTHCHECK {healthcheck}"
    options = dict(o.removeprefix("--").partition("=")[::2] for o in parsed[1].split())
    stop = (all_of(instructions, "STOPSIGNAL") or ["SIGTERM"])[-1]
    return Image(
        workdir=workdir,
        env=env,
        volumes=volumes,
        command=command,
        port=image_port(),
        healthcheck=argv_of(parsed[2]),
        healthcheck_timeout_s=seconds(options.get("timeout", "30s")),
        stop_signal=signal.Signals(int(stop)) if stop.isdigit() else signal.Signals[stop],
    )


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
        return True


def listens_on_every_interface(port: int) -> bool:
    """Whether a socket listens on 0.0.0.0 (or ::) at this port, from the kernel's tables."""
    wildcard = {"/proc/net/tcp": "00000000", "/proc/net/tcp6": "0" * 32}
    for table, address in wildcard.items():
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and local == f"{address}:{port:04X}":  # 0A: LISTEN
                return True
    return False


def healthcheck_argv(check: Json) -> list[str]:
    """The command of a compose healthcheck (CMD, or CMD-SHELL run by sh)."""
    test = check["test"]
    test = ["CMD-SHELL", test] if isinstance(test, str) else [str(part) for part in test]
    assert test[0] in {"CMD", "CMD-SHELL"} and test[1:], test
    return test[1:] if test[0] == "CMD" else ["sh", "-c", *test[1:]]


def compose_healthchecks(compose: Json) -> list[tuple[list[str], float]]:
    """(argv, timeout) of each compose healthcheck of a service built from the Dockerfile."""
    checks = []
    for service in compose["services"].values():
        check = service.get("healthcheck")
        if "build" not in service or not check:
            continue
        checks.append((healthcheck_argv(check), seconds(check.get("timeout", "30s"))))
    return checks


def test_the_image_serves_answers_its_healthchecks_and_stops_as_docker_runs_it(
    image: Image, compose: Json, tmp_path: Path
) -> None:
    """The CMD, run from the files COPY put in the image with the ENV it sets, serves the page
    on the EXPOSEd port from every interface, keeps its database in the VOLUME, satisfies the
    Dockerfile's HEALTHCHECK and compose's healthchecks within their timeouts, and exits 0
    within `docker stop`'s grace on STOPSIGNAL with a stream open; then every check fails."""
    need(port_is_free(image.port), f"port {image.port} (the EXPOSEd one) is in use here")
    # the package that runs is the image's copy, next to the files it reads at run time
    where = image.run(["python", "-c", "import chat; print(chat.__file__)"], 30)
    assert Path(where.stdout.decode().strip()).is_relative_to(image.workdir), where
    checks = [(image.healthcheck, image.healthcheck_timeout_s), *compose_healthchecks(compose)]
    assert checks[1:], "no compose healthcheck for the image's services"
    url = f"http://127.0.0.1:{image.port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    log = tmp_path / "image.log"
    server = spawn_and_wait(
        here(image.command), log, healthy, "the image's CMD", 30, cwd=image.workdir, env=image.env
    )
    try:
        assert listens_on_every_interface(image.port), "reachable only from inside the container"
        with httpx.Client(base_url=url, timeout=10) as client:
            page = client.get("/")
            assert page.status_code == 200 and "<title>chat</title>" in page.text
            posted = client.post(
                "/api/rooms/image/messages", json={"author": "alice", "text": "kept"}
            )
            assert posted.status_code == 201, posted.text
        # the database is in the volume, not in the image's files
        databases = [
            path
            for folder in (*image.volumes.values(), image.workdir)
            for path in folder.rglob("*")
            if path.is_file() and path.read_bytes()[:16] == b"SQLite format 3\x00"
        ]
        assert databases, "no SQLite file in the VOLUME"
        assert all(not path.is_relative_to(image.workdir) for path in databases), databases
        for argv, timeout_s in checks:
            done = image.run(argv, timeout_s)
            assert done.returncode == 0, (argv, done.stderr.decode(errors="replace"))

        with (
            httpx.Client(timeout=10) as client,
            client.stream("GET", f"{url}/api/rooms/image/events") as stream,
        ):
            lines = stream.iter_lines()
            assert any(line == ": connected" for line, _ in zip(lines, range(20), strict=False))
            server.send_signal(image.stop_signal)
            assert server.wait(timeout=DOCKER_STOP_TIMEOUT_S) == 0, log.read_text()
        for argv, timeout_s in checks:  # nothing listens any more
            assert image.run(argv, timeout_s).returncode != 0, argv
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=10)


# --- docker-compose.yml: PostgreSQL, Redis, two apps sharing no volume, nginx in front -------


def load_compose() -> Json:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict) and isinstance(loaded.get("services"), dict)
    return loaded


@pytest.fixture(scope="module")
def compose() -> Json:
    return load_compose()


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


def depends_on_conditions(service: Json) -> dict[str, str]:
    """{service: condition} of a service's depends_on (the list form: service_started)."""
    needs = service.get("depends_on") or []
    if isinstance(needs, list):
        return {str(name): "service_started" for name in needs}
    return {
        str(name): str((how or {}).get("condition", "service_started"))
        for name, how in needs.items()
    }


def writable_mounts(service: Json) -> dict[str, str]:
    """The volumes a service can write to, as {target: source} (source "" for an anonymous
    volume, the container's own); read-only mounts (a config file) are left out."""
    found: dict[str, str] = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            if not volume.get("read_only"):
                found[volume["target"]] = volume.get("source", "")
            continue
        parts = volume.split(":")
        if len(parts) == 1:
            found[parts[0]] = ""
        elif not (len(parts) > 2 and "ro" in parts[2].split(",")):
            found[parts[1]] = parts[0]
    return found


POSTGRES_DATA = "/var/lib/postgresql/data"  # the official image's VOLUME up to 17 (18 moved it)
POSTGRES_PORT = 5432
POSTGRES_MAX_CONNECTIONS = 100  # the server's default
POSTGRES_RESERVED_CONNECTIONS = 3  # superuser_reserved_connections' default
POSTGRES_SCHEMES = {"postgresql", "postgres"}


def postgres_service(compose: Json) -> tuple[str, Json]:
    """The one service that runs the official PostgreSQL image: (name, service)."""
    found = [
        (name, service)
        for name, service in compose["services"].items()
        if str(service.get("image", "")).startswith("postgres:")
    ]
    assert len(found) == 1, f"one PostgreSQL service (image postgres:...), not {found}"
    return found[0]


def pg_isready_options(argv: list[str]) -> dict[str, str]:
    """A ``pg_isready -h HOST -p PORT -U USER -d DB -t SECONDS`` command's options."""
    assert argv[:1] == ["pg_isready"], f"not pg_isready: {argv}"
    options: dict[str, str] = {}
    rest = argv[1:]
    while rest:
        flag = rest.pop(0)
        assert flag in {"-h", "-p", "-U", "-d", "-t"} and rest, f"pg_isready option {flag}: {argv}"
        options[flag] = rest.pop(0)
    return options


def is_postgres_url(compose: Json, value: str) -> bool:
    """Whether a setting is a PostgreSQL URL to one of compose's services."""
    url = urlsplit(value)
    return url.scheme in POSTGRES_SCHEMES and url.hostname in compose["services"]


def nginx_service(compose: Json) -> tuple[Json, Path]:
    """The service that mounts an nginx config, and the repository file it mounts; the config
    goes to conf.d (inside http { }), where Nginx below includes it too."""
    for service in compose["services"].values():
        configs = {t: s for t, s in mounts(service).items() if t.startswith("/etc/nginx/")}
        if configs:
            ((target, source),) = configs.items()
            assert re.fullmatch(r"/etc/nginx/conf\.d/[^/]+\.conf", target), target
            return service, (ROOT / source).resolve()
    raise AssertionError("no service mounts an nginx config")


def app_services(compose: Json) -> list[str]:
    """The services nginx proxies to (what it depends on, built from the Dockerfile), in the
    order compose starts them."""
    services = compose["services"]
    pending = [n for n in sorted(depends_on(nginx_service(compose)[0])) if "build" in services[n]]
    ordered: list[str] = []
    while pending:
        ready = [name for name in pending if not depends_on(services[name]) & set(pending)]
        assert ready, f"depends_on goes round among {pending}"
        ordered.append(ready[0])
        pending.remove(ready[0])
    return ordered


def published_port(service: Json) -> int:
    """The one container port a service publishes (``ports:``, short syntax)."""
    published = {str(port).removesuffix("/tcp").split(":")[-1] for port in service["ports"]}
    assert len(published) == 1, published
    return int(published.pop())


def local_nginx_conf(compose: Json, app_ports: list[int], listen_port: int) -> bytes:
    """The config compose mounts, with the apps' addresses (service:EXPOSEd port) pointed at
    this machine and the port compose publishes pointed at ``listen_port``; every other byte is
    the repository's."""
    service, path = nginx_service(compose)
    text = path.read_bytes()
    apps = app_services(compose)
    replacements = {
        f"{name}:{image_port()}".encode(): f"127.0.0.1:{port}".encode()
        for name, port in zip(apps, app_ports, strict=True)
    }
    listen = f"listen {published_port(service)};".encode()
    replacements[listen] = f"listen 127.0.0.1:{listen_port};".encode()
    for old, new in replacements.items():
        assert text.count(old) == 1, f"{path.name} should say {old.decode()!r} once"
        text = text.replace(old, new)
    return text


def app_environment(
    compose: Json, name: str, redis: RedisServer, volumes: Path, database: str | None = None
) -> dict[str, str]:
    """An app's compose environment here: a URL to a compose service goes to the local Redis
    server, or for PostgreSQL to ``database`` (a database of a local cluster); a path on a
    mounted volume to that volume's local folder."""
    service = compose["services"][name]
    env: dict[str, str] = {}
    for key, value in environment(service).items():
        url = urlsplit(value)
        if is_postgres_url(compose, value):
            assert database is not None, f"{name}: {key} needs a PostgreSQL database here"
            value = database
        elif url.scheme and url.hostname in compose["services"]:
            assert url.scheme == "redis", f"{name}: {key}={value}: only Redis runs here"
            value = urlunsplit(url._replace(netloc=urlsplit(redis.url).netloc))
        for target, source in mounts(service).items():
            target = target.rstrip("/")
            if value == target or value.startswith(target + "/"):
                assert source in (compose.get("volumes") or {}), f"{source}: not a named volume"
                (volumes / source).mkdir(parents=True, exist_ok=True)
                value = str(volumes / source) + value[len(target) :]
        env[key] = value
    return env


def test_compose_runs_postgresql_pinned_on_a_named_volume_with_a_tcp_healthcheck(
    compose: Json,
) -> None:
    """The official image at an exact minor version; its data on a named volume (kept across
    `docker compose down`, deleted by `down -v`); a password (never `trust`); no port published
    (only the apps reach it); restarted like the rest; and a healthcheck that asks over TCP:
    while the image initialises a new volume, its temporary server listens on the Unix socket
    alone, and an app let in then would lose it a moment later."""
    _, service = postgres_service(compose)
    assert re.fullmatch(r"postgres:\d+\.\d+-alpine(\d+\.\d+)?", service["image"]), service["image"]
    env = environment(service)
    assert env.get("POSTGRES_PASSWORD"), "the image refuses to initialise without a password"
    assert env.get("POSTGRES_HOST_AUTH_METHOD") != "trust", "anyone on the network could sign in"
    data = mounts(service).get(POSTGRES_DATA)
    assert data in (compose.get("volumes") or {}), f"{POSTGRES_DATA} is not on a named volume"
    assert "ports" not in service, "PostgreSQL is published on the host: only the apps need it"
    assert service.get("restart") in {"always", "unless-stopped"}
    check = service["healthcheck"]
    options = pg_isready_options(healthcheck_argv(check))
    assert not options.get("-h", "/").startswith("/"), "pg_isready asks over the Unix socket"
    user = env.get("POSTGRES_USER", "postgres")
    assert options.get("-U") == user
    assert options.get("-d", user) == env.get("POSTGRES_DB", user)
    assert seconds(check["interval"]) <= 10 and seconds(check["timeout"]) <= 5, check


def test_compose_postgresql_healthcheck_passes_on_a_server_and_fails_without_one(
    compose: Json, postgres: PostgresServer
) -> None:
    """Compose's pg_isready, run here (Debian's) against a real server, with only its address
    replaced: 0 while the server runs; non-zero when nothing listens there, within the
    healthcheck's timeout."""
    _, service = postgres_service(compose)
    check = service["healthcheck"]
    options = pg_isready_options(healthcheck_argv(check))
    assert options.get("-p", str(POSTGRES_PORT)) == str(POSTGRES_PORT), options
    timeout_s = seconds(check["timeout"])

    def pg_isready(port: int) -> int:
        local = {**options, "-h": "127.0.0.1", "-p": str(port)}
        argv = [
            str(postgres.bin / "pg_isready"),
            *(part for pair in local.items() for part in pair),
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        return subprocess.run(argv, env=env, capture_output=True, timeout=timeout_s).returncode

    assert pg_isready(postgres.port) == 0
    assert pg_isready(free_port()) != 0


def test_compose_apps_share_no_volume_and_wait_for_postgresql_and_redis(compose: Json) -> None:
    """What several hosts would look like: app1 and app2 write to no volume they share (nor,
    in fact, to any: their data is in PostgreSQL); their CHAT_DATABASE is a postgresql:// URL
    to the PostgreSQL service, with its port, user, password and database, and their
    CHAT_BROKER names the Redis service; each starts once both are healthy, is restarted (an
    app that cannot reach the database when it starts exits), and nginx waits until both
    apps are ready."""
    apps = app_services(compose)
    assert len(apps) == 2, apps
    services = compose["services"]
    pg_name, pg = postgres_service(compose)
    pg_env = environment(pg)
    user = pg_env.get("POSTGRES_USER", "postgres")
    writable = [writable_mounts(services[name]) for name in apps]
    shared = {s for s in writable[0].values() if s} & {s for s in writable[1].values() if s}
    assert not shared, f"the apps share {shared}: several hosts share no disk"
    for name, written in zip(apps, writable, strict=True):
        service = services[name]
        assert not written, f"{name} writes to {written}: its data belongs in PostgreSQL"
        env = environment(service)
        database = urlsplit(env["CHAT_DATABASE"])
        assert database.scheme in POSTGRES_SCHEMES, f"{name}: CHAT_DATABASE={database.geturl()}"
        assert database.hostname == pg_name and (database.port or POSTGRES_PORT) == POSTGRES_PORT
        assert unquote(database.username or "") == user
        assert unquote(database.password or "") == pg_env["POSTGRES_PASSWORD"], (
            f"{name}: the password in CHAT_DATABASE is not POSTGRES_PASSWORD (change both)"
        )
        assert database.path == "/" + pg_env.get("POSTGRES_DB", user)
        broker = urlsplit(env["CHAT_BROKER"]).hostname or ""
        assert env["CHAT_BROKER"].startswith("redis://") and broker in services, env["CHAT_BROKER"]
        assert str(services[broker].get("image", "")).startswith("redis:")
        needs = depends_on_conditions(service)
        assert needs.get(pg_name) == "service_healthy", f"{name} may start before PostgreSQL"
        assert needs.get(broker) == "service_healthy", f"{name} may start before Redis"
        assert service.get("restart") in {"always", "unless-stopped"}
        assert "/readyz" in " ".join(healthcheck_argv(service["healthcheck"]))
    nginx_needs = depends_on_conditions(nginx_service(compose)[0])
    assert {name: nginx_needs.get(name) for name in apps} == dict.fromkeys(apps, "service_healthy")


def test_compose_named_volumes_each_belong_to_one_service(compose: Json) -> None:
    """A named volume two containers mount exists on one host only (what the apps' SQLite
    file needed); one that no service mounts is a leftover."""
    users: dict[str, list[str]] = {volume: [] for volume in compose.get("volumes") or {}}
    for name, service in compose["services"].items():
        for source in mounts(service).values():
            if source in users:
                users[source].append(name)
    assert users and all(len(names) == 1 for names in users.values()), users


def test_compose_apps_connections_fit_postgresql_s_max_connections(compose: Json) -> None:
    """Each service process keeps up to CHAT_DATABASE_POOL_SIZE read connections and one write
    connection; every app process together, with room for a few `python -m chat` commands run
    beside them (migrate, users, tokens), stays within the server's max_connections less the
    ones it keeps for superusers."""
    _, pg = postgres_service(compose)
    command = pg.get("command") or ""
    text = command if isinstance(command, str) else " ".join(str(part) for part in command)
    found = re.search(r"max_connections=(\d+)", text)
    max_connections = int(found[1]) if found else POSTGRES_MAX_CONNECTIONS
    default_pool = Settings.model_fields["database_pool_size"].default
    image_command = argv_of(all_of(dockerfile_instructions(), "CMD")[-1])
    needed = 0
    for name in app_services(compose):
        service = compose["services"][name]
        argv = service.get("command") or image_command
        argv = shlex.split(argv) if isinstance(argv, str) else [str(part) for part in argv]
        workers = int(argv[argv.index("--workers") + 1]) if "--workers" in argv else 1
        pool = int(environment(service).get("CHAT_DATABASE_POOL_SIZE", default_pool))
        needed += workers * (pool + 1)
    commands = 5
    assert needed + commands <= max_connections - POSTGRES_RESERVED_CONNECTIONS, (
        f"the apps may open {needed} connections; PostgreSQL takes {max_connections}"
    )


def test_nginx_config_is_the_mounted_file_with_only_addresses_replaced(compose: Json) -> None:
    local = local_nginx_conf(compose, [4101, 4102], 4103)
    apps = app_services(compose)
    service, path = nginx_service(compose)
    assert b"server 127.0.0.1:4101" in local and b"server 127.0.0.1:4102" in local
    assert b"listen 127.0.0.1:4103;" in local
    undone = (
        local.replace(b"127.0.0.1:4101", f"{apps[0]}:{image_port()}".encode())
        .replace(b"127.0.0.1:4102", f"{apps[1]}:{image_port()}".encode())
        .replace(b"listen 127.0.0.1:4103;", f"listen {published_port(service)};".encode())
    )
    assert undone == path.read_bytes()


class Nginx:
    """Debian's nginx in the foreground, everything it writes under ``workdir``; runs as root
    (workers as root too, so they can use the temp folders) or as any other user."""

    def __init__(
        self,
        program: str,
        workdir: Path,
        compose: Json,
        app_ports: list[int],
        edit: Callable[[bytes], bytes] | None = None,
    ) -> None:
        """``edit``: a change of the snippet for one test (tests/test_nginx_limits.py lowers
        the limits' numbers); every other test runs the repository's file as it is."""
        self.program = program
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.snippet = workdir / "default.conf"
        snippet = local_nginx_conf(compose, app_ports, self.port)
        self.snippet.write_bytes(edit(snippet) if edit else snippet)
        self.access_log = workdir / "access.log"
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
            f"    access_log {self.access_log};\n"
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
    database: str = ""  # the apps' CHAT_DATABASE here


_clusters: list[PostgresServer] = []


def topology_cluster() -> PostgresServer:
    """The PostgreSQL cluster of the topologies that are not given one (tests/test_nginx_*.py):
    made on first use, removed when the tests' process exits."""
    if not _clusters:
        programs = bindir()
        need(programs is not None, "PostgreSQL is not installed (Debian's postgresql package)")
        assert programs is not None
        cluster = PostgresServer(programs)
        atexit.register(cluster.destroy)
        cluster.start()
        _clusters.append(cluster)
    return _clusters[0]


@contextlib.contextmanager
def running_topology(
    tmp_path: Path,
    compose: Json,
    redis_server: RedisServer,
    nginx_program: str,
    env: dict[str, str] | None = None,
    edit: Callable[[bytes], bytes] | None = None,
    postgres: PostgresServer | None = None,
) -> Iterator[Topology]:
    """docker-compose.yml's topology on this machine: Redis; the apps with their compose
    environment (their PostgreSQL service: a new database of ``postgres``, or of a cluster of
    this module's own), a heartbeat every second and ``env`` on top, started as compose starts
    them (together, unless one depends on the other); and nginx with the config compose mounts
    in front (``edit``: see Nginx)."""
    names = app_services(compose)
    assert len(names) == 2, f"the tests below expect two apps behind nginx: {names}"
    services = compose["services"]
    database: str | None = None
    if any(is_postgres_url(compose, v) for n in names for v in environment(services[n]).values()):
        database = (postgres or topology_cluster()).new_database()
    apps: list[LiveServer] = []
    nginx: Nginx | None = None
    try:
        wave: dict[str, int] = {}  # compose starts an app once the apps it depends on are up
        for name in names:
            after = depends_on(services[name]) & set(names)
            wave[name] = 1 + max((wave[other] for other in after), default=-1)
            workdir = tmp_path / name
            workdir.mkdir()
            compose_env = app_environment(
                compose, name, redis_server, tmp_path / "volumes", database
            )
            settings = {**compose_env, "CHAT_HEARTBEAT_SECONDS": "1", **(env or {})}
            apps.append(LiveServer(workdir, settings, database=settings.get("CHAT_DATABASE")))
        for number in sorted(set(wave.values())):
            together = [app for name, app in zip(names, apps, strict=True) if wave[name] == number]
            with ThreadPoolExecutor(len(together)) as pool:
                for started in [pool.submit(app.start) for app in together]:
                    started.result()
        (tmp_path / "nginx").mkdir()
        ports = [app.port for app in apps]
        nginx = Nginx(nginx_program, tmp_path / "nginx", compose, ports, edit)
        nginx.start()
        yield Topology(apps[0], apps[1], nginx, str(apps[0].database))
    finally:
        if nginx is not None:
            nginx.stop()
        for app in apps:
            app.kill()


@pytest.fixture
def topology(
    tmp_path: Path,
    compose: Json,
    redis_server: RedisServer,
    nginx_program: str,
    postgres: PostgresServer,
) -> Iterator[Topology]:
    """The compose topology (running_topology) as the repository's files give it."""
    with running_topology(
        tmp_path, compose, redis_server, nginx_program, postgres=postgres
    ) as running:
        yield running


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


def sqlite_files(folder: Path) -> list[Path]:
    return [
        path
        for path in folder.rglob("*")
        if path.is_file() and path.read_bytes()[:16] == b"SQLite format 3\x00"
    ]


async def test_the_apps_started_together_keep_everything_in_the_one_postgresql_database(
    topology: Topology, tmp_path: Path, room: str
) -> None:
    """Both apps started at once on a new database: every migration applied once; what is
    posted to either is in that database, and no app made a SQLite file of its own."""
    assert urlsplit(topology.database).scheme in POSTGRES_SCHEMES, topology.database
    applied = read_store(topology.database, "SELECT version FROM schema_migrations ORDER BY 1")
    folder = ROOT / "migrations" / "postgresql"
    assert [version for (version,) in applied] == [m.version for m in discover(folder)]
    posted: list[tuple[int, str]] = []
    async with httpx.AsyncClient(timeout=10) as client:
        for app in (topology.app1, topology.app2):
            text = f"kept by {app.url}"
            response = await client.post(
                f"{app.url}/api/rooms/{room}/messages", json={"author": "alice", "text": text}
            )
            assert response.status_code == 201, response.text
            posted.append((response.json()["id"], text))
    sql = "SELECT id, text FROM messages WHERE room = ? ORDER BY id"
    assert read_store(topology.database, sql, (room,)) == posted
    assert sqlite_files(tmp_path) == []


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
                assert response.status_code == 201, response.text
                posted.append(response.json()["id"])
                for index, stream in enumerate(streams):
                    # A buffering proxy holds a small event until its buffer fills or the
                    # stream ends: then it never arrives, and this times out.
                    event = await stream.next(timeout_s=5)
                    assert event.event == "message" and event.json()["text"] == text
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


async def test_nginx_own_errors_are_json(tmp_path: Path, nginx_program: str, compose: Json) -> None:
    """What nginx answers by itself (no app reachable, a body over its limit) follows the
    contract's error shape, like every answer of the apps."""
    # nothing listens at the upstream addresses
    nginx = Nginx(nginx_program, tmp_path, compose, [free_port(), free_port()])
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


# --- deploy/bot.py, as compose runs it -------------------------------------------------------


def test_the_compose_bot_waits_for_the_service_posts_activity_and_stops_on_sigterm(
    tmp_path: Path, image: Image, compose: Json
) -> None:
    """Compose's bot command, run in the image's files with its compose environment (only the
    service it targets pointed at a local server, and a quicker pace), waits for the service,
    posts numbered activity into its room, and exits 0 on SIGTERM."""
    bot = compose["services"]["bot"]
    assert "build" in bot, "the bot runs in the service's image"
    workdir = tmp_path / "app"
    workdir.mkdir()
    server = LiveServer(workdir)  # not started yet: the bot starts first and has to wait
    bot_env = environment(bot)
    target = urlsplit(bot_env["BOT_URL"])
    assert target.hostname in compose["services"], bot_env["BOT_URL"]
    assert target.hostname in depends_on(bot), "compose starts the bot before its target"
    bot_env["BOT_URL"] = urlunsplit(target._replace(netloc=urlsplit(server.url).netloc))
    bot_env["BOT_INTERVAL_SECONDS"] = "0.2"
    room = bot_env.get("BOT_ROOM", "demo")
    command = bot["command"]
    argv = shlex.split(command) if isinstance(command, str) else [str(part) for part in command]
    env = {k: v for k, v in image.env.items() if not k.startswith("BOT_")} | bot_env
    bot_log = tmp_path / "bot.log"
    with open(bot_log, "wb") as log:
        process = subprocess.Popen(
            here(argv), cwd=image.workdir, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_for(lambda: "not reachable" in bot_log.read_text(), 10, "the bot's first retry")
        server.start()
        with httpx.Client(base_url=server.url, timeout=10) as client:

            def items() -> list[Json]:
                response = client.get(f"/api/rooms/{room}/activity", params={"limit": 200})
                if response.status_code == 404:
                    return []
                assert response.status_code == 200
                listed: list[Json] = response.json()["items"]
                return listed

            wait_for(lambda: len(items()) >= 3, 30, f"three activity items in room {room}")
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0, bot_log.read_text()
            posted = items()
            details = client.get(f"/api/rooms/{room}").json()
        assert details["title"]
        assert all(item["actor"] == "demo-bot" and item["summary"] for item in posted)
        numbers = [item["data"]["n"] for item in posted]
        assert numbers == list(range(1, len(posted) + 1)), numbers  # none lost, none twice
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
        server.kill()


def test_the_bot_posts_with_its_token_to_a_service_that_requires_one(tmp_path: Path) -> None:
    """With CHAT_AUTH=required the bot needs BOT_TOKEN: a token made on the command line."""
    workdir = tmp_path / "app"
    workdir.mkdir()
    server = LiveServer(workdir, {"CHAT_AUTH": "required"})
    server.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHAT_", "BOT_"))}
    made = run_chat("tokens", "create", "demo-bot", cwd=workdir, CHAT_DATABASE=str(server.database))
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    bot_env = {**env, "BOT_URL": server.url, "BOT_TOKEN": token, "BOT_INTERVAL_SECONDS": "0.2"}
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "deploy" / "bot.py")],
        env=bot_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            auth = {"Authorization": f"Bearer {token}"}

            def items() -> list[Json]:
                response = client.get("/api/rooms/demo/activity", headers=auth)
                return [] if response.status_code == 404 else list(response.json()["items"])

            wait_for(lambda: len(items()) >= 2, 30, "two activity items from the bot")
            assert client.get("/api/rooms/demo/activity").status_code == 401  # no token
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
        server.kill()


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll until ``condition()`` holds; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"no {what} within {timeout_s}s")
