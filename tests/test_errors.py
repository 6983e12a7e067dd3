"""Bad input against a live server: every error row of API.md this version has, each as the
JSON envelope with the right status and code, and none of them changes the store."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest

from chat.app import create_app
from chat.config import Settings
from tests.live import LiveServer, open_stream

GOOD = {"author": "alice", "text": "hello"}
OWN_ID_AS_TEXT = "<id of the seeded room's first message, as a string>"


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0].strip() == "application/json"
    body = orjson.loads(response.content)
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"code", "message", "details", "request_id"}, error
    assert error["request_id"] == response.headers["x-request-id"], error  # the log's key
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["details"], list), error
    return error


def fields(error: dict[str, Any]) -> set[str]:
    """The fields that ``details`` names."""
    return {".".join(str(p) for p in d["loc"]) for d in error["details"] if "loc" in d}


async def snapshot(client: httpx.AsyncClient, room: str) -> tuple[Any, ...]:
    history = await client.get(f"/api/rooms/{room}/messages", params={"limit": 200})
    one = await client.get(f"/api/rooms/{room}")
    rooms = await client.get("/api/rooms")
    assert history.status_code == one.status_code == rooms.status_code == 200
    return history.json(), one.json(), [r["name"] for r in rooms.json()["rooms"]]


async def request(client: httpx.AsyncClient, method: str, path: str, **kw: Any) -> httpx.Response:
    """A request that may wrongly open a stream: the body is read only if it is not one."""
    async with asyncio.timeout(10):
        response = await client.send(client.build_request(method, path, **kw), stream=True)
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            await response.aclose()
        else:
            await response.aread()
        return response


@contextlib.asynccontextmanager
async def unchanged(client: httpx.AsyncClient, room: str) -> AsyncIterator[None]:
    """The room's history, the room itself and the list of rooms are the same afterwards."""
    before = await snapshot(client, room)
    yield
    assert await snapshot(client, room) == before


@pytest.fixture
async def seeded(client: httpx.AsyncClient, room: str) -> str:
    for i in range(2):
        response = await client.post(f"/api/rooms/{room}/messages", json={**GOOD, "text": str(i)})
        assert response.status_code == 201
    return room


async def test_unknown_path_or_room_is_404(client: httpx.AsyncClient, seeded: str) -> None:
    async with unchanged(client, seeded):
        for path in ("/nope", "/api/nope", "/api/rooms/x/messages/1/nope", "/api/rooms/"):
            assert_error(await client.get(path), 404, "not_found")
        for path in (f"/api/rooms/{seeded}-no", f"/api/rooms/{seeded}-no/messages"):
            assert_error(await client.get(path), 404, "not_found")


async def test_wrong_method_is_405(client: httpx.AsyncClient, seeded: str) -> None:
    async with unchanged(client, seeded):
        response = await client.delete("/api/rooms")
        assert_error(response, 405, "method_not_allowed")
        assert "GET" in response.headers["allow"]
        assert_error(await client.delete(f"/api/rooms/{seeded}"), 405, "method_not_allowed")
        response = await client.patch(f"/api/rooms/{seeded}", json={"title": "t"})
        assert_error(response, 405, "method_not_allowed")


async def test_routing_errors_win_over_body_checks(client: httpx.AsyncClient, seeded: str) -> None:
    async with unchanged(client, seeded):
        assert_error(await client.post("/api/nope"), 404, "not_found")
        assert_error(await client.put("/api/rooms"), 405, "method_not_allowed")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [(b, 400, "invalid_json") for b in (b"{", b'{"text": ', b"", b"nope", b'{"a": 1} x')]
    + [(b, 422, "validation_error") for b in (b"[]", b'[{"author": "a"}]', b'"hi"', b"1", b"null")],
)
async def test_body_that_is_not_a_json_object(
    client: httpx.AsyncClient, seeded: str, body: bytes, status: int, code: str
) -> None:
    headers = {"content-type": "application/json"}
    async with unchanged(client, seeded):
        for method, path in [
            ("POST", f"/api/rooms/{seeded}/messages"),
            ("PUT", f"/api/rooms/{seeded}"),
        ]:
            response = await client.request(method, path, content=body, headers=headers)
            error = assert_error(response, status, code)
            assert error["details"] or status == 400  # a 422 says what is wrong


async def test_body_not_utf8_is_400(client: httpx.AsyncClient, seeded: str) -> None:
    headers = {"content-type": "application/json"}
    body = b'{"author": "\xff\xfe", "text": "x"}'
    async with unchanged(client, seeded):
        response = await client.post(f"/api/rooms/{seeded}/messages", content=body, headers=headers)
        assert_error(response, 400, "invalid_json")


@pytest.mark.parametrize(
    ("body", "bad"),
    [
        ({"author": 1, "text": ["x"]}, {"author", "text"}),
        # `author` may be left out (a signed-in user is filled in); a guest without one gets
        # its own 422 once the body is otherwise valid
        ({}, {"text"}),
        ({"author": "a"}, {"text"}),
        ({"text": "x"}, {"author"}),
        ({"author": None, "text": None}, {"text"}),
        ({"author": "a", "text": "x" * 4001}, {"text"}),
        ({"author": "a" * 65, "text": "x"}, {"author"}),
        ({"author": "a", "text": ""}, {"text"}),
        ({"author": "a", "text": " \n\t "}, {"text"}),
        ({"author": "  ", "text": "x"}, {"author"}),
        ({"author": "", "text": "   "}, {"author", "text"}),
        ({**GOOD, "reply_to": OWN_ID_AS_TEXT}, {"reply_to"}),  # an int, not its text
        ({**GOOD, "reply_to": True}, {"reply_to"}),
        ({**GOOD, "reply_to": 1.5}, {"reply_to"}),
        ({**GOOD, "reply_to": 0}, {"reply_to"}),
    ],
)
async def test_message_schema_violations_are_422(
    client: httpx.AsyncClient, seeded: str, body: dict[str, Any], bad: set[str]
) -> None:
    if body.get("reply_to") == OWN_ID_AS_TEXT:  # the id of a message that does exist here
        history = (await client.get(f"/api/rooms/{seeded}/messages")).json()["messages"]
        body = {**body, "reply_to": str(history[0]["id"])}
    async with unchanged(client, seeded):
        response = await client.post(f"/api/rooms/{seeded}/messages", json=body)
        assert fields(assert_error(response, 422, "validation_error")) == bad


@pytest.mark.parametrize("body", [{"title": 5}, {"title": "t" * 201}, {"title": ["t"]}])
async def test_room_schema_violations_are_422(
    client: httpx.AsyncClient, seeded: str, body: dict[str, Any]
) -> None:
    async with unchanged(client, seeded):
        response = await client.put(f"/api/rooms/{seeded}", json=body)
        assert fields(assert_error(response, 422, "validation_error")) == {"title"}
        response = await client.put(f"/api/rooms/{seeded}-new", json=body)
        assert fields(assert_error(response, 422, "validation_error")) == {"title"}


@pytest.mark.parametrize(
    "name",
    ["Upper", ".hidden", "-dash", "_under", "a" * 65, "café", "a b", "abc\n", "a:b", "\uff41"],
)
async def test_bad_room_names_are_400(client: httpx.AsyncClient, seeded: str, name: str) -> None:
    base = f"/api/rooms/{quote(name, safe='')}"
    async with unchanged(client, seeded):
        for method, path, body in [
            ("PUT", base, {"title": "t"}),
            ("GET", base, None),
            ("POST", f"{base}/messages", GOOD),
            ("GET", f"{base}/messages", None),
            ("GET", f"{base}/events", None),
        ]:
            response = await request(client, method, path, json=body)
            assert_error(response, 400, "invalid_room")
        if name == name.strip():  # the rooms list tolerates blanks around names
            response = await request(client, "GET", "/api/events", params={"rooms": f"a,{name}"})
            assert_error(response, 400, "invalid_room")


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=500", "limit=abc", "before=abc", "after=-1", "after=1.5"]
)
async def test_bad_history_query_is_400(client: httpx.AsyncClient, seeded: str, query: str) -> None:
    async with unchanged(client, seeded):
        response = await client.get(f"/api/rooms/{seeded}/messages?{query}")
        assert fields(assert_error(response, 400, "invalid_query")) == {query.split("=")[0]}


async def test_bad_stream_query_is_400(client: httpx.AsyncClient, seeded: str) -> None:
    async with unchanged(client, seeded):
        for path, params in [
            (f"/api/rooms/{seeded}/events", {"types": "unknown"}),
            (f"/api/rooms/{seeded}/events", {"authors": "x" * 65}),
            ("/api/events", {"types": "message,unknown", "rooms": seeded}),
            ("/api/events", {}),
            ("/api/events", {"rooms": ""}),
            ("/api/events", {"rooms": " , "}),
        ]:
            assert_error(await request(client, "GET", path, params=params), 400, "invalid_query")


@pytest.mark.parametrize(
    "request_kwargs",
    [
        {"content": orjson.dumps(GOOD), "headers": {"content-type": "text/plain"}},
        {"data": GOOD},  # application/x-www-form-urlencoded
        {"content": orjson.dumps(GOOD)},  # no content type at all
    ],
)
async def test_wrong_content_type_is_415(
    client: httpx.AsyncClient, seeded: str, request_kwargs: dict[str, Any]
) -> None:
    async with unchanged(client, seeded):
        response = await client.post(f"/api/rooms/{seeded}/messages", **request_kwargs)
        assert_error(response, 415, "unsupported_media_type")
        response = await client.put(f"/api/rooms/{seeded}-new", **request_kwargs)
        assert_error(response, 415, "unsupported_media_type")


async def test_oversized_body_is_413_at_the_default_limit(
    client: httpx.AsyncClient, seeded: str
) -> None:
    async with unchanged(client, seeded):
        body = {**GOOD, "padding": "x" * 70_000}  # an ignored field: accepted if it were small
        response = await client.post(f"/api/rooms/{seeded}/messages", json=body)
        assert_error(response, 413, "payload_too_large")


async def chunks(body: bytes, size: int, pause_s: float = 0.0) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]
        if pause_s:
            await asyncio.sleep(pause_s)


async def test_oversized_body_is_413(make_server: Callable[..., LiveServer]) -> None:
    """With Content-Length and chunked (no Content-Length), each sent in one piece; a body
    that trickles in is test_oversized_streamed_body_gets_an_answer."""
    live = make_server(CHAT_MAX_BODY_BYTES="1000")
    big = orjson.dumps({**GOOD, "padding": "x" * 1500})  # accepted if the limit were larger
    small = orjson.dumps({**GOOD, "padding": "x" * 500})
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:

        async def send(content: bytes | AsyncIterator[bytes]) -> httpx.Response:
            headers = {"content-type": "application/json"}
            async with asyncio.timeout(10):  # the server must answer, not hang
                return await client.post("/api/rooms/r/messages", content=content, headers=headers)

        assert (await client.put("/api/rooms/r", json={})).status_code == 201
        async with unchanged(client, "r"):
            response = await send(big)
            assert response.request.headers["content-length"] == str(len(big))
            assert_error(response, 413, "payload_too_large")
            response = await send(chunks(big, 10_000))
            assert "content-length" not in response.request.headers
            assert response.request.headers["transfer-encoding"] == "chunked"
            assert_error(response, 413, "payload_too_large")
        # under the limit, both ways are accepted
        assert (await send(small)).status_code == 201
        assert (await send(chunks(small, 200))).status_code == 201


async def test_oversized_streamed_body_gets_an_answer(
    make_server: Callable[..., LiveServer],
) -> None:
    """A client that uploads at its own pace (chunks with pauses) must read the 413, not a
    connection reset."""
    live = make_server(CHAT_MAX_BODY_BYTES="1000")
    body = orjson.dumps({**GOOD, "padding": "x" * 3000})
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        response = await asyncio.wait_for(
            client.post(
                "/api/rooms/r/messages",
                content=chunks(body, 200, pause_s=0.02),
                headers={"content-type": "application/json"},
            ),
            10,
        )
        assert_error(response, 413, "payload_too_large")


async def test_stream_over_the_limit_is_told_to_come_back(
    make_server: Callable[..., LiveServer],
) -> None:
    """Over CHAT_MAX_STREAMS a stream gets 200 text/event-stream with a jittered `retry:` of
    5 to 10 s, and ends (API.md, Streams): a 503 would end a standard EventSource for good."""
    live = make_server(CHAT_MAX_STREAMS="1")
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        async with open_stream(client, "/api/rooms/r/events"):
            retries = set()
            for path, params in [("/api/rooms/r/events", {}), ("/api/events", {"rooms": "r"})]:
                for _ in range(3):
                    response = await asyncio.wait_for(client.get(path, params=params), 10)
                    assert response.status_code == 200
                    assert response.headers["content-type"].startswith("text/event-stream")
                    first, comment = response.text.split("\n")[:2]
                    assert first.startswith("retry: ") and 5000 <= int(first[7:]) <= 10000
                    assert comment == ": too many open streams on this server"
                    assert "data:" not in response.text
                    retries.add(first)
            assert len(retries) > 1, retries  # jittered: six answers, not all the same
            # REST still works while streams are at the limit
            response = await client.post("/api/rooms/r/messages", json=GOOD)
            assert response.status_code == 201
        # once the stream is gone, a new one is accepted (the server notices the close soon)
        for _ in range(100):
            if (await client.get("/api/rooms/r")).json()["subscribers"] == 0:
                break
            await asyncio.sleep(0.05)
        async with open_stream(client, "/api/rooms/r/events"):
            pass


async def test_no_html_on_errors(client: httpx.AsyncClient) -> None:
    headers = {"accept": "text/html,application/xhtml+xml,*/*;q=0.8"}  # as a browser asks
    for route, status in [
        ("GET /nope", 404),
        ("GET /static/nope.html", 404),
        ("GET /docs/assets/nope.js", 404),
        ("DELETE /api/rooms", 405),
        ("GET /api/rooms/Bad", 400),
        ("GET /api/rooms/nope-nope-nope/messages", 404),
    ]:
        method, path = route.split()
        response = await client.request(method, path, headers=headers)
        assert response.status_code == status, route
        assert "html" not in response.headers["content-type"], route
        lowered = response.content.lower()
        assert b"<html" not in lowered and b"<!doctype" not in lowered, route
        assert orjson.loads(response.content)["error"]["code"], route


async def test_unexpected_exception_is_a_json_500(tmp_path: Path) -> None:
    app = create_app(Settings(database=str(tmp_path / "x.db")))

    @app.get("/boom")
    async def boom() -> str:
        raise RuntimeError("secret internals")

    async with asyncio.timeout(10), app.test_app() as test_app:
        response = await test_app.test_client().get("/boom")
        assert response.status_code == 500
        assert response.mimetype == "application/json"
        body = orjson.loads(await response.get_data())
        assert set(body) == {"error"}
        assert set(body["error"]) == {"code", "message", "details", "request_id"}
        assert body["error"]["code"] == "internal_error"
        assert "secret internals" not in body["error"]["message"]


HUGE = 2**63  # one past SQLite's largest integer
EDGE_CASES = [
    # (method, path template, body (raw bytes or JSON), status, code)
    ("POST", "/api/rooms/{r}/messages", {**GOOD, "reply_to": HUGE}, 422, "validation_error"),
    ("PUT", "/api/rooms/{r}/read", {"user": "u", "last_read_id": HUGE}, 422, "validation_error"),
    ("GET", f"/api/rooms/{{r}}/messages?before={HUGE}", None, 400, "invalid_query"),
    ("GET", f"/api/rooms/{{r}}/messages?after={HUGE}", None, 400, "invalid_query"),
    ("GET", "/api/rooms/{r}/messages?q=%00", None, 400, "invalid_query"),
    ("PATCH", "/api/rooms/{r}/messages/99999999999999999999999", GOOD, 404, "not_found"),
    ("POST", "/api/rooms/{r}/messages", b'{"author": "a", "text": NaN}', 400, "invalid_json"),
    ("POST", "/api/rooms/{r}/messages", b"[" * 5000 + b"]" * 5000, 400, "invalid_json"),
    (
        "POST",
        "/api/rooms/{r}/activity",
        b'{"actor":"a","verb":"v","object":"o","data":' + b'{"x":' * 300 + b"1" + b"}" * 301,
        422,
        "validation_error",
    ),
    ("GET", "/api/rooms/{r}/events?user=" + "u" * 65, None, 400, "invalid_query"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "code"), EDGE_CASES)
async def test_edge_input_is_a_4xx_never_a_500(
    client: httpx.AsyncClient,
    seeded: str,
    method: str,
    path: str,
    body: object,
    status: int,
    code: str,
) -> None:
    """Numbers past SQLite's range, NaN, deep nesting, control characters in a search: each
    gets its 4xx from the contract and the store keeps what it had."""
    kwargs: dict[str, Any] = {}
    if isinstance(body, bytes):
        kwargs = {"content": body, "headers": {"content-type": "application/json"}}
    elif body is not None:
        kwargs = {"json": body}
    async with unchanged(client, seeded):
        response = await request(client, method, path.format(r=seeded), **kwargs)
        assert_error(response, status, code)


MESSAGE_ID_ROUTES = [
    # (method, path after the message id, body): every route with a message id in its path
    ("PATCH", "", GOOD),
    ("DELETE", "", {"author": "alice"}),
    ("POST", "/reactions", {"author": "alice", "emoji": "👍"}),
    ("DELETE", "/reactions", {"author": "alice", "emoji": "👍"}),
]


@pytest.mark.parametrize("message_id", ["0", "00", str(HUGE), "9" * 20])
@pytest.mark.parametrize(("method", "tail", "body"), MESSAGE_ID_ROUTES)
async def test_a_message_id_out_of_range_is_404_on_every_route(
    client: httpx.AsyncClient, seeded: str, method: str, tail: str, body: object, message_id: str
) -> None:
    """0 and ids past SQLite's range name no message: 404 on every route of a message, as
    an unknown id in range is (werkzeug answered DELETE /messages/0 with 405, PATCH with 404)."""
    path = f"/api/rooms/{seeded}/messages/{message_id}{tail}"
    async with unchanged(client, seeded):
        error = assert_error(await request(client, method, path, json=body), 404, "not_found")
        assert f"no message {int(message_id)}" in error["message"]


NOT_JSON = {
    "nested 5,000 deep": b"[" * 5000 + b"]" * 5000,  # the json module's RecursionError: a 500
    "NaN": b'{"text": NaN}',  # the json module reads it as a float
    "a lone surrogate": b'{"text": "\\ud800"}',  # half a UTF-16 pair: no character
}


@pytest.mark.parametrize("body", list(NOT_JSON.values()), ids=list(NOT_JSON))
async def test_every_route_with_a_json_body_refuses_what_is_not_json(
    client: httpx.AsyncClient, seeded: str, body: bytes
) -> None:
    """Each route that /openapi.json says takes a JSON body (Quart's routes and the plain
    message POST alike) answers 400 invalid_json to a body that is not strict JSON."""
    spec = (await client.get("/openapi.json")).json()
    message_id = (await client.get(f"/api/rooms/{seeded}/messages")).json()["messages"][0]["id"]
    names = {"room": seeded, "user": "alice", "message_id": message_id}
    tried = []
    async with unchanged(client, seeded):
        for template, operations in spec["paths"].items():
            for method, operation in operations.items():
                if "requestBody" not in operation:
                    continue
                path = template.format(**names)
                headers = {"content-type": "application/json"}
                response = await request(
                    client, method.upper(), path, content=body, headers=headers
                )
                assert_error(response, 400, "invalid_json")
                tried.append(f"{method.upper()} {template}")
    assert len(tried) >= 14, tried  # 14 routes today: messages, rooms, members, activity, ...


async def test_json_answers_name_their_charset(client: httpx.AsyncClient, seeded: str) -> None:
    """API.md: JSON in and out as ``application/json; charset=utf-8``, successes included; a
    204 has no body and names no type (it said text/html)."""
    for path in ("/healthz", "/api/rooms", f"/api/rooms/{seeded}", f"/api/rooms/{seeded}/messages"):
        response = await client.get(path)
        assert response.status_code == 200, (path, response.text)
        assert response.headers["content-type"] == "application/json; charset=utf-8", path
    marked = await client.put(f"/api/rooms/{seeded}/read", json={"user": "u", "last_read_id": 1})
    assert marked.status_code == 204 and "content-type" not in marked.headers  # nothing to type


async def test_an_escaped_surrogate_pair_is_one_character(client: httpx.AsyncClient) -> None:
    """The other side of refusing half a pair: a whole escaped pair is the character it spells."""
    body = b'{"title": "\\ud83d\\ude00 party"}'
    headers = {"content-type": "application/json"}
    response = await client.put("/api/rooms/escaped-pair", content=body, headers=headers)
    assert response.status_code == 201, response.text
    assert response.json()["title"] == "\U0001f600 party"
