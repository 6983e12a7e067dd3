"""Presence and typing against a live server with a short grace period: who is connected,
join/leave announcements without flapping on reconnect, and rate-limited typing events.

"Nothing arrived" is checked with a marker: after waiting long enough for an unwanted event,
a message is posted and must be the observer's very next event."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from tests.live import LiveServer, SSEStream, open_stream

GRACE_S = 1.0
EVENTS = "/api/rooms/{}/events"
Json = dict[str, Any]


@pytest.fixture
async def client(make_server: Callable[..., LiveServer]) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a server of the test's own, with a short presence grace period."""
    live = make_server(CHAT_PRESENCE_GRACE_SECONDS=str(GRACE_S), CHAT_TYPING_INTERVAL_SECONDS="1")
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as c:
        yield c


async def users(client: httpx.AsyncClient, room: str) -> list[str]:
    response = await client.get(f"/api/rooms/{room}/presence")
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"users"}
    names: list[str] = response.json()["users"]
    return names


async def presence(stream: SSEStream, timeout_s: float = 5.0) -> tuple[str, str, str]:
    """The next event, which must be a presence event: (room, user, state)."""
    event = await stream.next(timeout_s)
    body = event.json()
    assert (event.event, event.id) == ("presence", None), event
    assert set(body) == {"type", "room", "created_at", "user", "state"}, body
    return body["room"], body["user"], body["state"]


async def nothing_but_marker(client: httpx.AsyncClient, stream: SSEStream, room: str) -> None:
    """The stream received nothing since its last event: a fresh message is its next one."""
    response = await client.post(
        f"/api/rooms/{room}/messages", json={"author": "marker", "text": "marker"}
    )
    assert response.status_code == 201, response.text
    event = await stream.next(5)
    assert (event.event, event.id) == ("message", str(response.json()["id"])), event


async def typing(client: httpx.AsyncClient, room: str, user: str) -> httpx.Response:
    return await client.post(f"/api/rooms/{room}/typing", json={"user": user})


# -- presence ------------------------------------------------------------------------------


async def test_stream_with_user_makes_the_user_present(
    client: httpx.AsyncClient, room: str
) -> None:
    assert await users(client, room) == []
    async with open_stream(client, EVENTS.format(room)) as observer:
        assert await users(client, room) == []  # a stream without user= is nobody
        async with open_stream(client, EVENTS.format(room), params={"user": "alice"}):
            assert await presence(observer) == (room, "alice", "join")
            assert await users(client, room) == ["alice"]
            async with open_stream(client, EVENTS.format(room), params={"user": "aaron"}):
                assert await presence(observer) == (room, "aaron", "join")
                assert await users(client, room) == ["aaron", "alice"]  # sorted
            assert await users(client, f"{room}-x") == []


async def test_multi_room_stream_joins_and_leaves_each_room(
    client: httpx.AsyncClient, room: str
) -> None:
    a, b = f"{room}-a", f"{room}-b"
    async with open_stream(client, "/api/events", params={"rooms": f"{a},{b}"}) as observer:
        params = {"rooms": f"{a},{b}", "user": "alice"}
        async with open_stream(client, "/api/events", params=params):
            joins = {await presence(observer), await presence(observer)}
            assert joins == {(a, "alice", "join"), (b, "alice", "join")}
            assert await users(client, a) == await users(client, b) == ["alice"]
        leaves = {await presence(observer), await presence(observer)}
        assert leaves == {(a, "alice", "leave"), (b, "alice", "leave")}
        assert await users(client, a) == await users(client, b) == []


async def test_reconnect_within_grace_is_silent_then_one_leave(
    client: httpx.AsyncClient, room: str
) -> None:
    path, alice = EVENTS.format(room), {"user": "alice"}
    async with open_stream(client, path) as observer:
        async with open_stream(client, path, params=alice):
            assert await presence(observer) == (room, "alice", "join")
        async with open_stream(client, path, params=alice):  # a reload: back at once
            assert await users(client, room) == ["alice"]
            await asyncio.sleep(GRACE_S + 0.5)  # past the first stream's grace period
            await nothing_but_marker(client, observer, room)  # no leave, no second join
            assert await users(client, room) == ["alice"]
        closed = time.monotonic()
        assert await presence(observer, GRACE_S + 5) == (room, "alice", "leave")
        assert time.monotonic() - closed >= GRACE_S * 0.9  # not before the grace period
        assert await users(client, room) == []
        await asyncio.sleep(GRACE_S + 0.5)
        await nothing_but_marker(client, observer, room)  # exactly one leave


async def test_two_streams_of_one_user_leave_after_both_close(
    client: httpx.AsyncClient, room: str
) -> None:
    path, alice = EVENTS.format(room), {"user": "alice"}
    async with open_stream(client, path) as observer:
        async with open_stream(client, path, params=alice):
            async with open_stream(client, path, params=alice):
                assert await presence(observer) == (room, "alice", "join")
                await nothing_but_marker(client, observer, room)  # one join only
            await asyncio.sleep(GRACE_S + 0.5)
            assert await users(client, room) == ["alice"]
            await nothing_but_marker(client, observer, room)  # one stream left: no leave
        assert await presence(observer, GRACE_S + 5) == (room, "alice", "leave")
        assert await users(client, room) == []


# -- typing --------------------------------------------------------------------------------


async def test_typing_reaches_the_others_but_not_the_typist(
    client: httpx.AsyncClient, room: str
) -> None:
    path, only_typing = EVENTS.format(room), {"types": "typing"}
    async with (
        open_stream(client, path, params=only_typing) as observer,
        open_stream(client, path, params={**only_typing, "user": "alice"}) as alices_own,
    ):
        response = await typing(client, room, "alice")
        assert response.status_code == 202, response.text
        event = await observer.next(5)
        assert (event.event, event.id) == ("typing", None)
        body = event.json()
        assert body == {
            "type": "typing",
            "room": room,
            "created_at": body["created_at"],
            "user": "alice",
        }
        assert (await typing(client, room, "bob")).status_code == 202
        # alice's own stream skips her typing: bob's is the first thing it receives
        assert (await alices_own.next(5)).json()["user"] == "bob"
        assert (await observer.next(5)).json()["user"] == "bob"


async def test_typing_is_rate_limited_per_user_and_room(
    client: httpx.AsyncClient, room: str
) -> None:
    async with open_stream(client, EVENTS.format(room), params={"types": "typing"}) as observer:
        assert (await typing(client, room, "alice")).status_code == 202
        again = await typing(client, room, "alice")
        assert again.status_code == 429, again.text
        assert again.json()["error"]["code"] == "rate_limited"
        assert int(again.headers["Retry-After"]) >= 1
        assert (await typing(client, room, "bob")).status_code == 202  # another user
        assert (await typing(client, f"{room}-x", "alice")).status_code == 202  # another room
        got = [(await observer.next(5)).json()["user"] for _ in range(2)]
        assert got == ["alice", "bob"]  # the refused one was not broadcast


async def test_typing_works_again_after_the_interval(
    make_server: Callable[..., LiveServer], room: str
) -> None:
    live = make_server(CHAT_TYPING_INTERVAL_SECONDS="0.5")
    async with (
        httpx.AsyncClient(base_url=live.url, timeout=10) as client,
        open_stream(client, EVENTS.format(room), params={"types": "typing"}) as observer,
    ):
        assert (await typing(client, room, "alice")).status_code == 202
        assert (await typing(client, room, "alice")).status_code == 429
        await asyncio.sleep(0.6)
        assert (await typing(client, room, "alice")).status_code == 202
        assert [(await observer.next(5)).json()["user"] for _ in range(2)] == ["alice", "alice"]
