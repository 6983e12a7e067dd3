"""CORS (ACCESS.md): a page of a listed origin calls the API with credentials; every other
origin gets no CORS header at all. Checked on the wire, and from pages of other origins in
Chromium (an EventSource with ``withCredentials`` and a ``fetch`` POST with a preflight)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
import pytest

from tests.access_helpers import Seed, bearer
from tests.live import LiveServer
from tests.page_helpers import chromium, page_of_another_origin

pytestmark = pytest.mark.sqlite_only  # CORS headers: the pipeline, on SQLite alone: conftest.py

ALLOWED = "http://app.example"


@pytest.fixture
def cors_server(make_server: Any) -> LiveServer:
    live: LiveServer = make_server(CHAT_CORS_ORIGINS=f"{ALLOWED}, http://other.example")
    return live


async def test_a_listed_origin_gets_credentialed_cors_and_preflights(
    cors_server: LiveServer,
) -> None:
    async with Seed(cors_server.database) as seed:
        token = await seed.token("alice")
    async with httpx.AsyncClient(base_url=cors_server.url, timeout=10) as client:
        preflight = await client.options(
            "/api/rooms/r/messages",
            headers={
                "Origin": ALLOWED,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
            },
        )
        assert preflight.status_code == 204
        h = preflight.headers
        assert h["access-control-allow-origin"] == ALLOWED
        assert h["access-control-allow-credentials"] == "true"
        assert "POST" in h["access-control-allow-methods"]
        allowed = {v.strip().lower() for v in h["access-control-allow-headers"].split(",")}
        assert {"authorization", "content-type", "idempotency-key", "last-event-id"} <= allowed
        assert "origin" in h["vary"].lower()

        posted = await client.post(
            "/api/rooms/r/messages",
            json={"text": "hi"},
            headers={"Origin": ALLOWED, **bearer(token)},
        )
        assert posted.status_code == 201
        exposed = {
            v.strip().lower() for v in posted.headers["access-control-expose-headers"].split(",")
        }
        assert exposed == {
            "retry-after",
            "idempotent-replayed",
            "ratelimit",
            "ratelimit-policy",
            "x-request-id",
        }
        assert posted.headers["access-control-allow-origin"] == ALLOWED
        # an error carries them too: a page must be able to read why it was refused
        missing = await client.get("/api/rooms/nope/messages/1", headers={"Origin": ALLOWED})
        assert missing.headers["access-control-allow-origin"] == ALLOWED


async def test_an_unlisted_origin_gets_no_cors_header(cors_server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=cors_server.url, timeout=10) as client:
        evil = "http://evil.example"
        for response in [
            await client.options(
                "/api/rooms/r/messages",
                headers={"Origin": evil, "Access-Control-Request-Method": "POST"},
            ),
            await client.get("/api/rooms", headers={"Origin": evil}),
        ]:
            assert not [k for k in response.headers if k.lower().startswith("access-control-")]
        # and a same-origin request (no Origin) none either
        plain = await client.get("/api/rooms")
        assert "access-control-allow-origin" not in plain.headers


async def test_a_preflight_needs_no_credentials_in_required_mode(make_server: Any) -> None:
    live = make_server(CHAT_CORS_ORIGINS=ALLOWED, CHAT_AUTH="required")
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        preflight = await client.options(
            "/api/events",
            headers={"Origin": ALLOWED, "Access-Control-Request-Method": "GET"},
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == ALLOWED
        refused = await client.get("/api/rooms", headers={"Origin": ALLOWED})
        assert refused.status_code == 401  # the request itself still needs an identity
        assert refused.headers["access-control-allow-origin"] == ALLOWED


async def test_star_allows_any_origin_without_credentials(make_server: Any) -> None:
    live = make_server(CHAT_CORS_ORIGINS="*")
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        response = await client.get("/api/rooms", headers={"Origin": "http://any.example"})
        assert response.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in response.headers


PAGE = b"<!doctype html><title>another app</title><p>another origin</p>"


async def test_pages_of_other_origins_in_chromium(make_server: Any) -> None:
    """A page of a listed origin signs in, follows a room with an EventSource that sends the
    cookie (withCredentials), and posts with fetch (a JSON POST: preflighted); a page of an
    unlisted origin can neither post nor read."""
    async with contextlib.AsyncExitStack() as stack:
        listed = await stack.enter_async_context(page_of_another_origin(PAGE))
        unlisted = await stack.enter_async_context(page_of_another_origin(PAGE))
        await cross_origin_pages(make_server, listed, unlisted)


async def cross_origin_pages(make_server: Any, listed: str, unlisted: str) -> None:
    live = make_server(CHAT_CORS_ORIGINS=listed, CHAT_AUTH="required")
    async with Seed(live.database) as seed:
        await seed.user("alice", "alices-password")
    async with chromium() as browser:
        page = await browser.new_page()
        await asyncio.wait_for(page.goto(f"{listed}/app"), 20)
        result = await asyncio.wait_for(
            page.evaluate(
                """async base => {
                    const json = {"Content-Type": "application/json"};
                    const signed = await fetch(base + "/api/session", {
                        method: "POST", credentials: "include", headers: json,
                        body: JSON.stringify({user: "alice", password: "alices-password"}),
                    });
                    const texts = [];
                    const source = new EventSource(base + "/api/rooms/cross/events",
                                                   {withCredentials: true});
                    const got = new Promise((resolve, reject) => {
                        source.onmessage = event => {
                            texts.push(JSON.parse(event.data).text);
                            resolve();
                        };
                        source.onerror = () => reject(new Error("stream failed"));
                    });
                    await new Promise(resolve => { source.onopen = resolve; });
                    const posted = await fetch(base + "/api/rooms/cross/messages", {
                        method: "POST", credentials: "include", headers: json,
                        body: JSON.stringify({text: "from another app"}),
                    });
                    await got;
                    source.close();
                    return {
                        signed: signed.status,
                        posted: posted.status,
                        requestId: posted.headers.get("X-Request-ID"),
                        author: (await posted.json()).author,
                        texts,
                    };
                }""",
                live.url,
            ),
            20,
        )
        assert result["signed"] == 201
        assert result["posted"] == 201 and result["author"] == "alice"
        assert result["requestId"]  # an exposed header
        assert result["texts"] == ["from another app"]

        await asyncio.wait_for(page.goto(f"{unlisted}/app"), 20)
        blocked = await asyncio.wait_for(
            page.evaluate(
                """async base => {
                    let post, read;
                    try {
                        await fetch(base + "/api/rooms/cross/messages", {
                            method: "POST", credentials: "include",
                            headers: {"Content-Type": "application/json"},
                            body: JSON.stringify({text: "from an unlisted app"}),
                        });
                        post = "sent";
                    } catch (error) { post = "blocked"; }
                    try {
                        await fetch(base + "/api/rooms/cross/messages", {credentials: "include"});
                        read = "read";
                    } catch (error) { read = "blocked"; }
                    return {post, read};
                }""",
                live.url,
            ),
            20,
        )
        assert blocked == {"post": "blocked", "read": "blocked"}
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        signed = await client.post(
            "/api/session", json={"user": "alice", "password": "alices-password"}
        )
        history = await client.get(
            "/api/rooms/cross/messages", headers=bearer(signed.json()["token"])
        )
        assert [m["text"] for m in history.json()["messages"]] == ["from another app"]
