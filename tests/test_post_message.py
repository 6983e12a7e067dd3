"""``POST /api/rooms/{room}/messages``, a plain route of the pipeline (chat/api/post_message.py),
against a live server, as a client sees it.

A body arrives with Content-Length or chunked (no Content-Length), and the pipeline reads
either before the route sees it. So each request here is sent
both ways where it can be, and the two answers must be the same: status, headers, bytes, what
is stored and what /metrics counts."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import psycopg
import pytest

from chat.store.dialect import database_kind
from tests.live import LiveServer, open_stream, scrape
from tests.test_errors import GOOD, assert_error, chunks, fields, unchanged
from tests.test_messages import EVENT_FIELDS, RFC3339_MS

JSON = "application/json; charset=utf-8"
TIMEOUT_S = 10.0
WAYS = ("length", "chunked")  # the body's framing: Content-Length, or chunked
TEXT = 'héllo "quoted" \\ back\tslash 👋\n<b>&amp;</b>'  # escaping and non-ASCII


def same_error(response: httpx.Response) -> Any:
    """An error answer's body but for its request id (each answer has its own)."""
    body = orjson.loads(response.content)
    body["error"].pop("request_id")
    return body


def path_of(room: str) -> str:
    return f"/api/rooms/{quote(room, safe='')}/messages"


async def send(
    client: httpx.AsyncClient,
    room: str,
    body: bytes,
    way: str,
    headers: Mapping[str, str | bytes] | None = None,
    *,
    content_type: str | None = "application/json",
) -> httpx.Response:
    """POST ``body`` to the room's messages, with Content-Length ("length") or chunked
    ("chunked"), and check that it was sent that way."""
    raw = dict(headers or {})
    if content_type is not None:
        raw["content-type"] = content_type
    all_headers = [(k.encode(), v if isinstance(v, bytes) else v.encode()) for k, v in raw.items()]
    content = body if way == "length" else chunks(body, 7)
    async with asyncio.timeout(TIMEOUT_S):
        response = await client.post(path_of(room), content=content, headers=all_headers)
    sent = response.request.headers
    if way == "length":
        assert sent["content-length"] == str(len(body)) and "transfer-encoding" not in sent
    else:
        assert "content-length" not in sent and sent["transfer-encoding"] == "chunked"
    return response


def header_names(response: httpx.Response) -> list[bytes]:
    """The response's header names in order, without the ones that vary per answer."""
    return [name.lower() for name, _ in response.headers.raw if name.lower() != b"date"]


def assert_json_answer(response: httpx.Response) -> None:
    assert response.headers.get_list("content-type") == [JSON], response.headers
    assert response.headers.get_list("content-length") == [str(len(response.content))]


def without_identity(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k not in {"id", "created_at"}}


async def history(client: httpx.AsyncClient, room: str) -> list[dict[str, Any]]:
    async with asyncio.timeout(TIMEOUT_S):
        response = await client.get(path_of(room), params={"limit": 200})
    assert response.status_code == 200, response.text
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


async def errors_counted(client: httpx.AsyncClient, status: int) -> float:
    """``chat_errors_total{status="..."}`` (chat/metrics.py ``requests_rejected``)."""
    async with asyncio.timeout(TIMEOUT_S):
        values = await scrape(client)
    return values.get(f'chat_errors_total{{status="{status}"}}', 0.0)


async def task_count(client: httpx.AsyncClient) -> float:
    async with asyncio.timeout(TIMEOUT_S):
        return (await scrape(client))["chat_asyncio_tasks"]


# -- 1, 2: a well-formed post ----------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "APPLICATION/JSON;CHARSET=UTF-8",
        "application/json ; charset=utf-8",
    ],
)
async def test_good_post_is_the_stored_event_both_ways(
    client: httpx.AsyncClient, room: str, content_type: str
) -> None:
    """201 with exactly the bytes a subscriber receives as ``data:``, the JSON content type,
    a right Content-Length, and the same headers either way."""
    answers: dict[str, httpx.Response] = {}
    async with open_stream(client, f"/api/rooms/{room}/events") as stream:
        for way in WAYS:
            body = orjson.dumps({"author": f"by-{way}", "text": TEXT})
            response = await send(client, room, body, way, content_type=content_type)
            assert response.status_code == 201, (way, response.text)
            assert_json_answer(response)
            assert "idempotent-replayed" not in response.headers
            frame = await stream.next(TIMEOUT_S)
            assert frame.event == "message"
            assert frame.data.encode() == response.content, way
            event = orjson.loads(response.content)
            assert frame.id == str(event["id"])
            assert set(event) == EVENT_FIELDS
            assert event["type"] == "message" and event["room"] == room
            assert event["author"] == f"by-{way}" and event["text"] == TEXT
            assert RFC3339_MS.fullmatch(event["created_at"])
            answers[way] = response
    first, second = (orjson.loads(answers[way].content) for way in WAYS)
    assert second["id"] > first["id"]
    assert header_names(answers["length"]) == header_names(answers["chunked"])
    stored = await history(client, room)
    assert stored == [{**first, "reactions": {}}, {**second, "reactions": {}}]


async def test_reply_to_and_unknown_fields_both_ways(client: httpx.AsyncClient, room: str) -> None:
    first = await send(client, room, orjson.dumps(GOOD), "length")
    assert first.status_code == 201
    target = first.json()["id"]
    events = []
    for way in WAYS:
        body = orjson.dumps({"author": "bob", "text": "re", "reply_to": target, "extra": [1]})
        response = await send(client, room, body, way)
        assert response.status_code == 201, (way, response.text)
        assert_json_answer(response)
        event = response.json()
        assert set(event) == EVENT_FIELDS | {"reply_to", "reply_to_author"}
        assert event["reply_to"] == target
        events.append(event)
    assert without_identity(events[0]) == without_identity(events[1])
    assert [m["id"] for m in await history(client, room)] == [target, *(e["id"] for e in events)]


async def test_chunked_body_is_posted(client: httpx.AsyncClient, room: str) -> None:
    """No Content-Length: the pipeline reads it, however it is cut up."""
    body = orjson.dumps({"author": "carol", "text": "chunk " * 50})
    posted = []
    for size, pause_s in [(1, 0.0), (16, 0.01), (len(body), 0.0)]:
        async with asyncio.timeout(TIMEOUT_S):
            response = await client.post(
                path_of(room),
                content=chunks(body, size, pause_s),
                headers={"content-type": "application/json"},
            )
        assert "content-length" not in response.request.headers
        assert response.request.headers["transfer-encoding"] == "chunked"
        assert response.status_code == 201, response.text
        assert_json_answer(response)
        posted.append(response.json())
    stored = await history(client, room)
    assert stored == [{**event, "reactions": {}} for event in posted]
    assert all(m["text"] == "chunk " * 50 for m in stored)


# -- 3: malformed requests -------------------------------------------------------------------

J = "application/json"
UNSUPPORTED = (415, "unsupported_media_type")
NOT_JSON = (400, "invalid_json")
SCHEMA = (422, "validation_error")
MALFORMED: list[tuple[str, bytes, str | None, int, str, set[str] | None]] = [
    # (id, body, content type, status, code, the fields details names (None: not checked))
    ("text-plain", orjson.dumps(GOOD), "text/plain", *UNSUPPORTED, None),
    ("no-type", orjson.dumps(GOOD), None, *UNSUPPORTED, None),
    ("form", b"author=a&text=b", "application/x-www-form-urlencoded", *UNSUPPORTED, None),
    ("jsonish", orjson.dumps(GOOD), "application/json-patch+json", *UNSUPPORTED, None),
    ("open-brace", b"{", J, *NOT_JSON, None),
    ("empty", b"", J, *NOT_JSON, None),
    ("nan", b'{"author": "a", "text": NaN}', J, *NOT_JSON, None),
    ("trailing", b'{"author": "a", "text": "b"} x', J, *NOT_JSON, None),
    ("not-utf8", b'{"author": "\xff", "text": "b"}', J, *NOT_JSON, None),
    ("array", b"[]", J, *SCHEMA, None),
    ("array-of-good", b'[{"author": "a", "text": "b"}]', J, *SCHEMA, None),
    ("string", b'"hi"', J, *SCHEMA, None),
    ("number", b"1", J, *SCHEMA, None),
    ("null", b"null", J, *SCHEMA, None),
    ("no-fields", b"{}", J, *SCHEMA, {"text"}),
    ("no-text", b'{"author": "a"}', J, *SCHEMA, {"text"}),
    ("no-author", b'{"text": "a"}', J, *SCHEMA, {"author"}),
    ("long-author", orjson.dumps({"author": "a" * 65, "text": "b"}), J, *SCHEMA, {"author"}),
    ("long-text", orjson.dumps({"author": "a", "text": "b" * 4001}), J, *SCHEMA, {"text"}),
    ("blank-text", b'{"author": "a", "text": "  "}', J, *SCHEMA, {"text"}),
    ("control-author", b'{"author": "a\\u0000", "text": "b"}', J, *SCHEMA, {"author"}),
    ("reply-zero", b'{"author": "a", "text": "b", "reply_to": 0}', J, *SCHEMA, {"reply_to"}),
    ("reply-text", b'{"author": "a", "text": "b", "reply_to": "1"}', J, *SCHEMA, {"reply_to"}),
    (
        "reply-huge",
        b'{"author": "a", "text": "b", "reply_to": 9223372036854775808}',
        J,
        *SCHEMA,
        {"reply_to"},
    ),
]


@pytest.fixture
async def seeded(client: httpx.AsyncClient, room: str) -> str:
    response = await send(client, room, orjson.dumps(GOOD), "length")
    assert response.status_code == 201
    return room


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code", "bad"),
    [case[1:] for case in MALFORMED],
    ids=[case[0] for case in MALFORMED],
)
async def test_malformed_post_is_the_same_error_both_ways(
    client: httpx.AsyncClient,
    seeded: str,
    body: bytes,
    content_type: str | None,
    status: int,
    code: str,
    bad: set[str] | None,
) -> None:
    answers = []
    async with unchanged(client, seeded):
        for way in WAYS:
            response = await send(client, seeded, body, way, content_type=content_type)
            error = assert_error(response, status, code)
            assert_json_answer(response)
            if bad is not None:
                assert fields(error) == bad, error
            if status == 422:
                assert error["details"], error
            answers.append(response)
    first, second = answers
    assert same_error(first) == same_error(second)
    assert header_names(first) == header_names(second)


async def raw_exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """One request on a socket of its own (``Connection: close``): status, headers, body."""
    async with asyncio.timeout(TIMEOUT_S):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(request)
            await writer.drain()
            answer = await reader.read()  # to the close
        finally:
            writer.close()
            await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    assert int(headers["content-length"]) == len(body), answer
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize("content_type", ["application/json", None])
async def test_post_without_any_body_framing(
    client: httpx.AsyncClient, server: LiveServer, seeded: str, content_type: str | None
) -> None:
    """Neither Content-Length nor Transfer-Encoding: an empty body, not JSON (or no JSON
    media type), answered by the route as such."""
    type_header = f"Content-Type: {content_type}\r\n" if content_type else ""
    request = (
        f"POST {path_of(seeded)} HTTP/1.1\r\nHost: 127.0.0.1\r\n{type_header}"
        "Connection: close\r\n\r\n"
    ).encode()
    async with unchanged(client, seeded):
        status, headers, body = await raw_exchange(server.port, request)
    expected = (400, "invalid_json") if content_type else (415, "unsupported_media_type")
    assert status == expected[0], body
    assert headers["content-type"] == JSON
    assert orjson.loads(body)["error"]["code"] == expected[1]


@pytest.mark.parametrize("name", ["Upper", "-dash", ".dot", "a" * 65, "café", "a b", "a:b"])
async def test_bad_room_name_is_400_both_ways(
    client: httpx.AsyncClient, seeded: str, name: str
) -> None:
    answers = []
    async with unchanged(client, seeded):
        for way in WAYS:
            response = await send(client, name, orjson.dumps(GOOD), way)
            assert_error(response, 400, "invalid_room")
            assert_json_answer(response)
            answers.append(same_error(response))
    assert answers[0] == answers[1]


@pytest.mark.parametrize("key", ["", "k" * 201, "a\tb", b"a\xa0b"])
async def test_bad_idempotency_key_is_422_both_ways(
    client: httpx.AsyncClient, seeded: str, key: str | bytes
) -> None:
    answers = []
    async with unchanged(client, seeded):
        for way in WAYS:
            response = await send(client, seeded, orjson.dumps(GOOD), way, {"Idempotency-Key": key})
            error = assert_error(response, 422, "validation_error")
            assert fields(error) == {"header.Idempotency-Key"}, error
            answers.append(same_error(response))
    assert answers[0] == answers[1]


def body_of_size(size: int) -> bytes:
    """A valid message body of exactly ``size`` bytes."""
    empty = len(orjson.dumps({"author": "a", "text": ""}))
    body = orjson.dumps({"author": "a", "text": "x" * (size - empty)})
    assert len(body) == size
    return body


async def test_body_over_the_limit_is_413_both_ways(
    make_server: Callable[..., LiveServer],
) -> None:
    live = make_server(CHAT_MAX_BODY_BYTES="1000")
    async with httpx.AsyncClient(base_url=live.url, timeout=TIMEOUT_S) as client:
        room = "limits"
        assert (await send(client, room, body_of_size(1000), "length")).status_code == 201
        assert (await send(client, room, body_of_size(1000), "chunked")).status_code == 201
        answers = []
        async with unchanged(client, room):
            for size in (1001, 1500, 5000):
                for way in WAYS:
                    response = await send(client, room, body_of_size(size), way)
                    assert_error(response, 413, "payload_too_large")
                    assert_json_answer(response)
                    if way == "length":
                        answers.append(same_error(response))
            # and a fresh room is not created by one
            response = await send(client, "fresh", body_of_size(1001), "length")
            assert_error(response, 413, "payload_too_large")
        assert_error(await client.get("/api/rooms/fresh"), 404, "not_found")
        assert len(await history(client, room)) == 2
        # the connection is still good for the next request
        assert (await send(client, room, body_of_size(999), "length")).status_code == 201


# -- 4: idempotency ----------------------------------------------------------------------------


async def test_idempotent_retry_and_conflict(client: httpx.AsyncClient, room: str) -> None:
    key = {"Idempotency-Key": f"key-{room}"}
    body = orjson.dumps({"author": "dave", "text": "once"})
    async with open_stream(client, f"/api/rooms/{room}/events") as stream:
        first = await send(client, room, body, "length", key)
        assert first.status_code == 201, first.text
        assert_json_answer(first)
        assert "idempotent-replayed" not in first.headers
        assert (await stream.next(TIMEOUT_S)).data.encode() == first.content
        replays = [
            await send(client, room, body, "length", key),
            # the same request with other spacing and key order: the same request
            await send(client, room, b'{ "text" : "once",\n "author" : "dave" }', "length", key),
            await send(client, room, body, "chunked", key),  # chunked agrees
        ]
        for replay in replays:
            assert replay.status_code == 200, replay.text
            assert replay.headers.get_list("idempotent-replayed") == ["true"]
            assert_json_answer(replay)
            assert replay.content == first.content
        assert header_names(replays[0]) == header_names(replays[2])
        conflicts = []
        async with unchanged(client, room):
            for way in WAYS:
                other = orjson.dumps({"author": "dave", "text": "twice"})
                conflict = await send(client, room, other, way, key)
                assert_error(conflict, 409, "conflict")
                assert_json_answer(conflict)
                assert "idempotent-replayed" not in conflict.headers
                conflicts.append(same_error(conflict))
        assert conflicts[0] == conflicts[1]
        # nothing was broadcast for the replays or the conflicts: the next frame is this one
        marker = await send(client, room, orjson.dumps({"author": "dave", "text": "m"}), "length")
        assert marker.status_code == 201
        assert (await stream.next(TIMEOUT_S)).data.encode() == marker.content
    stored = await history(client, room)
    assert [m["id"] for m in stored] == [first.json()["id"], marker.json()["id"]]
    # the key belongs to the room: in another room it is a new post
    elsewhere = await send(client, f"{room}-b", body, "length", key)
    assert elsewhere.status_code == 201 and elsewhere.json()["id"] > marker.json()["id"]


async def test_idempotency_key_first_used_with_a_chunked_body(
    client: httpx.AsyncClient, room: str
) -> None:
    key = {"Idempotency-Key": "é-latin-1 key".encode("latin-1")}
    body = orjson.dumps({"author": "erin", "text": "chunked first"})
    first = await send(client, room, body, "chunked", key)
    assert first.status_code == 201, first.text
    replay = await send(client, room, body, "length", key)
    assert replay.status_code == 200 and replay.headers["idempotent-replayed"] == "true"
    assert replay.content == first.content
    conflict = await send(client, room, orjson.dumps(GOOD), "length", key)
    assert_error(conflict, 409, "conflict")
    assert [m["id"] for m in await history(client, room)] == [first.json()["id"]]


# -- 5: errors from the store, counted ------------------------------------------------------


async def test_reply_to_a_missing_message_is_422_and_counted(
    client: httpx.AsyncClient, room: str
) -> None:
    mine = await send(client, room, orjson.dumps(GOOD), "length")
    assert mine.status_code == 201
    answers = []
    for target_room in (room, f"{room}-fresh"):  # an existing room, and one never created
        for way in WAYS:
            before = await errors_counted(client, 422)
            async with unchanged(client, room):
                body = orjson.dumps({**GOOD, "reply_to": 10**12})
                response = await send(client, target_room, body, way)
                error = assert_error(response, 422, "validation_error")
                assert_json_answer(response)
                assert fields(error) == {"reply_to"}, error
            assert await errors_counted(client, 422) == before + 1, way
            answers.append(same_error(response))
        assert_error(await client.get(f"/api/rooms/{room}-fresh"), 404, "not_found")
    assert answers[0] == answers[1]
    assert [m["id"] for m in await history(client, room)] == [mine.json()["id"]]


async def test_store_errors_without_auto_create(make_server: Callable[..., LiveServer]) -> None:
    """A room that does not exist is 404 when rooms are not created on first use; an
    idempotency conflict is 409: each answered and counted once."""
    live = make_server(CHAT_AUTO_CREATE_ROOMS="false")
    async with httpx.AsyncClient(base_url=live.url, timeout=TIMEOUT_S) as client:
        assert (await client.put("/api/rooms/here", json={})).status_code == 201
        key = {"Idempotency-Key": "k"}
        assert (await send(client, "here", orjson.dumps(GOOD), "length", key)).status_code == 201
        answers: dict[str, list[Any]] = {"missing": [], "conflict": []}
        async with unchanged(client, "here"):
            for way in WAYS:
                before = await errors_counted(client, 404)
                response = await send(client, "nowhere", orjson.dumps(GOOD), way)
                assert_error(response, 404, "not_found")
                assert_json_answer(response)
                assert await errors_counted(client, 404) == before + 1, way
                answers["missing"].append(same_error(response))

                before = await errors_counted(client, 409)
                other = orjson.dumps({**GOOD, "text": "other"})
                response = await send(client, "here", other, way, key)
                assert_error(response, 409, "conflict")
                assert await errors_counted(client, 409) == before + 1, way
                answers["conflict"].append(same_error(response))
        assert_error(await client.get("/api/rooms/nowhere"), 404, "not_found")
        for pair in answers.values():
            assert pair[0] == pair[1]


# -- 6: a client that goes away halfway through its body ------------------------------------


async def settled_task_count(client: httpx.AsyncClient) -> float:
    """The server's task count once two readings 0.1 s apart agree."""
    last = await task_count(client)
    for _ in range(50):
        await asyncio.sleep(0.1)
        now = await task_count(client)
        if now == last:
            return now
        last = now
    raise AssertionError(f"the server's task count never settled (last {last})")


async def test_client_gone_before_its_body_is_complete(
    make_server: Callable[..., LiveServer],
) -> None:
    """Content-Length: 100, a complete JSON object of fewer bytes, then the socket closed:
    no answer before the body is complete, nothing stored, no task left waiting, and the
    next post is served at once. A server of its own, so that no earlier test's connections
    move the task count."""
    live = make_server()
    room = "half"
    partial = orjson.dumps({"author": "mallory", "text": "half"})  # a whole object, < 100
    head = (
        f"POST {path_of(room)} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    ).encode()
    async with httpx.AsyncClient(base_url=live.url, timeout=TIMEOUT_S) as client:
        seeded = await send(client, room, orjson.dumps(GOOD), "length")
        assert seeded.status_code == 201
        tasks_before = await settled_task_count(client)
        async with unchanged(client, room):
            for _ in range(10):
                async with asyncio.timeout(TIMEOUT_S):
                    reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
                    writer.write(head + partial)
                    await writer.drain()
                    # the body is not complete: the server must wait for it, not answer
                    with pytest.raises(TimeoutError):
                        await asyncio.wait_for(reader.read(1), 0.3)
                    writer.close()
                    await writer.wait_closed()
            await asyncio.sleep(0.3)  # let the server see the closes
        # the server is healthy: the next post works at once
        after = await send(client, room, orjson.dumps({"author": "a", "text": "next"}), "length")
        assert after.status_code == 201, after.text
        stored = await history(client, room)
        assert [m["id"] for m in stored] == [seeded.json()["id"], after.json()["id"]]
        assert "mallory" not in str(stored)
        # and no request task is left waiting for a body that will never come
        assert await settled_task_count(client) <= tasks_before + 2, live.log()[-2000:]


# -- 7: an unexpected error in the route -----------------------------------------------


def add_failing_trigger(database: str) -> None:
    """A trigger that fails the INSERT of a message whose text is ``boom``."""
    if database_kind(database) == "postgresql":
        with psycopg.connect(database, autocommit=True) as pg:
            pg.execute(
                "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "RAISE EXCEPTION 'secret internals'; END $$"
            )
            pg.execute(
                "CREATE TRIGGER post_message_boom BEFORE INSERT ON messages FOR EACH ROW "
                "WHEN (NEW.text = 'boom') EXECUTE FUNCTION boom()"
            )
        return
    db = sqlite3.connect(database, timeout=TIMEOUT_S)
    try:
        db.execute(
            "CREATE TRIGGER post_message_boom BEFORE INSERT ON messages "
            "WHEN NEW.text = 'boom' BEGIN SELECT RAISE(ABORT, 'secret internals'); END"
        )
        db.commit()
    finally:
        db.close()


async def test_unexpected_store_failure_is_a_json_500(
    make_server: Callable[..., LiveServer],
) -> None:
    """A trigger added from outside makes one message's INSERT fail with an error the
    service does not expect (an IntegrityError, not a ChatError): the 500 envelope at once,
    counted, nothing stored, and the server goes on."""
    live = make_server()
    async with httpx.AsyncClient(base_url=live.url, timeout=TIMEOUT_S) as client:
        ok = await send(client, "r", orjson.dumps(GOOD), "length")
        assert ok.status_code == 201
        add_failing_trigger(str(live.database))
        boom = orjson.dumps({"author": "a", "text": "boom"})
        answers = []
        async with unchanged(client, "r"):
            for way in WAYS:
                before = await errors_counted(client, 500)
                response = await send(client, "r", boom, way)
                assert_error(response, 500, "internal_error")
                assert_json_answer(response)
                assert "secret" not in response.text
                assert await errors_counted(client, 500) == before + 1, way
                answers.append(response)
        assert same_error(answers[0]) == same_error(answers[1])
        assert header_names(answers[0]) == header_names(answers[1])
        after = await send(client, "r", orjson.dumps(GOOD), "length")
        assert after.status_code == 201
        assert [m["id"] for m in await history(client, "r")] == [
            ok.json()["id"],
            after.json()["id"],
        ]
    assert "secret internals" in live.log()  # logged for people, not sent to the client


async def test_a_stalled_body_is_408_on_both_paths(
    make_server: Callable[..., LiveServer],
) -> None:
    """A client that stops sending half-way through its body gets the 408 envelope
    (``CHAT_BODY_TIMEOUT_SECONDS``, shortened here) with either framing,
    and nothing is stored."""
    live = make_server(CHAT_BODY_TIMEOUT_SECONDS="1")
    head = (
        b"POST /api/rooms/stall/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    )
    for framing, part in (
        (b"Content-Length: 100\r\n\r\n", b'{"author":'),  # Content-Length
        (b"Transfer-Encoding: chunked\r\n\r\n", b'a\r\n{"author":\r\n'),  # chunked
    ):
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", live.port), TIMEOUT_S
        )
        try:
            writer.write(head + framing + part)
            await writer.drain()
            status_line = await asyncio.wait_for(reader.readline(), 10)
            assert status_line.startswith(b"HTTP/1.1 408"), status_line
            head_rest = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = re.search(rb"(?i)content-length: *(\d+)", head_rest)
            assert length is not None, head_rest
            body = orjson.loads(await asyncio.wait_for(reader.readexactly(int(length[1])), 10))
            assert body["error"]["code"] == "request_timeout"
        finally:
            writer.close()
    async with httpx.AsyncClient(base_url=live.url, timeout=TIMEOUT_S) as c:
        history = await c.get("/api/rooms/stall/messages")
        assert history.status_code == 404 or history.json()["messages"] == []
