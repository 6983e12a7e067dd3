"""Abuse: each per-client limit (ACCESS.md, Limits) driven past its bound by one client while
another, well-behaved client goes on unaffected; and the holes an attacker found (issue 14):
request smuggling, HEAD on a stream, a stream's lifetime.

Clients are told apart the way a deployment behind a proxy does: the server trusts
127.0.0.1 as a proxy (CHAT_FORWARDED_ALLOW_IPS) and each client sends its own
``X-Forwarded-For``; a signed-in client is its user, wherever it comes from.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from chat.api.session import WAITING_CHECKS_MAX
from tests.access_helpers import Seed, bearer
from tests.live import LiveServer, open_stream, scrape
from tests.redis_server import RedisServer
from tests.scaleout_helpers import Cluster

pytestmark = pytest.mark.sqlite_only  # the per-client limits, on SQLite alone: conftest.py

MakeServer = Callable[..., LiveServer]
PROXIED = {"CHAT_FORWARDED_ALLOW_IPS": "127.0.0.1"}
ABUSER = {"X-Forwarded-For": "10.0.0.66"}
NEIGHBOUR = {"X-Forwarded-For": "10.0.0.7"}


def message(text: str) -> dict[str, str]:
    return {"author": "someone", "text": text}


def assert_rate_limited(response: httpx.Response, limit: str) -> int:
    """A 429 as ACCESS.md says; returns its Retry-After."""
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["code"] == "rate_limited" and error["message"], error
    retry = int(response.headers["retry-after"])
    assert retry >= 1
    assert response.headers["ratelimit-policy"].startswith(f'"{limit}";q=')
    assert response.headers["ratelimit"] == f'"{limit}";r=0;t={retry}'
    return retry


async def test_writes_past_the_bucket_get_429_while_others_write_and_read(
    make_server: MakeServer,
) -> None:
    # a token every 2.5 s: none comes back while the refusals below (a 0.25 s pause each) last
    live = make_server(CHAT_WRITE_RATE_PER_S="0.4", CHAT_WRITE_BURST="10", **PROXIED)
    async with Seed(live.database) as seed:
        token = await seed.token("carol")
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        for i, room in enumerate(("busy", "quiet")):  # made by others: a room costs more
            made = await client.put(
                f"/api/rooms/{room}", json={}, headers={"X-Forwarded-For": f"10.0.3.{i}"}
            )
            assert made.status_code == 201
        async with open_stream(client, "/api/rooms/quiet/events", headers=NEIGHBOUR) as stream:
            answers = [
                await client.post("/api/rooms/busy/messages", json=message(f"m{i}"), headers=ABUSER)
                for i in range(14)
            ]
            assert [r.status_code for r in answers[:10]] == [201] * 10
            assert_rate_limited(answers[13], "write")
            first = answers[0].json()["id"]
            # a reaction and a typing event are writes like any other
            react = await client.post(
                f"/api/rooms/busy/messages/{first}/reactions",
                json={"author": "someone", "emoji": "👍"},
                headers=ABUSER,
            )
            assert_rate_limited(react, "write")
            typing = await client.post(
                "/api/rooms/busy/typing", json={"user": "another-name"}, headers=ABUSER
            )
            retry_s = assert_rate_limited(typing, "write")
            # another address, and a signed-in user behind the abuser's address, write on
            posted = await client.post(
                "/api/rooms/quiet/messages", json=message("still here"), headers=NEIGHBOUR
            )
            assert posted.status_code == 201
            assert (await stream.next()).json()["text"] == "still here"
            own = {**ABUSER, **bearer(token)}
            assert (
                await client.post("/api/rooms/quiet/messages", json={"text": "me"}, headers=own)
            ).status_code == 201
            assert (await stream.next()).json()["text"] == "me"
        # the history holds exactly what was accepted
        history = (await client.get("/api/rooms/busy/messages", params={"limit": 100})).json()
        assert sorted(m["text"] for m in history["messages"]) == sorted(
            r.request.content.decode().split('"text":"')[1].split('"')[0]
            for r in answers
            if r.status_code == 201
        )
        # the bucket refills: after a pause the abuser may write again
        await asyncio.sleep(retry_s)
        again = await client.post("/api/rooms/busy/messages", json=message("later"), headers=ABUSER)
        assert again.status_code == 201
        assert (await scrape(client))['chat_rate_limited_total{limit="write"}'] >= 3


async def test_a_batch_costs_its_items_and_a_new_room_costs_more(make_server: MakeServer) -> None:
    live = make_server(CHAT_WRITE_RATE_PER_S="0.01", CHAT_WRITE_BURST="100", **PROXIED)
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        # rooms cost 1 + 10: nine rooms from a full bucket of 100
        made = [
            (await client.put(f"/api/rooms/r{i}", json={}, headers=ABUSER)).status_code
            for i in range(9)
        ]
        assert made == [201] * 9, made
        # one unit left: a batch of two does not fit, a post into an existing room does
        batch = {"messages": [message("a"), message("b")]}
        refused = await client.post("/api/rooms/r0/messages/batch", json=batch, headers=ABUSER)
        assert_rate_limited(refused, "write")
        posted = await client.post("/api/rooms/r0/messages", json=message("x"), headers=ABUSER)
        assert posted.status_code == 201
        assert_rate_limited(await client.put("/api/rooms/r9", json={}, headers=ABUSER), "write")
        assert (await client.get("/api/rooms/r9")).status_code == 404
        # a neighbour's batch of 50 goes through
        batch = {"messages": [message(f"n{i}") for i in range(50)]}
        fine = await client.post("/api/rooms/r0/messages/batch", json=batch, headers=NEIGHBOUR)
        assert fine.status_code == 201, fine.text


async def test_streams_past_the_per_client_cap_get_429(make_server: MakeServer) -> None:
    live = make_server(CHAT_MAX_STREAMS_PER_CLIENT="2", **PROXIED)
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        async with contextlib.AsyncExitStack() as stack:
            first = await stack.enter_async_context(
                open_stream(client, "/api/rooms/a/events", headers=ABUSER)
            )
            await stack.enter_async_context(
                open_stream(client, "/api/events", params={"rooms": "a,b"}, headers=ABUSER)
            )
            for path in ("/api/rooms/a/events", "/api/events?rooms=*"):
                third = await asyncio.wait_for(client.get(path, headers=ABUSER), 10)
                assert_rate_limited(third, "streams")
            async with open_stream(client, "/api/rooms/a/events", headers=NEIGHBOUR) as other:
                sent = await client.post("/api/rooms/a/messages", json=message("hello"))
                assert sent.status_code == 201
                assert (await other.next()).json()["text"] == "hello"
                assert (await first.next()).json()["text"] == "hello"
            await first.response.aclose()  # one closed: a slot is free again (soon)
            refused_again = 0  # asked before the server had seen the close: still 429
            for _ in range(100):
                again = await asyncio.wait_for(
                    client.send(
                        client.build_request("GET", "/api/rooms/a/events", headers=ABUSER),
                        stream=True,
                    ),
                    10,
                )
                if again.status_code == 200:
                    await again.aclose()
                    break
                await asyncio.wait_for(again.aread(), 10)
                await again.aclose()
                assert_rate_limited(again, "streams")
                refused_again += 1
                await asyncio.sleep(0.05)
            assert again.status_code == 200
        metrics = await scrape(client)
        refused = 2 + refused_again  # every 429 answered is counted, and nothing else
        assert metrics['chat_rate_limited_total{limit="streams"}'] == refused


async def test_sign_in_attempts_are_limited_per_address_and_per_account(
    make_server: MakeServer,
) -> None:
    live = make_server(CHAT_SIGNIN_RATE_PER_MIN="3", CHAT_AUTH="required", **PROXIED)
    async with Seed(live.database) as seed:
        await seed.user("alice", "right-password")
        await seed.user("bob", "bobs-password")

    async def attempt(user: str, password: str, ip: str) -> httpx.Response:
        return await client.post(
            "/api/session",
            json={"user": user, "password": password},
            headers={"X-Forwarded-For": ip},
        )

    async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
        # one address guessing: three tries, then 429 even for the right password
        for name in ("x1", "x2", "x3"):
            assert (await attempt(name, "guess", "10.0.0.66")).status_code == 401
        assert_rate_limited(await attempt("alice", "right-password", "10.0.0.66"), "signin")
        assert_rate_limited(await attempt("bob", "bobs-password", "10.0.0.66"), "signin")
        # many addresses guessing one account: that account's own limit
        for ip in ("10.0.1.1", "10.0.1.2", "10.0.1.3"):
            assert (await attempt("alice", "guess", ip)).status_code == 401
        assert_rate_limited(await attempt("alice", "right-password", "10.0.1.4"), "signin")
        # bob, from an address of his own, signs in
        assert (await attempt("bob", "bobs-password", "10.0.2.1")).status_code == 201


async def test_a_flood_of_sign_ins_queues_a_bounded_number_of_password_checks(
    make_server: MakeServer,
) -> None:
    """Sign-ins from everywhere at once (the per-client limits off, as many addresses would
    get past them): the password checks queued for the one thread that runs them stop at
    WAITING_CHECKS_MAX, and the sign-ins past it are answered 503 with Retry-After at once,
    not queued behind the others; once the flood is over, a sign-in is checked again."""
    live = make_server(CHAT_SIGNIN_RATE_PER_MIN="0")
    tries = 3 * WAITING_CHECKS_MAX
    limits = httpx.Limits(max_connections=tries)
    async with httpx.AsyncClient(base_url=live.url, timeout=60, limits=limits) as client:

        async def attempt(n: int) -> httpx.Response:
            return await client.post("/api/session", json={"user": f"x{n}", "password": "guess"})

        answers = await asyncio.wait_for(asyncio.gather(*map(attempt, range(tries))), 60)
        statuses = Counter(answer.status_code for answer in answers)
        assert set(statuses) == {401, 503}, statuses
        assert statuses[401] >= WAITING_CHECKS_MAX, statuses
        for answer in answers:
            if answer.status_code == 503:
                assert answer.json()["error"]["code"] == "unavailable"
                assert answer.headers["retry-after"] == "1"
        assert (await asyncio.wait_for(attempt(-1), 30)).status_code == 401


async def test_a_number_no_float_holds_slips_past_no_limit(make_server: MakeServer) -> None:
    """A probe: ``"x": 1e400`` in a body made the limits step (orjson, which refuses it) skip a
    batch's size and a sign-in's account name, while the route (the json module, which read
    it as infinity) took the body: a batch cost 1 whatever its size, and one account could be
    guessed at without its own limit. Now both read a body alike, and such a body is 400."""
    live = make_server(
        CHAT_WRITE_RATE_PER_S="0.01",
        CHAT_WRITE_BURST="15",
        CHAT_SIGNIN_RATE_PER_MIN="3",
        CHAT_AUTH="open",
        **PROXIED,
    )
    async with Seed(live.database) as seed:
        await seed.user("victim", "the-right-one")
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
        batch = {"messages": [message(f"m{i}") for i in range(15)]}
        body = json.dumps(batch)[:-1] + ', "x": 1e400}'
        sent = await client.post(
            "/api/rooms/flood/messages/batch",
            content=body,
            headers={**ABUSER, "Content-Type": "application/json"},
        )
        assert sent.status_code == 400, sent.text
        assert sent.json()["error"]["code"] == "invalid_json"
        assert (await client.get("/api/rooms/flood/messages")).status_code == 404  # nothing

        async def attempt(password: str, ip: str, extra: str = "") -> httpx.Response:
            content = f'{{"user": "victim", "password": "{password}"{extra}}}'
            headers = {"X-Forwarded-For": ip, "Content-Type": "application/json"}
            return await client.post("/api/session", content=content, headers=headers)

        # such a body signs nobody in (it did, past the account's limit), and is not JSON
        refused = await attempt("the-right-one", "10.0.3.1", ', "x": 1e400')
        assert refused.status_code == 400 and "invalid_json" in refused.text, refused.text
        for n in range(3):  # the account's own limit, from three addresses
            assert (await attempt("guess", f"10.0.4.{n}")).status_code == 401
        assert_rate_limited(await attempt("the-right-one", "10.0.4.9"), "signin")


async def test_rooms_named_on_one_stream_are_bounded(make_server: MakeServer) -> None:
    live = make_server(CHAT_MAX_ROOMS_PER_STREAM="3")
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        response = await asyncio.wait_for(client.get("/api/events?rooms=a,b,c,d"), 10)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_query"
        assert "CHAT_MAX_ROOMS_PER_STREAM" in response.json()["error"]["message"]
        async with open_stream(client, "/api/events", params={"rooms": "a,b,c"}):
            pass


async def test_limits_hold_across_processes_sharing_redis(
    tmp_path: Any, redis_server: RedisServer
) -> None:
    """Two processes behind one address: the client gets one limit, not one per process."""
    cluster = Cluster(tmp_path, redis_server.url)
    try:
        servers = cluster.start(
            2,
            CHAT_WRITE_RATE_PER_S="0.01",
            CHAT_WRITE_BURST="6",
            CHAT_MAX_STREAMS_PER_CLIENT="2",
            **PROXIED,
        )
        async with httpx.AsyncClient(timeout=10) as client:
            made = await client.put(
                f"{servers[0].url}/api/rooms/shared", json={}, headers=NEIGHBOUR
            )
            assert made.status_code == 201
            statuses = []
            for i in range(12):
                url = servers[i % 2].url
                posted = await client.post(
                    f"{url}/api/rooms/shared/messages", json=message(f"m{i}"), headers=ABUSER
                )
                statuses.append(posted.status_code)
            assert statuses.count(201) == 6 and statuses.count(429) == 6, statuses
            async with contextlib.AsyncExitStack() as stack:
                for live in servers:
                    await stack.enter_async_context(
                        open_stream(client, f"{live.url}/api/rooms/shared/events", headers=ABUSER)
                    )
                for live in servers:
                    third = await asyncio.wait_for(
                        client.get(f"{live.url}/api/rooms/shared/events", headers=ABUSER), 10
                    )
                    assert_rate_limited(third, "streams")
    finally:
        cluster.close()


async def test_a_forged_forwarded_for_from_an_untrusted_peer_is_ignored(
    make_server: MakeServer,
) -> None:
    """Without CHAT_FORWARDED_ALLOW_IPS, X-Forwarded-For names no one: every request here is
    127.0.0.1's, whatever it claims."""
    live = make_server(CHAT_WRITE_RATE_PER_S="0.01", CHAT_WRITE_BURST="12")
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        # the room costs 11 of 12: one post fits, then no more
        assert (await client.put("/api/rooms/f", json={})).status_code == 201
        statuses = [
            (
                await client.post(
                    "/api/rooms/f/messages",
                    json=message(str(i)),
                    headers={"X-Forwarded-For": f"10.9.9.{i}"},
                )
            ).status_code
            for i in range(4)
        ]
        assert statuses == [201, 429, 429, 429]


async def test_a_stream_ends_at_its_lifetime_and_resumes_without_loss(
    make_server: MakeServer,
) -> None:
    # the heartbeat's tick (a quarter of its period) ends streams past their lifetime
    live = make_server(CHAT_STREAM_MAX_SECONDS="1.5", CHAT_HEARTBEAT_SECONDS="1")
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        started = asyncio.get_running_loop().time()
        seen: list[str] = []
        async with open_stream(client, "/api/rooms/life/events") as stream:
            await client.post("/api/rooms/life/messages", json=message("before"))
            seen.append((await stream.next()).json()["text"])
            try:
                while True:
                    event = await stream.next(timeout_s=5)
                    seen.append(event.json()["text"])
            except EOFError:
                pass  # the server ended it
        lived = asyncio.get_running_loop().time() - started
        assert lived >= 1.3, lived  # 1.5 s less at most 10%
        last_id = (await client.get("/api/rooms/life/messages")).json()["messages"][-1]["id"]
        await client.post("/api/rooms/life/messages", json=message("after"))
        resumed = {"Last-Event-ID": str(last_id)}
        async with open_stream(client, "/api/rooms/life/events", headers=resumed) as stream:
            assert (await stream.next()).json()["text"] == "after"
        assert seen == ["before"]
        metrics = await scrape(client)
        assert metrics['chat_streams_ended_total{reason="lifetime"}'] >= 1


async def test_head_on_a_stream_path_opens_no_stream(make_server: MakeServer) -> None:
    live = make_server()
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        for path in ("/api/rooms/h/events?user=zed", "/api/events?rooms=h&user=zed"):
            head = await asyncio.wait_for(client.head(path), 10)
            assert head.status_code == 200
            assert head.headers["content-type"].startswith("text/event-stream")
            assert head.content == b""
        assert (await client.get("/api/rooms/h")).status_code == 404  # not even made
        assert (await client.put("/api/rooms/h", json={})).status_code == 201
        head = await asyncio.wait_for(client.head("/api/rooms/h/events?user=zed"), 10)
        assert head.status_code == 200 and head.content == b""
        room = (await client.get("/api/rooms/h")).json()
        assert room["subscribers"] == 0
        presence = (await client.get("/api/rooms/h/presence")).json()
        assert "zed" not in orjson.dumps(presence).decode()
        metrics = await scrape(client)
        assert metrics["chat_subscribers"] == 0
        assert metrics.get("chat_streams_opened_total", 0) == 0


SMUGGLED = (
    b"PUT /api/rooms/smuggled HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Length: 2\r\n\r\n{}"
)


async def test_content_length_with_chunked_is_refused_and_the_connection_closed(
    make_server: MakeServer,
) -> None:
    """RFC 9112 section 6.3: a request hidden behind the chunked body never runs, on a plain
    route (the message POST), a Quart route and the session route."""
    live = make_server()
    for method, path in [
        ("POST", "/api/rooms/front/messages"),
        ("PUT", "/api/rooms/front"),
        ("POST", "/api/session"),
    ]:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        ).encode()
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", live.port), 10)
        try:
            writer.write(head + b"0\r\n\r\n" + SMUGGLED)
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 10)  # to EOF: the server closes
        finally:
            writer.close()
        assert answer.startswith(b"HTTP/1.1 400 "), answer
        assert answer.count(b"HTTP/1.1 ") == 1, answer  # one answer: nothing ran after it
        body = orjson.loads(answer.split(b"\r\n\r\n", 1)[1])
        assert body["error"]["code"] == "bad_request"
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        assert (await client.get("/api/rooms/smuggled")).status_code == 404
        assert (await client.get("/api/rooms/front")).status_code == 404


async def test_typing_is_one_per_user_and_room_per_interval_and_zero_turns_it_off(
    make_server: MakeServer,
) -> None:
    limited = make_server(CHAT_TYPING_INTERVAL_SECONDS="30")
    off = make_server(CHAT_TYPING_INTERVAL_SECONDS="0")
    async with httpx.AsyncClient(timeout=10) as client:
        for live, expected in ((limited, [202, 429, 202]), (off, [202, 202, 202])):
            url = f"{live.url}/api/rooms"
            statuses = [
                (await client.post(f"{url}/t/typing", json={"user": "ann"})).status_code,
                (await client.post(f"{url}/t/typing", json={"user": "ann"})).status_code,
                (await client.post(f"{url}/other/typing", json={"user": "ann"})).status_code,
            ]
            assert statuses == expected, (live.extra_env, statuses)
        again = await client.post(f"{limited.url}/api/rooms/t/typing", json={"user": "ann"})
        assert 25 <= assert_rate_limited(again, "typing") <= 30
