"""Streams against a live server: framing, filters, multi-room, resume, reset."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.live import LiveServer, open_stream


async def post(client: httpx.AsyncClient, room: str, author: str, text: str) -> dict[str, Any]:
    response = await client.post(
        f"/api/rooms/{room}/messages", json={"author": author, "text": text}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_framing_headers_and_first_bytes(server: LiveServer, room: str) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        request = client.build_request("GET", f"/api/rooms/{room}/events")
        response = await asyncio.wait_for(client.send(request, stream=True), 10)
        try:
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
            assert response.headers["cache-control"] == "no-cache"
            assert response.headers["x-accel-buffering"] == "no"
            first = await asyncio.wait_for(anext(response.aiter_raw()), 5)
            assert first == b"retry: 3000\n: connected\n\n"
        finally:
            await response.aclose()


async def test_event_frame_is_the_post_response(
    server: LiveServer, client: httpx.AsyncClient, room: str
) -> None:
    async with open_stream(client, f"/api/rooms/{room}/events") as stream:
        response = await client.post(
            f"/api/rooms/{room}/messages", json={"author": "alice", "text": "two\nlines"}
        )
        assert response.status_code == 201
        event = await stream.next()
    assert event.event == "message"
    assert event.id == str(response.json()["id"])
    assert event.data == response.text  # exactly the JSON the publisher got back
    body = response.json()
    assert body["text"] == "two\nlines"
    assert body["room"] == room and body["author"] == "alice" and body["type"] == "message"
    assert body["created_at"].endswith("Z") and len(body["created_at"]) == 24


async def test_filters_types_authors_exclude(client: httpx.AsyncClient, room: str) -> None:
    base = f"/api/rooms/{room}/events"
    async with (
        open_stream(client, base, params={"authors": "alice,bob"}) as only,
        open_stream(client, base, params={"exclude_authors": "alice"}) as no_alice,
        open_stream(client, base, params={"types": "activity"}) as activity_only,
    ):
        for author in ("alice", "carol", "bob"):
            await post(client, room, author, f"from {author}")
        got_only = [e.json()["author"] for e in await only.take(2)]
        got_no_alice = [e.json()["author"] for e in await no_alice.take(2)]
        assert got_only == ["alice", "bob"]
        assert got_no_alice == ["carol", "bob"]
        # a types=activity stream got none of the messages: the next thing it sees is a ping
        # or nothing at all within a short read
        try:
            extra = await activity_only.next(timeout_s=0.5)
        except TimeoutError:
            extra = None
        assert extra is None


async def test_unknown_type_is_400(client: httpx.AsyncClient, room: str) -> None:
    response = await client.get(f"/api/rooms/{room}/events", params={"types": "message,nope"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_query"


async def test_multi_room_stream(client: httpx.AsyncClient, room: str) -> None:
    a, b, c = f"{room}-a", f"{room}-b", f"{room}-c"
    async with open_stream(client, "/api/events", params={"rooms": f"{a},{b}"}) as stream:
        ids = [
            (await post(client, a, "u", "1"))["id"],
            (await post(client, c, "u", "not followed"))["id"],
            (await post(client, b, "u", "2"))["id"],
        ]
        got = await stream.take(2)
    assert [int(e.id or 0) for e in got] == [ids[0], ids[2]]
    assert [e.json()["room"] for e in got] == [a, b]


async def test_resume_by_header_and_by_parameter(client: httpx.AsyncClient, room: str) -> None:
    first = [await post(client, room, "alice", f"m{i}") for i in range(5)]
    after = first[1]["id"]
    path = f"/api/rooms/{room}/events"
    async with open_stream(client, path, headers={"Last-Event-ID": str(after)}) as by_header:
        got = await by_header.take(3)
    assert [int(e.id or 0) for e in got] == [m["id"] for m in first[2:]]
    async with open_stream(client, path, params={"last_event_id": str(after)}) as by_param:
        got = await by_param.take(3)
    assert [int(e.id or 0) for e in got] == [m["id"] for m in first[2:]]
    # the header wins over the parameter
    async with open_stream(
        client, path, headers={"Last-Event-ID": str(first[3]["id"])}, params={"last_event_id": "0"}
    ) as both:
        got = await both.take(1)
    assert int(got[0].id or 0) == first[4]["id"]


async def test_resume_while_others_post_is_gap_free(
    client: httpx.AsyncClient, server: LiveServer, room: str
) -> None:
    """Resume from the middle while four publishers post: every id after the resume point
    arrives exactly once, in increasing order, across the replay/live switch-over."""
    seed = [await post(client, room, "seed", f"s{i}") for i in range(50)]
    resume_from = seed[9]["id"]
    posted: list[int] = []

    async def publisher(n: int) -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as own:
            for i in range(60):
                posted.append(int((await post(own, room, f"p{n}", f"{i}"))["id"]))

    async with open_stream(
        client, f"/api/rooms/{room}/events", headers={"Last-Event-ID": str(resume_from)}
    ) as stream:
        publishers = asyncio.gather(*(publisher(n) for n in range(4)))
        expected_count = 40 + 4 * 60
        got = await stream.take(expected_count, timeout_s=30)
        await asyncio.wait_for(publishers, 30)
    ids = [int(e.id or 0) for e in got]
    expected = sorted([int(m["id"]) for m in seed[10:]] + posted)
    assert ids == expected


async def test_reset_when_gap_exceeds_replay_limit(make_server: Callable[..., LiveServer]) -> None:
    live = make_server(CHAT_REPLAY_LIMIT="5")
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        posted = [await post(client, "r", "a", str(i)) for i in range(10)]
        path = "/api/rooms/r/events"
        async with open_stream(client, path, headers={"Last-Event-ID": "2"}) as stream:
            reset = await stream.next()
            assert reset.event == "reset" and reset.id is None
            body = reset.json()
            assert body["latest_id"] == posted[-1]["id"] and body["type"] == "reset"
            live_one = await post(client, "r", "a", "after reset")
            nxt = await stream.next()
        assert int(nxt.id or 0) == live_one["id"]
        # a gap within the limit replays
        async with open_stream(client, path, headers={"Last-Event-ID": "7"}) as stream:
            got = await stream.take(4)
        assert [int(e.id or 0) for e in got] == [8, 9, 10, 11]


async def test_unplaceable_resume_point_gets_reset(client: httpx.AsyncClient, room: str) -> None:
    await post(client, room, "a", "x")
    for bad in ("abc", "-3", "99999999"):
        async with open_stream(
            client, f"/api/rooms/{room}/events", headers={"Last-Event-ID": bad}
        ) as stream:
            event = await stream.next()
            assert event.event == "reset"
            assert event.json()["reason"] == "unknown_resume_point"
            live = await post(client, room, "a", f"after {bad}")
            assert int((await stream.next()).id or 0) == live["id"]


async def test_heartbeat_comment_when_idle(make_server: Callable[..., LiveServer]) -> None:
    live = make_server(CHAT_HEARTBEAT_SECONDS="0.3")
    async with (
        httpx.AsyncClient(base_url=live.url, timeout=10) as client,
        open_stream(client, "/api/rooms/quiet/events") as stream,
    ):
        await stream.until_comment("ping", timeout_s=5)
    assert "ping" in stream.comments


async def test_a_filtered_stream_resumes_from_the_events_it_passed_over(
    make_server: Callable[..., LiveServer],
) -> None:
    """A stream that matches few events (here ``authors=alice``) in a busy room: its resume
    point used to move only with what it matched, so a reconnection asked for a gap counted
    over every event since, and past CHAT_REPLAY_LIMIT events it never wanted it got
    ``reset`` and lost the matches posted while it was away (a probe of ``tail --authors``).
    An idle stream that skipped events now gets a ``position`` event instead of a ping, whose
    ``id:`` is where it has read up to; resuming from it replays the match it missed."""
    live = make_server(CHAT_HEARTBEAT_SECONDS="0.3", CHAT_REPLAY_LIMIT="5")
    room, path = "busy", "/api/rooms/busy/events"
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        async with open_stream(client, path, params={"authors": "alice"}) as stream:
            first = await post(client, room, "alice", "A")
            assert [e.json()["text"] for e in await stream.take(1)] == ["A"]
            others = [await post(client, "busy", "bob", f"b{i}") for i in range(20)]
            elsewhere = await post(client, "other", "bob", "elsewhere")
            position = await stream.next()
        assert position.event == "position"
        assert int(position.id or 0) == elsewhere["id"] > others[-1]["id"] > first["id"]
        body = position.json()
        assert body == {
            "type": "position",
            "room": room,
            "created_at": body["created_at"],
            "latest_id": elsewhere["id"],
        }
        # away: a few more of what it skips (fewer than CHAT_REPLAY_LIMIT), and one it wants
        for i in range(3):
            await post(client, room, "bob", f"c{i}")
        missed = await post(client, room, "alice", "B")
        async with open_stream(
            client, path, params={"authors": "alice"}, headers={"Last-Event-ID": position.id or ""}
        ) as again:
            got = await again.next()
        assert (got.event, int(got.id or 0), got.json()["text"]) == ("message", missed["id"], "B")
        # without the position, from the last match: the gap is too large (what it used to get)
        async with open_stream(
            client, path, params={"authors": "alice"}, headers={"Last-Event-ID": str(first["id"])}
        ) as old:
            assert (await old.next()).json()["reason"] == "gap_too_large"
        # an unfiltered stream of one room never skips an event of its room: plain pings, and
        # no event at all (pings come every 0.3 s while it waits for one)
        async with open_stream(client, path) as plain:
            await post(client, "other", "bob", "elsewhere again")
            with pytest.raises(TimeoutError):
                await plain.next(timeout_s=1.5)
            assert "ping" in plain.comments


async def test_coalesced_streams_still_get_every_event_once_in_order(
    make_server: Callable[..., LiveServer],
) -> None:
    """With a wide coalescing window, busy streams are held and flushed together: what they
    receive is unchanged, every event once, in order, on every stream, including one that
    is filtered and one that sees every room."""
    live = make_server(CHAT_COALESCE_MS="200", CHAT_COALESCE_MAX_MS="200")
    room = "coalesce"
    async with (
        httpx.AsyncClient(base_url=live.url, timeout=10) as client,
        open_stream(client, f"/api/rooms/{room}/events") as plain,
        open_stream(client, "/api/events", params={"rooms": "*"}) as everywhere,
        open_stream(client, f"/api/rooms/{room}/events", params={"authors": "p1"}) as only,
    ):

        async def publisher(n: int) -> list[dict[str, Any]]:
            return [await post(client, room, f"p{n}", f"{i}") for i in range(40)]

        batches = await asyncio.wait_for(asyncio.gather(*(publisher(n) for n in range(3))), 30)
        posted = sorted(int(m["id"]) for batch in batches for m in batch)
        by_p1 = sorted(int(m["id"]) for m in batches[1])
        for stream, expected in ((plain, posted), (everywhere, posted), (only, by_p1)):
            got = await stream.take(len(expected), timeout_s=30)
            assert [int(e.id or 0) for e in got] == expected
