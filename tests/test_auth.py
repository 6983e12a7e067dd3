"""Identity, against a live server: the three ways a credential comes, sign-in sessions,
service tokens, JWTs from another application, CSRF, `required` mode on every route, and
streams that end when their credential is revoked or expires (ACCESS.md)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from chat import credentials
from tests.access_helpers import Seed, bearer, sign_in
from tests.live import LiveServer, SSEStream, open_stream
from tests.scaleout_helpers import eventually

SECRET = "s" * 40
PASSWORD = "correct horse battery"
PUBLIC_ROUTES = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("POST", "/api/session"),
    ("GET", "/api/session/options"),
}


def hs256(claims: dict[str, Any], secret: str = SECRET, **headers: Any) -> str:
    return jwt.encode(claims, secret, algorithm="HS256", headers=headers or None)


def later(seconds: float = 600) -> int:
    return int(time.time() + seconds)


def assert_unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401, (response.request.url, response.text)
    assert response.json()["error"]["code"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.fixture
async def required(make_server: Callable[..., LiveServer]) -> LiveServer:
    live: LiveServer = make_server(CHAT_AUTH="required", CHAT_JWT_SECRET=SECRET)
    async with Seed(live.database) as seed:
        await seed.user("alice", PASSWORD)
        await seed.user("root", PASSWORD, role="admin")
    return live


async def test_every_route_in_required_mode_refuses_a_request_without_a_credential(
    required: LiveServer,
) -> None:
    """Each path and method of the OpenAPI description (the plain routes included) answers
    401 with `WWW-Authenticate: Bearer` without a credential, except the public ones."""
    async with httpx.AsyncClient(base_url=required.url, timeout=10) as client:
        spec = (await client.get("/openapi.json")).json()
        checked: set[tuple[str, str]] = set()
        for path, operations in spec["paths"].items():
            concrete = path.replace("{room}", "general").replace("{message_id}", "1")
            concrete = concrete.replace("{user}", "alice")
            for method in operations:
                verb = method.upper()
                if (verb, path) in PUBLIC_ROUTES:
                    continue
                body = b"{}" if verb in ("POST", "PUT", "PATCH", "DELETE") else None
                response = await client.request(
                    verb, concrete, content=body, headers={"Content-Type": "application/json"}
                )
                assert_unauthorized(response)
                checked.add((verb, path))
        plain = {("POST", "/api/rooms/{room}/messages"), ("GET", "/api/events")}
        assert plain | {("GET", "/api/rooms/{room}/events")} <= checked
        assert len(checked) >= 20  # every route of the service, not a few
        assert (await client.get("/metrics")).status_code == 401
        for verb, path in PUBLIC_ROUTES - {("POST", "/api/session")}:
            assert (await client.request(verb, path)).status_code == 200, path
        bad = await client.post("/api/session", json={"user": "alice", "password": "wrong"})
        assert_unauthorized(bad)


async def test_sign_in_sets_an_httponly_cookie_that_streams_and_writes_use(
    required: LiveServer,
) -> None:
    async with httpx.AsyncClient(base_url=required.url, timeout=10) as client:
        response = await sign_in(client, "alice", PASSWORD)
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["user"] == "alice" and body["role"] == "member"
        assert body["token"].startswith("chat_") and body["expires_at"].endswith("Z")
        assert response.headers["cache-control"] == "no-store"
        cookie = response.headers["set-cookie"]
        assert f"chat_session={body['token']}" in cookie
        for attribute in ("HttpOnly", "SameSite=Lax", "Path=/"):
            assert attribute in cookie
        assert "Secure" not in cookie  # plain HTTP, CHAT_COOKIE_SECURE unset
        assert (await client.get("/api/session")).json() == {
            "user": "alice",
            "role": "member",
            "guest": False,
        }
        own = {"Origin": required.url}
        posted = await client.post("/api/rooms/r/messages", json={"text": "hi"}, headers=own)
        assert posted.status_code == 201 and posted.json()["author"] == "alice"
        async with open_stream(client, "/api/rooms/r/events", params={"last_event_id": "0"}) as s:
            assert (await s.next()).json()["text"] == "hi"
        out = await client.delete("/api/session", headers=own)
        assert out.status_code == 204
        assert "chat_session=" in out.headers["set-cookie"]
        client.cookies.set("chat_session", body["token"])  # the old token, kept by someone
        assert_unauthorized(await client.get("/api/session"))


async def test_a_wrong_password_and_an_unknown_user_get_the_same_answer(
    required: LiveServer,
) -> None:
    async with httpx.AsyncClient(base_url=required.url, timeout=10) as client:
        wrong = await sign_in(client, "alice", "not it")
        unknown = await sign_in(client, "nobody", "not it")
        assert_unauthorized(wrong)
        assert_unauthorized(unknown)
        same = [{**r.json()["error"], "request_id": None} for r in (wrong, unknown)]
        assert same[0] == same[1]  # but for each answer's own request id
        guest = await client.post("/api/session", json={"user": "carl"})
        assert_unauthorized(guest)  # no guests in required mode


@pytest.fixture
async def open_with_alice(make_server: Callable[..., LiveServer]) -> LiveServer:
    """A server in open mode with an account: alice."""
    live: LiveServer = make_server()
    async with Seed(live.database) as seed:
        await seed.user("alice", PASSWORD)
    return live


async def test_open_mode_signs_in_guest_names_that_no_account_holds(
    open_with_alice: LiveServer,
) -> None:
    live = open_with_alice
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        held = await client.post("/api/session", json={"user": "alice"})
        assert held.status_code == 409 and held.json()["error"]["code"] == "conflict"
        guest = await client.post("/api/session", json={"user": "carl"})
        assert guest.status_code == 201 and guest.json()["user"] == "carl"
        assert guest.json()["guest"] is True
        assert (await client.get("/api/session")).json()["guest"] is True
        posted = await client.post(
            "/api/rooms/r/messages", json={"text": "hi"}, headers={"Origin": live.url}
        )
        assert posted.json()["author"] == "carl"
        options = await client.get("/api/session/options")
        assert options.json() == {"auth": "open", "max_rooms_per_stream": 100}


async def test_a_guest_is_not_present_under_an_accounts_name(
    open_with_alice: LiveServer,
) -> None:
    """Presence is written under a name like typing and read markers: a guest's stream may
    not announce an account's name (403, as its typing gets); a free name it may."""
    live = open_with_alice
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:

        async def typing_refused() -> bool:  # the service has learnt of alice's account
            typing = await client.post("/api/rooms/r/typing", json={"user": "alice"})
            return typing.status_code == 403

        await eventually(typing_refused, 10, "alice's name reserved")
        asked = client.build_request("GET", "/api/rooms/r/events", params={"user": "alice"})
        refused = await asyncio.wait_for(client.send(asked, stream=True), 10)
        await refused.aclose()  # a stream, if it wrongly opened one
        assert refused.status_code == 403, refused.headers
        async with open_stream(client, "/api/rooms/r/events", params={"user": "carl"}):
            present = await client.get("/api/rooms/r/presence")
            assert present.json() == {"users": ["carl"]}


async def test_a_present_but_invalid_credential_is_401_never_a_guest(
    make_server: Callable[..., LiveServer],
) -> None:
    """In open mode too: a bad credential does not fall back to guest."""
    live = make_server(CHAT_JWT_SECRET=SECRET)
    async with Seed(live.database) as seed:
        await seed.user("alice")
        revoked = await seed.token("alice")
        await seed.revoke(revoked)
        expired = await seed.token("alice", ttl_s=-1)
    unknown = "chat_" + "A" * 43
    cases: list[dict[str, str]] = [
        bearer(unknown),
        bearer(revoked),
        bearer(expired),
        bearer("not a token"),
        {"Authorization": "Basic YWxpY2U6cHc="},
        {"Authorization": "Bearer"},
        {"Cookie": f"chat_session={unknown}"},
        bearer(hs256({"sub": "alice", "exp": later(-60)})),  # expired
        bearer(hs256({"sub": "alice", "exp": later()}, secret="another secret" * 3)),
        bearer(hs256({"exp": later()})),  # no sub
        bearer(hs256({"sub": "alice"})),  # no exp
        bearer(hs256({"sub": "alice", "exp": later(), "role": "root"})),  # no such role
        bearer(jwt.encode({"sub": "alice", "exp": later()}, None, algorithm="none")),
    ]
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        for headers in cases:
            assert_unauthorized(await client.get("/api/rooms", headers=headers))
            posted = await client.post(
                "/api/rooms/r/messages", json={"author": "alice", "text": "x"}, headers=headers
            )
            assert_unauthorized(posted)
        stream = await client.get("/api/events", params={"rooms": "r", "access_token": unknown})
        assert_unauthorized(stream)
        assert (await client.get("/api/rooms/r/messages")).status_code == 404  # nothing stored


async def test_access_token_in_the_query_counts_on_stream_gets_only(
    required: LiveServer,
) -> None:
    async with Seed(required.database) as seed:
        token = await seed.token("alice")
    async with httpx.AsyncClient(base_url=required.url, timeout=10) as client:
        query = {"access_token": token}
        for path, params in (
            ("/api/events", {"rooms": "r", **query}),
            ("/api/rooms/r/events", query),
            ("/api/users/alice/notifications/events", query),
        ):
            async with open_stream(client, path, params=params):
                pass  # open_stream fails unless the answer is a 200 event stream
        assert_unauthorized(await client.get("/api/rooms", params=query))
        assert_unauthorized(await client.get("/api/users/alice/notifications", params=query))


async def test_cookie_writes_need_our_own_or_a_listed_origin(
    make_server: Callable[..., LiveServer],
) -> None:
    live = make_server(CHAT_CORS_ORIGINS="https://app.example.com")
    async with Seed(live.database) as seed:
        await seed.user("alice", PASSWORD)
        token = await seed.token("alice")
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        assert (await sign_in(client, "alice", PASSWORD)).status_code == 201
        path, body = "/api/rooms/r/messages", {"text": "x"}
        for refused in ({}, {"Origin": "https://evil.example"}, {"Referer": "http://x.test/p"}):
            answer = await client.post(path, json=body, headers=refused)
            assert answer.status_code == 403, refused
            assert answer.json()["error"]["code"] == "forbidden"
        for allowed in (
            {"Origin": live.url},
            {"Referer": live.url + "/"},
            {"Origin": "https://app.example.com"},
        ):
            assert (await client.post(path, json=body, headers=allowed)).status_code == 201
        history = (await client.get("/api/rooms/r/messages")).json()["messages"]
        assert len(history) == 3  # the refused writes stored nothing
        client.cookies.clear()
        assert (await client.post(path, json=body, headers=bearer(token))).status_code == 201


async def test_writes_are_made_under_the_signed_in_name(required: LiveServer) -> None:
    async with Seed(required.database) as seed:
        token = await seed.token("alice")
        bot = await seed.token("ci", role="bot")
    async with httpx.AsyncClient(base_url=required.url, timeout=10) as client:
        me = bearer(token)
        mine = await client.post("/api/rooms/r/messages", json={"text": "a"}, headers=me)
        assert mine.status_code == 201 and mine.json()["author"] == "alice"
        message_id = mine.json()["id"]
        posing = await client.post(
            "/api/rooms/r/messages", json={"author": "bob", "text": "b"}, headers=me
        )
        assert posing.status_code == 403
        react = await client.post(
            f"/api/rooms/r/messages/{message_id}/reactions", json={"emoji": "👍"}, headers=me
        )
        assert react.json()["author"] == "alice"
        typing = await client.post("/api/rooms/r/typing", json={"user": "bob"}, headers=me)
        assert typing.status_code == 403
        read = await client.put("/api/rooms/r/read", json={"last_read_id": 1}, headers=me)
        assert read.status_code == 204
        activity = {"actor": "deploy", "verb": "built", "object": "main"}
        as_member = await client.post("/api/rooms/r/activity", json=activity, headers=me)
        assert as_member.status_code == 403
        as_bot = await client.post("/api/rooms/r/activity", json=activity, headers=bearer(bot))
        assert as_bot.status_code == 201 and as_bot.json()["actor"] == "deploy"
        batch = {"messages": [{"text": "1"}, {"author": "bob", "text": "2"}]}
        refused = await client.post("/api/rooms/r/messages/batch", json=batch, headers=me)
        assert refused.status_code == 403
        history = (await client.get("/api/rooms/r/messages", headers=me)).json()["messages"]
        assert [m["text"] for m in history] == ["a"]  # nothing of the refused writes
        unread = await client.get("/api/users/bob/unread", headers=me)
        assert unread.status_code == 403


async def test_a_batch_item_refused_for_its_author_is_named(
    open_with_alice: LiveServer, required: LiveServer
) -> None:
    """A batch's authorship refusals name the failing item, as its other refusals do
    (``messages[1]: ...``, ``loc`` ``["messages", 1, ...]``), and store nothing."""

    def named(answer: httpx.Response, status: int, kind: str, index: int) -> list[Any]:
        error = answer.json()["error"]
        assert answer.status_code == status, answer.text
        assert error["message"].startswith(f"{kind}[{index}]: "), error
        assert all(d["loc"][:2] == [kind, index] and d["index"] == index for d in error["details"])
        return [d["loc"] for d in error["details"]]

    act = {"verb": "built", "object": "main"}
    async with httpx.AsyncClient(base_url=open_with_alice.url, timeout=10) as guest:

        async def typing_refused() -> bool:  # the service has learnt of alice's account
            typing = await guest.post("/api/rooms/elsewhere/typing", json={"user": "alice"})
            return typing.status_code == 403

        await eventually(typing_refused, 10, "alice's name reserved")
        nameless = [{"author": "carl", "text": "1"}, {"text": "2"}]
        answer = await guest.post("/api/rooms/r/messages/batch", json={"messages": nameless})
        assert named(answer, 422, "messages", 1) == [["messages", 1, "author"]]
        held = [{"author": "carl", "text": "1"}, {"author": "alice", "text": "2"}]
        answer = await guest.post("/api/rooms/r/messages/batch", json={"messages": held})
        named(answer, 403, "messages", 1)
        items = [{"actor": "carl", **act}, {"actor": "dan", **act}, act]
        answer = await guest.post("/api/rooms/r/activity/batch", json={"items": items})
        assert named(answer, 422, "items", 2) == [["items", 2, "actor"]]
        assert (await guest.get("/api/rooms/r/messages")).status_code == 404  # nothing made
    async with Seed(required.database) as seed:
        token = await seed.token("alice")
        bot = await seed.token("ci", role="bot")
    async with httpx.AsyncClient(base_url=required.url, timeout=10) as client:
        items = [act, {"actor": "deploy", **act}]
        path = "/api/rooms/r/activity/batch"
        answer = await client.post(path, json={"items": items}, headers=bearer(token))
        named(answer, 403, "items", 1)
        answer = await client.post(path, json={"items": items}, headers=bearer(bot))
        assert answer.status_code == 201, answer.text
        assert [e["actor"] for e in answer.json()["events"]] == ["ci", "deploy"]


def _keys(kind: str, tmp_path: Path) -> tuple[Any, Path]:
    private: Any = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if kind == "RS256"
        else ec.generate_private_key(ec.SECP256R1())
    )
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path = tmp_path / f"{kind}.pem"
    path.write_bytes(pem)
    return private, path


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
async def test_jwts_signed_with_a_key_pair_and_algorithm_confusion_refused(
    make_server: Callable[..., LiveServer], tmp_path: Path, algorithm: str
) -> None:
    private, public_file = _keys(algorithm, tmp_path)
    live = make_server(
        CHAT_AUTH="required",
        CHAT_JWT_PUBLIC_KEY_FILE=str(public_file),
        CHAT_JWT_AUDIENCE="chat",
    )
    claims = {"sub": "dora", "exp": later(), "aud": "chat", "role": "bot", "rooms": ["builds"]}
    good = jwt.encode(claims, private, algorithm=algorithm)
    public_pem = public_file.read_bytes()
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        session = await client.get("/api/session", headers=bearer(good))
        assert session.json() == {"user": "dora", "role": "bot", "guest": False}
        posted = await client.post(
            "/api/rooms/builds/messages", json={"text": "x"}, headers=bearer(good)
        )
        assert posted.status_code == 201
        elsewhere = await client.post(
            "/api/rooms/general/messages", json={"text": "x"}, headers=bearer(good)
        )
        assert elsewhere.status_code == 403  # the token reaches only its rooms
        listed = await client.get("/api/rooms", headers=bearer(good))
        assert [room["name"] for room in listed.json()["rooms"]] == ["builds"]
        # the public key used as an HMAC secret: PyJWT refuses to even make this one, so it is
        # built by hand, the way an attacker would
        forged = _hmac_token({"sub": "dora", "exp": later(), "aud": "chat"}, public_pem)
        wrong_audience = jwt.encode({**claims, "aud": "other"}, private, algorithm=algorithm)
        no_audience = jwt.encode(
            {k: v for k, v in claims.items() if k != "aud"}, private, algorithm=algorithm
        )
        for bad in (forged, wrong_audience, no_audience, hs256(claims)):
            assert_unauthorized(await client.get("/api/session", headers=bearer(bad)))


def _hmac_token(claims: dict[str, Any], key: bytes) -> str:
    import base64
    import hashlib
    import hmac
    import json

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    signature = b64(hmac.new(key, head + b"." + body, hashlib.sha256).digest())
    return (head + b"." + body + b"." + signature).decode()


async def test_metrics_in_required_mode_are_for_admins_and_bots(required: LiveServer) -> None:
    async with Seed(required.database) as seed:
        member = await seed.token("alice")
        scraper = await seed.token("prometheus", role="bot")
    async with httpx.AsyncClient(base_url=required.url, timeout=10) as client:
        assert (await client.get("/metrics", headers=bearer(member))).status_code == 403
        scraped = await client.get("/metrics", headers=bearer(scraper))
        assert scraped.status_code == 200 and "chat_requests_total" in scraped.text


async def test_metrics_can_be_made_public(make_server: Callable[..., LiveServer]) -> None:
    live = make_server(CHAT_AUTH="required", CHAT_METRICS_PUBLIC="true")
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        assert (await client.get("/metrics")).status_code == 200
        assert_unauthorized(await client.get("/api/rooms"))


async def _ended(stream_events: Any, timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            await stream_events.next(timeout_s)


async def test_a_stream_ends_when_its_token_is_revoked_elsewhere_and_resumes_losing_nothing(
    required: LiveServer,
) -> None:
    """Revoked by another process (here: written to the store directly, as `python -m chat
    tokens revoke` does): the stream ends within a few seconds; a new credential resumes
    from the last id and gets what was posted meanwhile."""
    async with Seed(required.database) as seed:
        token = await seed.token("alice")
        writer = await seed.token("root", role="admin")
        async with httpx.AsyncClient(base_url=required.url, timeout=10) as client:
            first = await client.post(
                "/api/rooms/r/messages", json={"text": "1"}, headers=bearer(writer)
            )
            params = {"access_token": token, "last_event_id": "0"}
            async with open_stream(client, "/api/rooms/r/events", params=params) as stream:
                assert (await stream.next()).id == str(first.json()["id"])
                await seed.revoke(token)
                began = time.monotonic()
                with pytest.raises(EOFError):
                    await _ended(stream, 10)
                assert time.monotonic() - began < 8
            second = await client.post(
                "/api/rooms/r/messages", json={"text": "2"}, headers=bearer(writer)
            )
            assert_unauthorized(await client.get("/api/session", headers=bearer(token)))
            fresh = await seed.token("alice")
            params = {"access_token": fresh, "last_event_id": str(first.json()["id"])}
            async with open_stream(client, "/api/rooms/r/events", params=params) as stream:
                assert (await stream.next()).json()["id"] == second.json()["id"]


async def test_a_stream_ends_when_its_credential_expires(required: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=required.url, timeout=10) as client:
        short = hs256({"sub": "alice", "exp": later(3)})
        params = {"access_token": short}
        async with open_stream(client, "/api/rooms/r/events", params=params) as stream:
            with pytest.raises(EOFError):
                await _ended(stream, 12)
        assert_unauthorized(await client.get("/api/rooms/r/events", params=params))


async def test_a_session_that_ended_clears_its_cookie_and_does_not_block_signing_in_again(
    open_with_alice: LiveServer,
) -> None:
    live = open_with_alice
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        token = (await sign_in(client, "alice", PASSWORD)).json()["token"]
        async with Seed(live.database) as seed:
            await seed.revoke(token)
        ended = await client.get("/api/session")
        assert_unauthorized(ended)  # never a guest: it said who it was
        assert "chat_session=;" in ended.headers["set-cookie"]
        assert "Max-Age=0" in ended.headers["set-cookie"]
        assert "chat_session" not in client.cookies  # the browser forgot it
        assert (await client.get("/api/rooms")).status_code == 200  # a guest again
        client.cookies.set("chat_session", token)
        again = await sign_in(client, "alice", PASSWORD)  # the ended cookie is ignored here
        assert again.status_code == 201
        assert (await client.get("/api/session")).json()["user"] == "alice"


async def test_every_answer_says_nosniff(required: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=required.url, timeout=10) as client:
        for path in ("/healthz", "/api/rooms", "/nowhere", "/"):
            answer = await client.get(path)
            assert answer.headers["x-content-type-options"] == "nosniff", path


async def test_a_new_password_ends_the_sign_ins_made_with_the_old_one(
    required: LiveServer,
) -> None:
    from chat import credentials
    from chat.store import accounts

    async with httpx.AsyncClient(base_url=required.url, timeout=10) as client:
        token = (await sign_in(client, "alice", PASSWORD)).json()["token"]
        async with Seed(required.database) as seed:
            kept = await seed.token("alice")
            op = accounts.set_password("alice", credentials.hash_password("new one!"))
            assert len(await seed.store.write(op)) == 1
        for _ in range(100):  # revocations made elsewhere are read every 2 s
            if (await client.get("/api/session", headers=bearer(token))).status_code == 401:
                break
            await asyncio.sleep(0.1)
        assert_unauthorized(await client.get("/api/session", headers=bearer(token)))
        assert (await client.get("/api/session", headers=bearer(kept))).status_code == 200
        assert_unauthorized(await sign_in(client, "alice", PASSWORD))
        assert (await sign_in(client, "alice", "new one!")).status_code == 201


async def test_a_token_scoped_to_rooms_streams_only_those(required: LiveServer) -> None:
    async with Seed(required.database) as seed:
        scoped = await seed.token("ci", role="bot", rooms=["builds"])
        writer = await seed.token("root", role="admin")
    async with httpx.AsyncClient(base_url=required.url, timeout=10) as client:
        refused = await client.get("/api/rooms/general/events", params={"access_token": scoped})
        assert refused.status_code == 403
        listed = await client.get(
            "/api/events", params={"rooms": "builds,general"}, headers=bearer(scoped)
        )
        assert listed.status_code == 403
        first = await first_post_on_every_room_stream(client, scoped, writer, "general", "builds")
        assert (first["room"], first["text"]) == ("builds", "builds")


async def first_post_on_every_room_stream(
    client: httpx.AsyncClient, reader: str, writer: str, *rooms: str
) -> dict[str, Any]:
    """``reader``'s ``rooms=*`` stream, while ``writer`` posts its room's name into each of
    ``rooms``: the first message the stream gets (its own presence events passed over)."""
    async with open_stream(client, "/api/events?rooms=*", headers=bearer(reader)) as stream:
        for room in rooms:
            posted = await client.post(
                f"/api/rooms/{room}/messages", json={"text": room}, headers=bearer(writer)
            )
            assert posted.status_code == 201
        first: dict[str, Any] = (await stream.next()).json()
        while first["type"] == "presence":  # its own arrival in its rooms
            first = (await stream.next()).json()
    return first


async def test_a_scoped_every_room_stream_leaves_out_a_private_room_it_may_not_read(
    required: LiveServer,
) -> None:
    """A defect a probe found, fixed: a token scoped to `team` and `lobby`, whose user is no
    member of the private `team`, got 404 "no room 'team'" for its whole ``rooms=*`` stream
    (and ``python -m chat tail '*'`` exited 1); the stream now follows `lobby` alone, as
    ``GET /api/rooms`` lists it."""
    async with Seed(required.database) as seed:
        scoped = await seed.token("pat", rooms=["team", "lobby"])
        only_team = await seed.token("pat", rooms=["team"])
        owner = await seed.token("olga")
    async with httpx.AsyncClient(base_url=required.url, timeout=10) as client:
        made = await client.put("/api/rooms/team", json={"private": True}, headers=bearer(owner))
        assert made.status_code == 201
        rooms = await client.get("/api/rooms", headers=bearer(scoped))
        assert [r["name"] for r in rooms.json()["rooms"]] == []  # lobby: not created yet
        first = await first_post_on_every_room_stream(client, scoped, owner, "team", "lobby")
        assert (first["room"], first["text"]) == ("lobby", "lobby")
        # a scope with no room it may read: nothing to follow, 404 as before, on both stores
        nothing = await client.get("/api/events", params={"rooms": "*"}, headers=bearer(only_team))
        assert nothing.status_code == 404, nothing.text
        assert nothing.json()["error"]["code"] == "not_found"
        rooms = await client.get("/api/rooms", headers=bearer(scoped))
        assert [r["name"] for r in rooms.json()["rooms"]] == ["lobby"]


async def test_a_scoped_every_room_stream_follows_an_invitation_into_its_scope(
    required: LiveServer,
) -> None:
    """ACCESS.md: one who is added to a private room receives its events from the
    `member.added` on, on `rooms=*` streams opened earlier too; for a token scoped to rooms
    as well (its stream once took the rooms it could read at its opening, and stayed blind to
    `team` after the invitation). Live and on a resume alike, nothing of `team` from before
    the invitation."""
    async with Seed(required.database) as seed:
        scoped = await seed.token("pat", rooms=["team", "lobby"])
        owner = await seed.token("olga")
    async with httpx.AsyncClient(base_url=required.url, timeout=10) as client:

        async def say(room: str, text: str) -> int:
            posted = await client.post(
                f"/api/rooms/{room}/messages", json={"text": text}, headers=bearer(owner)
            )
            assert posted.status_code == 201, posted.text
            return int(posted.json()["id"])

        made = await client.put("/api/rooms/team", json={"private": True}, headers=bearer(owner))
        assert made.status_code == 201
        start = await say("lobby", "start")
        wanted = ["member.added", "team after", "lobby after"]  # not "team hidden"
        async with open_stream(client, "/api/events?rooms=*", headers=bearer(scoped)) as stream:
            for room, users in (("lobby", ["pat"]), ("team", [])):  # present where it reads
                here = await client.get(f"/api/rooms/{room}/presence", headers=bearer(owner))
                assert here.json()["users"] == users, room
            await say("team", "team hidden")
            invited = await client.put(
                "/api/rooms/team/members/pat", json={"role": "member"}, headers=bearer(owner)
            )
            assert invited.status_code == 201, invited.text
            await say("team", "team after")
            last = await say("lobby", "lobby after")
            live = await events_until(stream, last)
        assert [e.get("text", e["type"]) for e in live] == wanted
        resumed = {"Last-Event-ID": str(start), **bearer(scoped)}
        async with open_stream(client, "/api/events?rooms=*", headers=resumed) as stream:
            replayed = await events_until(stream, last)
        assert [e.get("text", e["type"]) for e in replayed] == wanted


async def events_until(stream: SSEStream, last: int) -> list[dict[str, Any]]:
    """The persisted events of a stream (its presence passed over), up to id ``last``."""
    got: list[dict[str, Any]] = []
    while not got or got[-1]["id"] < last:
        event = (await stream.next()).json()
        if event["type"] != "presence":
            got.append(event)
    return got


async def test_a_guest_session_ends_when_its_name_becomes_an_account_or_auth_is_required(
    make_server: Callable[..., LiveServer],
) -> None:
    live = make_server()
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        first = (await client.post("/api/session", json={"user": "carol"})).json()["token"]
        client.cookies.clear()
        second = (await client.post("/api/session", json={"user": "dave"})).json()["token"]
        client.cookies.clear()
        third = (await client.post("/api/session", json={"user": "erin"})).json()["token"]
        client.cookies.clear()
        async with Seed(live.database) as seed:
            await seed.user("carol", PASSWORD)
            await seed.token("ci", role="bot")
            await seed.token("erin", role="bot")  # a service token takes the name too
        assert_unauthorized(await client.get("/api/session", headers=bearer(first)))
        assert_unauthorized(await client.get("/api/session", headers=bearer(third)))
        client.cookies.clear()
        body = {"author": "ci", "text": "x"}
        for _ in range(100):  # names taken elsewhere are read every 2 s
            if (await client.post("/api/rooms/r/messages", json=body)).status_code == 403:
                break
            await asyncio.sleep(0.1)
        for name in ("carol", "ci"):  # a guest may not write under an account's or token's name
            posing = await client.post("/api/rooms/r/messages", json={"author": name, "text": "x"})
            assert posing.status_code == 403, name
        taken = await client.post("/api/session", json={"user": "ci"})
        assert taken.status_code == 409
    live.kill()
    live.extra_env["CHAT_AUTH"] = "required"
    live.start()
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        assert_unauthorized(await client.get("/api/session", headers=bearer(second)))


async def test_a_jwt_with_an_exp_too_large_for_a_time_is_refused(required: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=required.url, timeout=10) as client:
        for exp in (10**400, 10**20):
            token = hs256({"sub": "eve", "exp": exp})
            answer = await client.get("/api/session", headers=bearer(token))
            assert answer.status_code in (200, 401), answer.text  # never a 500
        assert_unauthorized(
            await client.get("/api/session", headers=bearer(hs256({"sub": "eve", "exp": 10**400})))
        )
        bad_name = hs256({"sub": "ev\ne", "exp": later()})
        assert_unauthorized(await client.get("/api/session", headers=bearer(bad_name)))


@pytest.mark.parametrize(
    "sub",
    ["alice ", " alice", "a,b", "@bob", "ev\ne", "zero\u200bwidth", "x" * 65, "", "   "],
)
def test_a_jwt_sub_follows_the_rule_of_user_names(sub: str) -> None:
    """The host application's ``sub`` is a user name like an ``author`` (ACCESS.md: an
    identity is a user name, same rules): no look-alike with a space at an end, no comma
    (which splits the stream filters), no leading ``@``; and NFC, so that the two spellings
    of é are one user."""
    verifier = credentials.JWTVerifier.configure(SECRET, None, None)
    assert verifier is not None
    with pytest.raises(credentials.BadCredential):
        verifier.verify(hs256({"sub": sub, "exp": later()}))
    assert verifier.verify(hs256({"sub": "e\u0301mile", "exp": later()})).user == "\u00e9mile"


@pytest.mark.parametrize("rooms", [["*"], ["a b", "general"], ["GENERAL"], [""], ["x" * 65], [1]])
def test_a_jwt_rooms_claim_names_rooms_by_their_rule(rooms: list[object]) -> None:
    """A defect a probe found, fixed: a JWT's `rooms` was taken as any strings, and on
    ``rooms=*`` its stream joined rooms named ``*``, ``a b`` or ``GENERAL``, announcing its
    presence there to every ``rooms=*`` subscriber. Names follow the room rule, as for
    ``tokens create --rooms``."""
    verifier = credentials.JWTVerifier.configure(SECRET, None, None)
    assert verifier is not None
    with pytest.raises(credentials.BadCredential):
        verifier.verify(hs256({"sub": "alice", "exp": later(), "rooms": rooms}))
    scoped = verifier.verify(hs256({"sub": "alice", "exp": later(), "rooms": ["general", "a-1"]}))
    assert scoped.rooms == frozenset({"general", "a-1"})


@pytest.mark.parametrize("exp", ["9999999999"])
def test_a_jwt_exp_is_a_number(exp: object) -> None:
    """A doubt a probe raised, settled: PyJWT took ``"exp": "9999999999"`` (a string) as a
    time; RFC 7519 makes ``exp`` a NumericDate, a number."""
    verifier = credentials.JWTVerifier.configure(SECRET, None, None)
    assert verifier is not None
    with pytest.raises(credentials.BadCredential):
        verifier.verify(hs256({"sub": "alice", "exp": exp}))
    assert verifier.verify(hs256({"sub": "alice", "exp": later()})).user == "alice"
