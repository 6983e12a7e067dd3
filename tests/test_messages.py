"""Messages against a live server: posting, ids, history paging with before/after/limit,
reply_to, and durability across a restart."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from typing import Any

import httpx

from tests.live import LiveServer

EVENT_FIELDS = {"id", "type", "room", "created_at", "author", "text"}
RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


async def post(
    client: httpx.AsyncClient, room: str, text: str, author: str = "alice", **extra: Any
) -> dict[str, Any]:
    body = {"author": author, "text": text, **extra}
    response = await client.post(f"/api/rooms/{room}/messages", json=body)
    assert response.status_code == 201, response.text
    event: dict[str, Any] = response.json()
    return event


async def page(client: httpx.AsyncClient, room: str, **params: int) -> tuple[list[int], bool]:
    response = await client.get(f"/api/rooms/{room}/messages", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"messages", "has_more"}
    ids = [m["id"] for m in body["messages"]]
    assert ids == sorted(ids) and len(set(ids)) == len(ids), ids
    assert all(m["room"] == room for m in body["messages"])
    return ids, body["has_more"]


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code
    return error


async def seed(client: httpx.AsyncClient, room: str, count: int) -> list[int]:
    """``count`` messages in ``room``, with a message in a neighbour room every 10th post
    so that the history has to filter by room."""
    ids = []
    for i in range(count):
        ids.append((await post(client, room, f"m{i}"))["id"])
        if i % 10 == 0:
            await post(client, f"{room}-noise", f"noise {i}")
    return ids


async def test_post_returns_the_event(client: httpx.AsyncClient, room: str) -> None:
    response = await client.post(
        f"/api/rooms/{room}/messages", json={"author": "alice", "text": "héllo 👋\nworld"}
    )
    assert response.status_code == 201, response.text
    assert response.headers["content-type"].startswith("application/json")
    event = response.json()
    assert set(event) == EVENT_FIELDS
    assert isinstance(event["id"], int) and event["id"] > 0
    assert event["type"] == "message" and event["room"] == room
    assert event["author"] == "alice" and event["text"] == "héllo 👋\nworld"
    assert RFC3339_MS.fullmatch(event["created_at"]), event["created_at"]
    ids, has_more = await page(client, room)
    assert ids == [event["id"]] and has_more is False
    history = (await client.get(f"/api/rooms/{room}/messages")).json()["messages"]
    assert history == [{**event, "reactions": {}}]  # the event, plus its (no) reactions


async def test_longest_author_and_text_are_accepted(client: httpx.AsyncClient, room: str) -> None:
    event = await post(client, room, "t" * 4000, author="a" * 64)
    assert len(event["text"]) == 4000 and len(event["author"]) == 64


async def test_ids_strictly_increase(client: httpx.AsyncClient, room: str) -> None:
    ids = [(await post(client, f"{room}-{i % 3}", f"n{i}"))["id"] for i in range(30)]
    assert all(a < b for a, b in itertools.pairwise(ids)), ids


async def test_newest_page_without_cursor(client: httpx.AsyncClient, room: str) -> None:
    ids = await seed(client, room, 7)
    assert await page(client, room, limit=3) == (ids[-3:], True)
    assert await page(client, room, limit=7) == (ids, False)
    assert await page(client, room) == (ids, False)


async def test_default_limit_is_50(client: httpx.AsyncClient, room: str) -> None:
    ids = await seed(client, room, 55)
    assert await page(client, room) == (ids[-50:], True)


async def test_before_pages_backwards_through_the_room(
    client: httpx.AsyncClient, room: str
) -> None:
    ids = await seed(client, room, 120)
    seen: list[int] = []
    flags: list[bool] = []
    got, has_more = await page(client, room, limit=50)
    while True:
        seen = got + seen
        flags.append(has_more)
        if not has_more:
            break
        assert len(flags) < 10, "paging does not end"
        got, has_more = await page(client, room, limit=50, before=got[0])
    assert seen == ids  # every message once: no duplicates, no gaps
    assert flags == [True, True, False]
    assert await page(client, room, limit=50, before=ids[0]) == ([], False)


async def test_after_pages_forwards(client: httpx.AsyncClient, room: str) -> None:
    ids = await seed(client, room, 120)
    seen: list[int] = []
    flags: list[bool] = []
    cursor = 0
    while True:
        got, has_more = await page(client, room, limit=50, after=cursor)
        seen += got
        flags.append(has_more)
        if not has_more:
            break
        assert len(flags) < 10, "paging does not end"
        cursor = got[-1]
    assert seen == ids
    assert flags == [True, True, False]
    assert await page(client, room, after=ids[-1]) == ([], False)
    assert await page(client, room, after=ids[99], limit=50) == (ids[100:], False)


async def test_before_and_after_together(client: httpx.AsyncClient, room: str) -> None:
    ids = await seed(client, room, 30)
    window = {"after": ids[9], "before": ids[20]}
    assert await page(client, room, **window, limit=5) == (ids[10:15], True)
    assert await page(client, room, **window, limit=10) == (ids[10:20], False)
    assert await page(client, room, **window) == (ids[10:20], False)
    assert await page(client, room, after=ids[5], before=ids[6]) == ([], False)


async def test_limit_bounds(client: httpx.AsyncClient, room: str) -> None:
    ids = await seed(client, room, 3)
    assert await page(client, room, limit=1) == (ids[-1:], True)
    assert await page(client, room, limit=200) == (ids, False)
    for bad in (0, 201, -1):
        response = await client.get(f"/api/rooms/{room}/messages", params={"limit": bad})
        assert_error(response, 400, "invalid_query")


async def test_history_of_unknown_room_is_404(client: httpx.AsyncClient, room: str) -> None:
    assert_error(await client.get(f"/api/rooms/{room}/messages"), 404, "not_found")


async def test_reply_to_a_message_of_the_same_room(client: httpx.AsyncClient, room: str) -> None:
    original = await post(client, room, "question?")
    reply = await post(client, room, "answer", author="bob", reply_to=original["id"])
    assert set(reply) == EVENT_FIELDS | {"reply_to", "reply_to_author"}
    assert (reply["reply_to"], reply["reply_to_author"]) == (original["id"], original["author"])
    history = (await client.get(f"/api/rooms/{room}/messages")).json()["messages"]
    assert history == [{**original, "reactions": {}}, {**reply, "reactions": {}}]


async def test_bad_reply_to_is_422_and_stores_nothing(client: httpx.AsyncClient, room: str) -> None:
    elsewhere = await post(client, f"{room}-other", "in another room")
    mine = await post(client, room, "mine")
    before = (await client.get(f"/api/rooms/{room}")).json()
    for target in (elsewhere["id"], 10**9):
        response = await client.post(
            f"/api/rooms/{room}/messages", json={"author": "a", "text": "re", "reply_to": target}
        )
        error = assert_error(response, 422, "validation_error")
        assert any("reply_to" in detail.get("loc", []) for detail in error["details"]), error
    assert (await client.get(f"/api/rooms/{room}")).json() == before
    assert await page(client, room) == ([mine["id"]], False)
    # nor does a failed reply create the room it was posted to
    fresh = f"{room}-fresh"
    response = await client.post(
        f"/api/rooms/{fresh}/messages", json={"author": "a", "text": "x", "reply_to": mine["id"]}
    )
    assert_error(response, 422, "validation_error")
    assert_error(await client.get(f"/api/rooms/{fresh}"), 404, "not_found")


async def test_acknowledged_message_survives_restart(
    make_server: Callable[..., LiveServer],
) -> None:
    live = make_server()
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        old = [await post(client, "durable", f"before {i}") for i in range(3)]
        old_history = (await client.get("/api/rooms/durable/messages")).json()
    assert live.terminate() == 0
    live.start()
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        assert (await client.get("/api/rooms/durable/messages")).json() == old_history
        assert [m["id"] for m in old_history["messages"]] == [m["id"] for m in old]
        room = (await client.get("/api/rooms/durable")).json()
        assert room["last_event_id"] == old[-1]["id"]
        new = [await post(client, "durable", "after"), await post(client, "elsewhere", "x")]
    assert min(m["id"] for m in new) > max(m["id"] for m in old)  # ids are never reused
