"""Fuzzing the access contract (ACCESS.md) against a live server in ``CHAT_AUTH=required`` mode.

One server (``tests.live.LiveServer``, as the ``make_server`` fixture starts it, but shared by
this module's tests so that it starts once) holds: an admin; alice, who owns the private room
``secret`` with a message in it; bob, who is not a member; the public room ``lobby``; and
credentials that must not work (a revoked token, an expired one, JWTs that are forged, expired,
incomplete or signed with another key or algorithm, garbage). Hypothesis draws a route from the
server's own ``/openapi.json`` (every path and method, plus the routes it hides), fills its
path parameters, query, headers and body, and a credential, and checks:

1. without a valid credential, every route but the public ones is ``401 unauthorized`` with
   ``WWW-Authenticate: Bearer``;
2. to bob (each of his valid credentials, and two scoped tokens), everything under
   ``/api/rooms/secret`` is a ``404`` (a token scoped to other rooms: ``403``, whatever the
   room, so the answer says nothing of it), and no answer
   or stream ever carries the room or its text;
3. nothing fuzzed is ever a 500, every error is the JSON envelope, and the server logs no
   traceback.

Hypothesis drives a sync ``httpx.Client`` (the server is a separate process shared across
examples); the stream property uses ``httpx.AsyncClient``. The example database is off:
nothing is written outside the temporary directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import httpx
import jwt
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from chat.config import Settings
from chat.credentials import hash_password, new_token, new_token_id, token_hash
from chat.events import now_rfc3339
from chat.store import Store, accounts
from tests.live import ROOT, LiveServer, SSEEvent, open_stream

SECRET = "secret"
PUBLIC = "lobby"
SECRET_TEXT = f"vault-code-{secrets.token_hex(12)}"
PASSWORD = secrets.token_urlsafe(16)
JWT_SECRET = secrets.token_urlsafe(48)  # 64 bytes: long enough for HS512 too
OTHER_SECRET = secrets.token_urlsafe(48)
STATIC_FILES = sorted(p.name for p in (ROOT / "static").iterdir())
# The stream GETs, where `access_token` counts (ACCESS.md), the notification feed's included.
STREAM_TEMPLATES = frozenset(
    {"/api/events", "/api/rooms/{room}/events", "/api/users/{user}/notifications/events"}
)
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
# ACCESS.md: what needs no identity in `required` mode.
PUBLIC_GETS = frozenset(
    {"/healthz", "/readyz", "/", "/docs", "/openapi.json", "/api/session/options"}
)
PUBLIC_PREFIXES = ("/static/", "/docs/assets/")
# Routes /openapi.json does not describe (hidden on purpose), and paths no route takes.
HIDDEN_ROUTES = (
    ("GET", "/"),
    ("GET", "/docs"),
    ("GET", "/openapi.json"),
    ("GET", "/metrics"),
    ("GET", "/static/{file}"),
    ("GET", "/docs/assets/{file}"),
    ("GET", "/api/nothing-here"),
    ("GET", "/api/rooms/{room}/nothing-here"),
    ("POST", "/api/rooms/{room}/messages/{message_id}/nothing-here"),
)
SSE_READ_S = 0.2  # how long a stream that opened is read before it is closed
HEARTBEAT_S = "0.1"  # pings keep each blocking read of a stream short
LOG_LIMIT = 4000


def now_plus(seconds: float) -> int:
    return int(time.time() + seconds)


# -- the world ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Credential:
    """One way of presenting a credential: ``kind`` is ``none``, ``authorization`` (the raw
    header value), ``cookie`` (the raw Cookie header) or ``query`` (``access_token``).
    ``valid``: the value is a credential the server must accept (wherever it is looked at)."""

    label: str
    kind: str
    value: str = ""
    valid: bool = False


@dataclass
class World:
    url: str
    log_path: Path
    tokens: dict[str, str]
    jwts: dict[str, str]
    routes: list[tuple[str, str]]
    secret_message_id: int
    public_message_id: int
    message_ids: list[int] = field(default_factory=list)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


async def seed(database: Path) -> dict[str, str]:
    """Accounts and tokens, written before the server starts."""
    store = Store(Settings(database=str(database)), lambda events: None)
    await store.open()
    tokens: dict[str, str] = {}

    async def issue(
        label: str,
        user: str,
        role: Any = "member",
        rooms: list[str] | None = None,
        expires_at: str | None = None,
    ) -> bytes:
        token, digest = new_token()
        await store.write(
            accounts.create_token(new_token_id(), digest, user, role, "api", rooms, expires_at)
        )
        tokens[label] = token
        return digest

    try:
        for name, role in (("admin", "admin"), ("alice", "member"), ("bob", "member")):
            await store.write(accounts.add_user(name, hash_password(PASSWORD), role))
        await issue("admin", "admin", "admin")
        await issue("alice", "alice")
        await issue("bob", "bob")
        await issue("bob_scoped", "bob", rooms=[PUBLIC])
        await issue("alice_scoped", "alice", rooms=[PUBLIC])
        revoked = await issue("revoked", "bob")
        await store.write(accounts.revoke_token(token_hash=revoked))
        await issue("revoked_alice", "alice")
        await store.write(accounts.revoke_token(token_hash=token_hash(tokens["revoked_alice"])))
        past = now_rfc3339(datetime.now(UTC) - timedelta(hours=1))
        await issue("expired", "bob", expires_at=past)
        await issue("expired_alice", "alice", expires_at=past)
    finally:
        await store.close()
    return tokens


def make_jwts() -> dict[str, str]:
    def hs(claims: dict[str, Any], key: str = JWT_SECRET, alg: str = "HS256") -> str:
        return jwt.encode(claims, key, algorithm=alg)

    live = now_plus(3600)
    good = hs({"sub": "bob", "exp": live})
    other = hs({"sub": "alice", "exp": live})
    head, payload, _ = good.split(".")
    forged_alice = hs({"sub": "alice", "exp": live}, OTHER_SECRET).split(".")[1]
    return {
        "bob": good,
        # invalid, one way each
        "bad_signature": f"{head}.{payload}.{other.split('.')[2]}",
        "swapped_payload": f"{head}.{forged_alice}.{good.split('.')[2]}",
        "alg_none": jwt.encode({"sub": "alice", "exp": live}, None, algorithm="none"),
        "alg_none_admin": jwt.encode(
            {"sub": "admin", "exp": live, "role": "admin"}, None, algorithm="none"
        ),
        "expired": hs({"sub": "alice", "exp": now_plus(-3600)}),
        "missing_exp": hs({"sub": "alice"}),
        "missing_sub": hs({"exp": live}),
        "empty_sub": hs({"sub": "", "exp": live}),
        "long_sub": hs({"sub": "a" * 65, "exp": live}),
        "other_secret": hs({"sub": "alice", "exp": live}, OTHER_SECRET),
        "hs512_right_secret": hs({"sub": "alice", "exp": live}, JWT_SECRET, "HS512"),
        "bad_role": hs({"sub": "alice", "exp": live, "role": "root"}),
        "rooms_not_list": hs({"sub": "alice", "exp": live, "rooms": SECRET}),
        "not_before_future": hs({"sub": "alice", "exp": live, "nbf": now_plus(3000)}),
        "garbage_dots": "eyJhbGciOiJIUzI1NiJ9.e30.",
        "garbage_abc": "aaa.bbb.ccc",
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp("fuzz-access")
    tokens = asyncio.run(seed(workdir / "chat.db"))
    live = LiveServer(
        workdir,
        {
            "CHAT_AUTH": "required",
            "CHAT_JWT_SECRET": JWT_SECRET,
            "CHAT_HEARTBEAT_SECONDS": HEARTBEAT_S,
        },
    )
    live.start()
    try:
        with httpx.Client(base_url=live.url, timeout=10) as client:
            alice = {"Authorization": f"Bearer {tokens['alice']}"}
            admin = {"Authorization": f"Bearer {tokens['admin']}"}
            made = client.put(f"/api/rooms/{SECRET}", json={"private": True}, headers=alice)
            assert made.status_code == 201, made.text
            posted = client.post(
                f"/api/rooms/{SECRET}/messages", json={"text": SECRET_TEXT}, headers=alice
            )
            assert posted.status_code == 201, posted.text
            assert client.put(f"/api/rooms/{PUBLIC}", json={}, headers=admin).status_code == 201
            public = client.post(
                f"/api/rooms/{PUBLIC}/messages", json={"text": "hello"}, headers=admin
            )
            assert public.status_code == 201, public.text
            # The setup is what the properties assume: alice reads her room, bob is refused.
            seen = client.get(f"/api/rooms/{SECRET}/messages", headers=alice)
            assert SECRET_TEXT in seen.text, seen.text
            bob = {"Authorization": f"Bearer {tokens['bob']}"}
            assert client.get(f"/api/rooms/{SECRET}", headers=bob).status_code == 404
            spec = client.get("/openapi.json").json()
        routes = [
            (method.upper(), path)
            for path, operations in spec["paths"].items()
            for method in operations
            if method.upper() in METHODS
        ]
        assert len(routes) >= 20, routes
        secret_id, public_id = posted.json()["id"], public.json()["id"]
        yield World(
            url=live.url,
            log_path=live.log_path,
            tokens=tokens,
            jwts=make_jwts(),
            routes=sorted(set(routes) | set(HIDDEN_ROUTES)),
            secret_message_id=secret_id,
            public_message_id=public_id,
            message_ids=[secret_id, public_id],
        )
    finally:
        live.kill()


@pytest.fixture(scope="module")
def client(world: World) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=world.url, timeout=httpx.Timeout(10.0)) as c:
        yield c


# -- requests and answers -----------------------------------------------------------------


@dataclass
class Req:
    method: str
    template: str
    path: str  # as sent (percent-encoded)
    params: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes | None
    credential: Credential

    @property
    def is_stream(self) -> bool:
        return self.method == "GET" and self.template in STREAM_TEMPLATES

    @property
    def is_public(self) -> bool:
        if self.method == "GET":
            return self.template in PUBLIC_GETS or self.template.startswith(PUBLIC_PREFIXES)
        return self.method == "POST" and self.template == "/api/session"

    @property
    def effective(self) -> str:
        """What the server must see: ``none``, ``invalid`` or ``valid`` (ACCESS.md: the first
        present of header, cookie, query; the query only on stream GETs)."""
        cred = self.credential
        if cred.kind in ("authorization", "cookie"):
            return "valid" if cred.valid else "invalid"
        if cred.kind == "query" and self.is_stream:
            return "valid" if cred.valid else "invalid"
        return "none"

    def shown(self) -> str:
        body = None if self.body is None else self.body[:300]
        return (
            f"{self.method} {self.path} params={self.params} headers={self.headers} "
            f"body={body!r} credential={self.credential.label} ({self.credential.kind})"
        )


@dataclass
class Answer:
    status: int
    headers: httpx.Headers
    body: bytes
    sent: bytes  # the path and query as sent

    def under_secret(self) -> bool:
        """Whether the server routes it under /api/rooms/secret (it decodes the path)."""
        path = unquote(self.sent.split(b"?", 1)[0].decode("latin-1"))
        return re.match(rf"^/api/rooms/{SECRET}(/|$)", path) is not None

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def shown(self) -> str:
        return (
            f"(sent {self.sent!r}) -> {self.status} {dict(self.headers)} {self.body[:LOG_LIMIT]!r}"
        )


def send(client: httpx.Client, req: Req) -> Answer:
    headers = dict(req.headers)
    cred = req.credential
    params = list(req.params)
    if cred.kind == "authorization":
        headers["Authorization"] = cred.value
    elif cred.kind in ("cookie", "cookie-none"):
        headers["Cookie"] = cred.value
    elif cred.kind == "query":
        params.append(("access_token", cred.value))
    # h11 sends no header value with whitespace at either end (HTTP does not keep it).
    headers = {name: value.strip(" \t") for name, value in headers.items()}
    client.cookies.clear()  # every credential is the drawn one, never a remembered cookie
    with client.stream(
        req.method, req.path, params=params, headers=headers, content=req.body
    ) as response:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            body = read_stream(response)
        else:
            body = response.read()
    return Answer(response.status_code, response.headers, body, response.request.url.raw_path)


def read_stream(response: httpx.Response) -> bytes:
    """What a stream sends within SSE_READ_S (pings keep each read short)."""
    chunks: list[bytes] = []
    deadline = time.monotonic() + SSE_READ_S
    for chunk in response.iter_raw():
        chunks.append(chunk)
        if time.monotonic() > deadline:
            break
    return b"".join(chunks)


def is_envelope(answer: Answer) -> bool:
    body = answer.json()
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return False
    error = body["error"]
    return (
        isinstance(error.get("code"), str)
        and re.fullmatch(r"[a-z][a-z0-9_]*", error["code"]) is not None
        and isinstance(error.get("message"), str)
        and isinstance(error.get("details"), list)
    )


def secret_in_data(value: Any) -> bool:
    """Whether JSON names the private room where data goes (a room's name, a list of rooms,
    an event's room); an error envelope's message, which echoes the request, is not data."""
    if isinstance(value, list):
        return any(secret_in_data(item) for item in value)
    if not isinstance(value, dict):
        return False
    for key, item in value.items():
        if key == "error":
            continue
        if key in ("room", "name") and item == SECRET:
            return True
        if key == "rooms" and (
            (isinstance(item, dict) and SECRET in item)
            or (isinstance(item, list) and SECRET in item)
        ):
            return True
        if secret_in_data(item):
            return True
    return False


def sse_data(body: bytes) -> list[Any]:
    found = []
    for line in body.decode(errors="replace").splitlines():
        if line.startswith("data:"):
            with contextlib.suppress(ValueError):
                found.append(json.loads(line[5:].strip()))
    return found


def check_no_leak(req: Req, answer: Answer) -> None:
    where = f"{req.shown()} {answer.shown()}"
    assert SECRET_TEXT.encode() not in answer.body, f"the private text leaked: {where}"
    if answer.headers.get("content-type", "").startswith("text/event-stream"):
        assert not secret_in_data(sse_data(answer.body)), f"the private room leaked: {where}"
    else:
        assert not secret_in_data(answer.json()), f"the private room leaked: {where}"


def check_sane(req: Req, answer: Answer) -> None:
    """Never a 5xx (but /readyz's 503), every error the JSON envelope, nothing private."""
    where = f"{req.shown()} {answer.shown()}"
    assert answer.status < 500 or (req.template == "/readyz" and answer.status == 503), where
    if answer.status >= 400:
        assert is_envelope(answer), f"not the error envelope: {where}"
    check_no_leak(req, answer)


# -- strategies ---------------------------------------------------------------------------

PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
header_text = st.text(PRINTABLE, max_size=60)
names = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}", fullmatch=True)
ENCODED_SECRET = ("secr%65t", "%73ecret", "%73%65%63%72%65%74")
secret_spellings = st.sampled_from([SECRET, *ENCODED_SECRET])
bad_room_names = st.sampled_from(
    [
        "Secret",
        "SECRET",
        "secret.",
        "secret ",
        " secret",
        "-secret",
        "_secret",
        "a" * 65,
        "sécret",
        "secret;x",
        "secret\x00",
        "*",
        "secret,lobby",
        "secret%2Fmessages",
        "secret%2F..",
        "",
    ]
)


def encoded(name: str) -> str:
    """A room name as it goes into a path: kept if it is one of the spellings that are
    already percent-encoded."""
    return name if name in ENCODED_SECRET else quote(name, safe="")


rooms = st.one_of(
    secret_spellings,
    st.sampled_from([PUBLIC, "nosuch-room"]),
    names,
    bad_room_names,
    st.text(max_size=12),
).map(encoded)
usable_rooms = st.one_of(st.just(PUBLIC), names)  # rooms a request can get into
users = st.one_of(
    st.sampled_from(["alice", "bob", "admin", "carol", SECRET]),
    st.text(max_size=70),
).map(lambda name: quote(name, safe="") or "x")
any_int = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=0, max_value=50),
)
query_values = st.one_of(
    st.sampled_from(["", "*", SECRET, f"{PUBLIC},{SECRET}", "0", "-1", "abc", "1e9", "999999999"]),
    any_int.map(str),
    st.text(max_size=30),
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    any_int,
    st.floats(),
    st.text(max_size=40),
    st.sampled_from([SECRET, "alice", "bob", "admin", "owner", "member"]),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
message_like = st.fixed_dictionaries(
    {},
    optional={
        "author": json_scalars,
        "text": st.one_of(st.text(max_size=60), json_scalars),
        "reply_to": any_int,
    },
)
shaped = st.fixed_dictionaries(
    {},
    optional={
        "author": json_scalars,
        "user": json_scalars,
        "actor": json_scalars,
        "text": st.text(max_size=60),
        "title": json_scalars,
        "private": json_values,
        "role": st.sampled_from(["member", "owner", "admin", "bot", "", None]),
        "last_read_id": any_int,
        "reply_to": any_int,
        "emoji": st.text(max_size=8),
        "verb": st.text(max_size=10),
        "object": st.text(max_size=10),
        "data": json_values,
        "password": st.text(max_size=20),
        "messages": st.lists(message_like, max_size=3),
        "items": st.lists(json_values, max_size=3),
    },
)
bodies = st.one_of(
    st.none(),
    shaped.map(lambda value: json.dumps(value).encode()),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=200),
    st.text(max_size=100).map(str.encode),
)
some_text = st.text(min_size=1, max_size=40)
well_formed_message = st.fixed_dictionaries(
    {"text": some_text},
    optional={"reply_to": any_int, "author": st.sampled_from(["bob", "alice"])},
)
well_formed_activity = st.fixed_dictionaries(
    {"verb": some_text, "object": some_text},
    optional={
        "summary": some_text,
        "data": st.dictionaries(st.text(max_size=8), json_scalars, max_size=3),
        "actor": st.sampled_from(["bob", "deploy-bot"]),
    },
)
WELL_FORMED: dict[str, st.SearchStrategy[Any]] = {
    "/api/rooms/{room}": st.fixed_dictionaries(
        {}, optional={"title": some_text, "private": st.booleans()}
    ),
    "/api/rooms/{room}/messages": well_formed_message,
    "/api/rooms/{room}/messages/batch": st.fixed_dictionaries(
        {"messages": st.lists(well_formed_message, min_size=1, max_size=3)}
    ),
    "/api/rooms/{room}/activity": well_formed_activity,
    "/api/rooms/{room}/activity/batch": st.fixed_dictionaries(
        {"items": st.lists(well_formed_activity, min_size=1, max_size=3)}
    ),
    "/api/rooms/{room}/messages/{message_id}": st.fixed_dictionaries(
        {}, optional={"text": some_text, "author": st.just("bob")}
    ),
    "/api/rooms/{room}/messages/{message_id}/reactions": st.fixed_dictionaries(
        {"emoji": st.text(min_size=1, max_size=8)}
    ),
    "/api/rooms/{room}/read": st.fixed_dictionaries(
        {"last_read_id": any_int}, optional={"user": st.just("bob")}
    ),
    "/api/rooms/{room}/typing": st.fixed_dictionaries({}, optional={"user": st.just("bob")}),
    "/api/rooms/{room}/members/{user}": st.fixed_dictionaries(
        {"role": st.sampled_from(["member", "owner"])}
    ),
    "/api/session": st.fixed_dictionaries(
        {"user": st.sampled_from(["bob", "alice", "nobody"])},
        optional={"password": st.text(max_size=20)},
    ),
}
content_types = st.sampled_from(
    [
        None,
        "application/json",
        "application/json; charset=utf-8",
        "APPLICATION/JSON",
        "application/json;",
        "application/jsonx",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "",
    ]
)


def extra_headers(url: str) -> st.SearchStrategy[dict[str, str]]:
    return st.dictionaries(
        st.sampled_from(
            [
                "X-Request-ID",
                "Idempotency-Key",
                "Last-Event-ID",
                "Origin",
                "Referer",
                "Accept",
                "X-Forwarded-For",
                "X-Custom",
            ]
        ),
        st.one_of(header_text, st.just(url), st.just("http://evil.example")),
        max_size=3,
    )


def invalid_values(world: World) -> st.SearchStrategy[str]:
    """Credentials that must be refused wherever they are presented."""
    t, j = world.tokens, world.jwts
    named = [t["revoked"], t["expired"], t["revoked_alice"], t["expired_alice"]]
    named += [value for key, value in j.items() if key != "bob"]
    token_shaped = st.text(
        st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"),
        min_size=43,
        max_size=43,
    ).map(lambda tail: "chat_" + tail)
    garbage = st.text(
        st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=";"),
        min_size=1,
        max_size=80,
    )
    return st.one_of(st.sampled_from(named), token_shaped, garbage)


def invalid_credentials(world: World) -> st.SearchStrategy[Credential]:
    bob = world.tokens["bob"]
    values = invalid_values(world)
    malformed_headers = st.one_of(
        st.sampled_from(
            [
                "Bearer",
                "Bearer ",
                "Basic YWxpY2U6cGFzc3dvcmQ=",
                f"Basic {bob}",
                f"Token {bob}",
                bob,
                f"Bearer {bob} extra",
                f"Bearer {bob}x",
                f"Bearer{bob}",
            ]
        ),
        header_text.filter(lambda v: v.strip() != "" and not v.lower().startswith("bearer ")),
    )
    return st.one_of(
        st.just(Credential("none", "none")),
        malformed_headers.map(lambda v: Credential("malformed-header", "authorization", v)),
        values.map(lambda v: Credential("invalid-bearer", "authorization", f"Bearer {v}")),
        values.map(lambda v: Credential("invalid-cookie", "cookie", f"chat_session={v}")),
        st.sampled_from(["chat_session=", "other=1", "chat_sessionx=1"]).map(
            lambda v: Credential("no-session-cookie", "cookie-none", v)
        ),
        values.map(lambda v: Credential("invalid-access-token", "query", v)),
        st.just(Credential("bob-access-token", "query", bob, valid=True)),
    )


def bob_credentials(world: World) -> st.SearchStrategy[Credential]:
    """bob's valid credentials, and scoped tokens (bob's and alice's) for another room."""
    t = world.tokens
    return st.sampled_from(
        [
            Credential("bob-bearer", "authorization", f"Bearer {t['bob']}", True),
            Credential("bob-bearer-lowercase", "authorization", f"bearer {t['bob']}", True),
            Credential("bob-jwt", "authorization", f"Bearer {world.jwts['bob']}", True),
            Credential("bob-cookie", "cookie", f"chat_session={t['bob']}", True),
            Credential("bob-cookie-jwt", "cookie", f"a=1; chat_session={world.jwts['bob']}", True),
            Credential("bob-access-token", "query", t["bob"], True),
            Credential("bob-scoped", "authorization", f"Bearer {t['bob_scoped']}", True),
            Credential("alice-scoped", "authorization", f"Bearer {t['alice_scoped']}", True),
        ]
    )


@st.composite
def requests(
    draw: st.DrawFn,
    world: World,
    credentials: st.SearchStrategy[Credential],
    *,
    room: st.SearchStrategy[str] = rooms,
    room_routes_only: bool = False,
) -> Req:
    credential = draw(credentials)
    routes = world.routes
    if room_routes_only:
        routes = [r for r in routes if "{room}" in r[1]]
    if credential.kind == "query" and draw(st.booleans()):
        routes = [r for r in routes if r[1] in STREAM_TEMPLATES]  # where access_token counts
    method, template = draw(st.sampled_from(routes))
    if draw(st.integers(0, 9)) == 0:  # now and then, a method the route may not take
        method = draw(st.sampled_from(METHODS))
    ids = st.one_of(
        st.sampled_from(world.message_ids).map(str),
        any_int.map(str),
        st.text(max_size=8).map(lambda s: quote(s, safe="") or "0"),
    )
    fillers = {
        "room": room,
        "user": users,
        "message_id": ids,
        "file": st.one_of(
            st.sampled_from(STATIC_FILES),
            st.text(max_size=12).map(lambda s: quote(s, safe="") or "x"),
        ),
    }
    path = template
    for name, strategy in fillers.items():
        if "{" + name + "}" in path:
            path = path.replace("{" + name + "}", draw(strategy))
    params: list[tuple[str, str]] = []
    if template == "/api/events":
        names_list = draw(
            st.lists(
                st.one_of(secret_spellings.map(unquote), names, st.just(PUBLIC)),
                min_size=1,
                max_size=4,
            )
        )
        params.append(("rooms", draw(st.one_of(st.just(","), st.just(", "))).join(names_list)))
    for key in draw(
        st.lists(
            st.sampled_from(
                [
                    "rooms",
                    "types",
                    "authors",
                    "exclude_authors",
                    "mentions",
                    "user",
                    "last_event_id",
                    "before",
                    "after",
                    "limit",
                    "q",
                ]
            ),
            max_size=3,
        )
    ):
        params.append((key, draw(query_values)))
    headers = draw(extra_headers(world.url))
    if credential.kind == "cookie" and draw(st.booleans()):
        headers["Origin"] = world.url  # a write from the service's own page (no CSRF)
    if method in WRITE_METHODS and template in WELL_FORMED and draw(st.booleans()):
        # a body the route takes, so that the request gets past validation into the store
        body = json.dumps(draw(WELL_FORMED[template])).encode()
        headers["Content-Type"] = "application/json"
    else:
        body = draw(bodies) if method in WRITE_METHODS or draw(st.booleans()) else None
        content_type = draw(content_types)
        if content_type is not None:
            headers["Content-Type"] = content_type
    return Req(method, template, path, params, headers, body, credential)


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=False,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


def assert_clean_log(world: World) -> None:
    log = world.log()
    assert "Traceback" not in log, log[-LOG_LIMIT:]


# -- 1. without a valid credential: 401 ---------------------------------------------------


def test_without_a_valid_credential_only_public_routes_answer(
    world: World, client: httpx.Client
) -> None:
    @fuzz_settings(400)
    @given(req=requests(world, invalid_credentials(world)))
    def run(req: Req) -> None:
        assume(req.effective != "valid")
        answer = send(client, req)
        where = f"{req.shown()} {answer.shown()}"
        check_sane(req, answer)
        if req.is_public:
            if (
                req.effective == "none"
                and req.method == "GET"
                and req.template in ("/healthz", "/openapi.json", "/api/session/options")
            ):
                assert answer.status == 200, where
            return
        assert answer.status == 401, where
        assert answer.json()["error"]["code"] == "unauthorized", where
        assert answer.headers.get("www-authenticate", "").startswith("Bearer"), where

    run()
    assert_clean_log(world)


# -- 2. bob, not a member: the private room does not exist ----------------------------------


def test_private_room_is_not_found_for_a_non_member(world: World, client: httpx.Client) -> None:
    @fuzz_settings(400)
    @given(
        req=requests(world, bob_credentials(world), room=secret_spellings, room_routes_only=True)
    )
    def run(req: Req) -> None:
        answer = send(client, req)
        where = f"{req.shown()} {answer.shown()}"
        check_sane(req, answer)
        assert answer.under_secret(), where
        assert not 200 <= answer.status < 300, where
        allowed = {404, 405}
        origin = req.headers.get("Origin") or req.headers.get("Referer")
        if req.credential.kind == "cookie" and req.method in WRITE_METHODS and origin != world.url:
            allowed.add(403)  # a cookie write from another page (CSRF), whatever the room
        if req.credential.label in ("alice-scoped", "bob-scoped"):
            # the token reaches only the lobby: refused before the room's privacy shows (a
            # path no route takes is a 404 for anyone: it names no room)
            allowed = {403, 404, 405}
        if req.credential.kind == "query" and not req.is_stream:
            allowed = {401}  # access_token counts on stream GETs only: no credential
        assert answer.status in allowed, where
        if answer.status == 404:
            assert answer.json()["error"]["code"] == "not_found", where

    run()
    assert_clean_log(world)


def test_private_room_is_missing_from_lists_and_multi_room_streams(
    world: World, client: httpx.Client
) -> None:
    @fuzz_settings(150)
    @given(
        cred=bob_credentials(world),
        others=st.lists(st.one_of(names, st.just(PUBLIC)), max_size=3),
        where_secret=st.integers(0, 3),
        spelled=st.sampled_from([SECRET, f" {SECRET}", f"{SECRET} "]),
    )
    def run(cred: Credential, others: list[str], where_secret: int, spelled: str) -> None:
        if cred.kind == "query":  # access_token is for streams; the lists get the bearer
            listing = Credential(
                "bob-bearer", "authorization", f"Bearer {world.tokens['bob']}", True
            )
        else:
            listing = cred
        for path, template in (
            ("/api/rooms", "/api/rooms"),
            ("/api/users/bob/unread", "/api/users/{user}/unread"),
            ("/api/users/alice/unread", "/api/users/{user}/unread"),
        ):
            req = Req("GET", template, path, [], {}, None, listing)
            answer = send(client, req)
            check_sane(req, answer)
            if path == "/api/rooms" or listing.label.startswith("bob"):
                assert answer.status == 200 or ("alice" in path and answer.status == 403), (
                    f"{req.shown()} {answer.shown()}"
                )
        names_list = list(others)
        names_list.insert(min(where_secret, len(names_list)), spelled)
        req = Req(
            "GET", "/api/events", "/api/events", [("rooms", ",".join(names_list))], {}, None, cred
        )
        answer = send(client, req)
        check_sane(req, answer)
        where = f"{req.shown()} {answer.shown()}"
        allowed = {404}
        if cred.label in ("alice-scoped", "bob-scoped"):
            allowed = {403}  # outside the token's scope (the lobby), whatever the room is
        assert answer.status in allowed, where

    run()
    assert_clean_log(world)


async def test_wildcard_streams_never_carry_the_private_room(world: World) -> None:
    """bob's ``rooms=*`` streams (each credential, live and replaying from 0) get a public
    post made after alice's private activity, and nothing of the private room; alice's own
    stream, the control, gets both."""
    t = world.tokens
    marker = f"public-marker-{secrets.token_hex(6)}"
    private_text = f"{SECRET_TEXT}-live"
    bob_streams: dict[str, tuple[dict[str, str], dict[str, str]]] = {
        "bearer": ({"Authorization": f"Bearer {t['bob']}"}, {}),
        "jwt": ({"Authorization": f"Bearer {world.jwts['bob']}"}, {}),
        "cookie": ({"Cookie": f"chat_session={t['bob']}"}, {}),
        "access_token": ({}, {"access_token": t["bob"]}),
        "scoped": ({"Authorization": f"Bearer {t['bob_scoped']}"}, {}),
        "replay": ({"Authorization": f"Bearer {t['bob']}"}, {"last_event_id": "0"}),
        "replay-header": ({"Authorization": f"Bearer {t['bob']}", "Last-Event-ID": "0"}, {}),
    }
    alice = {"Authorization": f"Bearer {t['alice']}"}
    admin = {"Authorization": f"Bearer {t['admin']}"}
    timeout = httpx.Timeout(10.0)
    async with (
        httpx.AsyncClient(base_url=world.url, timeout=timeout) as bob_client,
        httpx.AsyncClient(base_url=world.url, timeout=timeout) as writer,
        contextlib.AsyncExitStack() as stack,
    ):
        streams = {}
        for label, (headers, params) in bob_streams.items():
            streams[label] = await stack.enter_async_context(
                open_stream(
                    bob_client, "/api/events", headers=headers, params={"rooms": "*", **params}
                )
            )
        control = await stack.enter_async_context(
            open_stream(bob_client, "/api/events", headers=alice, params={"rooms": "*"})
        )
        # alice, in her private room: a message, an edit, a reaction, typing, a new member.
        posted = await writer.post(
            f"/api/rooms/{SECRET}/messages", json={"text": private_text}, headers=alice
        )
        assert posted.status_code == 201, posted.text
        private_id = posted.json()["id"]
        for method, path, body, status in (
            (
                "PATCH",
                f"/api/rooms/{SECRET}/messages/{private_id}",
                {"text": f"{private_text}-edited"},
                200,
            ),
            ("POST", f"/api/rooms/{SECRET}/messages/{private_id}/reactions", {"emoji": "🔒"}, 201),
            ("POST", f"/api/rooms/{SECRET}/typing", {}, 202),
            ("PUT", f"/api/rooms/{SECRET}/members/carol", {"role": "member"}, 201),
        ):
            done = await writer.request(method, path, json=body, headers=alice)
            assert done.status_code == status, (method, path, done.status_code, done.text)
        public = await writer.post(
            f"/api/rooms/{PUBLIC}/messages", json={"text": marker}, headers=admin
        )
        assert public.status_code == 201, public.text

        async def until_marker(stream: Any) -> list[SSEEvent]:
            seen: list[SSEEvent] = []
            while True:
                event = await stream.next(timeout_s=10)
                seen.append(event)
                if event.event == "message" and event.json().get("text") == marker:
                    return seen

        for label, stream in streams.items():
            seen = await until_marker(stream)
            for event in seen:
                assert SECRET_TEXT not in event.data, (label, event)
                assert event.json().get("room") != SECRET, (label, event)
        mine = await until_marker(control)
        assert any(e.json().get("room") == SECRET and private_text in e.data for e in mine), mine
    assert_clean_log(world)


# -- 3. random requests: never a 500 ------------------------------------------------------


def test_random_requests_never_fail_the_server(world: World, client: httpx.Client) -> None:
    @fuzz_settings(400)
    @given(
        req=requests(
            world,
            st.sampled_from([invalid_credentials(world), bob_credentials(world)]).flatmap(
                lambda credentials: credentials
            ),
            room=st.one_of(usable_rooms, rooms),
        ),
    )
    def run(req: Req) -> None:
        # Signing out with a valid token revokes it; the other examples need bob's.
        assume(
            not (
                req.template == "/api/session"
                and req.method == "DELETE"
                and req.effective == "valid"
            )
        )
        answer = send(client, req)
        check_sane(req, answer)
        if req.effective != "valid" and not req.is_public:
            assert answer.status == 401, f"{req.shown()} {answer.shown()}"
        if answer.under_secret() and req.effective == "valid":
            assert not 200 <= answer.status < 300, f"{req.shown()} {answer.shown()}"

    run()
    assert_clean_log(world)
