"""Issue 14, holes 2 and 3, as a client sees them against a live server: read markers past
the newest event, the one rule for user names (bodies, stream parameters, paths), the one
rule for free text, and integers in an activity's ``data``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from chat.errors import InvalidQuery
from chat.filters import parse_filter
from tests.live import SSEStream, open_stream
from tests.test_cli_access import Operator

Json = dict[str, Any]
BIG = 2**64  # one past what orjson reads as an integer: it used to come back as a float


def ok(response: httpx.Response, status: int = 200) -> Json:
    assert response.status_code == status, response.text
    body: Json = response.json()  # the json module: integers stay exact
    return body


def refused(response: httpx.Response, status: int, code: str) -> set[str]:
    """Asserts the error envelope; returns the fields its ``details`` name."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    return {str(d.get("field")) for d in error["details"]}


async def post(c: httpx.AsyncClient, room: str, text: str, author: str = "alice") -> Json:
    body = {"author": author, "text": text}
    return ok(await c.post(f"/api/rooms/{room}/messages", json=body), 201)


async def stream_refusal(c: httpx.AsyncClient, room: str, params: dict[str, str]) -> set[str]:
    """Open a stream that must be refused with 400 invalid_query (one that opens is closed at
    once and fails the test); returns the fields the error's ``details`` name."""
    async with asyncio.timeout(10):
        request = c.build_request("GET", f"/api/rooms/{room}/events", params=params)
        response = await c.send(request, stream=True)
        try:
            assert response.status_code != 200, f"the stream opened with {params!r}"
            await response.aread()
        finally:
            await response.aclose()
    return refused(response, 400, "invalid_query")


async def next_event(stream: SSEStream) -> Json:
    """The next event on the stream, its data parsed by the json module (exact integers)."""
    event = await stream.next(timeout_s=10)
    parsed: Json = json.loads(event.data)
    return parsed


# -- hole 2: read markers ------------------------------------------------------------------


async def test_a_read_marker_past_the_newest_event_does_not_silence_unread(
    client: httpx.AsyncClient, room: str
) -> None:
    user = f"reader-{room}"[:64]
    await post(client, room, "one")
    await post(client, room, "two")
    marked = await client.put(
        f"/api/rooms/{room}/read", json={"user": user, "last_read_id": 10**12}
    )
    assert (marked.status_code, marked.content) == (204, b""), marked.text
    assert ok(await client.get(f"/api/users/{user}/unread"))["rooms"] == {room: 0}
    await post(client, room, "three")
    assert ok(await client.get(f"/api/users/{user}/unread"))["rooms"] == {room: 1}
    # and it still never moves backwards: an older id leaves the (clamped) marker where it is
    marked = await client.put(f"/api/rooms/{room}/read", json={"user": user, "last_read_id": 1})
    assert marked.status_code == 204, marked.text
    assert ok(await client.get(f"/api/users/{user}/unread"))["rooms"] == {room: 1}


# -- hole 3: user names --------------------------------------------------------------------

BAD_NAMES = [
    "al\r\nice",  # control characters (Cc)
    "al\x00ice",
    "ali\u200bce",  # a zero-width space (Cf)
    "ali\u202ece",  # a right-to-left override (Cf)
    "a\u2028b",  # a line separator (Zl)
    "a\u2029b",  # a paragraph separator (Zp)
    "a\u0378b",  # unassigned (Cn)
    "alice,bob",  # a comma defeats the comma-separated filters
    " alice",
    "alice ",
    "@alice",  # mentions are @name
    "a" * 65,
    "",
]


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_every_body_field_naming_a_user_refuses_a_bad_name(
    client: httpx.AsyncClient, room: str, name: str
) -> None:
    target = (await post(client, room, "target"))["id"]
    base = f"/api/rooms/{room}"
    cases: list[tuple[str, str, Json, str]] = [
        ("POST", f"{base}/messages", {"author": name, "text": "hi"}, "author"),
        ("PATCH", f"{base}/messages/{target}", {"author": name, "text": "hi"}, "author"),
        ("DELETE", f"{base}/messages/{target}", {"author": name}, "author"),
        ("POST", f"{base}/messages/{target}/reactions", {"author": name, "emoji": "👍"}, "author"),
        ("POST", f"{base}/activity", {"actor": name, "verb": "v", "object": "o"}, "actor"),
        ("POST", f"{base}/typing", {"user": name}, "user"),
        ("PUT", f"{base}/read", {"user": name, "last_read_id": 1}, "user"),
        ("POST", "/api/session", {"user": name}, "user"),
    ]
    for method, path, body, field in cases:
        response = await client.request(method, path, json=body)
        assert refused(response, 422, "validation_error") == {field}, (method, path)
    batch = {"messages": [{"author": "alice", "text": "ok"}, {"author": name, "text": "x"}]}
    response = await client.post(f"{base}/messages/batch", json=batch)
    assert refused(response, 422, "validation_error") == {"messages.1.author"}
    history = ok(await client.get(f"{base}/messages"))["messages"]
    assert [m["text"] for m in history] == ["target"]  # nothing of the above was stored


@pytest.mark.parametrize("name", ["al\r\nice", "a,b", " bob", "@bob", "a\u200bb", "a" * 65])
async def test_a_bad_user_name_in_a_path_is_400(
    client: httpx.AsyncClient, room: str, name: str
) -> None:
    await post(client, room, "so the room exists")
    user = quote(name, safe="")
    response = await client.get(f"/api/users/{user}/unread")
    assert refused(response, 400, "invalid_query") == {"user"}
    response = await client.put(f"/api/rooms/{room}/members/{user}", json={})
    assert refused(response, 400, "invalid_query") == {"user"}
    response = await client.delete(f"/api/rooms/{room}/members/{user}")
    assert refused(response, 400, "invalid_query") == {"user"}


@pytest.mark.parametrize("param", ["authors", "exclude_authors", "mentions"])
@pytest.mark.parametrize("name", ["al\r\nice", "ali\u200bce", "@alice", "a\u0378b", "a" * 65])
async def test_a_bad_name_in_a_stream_filter_is_400(
    client: httpx.AsyncClient, room: str, param: str, name: str
) -> None:
    assert await stream_refusal(client, room, {param: f"bob,{name}"}) == {param}


@pytest.mark.parametrize("name", ["al\r\nice", "a\u2028b", "ali\u200bce", "@alice", "a,b"])
async def test_a_bad_stream_user_is_400(client: httpx.AsyncClient, room: str, name: str) -> None:
    """Needs chat/api/event_stream.py to call ``chat.filters.user_name`` (issue 14)."""
    assert await stream_refusal(client, room, {"user": name}) == {"user"}


async def test_a_stream_user_is_nfc_in_presence(client: httpx.AsyncClient, room: str) -> None:
    """Needs chat/api/event_stream.py to call ``chat.filters.user_name`` (issue 14)."""
    async with (
        open_stream(client, f"/api/rooms/{room}/events") as watcher,
        open_stream(client, f"/api/rooms/{room}/events", params={"user": "Jose\u0301"}),
    ):
        joined = await next_event(watcher)
        assert (joined["type"], joined["user"]) == ("presence", "Jos\u00e9")
        present = ok(await client.get(f"/api/rooms/{room}/presence"))
        assert present == {"users": ["Jos\u00e9"]}


def test_user_name_for_query_parameters_and_paths() -> None:
    """The function the stream's ``user=`` is checked with: NFC first, then the rule."""
    from chat.filters import user_name  # imported here: before issue 14 it did not exist

    assert user_name("Jose\u0301", "user") == "Jos\u00e9"
    assert user_name("e\u0301" * 64, "user") == "\u00e9" * 64  # 64 once composed
    for bad in BAD_NAMES:
        with pytest.raises(InvalidQuery) as info:
            user_name(bad, "user")
        assert info.value.details[0]["field"] == "user"
    flt = parse_filter({"authors": "Jose\u0301"})
    assert flt is not None and flt.authors == frozenset({"Jos\u00e9"})


async def test_names_are_nfc_and_filters_compare_them_exactly(
    client: httpx.AsyncClient, room: str
) -> None:
    composed, decomposed, cyrillic = "Jos\u00e9", "Jose\u0301", "\u0430lice"
    async with (
        open_stream(client, f"/api/rooms/{room}/events", params={"authors": composed}) as jose,
        open_stream(client, f"/api/rooms/{room}/events", params={"authors": cyrillic}) as lookalike,
        open_stream(client, f"/api/rooms/{room}/events", params={"exclude_authors": "alice"}) as no,
    ):
        first = await post(client, room, "by alice", author="alice")
        second = await post(client, room, "by José", author=decomposed)
        third = await post(client, room, "by the lookalike", author=cyrillic)
        assert second["author"] == composed  # stored, answered and streamed composed
        assert await next_event(jose) == second
        assert await next_event(lookalike) == third  # not alice's message before it
        assert [await next_event(no) for _ in range(2)] == [second, third]  # not alice's
    assert first["author"] == "alice"
    async with open_stream(
        client, f"/api/rooms/{room}/events", params={"authors": decomposed, "last_event_id": "0"}
    ) as replay:
        assert await next_event(replay) == second  # a decomposed filter is normalised too
    history = ok(await client.get(f"/api/rooms/{room}/messages"))["messages"]
    assert [m["author"] for m in history] == ["alice", composed, cyrillic]
    long_name = "e\u0301" * 64  # 128 code points, 64 once composed
    assert (await post(client, room, "long", author=long_name))["author"] == "\u00e9" * 64


async def test_names_that_were_valid_stay_valid(client: httpx.AsyncClient, room: str) -> None:
    for name in ("alice", "Ann Lee", "a.b-c_d", "bob@example.com", "Zoë", "李雷", "x" * 64):
        assert (await post(client, room, "hi", author=name))["author"] == name


# -- hole 3: free text ---------------------------------------------------------------------


async def test_free_text_refuses_control_characters(client: httpx.AsyncClient, room: str) -> None:
    target = (await post(client, room, "target"))["id"]
    base = f"/api/rooms/{room}"
    act = {"actor": "ci", "verb": "built", "object": "main"}
    cases: list[tuple[str, str, Json, str]] = []
    for bad in ("a\x00b", "a\rb", "\x1b[31mred", "a\x7fb", "a\x85b"):
        cases += [
            ("POST", f"{base}/messages", {"author": "a", "text": bad}, "text"),
            ("PATCH", f"{base}/messages/{target}", {"author": "alice", "text": bad}, "text"),
            ("POST", f"{base}/activity", {**act, "summary": bad}, "summary"),
        ]
    for bad in ("a\nb", "a\tb", "a\rb", "a\x00b", "a\u2028b", "a\u2029b", "\x1b[2J"):
        cases += [
            ("PUT", base, {"title": bad}, "title"),
            ("POST", f"{base}/activity", {**act, "verb": bad}, "verb"),
            ("POST", f"{base}/activity", {**act, "object": bad}, "object"),
        ]
    for method, path, body, field in cases:
        response = await client.request(method, path, json=body)
        assert refused(response, 422, "validation_error") == {field}, (method, path, body)
    assert ok(await client.get(base))["title"] == room
    history = ok(await client.get(f"{base}/messages"))["messages"]
    assert [(m["text"], "edited_at" in m) for m in history] == [("target", False)]
    assert ok(await client.get(f"{base}/activity"))["items"] == []


async def test_free_text_is_nfc_and_keeps_newlines_and_tabs_where_multi_line(
    client: httpx.AsyncClient, room: str
) -> None:
    text = "Jose\u0301 said:\n\tline two 👨\u200d👩\u200d👧"
    message = await post(client, room, text)
    assert message["text"] == "Jos\u00e9 said:\n\tline two 👨\u200d👩\u200d👧"
    history = ok(await client.get(f"/api/rooms/{room}/messages"))["messages"]
    assert history[-1]["text"] == message["text"]
    titled = ok(await client.put(f"/api/rooms/{room}", json={"title": "Cafe\u0301 room"}))
    assert titled["title"] == "Caf\u00e9 room"
    body = {"actor": "ci", "verb": "re\u0301sume\u0301", "object": "o", "summary": "a\n\tb"}
    item = ok(await client.post(f"/api/rooms/{room}/activity", json=body), 201)
    assert (item["verb"], item["summary"]) == ("r\u00e9sum\u00e9", "a\n\tb")


async def test_lengths_count_characters_once_composed(client: httpx.AsyncClient, room: str) -> None:
    """The length limits apply to the NFC text: 4,000 composed characters typed decomposed
    (8,000 code points) are a text at the limit, on the single POST and in a batch; one more
    is too long. Titles and activity verbs follow the same rule."""
    at_limit, over = "e\u0301" * 4000, "e\u0301" * 4001
    assert (await post(client, room, at_limit))["text"] == "\u00e9" * 4000
    long_name = "e\u0301" * 64
    batch = {"messages": [{"text": at_limit, "author": "a"}, {"text": "x", "author": long_name}]}
    events = ok(await client.post(f"/api/rooms/{room}/messages/batch", json=batch), 201)["events"]
    assert [(e["text"], e["author"]) for e in events] == [
        ("\u00e9" * 4000, "a"),
        ("x", "\u00e9" * 64),
    ]
    answer = await client.post(f"/api/rooms/{room}/messages", json={"author": "a", "text": over})
    assert refused(answer, 422, "validation_error") == {"text"}
    # the page tells "message is too long" by this type (static/composer.js)
    assert [d["type"] for d in answer.json()["error"]["details"]] == ["string_too_long"]
    batch = {"messages": [{"text": "x", "author": "a"}, {"text": over, "author": "a"}]}
    answer = await client.post(f"/api/rooms/{room}/messages/batch", json=batch)
    assert refused(answer, 422, "validation_error") == {"messages.1.text"}
    titled = ok(await client.put(f"/api/rooms/{room}", json={"title": "e\u0301" * 200}))
    assert titled["title"] == "\u00e9" * 200
    body = {"actor": "ci", "verb": "e\u0301" * 64, "object": "o"}
    item = ok(await client.post(f"/api/rooms/{room}/activity", json=body), 201)
    assert item["verb"] == "\u00e9" * 64


# -- integers in an activity's data --------------------------------------------------------

EXACT = {
    "safe": 2**53 - 1,
    "unsafe": 2**53 + 1,
    "i64_max": 2**63 - 1,
    "i64_min": -(2**63),
    "u64": 2**63 + 5,
    "u64_max": 2**64 - 1,
    "nested": [{"id": 1234567890123456789}, -(2**62)],
    "float": 1e30,
    "small": 1.5,
}


async def test_integers_in_activity_data_stay_exact_everywhere(
    client: httpx.AsyncClient, room: str
) -> None:
    body = {"actor": "ci", "verb": "counted", "object": "ids", "data": EXACT}
    async with open_stream(client, f"/api/rooms/{room}/events") as stream:
        item = ok(await client.post(f"/api/rooms/{room}/activity", json=body), 201)
        assert item["data"] == EXACT
        assert type(item["data"]["u64_max"]) is int and type(item["data"]["float"]) is float
        assert await next_event(stream) == item
    assert ok(await client.get(f"/api/rooms/{room}/activity"))["items"] == [item]
    async with open_stream(
        client, f"/api/rooms/{room}/events", params={"last_event_id": str(item["id"] - 1)}
    ) as replay:
        assert await next_event(replay) == item


ACT = b'{"actor": "ci", "verb": "counted", "object": "ids", "data": '


@pytest.mark.parametrize(
    ("data", "where"),
    [
        (b'{"n": 18446744073709551616}', "n"),  # 2**64
        (b'{"n": -9223372036854775809}', "n"),  # -(2**63) - 1
        (b'{"deep": [1, {"n": 1000000000000000000000000000000}]}', "deep.1.n"),
    ],
)
async def test_numbers_that_cannot_come_back_exactly_are_refused(
    client: httpx.AsyncClient, room: str, data: bytes, where: str
) -> None:
    json_body = {"content-type": "application/json"}
    async with open_stream(client, f"/api/rooms/{room}/events") as stream:
        response = await client.post(
            f"/api/rooms/{room}/activity", content=ACT + data + b"}", headers=json_body
        )
        assert refused(response, 422, "validation_error") == {"data"}
        assert f"(at {where})" in response.json()["error"]["details"][0]["msg"]
        fine = ACT + b'{"n": 1}}'
        batch = b'{"items": [' + fine + b", " + ACT + data + b"}]}"
        response = await client.post(
            f"/api/rooms/{room}/activity/batch", content=batch, headers=json_body
        )
        assert refused(response, 422, "validation_error") == {"items.1.data"}
        response = await client.post(f"/api/rooms/{room}/activity", content=fine, headers=json_body)
        after = ok(response, 201)
        assert await next_event(stream) == after  # nothing refused reached the stream
    assert ok(await client.get(f"/api/rooms/{room}/activity"))["items"] == [after]


@pytest.mark.parametrize(
    "data",
    [b'{"x": 1, "n": NaN}', b'{"n": [Infinity]}', b'{"n": -Infinity}', b'{"n": [1e400]}'],
)
async def test_nan_and_infinity_are_not_json(
    client: httpx.AsyncClient, room: str, data: bytes
) -> None:
    """The json module would read them as floats; they are not JSON (RFC 8259), so the body
    is refused as the plain message POST refuses it: 400 invalid_json, one item or a batch.
    So is a number no float holds (1e400, which the json module read as Infinity: it was
    refused later, 422, and slipped past the limits meanwhile; test_abuse)."""
    json_body = {"content-type": "application/json"}
    async with open_stream(client, f"/api/rooms/{room}/events") as stream:
        response = await client.post(
            f"/api/rooms/{room}/activity", content=ACT + data + b"}", headers=json_body
        )
        assert refused(response, 400, "invalid_json") == set()
        fine = ACT + b'{"n": 1}}'
        batch = b'{"items": [' + fine + b", " + ACT + data + b"}]}"
        response = await client.post(
            f"/api/rooms/{room}/activity/batch", content=batch, headers=json_body
        )
        assert refused(response, 400, "invalid_json") == set()
        response = await client.post(f"/api/rooms/{room}/activity", content=fine, headers=json_body)
        after = ok(response, 201)
        assert await next_event(stream) == after  # nothing refused reached the stream
    assert ok(await client.get(f"/api/rooms/{room}/activity"))["items"] == [after]


def test_account_names_follow_the_same_rule(tmp_path: Path) -> None:
    """``python -m chat users add`` and ``tokens create`` take a user name by the one rule."""
    operator = Operator(tmp_path, tmp_path / "chat.db")
    for name in ("alice,bob", " alice", "alice ", "@alice", "al\u200bice", "a\u0378b"):
        for args in (("users", "add", name, "--password-stdin"), ("tokens", "create", name)):
            bad = operator(*args, stdin="secret\n")
            assert bad.returncode == 2 and "invalid user name" in bad.stderr, (args, bad.stderr)
    operator.add_user("Jose\u0301", "secret")
    listed = json.loads(operator.ok("users", "list", "--json"))
    assert [u["user"] for u in listed] == ["Jos\u00e9"]
