"""Rooms against a live server: create/update, read one, list, last_event_id, subscribers,
auto-creation on post (and its switch)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import httpx

from tests.live import LiveServer, open_stream

ROOM_FIELDS = {"private", "name", "title", "created_at", "last_event_id", "subscribers"}
RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def assert_room(body: Any, name: str) -> dict[str, Any]:
    assert isinstance(body, dict) and set(body) == ROOM_FIELDS, body
    assert body["name"] == name
    assert isinstance(body["title"], str)
    assert RFC3339_MS.fullmatch(body["created_at"]), body["created_at"]
    assert isinstance(body["last_event_id"], int) and body["last_event_id"] >= 0
    assert isinstance(body["subscribers"], int) and body["subscribers"] >= 0
    return body


async def get_room(client: httpx.AsyncClient, name: str) -> dict[str, Any]:
    response = await client.get(f"/api/rooms/{name}")
    assert response.status_code == 200, response.text
    return assert_room(response.json(), name)


async def post(client: httpx.AsyncClient, room: str, text: str = "hi") -> dict[str, Any]:
    response = await client.post(f"/api/rooms/{room}/messages", json={"author": "a", "text": text})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def room_names(client: httpx.AsyncClient) -> list[str]:
    response = await client.get("/api/rooms")
    assert response.status_code == 200, response.text
    return [entry["name"] for entry in response.json()["rooms"]]


def assert_not_found(response: httpx.Response) -> None:
    assert response.status_code == 404, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == "not_found"
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], list)


async def wait_subscribers(client: httpx.AsyncClient, room: str, expected: int) -> None:
    """Poll GET room until it reports ``expected`` subscribers (a closed stream is noticed by
    the server shortly after the client goes away), for at most 5 s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while True:
        count = (await get_room(client, room))["subscribers"]
        if count == expected:
            return
        assert loop.time() < deadline, f"subscribers stayed {count}, expected {expected}"
        await asyncio.sleep(0.05)


async def test_put_creates_then_updates_title(client: httpx.AsyncClient, room: str) -> None:
    created = await client.put(f"/api/rooms/{room}", json={"title": "First title"})
    assert created.status_code == 201, created.text
    assert created.headers["content-type"].startswith("application/json")
    first = assert_room(created.json(), room)
    assert first["title"] == "First title"
    assert first["last_event_id"] == 0 and first["subscribers"] == 0

    updated = await client.put(f"/api/rooms/{room}", json={"title": "Second title"})
    assert updated.status_code == 200, updated.text
    second = assert_room(updated.json(), room)
    assert second["title"] == "Second title"
    assert second["created_at"] == first["created_at"]
    assert await get_room(client, room) == second

    # a PUT without a title is an update that keeps the title
    again = await client.put(f"/api/rooms/{room}", json={})
    assert again.status_code == 200, again.text
    assert again.json() == second


async def test_put_without_title_creates(client: httpx.AsyncClient, room: str) -> None:
    response = await client.put(f"/api/rooms/{room}", json={})
    assert response.status_code == 201, response.text
    assert assert_room(response.json(), room) == await get_room(client, room)


async def test_longest_room_name_is_accepted(client: httpx.AsyncClient, room: str) -> None:
    name = (room + "-" + "x" * 64)[:64]
    response = await client.put(f"/api/rooms/{name}", json={"title": "long"})
    assert response.status_code == 201, response.text
    assert (await get_room(client, name))["title"] == "long"


async def test_get_unknown_room_is_404(client: httpx.AsyncClient, room: str) -> None:
    assert_not_found(await client.get(f"/api/rooms/{room}"))
    assert room not in await room_names(client)


async def test_list_is_sorted_by_name(client: httpx.AsyncClient, room: str) -> None:
    names = [f"{room}-c", f"{room}-a", f"{room}-b", f"{room}.0", f"{room}_z"]
    for name in names:
        assert (await client.put(f"/api/rooms/{name}", json={"title": name})).status_code == 201
    response = await client.get("/api/rooms")
    assert response.status_code == 200
    assert set(response.json()) == {"rooms", "has_more", "next"}
    rooms = response.json()["rooms"]
    listed = [entry["name"] for entry in rooms]
    assert listed == sorted(listed)
    mine = [entry for entry in rooms if entry["name"] in names]
    assert [entry["name"] for entry in mine] == sorted(names)
    for entry in mine:
        assert entry == await get_room(client, entry["name"])


async def test_last_event_id_follows_posts(client: httpx.AsyncClient, room: str) -> None:
    other = f"{room}-other"
    assert (await client.put(f"/api/rooms/{room}", json={})).status_code == 201
    assert (await get_room(client, room))["last_event_id"] == 0
    first = await post(client, room)
    assert (await get_room(client, room))["last_event_id"] == first["id"]
    in_other = await post(client, other)
    assert in_other["id"] > first["id"]
    assert (await get_room(client, room))["last_event_id"] == first["id"]
    assert (await get_room(client, other))["last_event_id"] == in_other["id"]
    second = await post(client, room)
    assert (await get_room(client, room))["last_event_id"] == second["id"]
    listed = [e for e in (await client.get("/api/rooms")).json()["rooms"] if e["name"] == room]
    assert [e["last_event_id"] for e in listed] == [second["id"]]


async def test_subscribers_counts_open_streams(client: httpx.AsyncClient, room: str) -> None:
    assert (await client.put(f"/api/rooms/{room}", json={})).status_code == 201
    assert (await get_room(client, room))["subscribers"] == 0
    async with open_stream(client, f"/api/rooms/{room}/events"):
        assert (await get_room(client, room))["subscribers"] == 1
        multi = {"rooms": f"{room},{room}-elsewhere"}
        async with open_stream(client, "/api/events", params=multi):
            assert (await get_room(client, room))["subscribers"] == 2
            listed = [e for e in (await client.get("/api/rooms")).json()["rooms"]]
            assert [e["subscribers"] for e in listed if e["name"] == room] == [2]
        await wait_subscribers(client, room, 1)
    await wait_subscribers(client, room, 0)


async def test_post_into_unknown_room_creates_it(client: httpx.AsyncClient, room: str) -> None:
    assert_not_found(await client.get(f"/api/rooms/{room}"))
    event = await post(client, room, "first words")
    found = await get_room(client, room)
    assert found["last_event_id"] == event["id"]
    assert room in await room_names(client)


async def test_no_auto_create_when_switched_off(make_server: Callable[..., LiveServer]) -> None:
    live = make_server(CHAT_AUTO_CREATE_ROOMS="false")
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        response = await client.post(
            "/api/rooms/ghost/messages", json={"author": "a", "text": "anyone?"}
        )
        assert_not_found(response)
        assert_not_found(await client.get("/api/rooms/ghost"))
        assert_not_found(await client.get("/api/rooms/ghost/messages"))
        assert_not_found(await client.get("/api/rooms/ghost/events"))
        assert await room_names(client) == []
        # an explicitly created room takes posts
        assert (await client.put("/api/rooms/real", json={})).status_code == 201
        event = await post(client, "real", "here")
        assert (await get_room(client, "real"))["last_event_id"] == event["id"]
        assert await room_names(client) == ["real"]
