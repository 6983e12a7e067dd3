"""nginx and the service agree on who the client is.

nginx is the first hop: it sends the apps `X-Forwarded-For: $remote_addr`, the address it
accepted the connection from, never a chain a client started. The apps believe that header
only from the peers in CHAT_FORWARDED_ALLOW_IPS (ACCESS.md, "Limits"): compose lists nginx's
address there, and here the apps trust 127.0.0.1, where nginx connects from. The client
connects from another loopback address, 127.0.0.2, so that an app that ignored the header
(and logged nginx's 127.0.0.1) is told apart from one that reads it. Every wait is bounded."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import need_program
from tests.redis_server import RedisServer
from tests.test_deploy import (
    app_services,
    environment,
    load_compose,
    nginx_service,
    running_topology,
)

Json = dict[str, Any]
CLIENT_ADDRESS = "127.0.0.2"  # loopback too, but not nginx's own 127.0.0.1
FORGED = "6.6.6.6"


def test_compose_apps_trust_exactly_nginx_s_fixed_address() -> None:
    """In compose, the apps believe X-Forwarded-For from nginx alone: its fixed address on the
    network, inside that network's subnet (not the bot's, nor Redis's, nor `*`)."""
    compose = load_compose()
    service, _ = nginx_service(compose)
    address = service["networks"]["default"]["ipv4_address"]
    (subnet,) = [pool["subnet"] for pool in compose["networks"]["default"]["ipam"]["config"]]
    assert ipaddress.ip_address(address) in ipaddress.ip_network(subnet)
    for name in app_services(compose):
        assert environment(compose["services"][name])["CHAT_FORWARDED_ALLOW_IPS"] == address


def nginx_logged(access_log: Path, request_line: str) -> list[str]:
    """$remote_addr of each access log line (nginx's default `combined` format begins with
    it) of this request."""
    if not access_log.exists():
        return []
    lines = access_log.read_text(errors="replace").splitlines()
    return [line.split(" ", 1)[0] for line in lines if f'"{request_line} HTTP/1.1"' in line]


def app_logged(log: str, method: str, path: str) -> list[Json]:
    """The JSON request lines an app logged (CHAT_LOG_FORMAT=json) for this request."""
    found = []
    for line in log.splitlines():
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if (
            isinstance(record, dict)
            and record.get("event") == "request"
            and record.get("method", method) == method
            and str(record.get("path", "")).split("?")[0] == path
        ):
            found.append(record)
    return found


async def test_the_app_logs_the_client_nginx_saw_not_a_forged_forwarded_for(
    tmp_path: Path, redis_server: RedisServer, room: str
) -> None:
    """A request through nginx from 127.0.0.2 carrying a forged `X-Forwarded-For: 6.6.6.6`:
    nginx's access log has 127.0.0.2, and so does the one request line the app logged for it
    (never 6.6.6.6, never nginx's own 127.0.0.1)."""
    env = {
        "CHAT_LOG_FORMAT": "json",
        "CHAT_LOG_LEVEL": "INFO",  # the request lines (LiveServer's default is WARNING)
        "CHAT_FORWARDED_ALLOW_IPS": "127.0.0.1",
    }
    nginx = need_program("nginx")
    with running_topology(tmp_path, load_compose(), redis_server, nginx, env) as topology:
        transport = httpx.AsyncHTTPTransport(local_address=CLIENT_ADDRESS)
        async with httpx.AsyncClient(
            base_url=topology.nginx.url, transport=transport, timeout=10
        ) as client:
            created = await client.put(f"/api/rooms/{room}", json={"title": room})
            assert created.status_code in {200, 201}, created.text
            path = f"/api/rooms/{room}"
            answer = await client.get(path, headers={"X-Forwarded-For": FORGED})
            assert answer.status_code == 200, answer.text

        seen_by_nginx: list[str] = []
        seen_by_apps: list[Json] = []
        try:
            async with asyncio.timeout(5):  # both write their line as the request ends
                while True:
                    seen_by_nginx = nginx_logged(topology.nginx.access_log, f"GET {path}")
                    logs = topology.app1.log() + "\n" + topology.app2.log()
                    seen_by_apps = app_logged(logs, "GET", path)
                    if seen_by_nginx and seen_by_apps:
                        break
                    await asyncio.sleep(0.05)
        except TimeoutError:
            pass
        assert seen_by_nginx == [CLIENT_ADDRESS], seen_by_nginx
        assert len(seen_by_apps) == 1, (
            f"no JSON request log line (event: request, path: {path}) from the apps;"
            f" their logs:\n{topology.app1.log()}\n{topology.app2.log()}"
        )
        (line,) = seen_by_apps
        assert line["status"] == 200, line
        assert line["client"] != FORGED, f"the app believed the client's forged header: {line}"
        assert line["client"] == seen_by_nginx[0], line
