"""A notification feed as a test client sees it over REST (API.md, "Notifications"): the
helpers tests/test_notifications.py and tests/test_notifications_probe.py share. Every
request is bounded (the client's own timeout, and 10 s around it)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx

Json = dict[str, Any]
WAIT_S = 10


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def fresh(name: str) -> str:
    """A user name no other test uses (a module shares one server)."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


async def post(client: httpx.AsyncClient, room: str, author: str, text: str, **more: Any) -> Json:
    body = {"author": author, "text": text, **more}
    async with asyncio.timeout(WAIT_S):
        answer = await client.post(f"/api/rooms/{room}/messages", json=body)
    return ok(answer, 201)  # type: ignore[no-any-return]


async def feed(client: httpx.AsyncClient, user: str, **params: Any) -> Json:
    async with asyncio.timeout(WAIT_S):
        answer = await client.get(f"/api/users/{user}/notifications", params=params)
    return ok(answer)  # type: ignore[no-any-return]


async def unread(client: httpx.AsyncClient, user: str) -> int:
    async with asyncio.timeout(WAIT_S):
        answer = await client.get(f"/api/users/{user}/notifications/unread")
    return int(ok(answer)["unread"])


async def read_until(client: httpx.AsyncClient, user: str, until: int) -> Json:
    async with asyncio.timeout(WAIT_S):
        answer = await client.put(f"/api/users/{user}/notifications/read", json={"until": until})
    return ok(answer)  # type: ignore[no-any-return]
