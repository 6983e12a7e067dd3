"""Other headers (ACCESS.md): every answer ``nosniff``; the page, /docs and the static files
under a CSP; the pages with ``Referrer-Policy: same-origin``. /docs still works under its
CSP in Chromium (its script is a file, not inline)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.live import LiveServer
from tests.page_helpers import chromium

JSON_TYPE = {"content-type": "application/json"}
pytestmark = pytest.mark.sqlite_only  # headers: the pipeline, on SQLite alone: conftest.py


async def test_pages_and_static_files_carry_their_policies(server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        for path in ("/", "/docs"):
            page = await client.get(path)
            assert page.status_code == 200
            csp = page.headers["content-security-policy"]
            assert "script-src 'self';" in csp and "frame-ancestors 'none'" in csp
            assert "unsafe-inline" not in csp.split("script-src", 1)[1].split(";", 1)[0]
            assert page.headers["referrer-policy"] == "same-origin"
            assert "<script>" not in page.text  # no inline script to allow
        for path in ("/static/app.js", "/static/style.css", "/static/docs.js"):
            static = await client.get(path)
            assert static.status_code == 200
            assert "default-src 'self'" in static.headers["content-security-policy"]
        # the page under its file name too (a probe: no Referrer-Policy there)
        page = await client.get("/static/index.html")
        assert page.status_code == 200
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert page.headers["referrer-policy"] == "same-origin"
        for path in ("/healthz", "/api/rooms", "/nope", "/docs/assets/swagger-ui.css"):
            answer = await client.get(path)
            assert answer.headers["x-content-type-options"] == "nosniff"


async def test_docs_render_under_their_csp(server: LiveServer) -> None:
    async with chromium() as browser:
        page = await browser.new_page()
        violations: list[str] = []
        page.on(
            "console", lambda m: violations.append(m.text) if "Content Security" in m.text else None
        )
        await asyncio.wait_for(page.goto(f"{server.url}/docs"), 20)
        title = page.locator(".swagger-ui .info .title")
        await title.wait_for(timeout=15_000)
        assert (await title.inner_text()).startswith("chat")
        operations = page.locator(".opblock")
        await operations.first.wait_for(timeout=15_000)
        assert await operations.count() > 10
        assert violations == []


async def test_every_session_answer_is_never_stored(server: LiveServer) -> None:
    """ACCESS.md: session answers carry ``Cache-Control: no-store``; a probe found it on the
    successes alone (a 401, a 400, a wrong password's answer had none)."""
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        answers = [
            await client.get("/api/session"),  # 401: not signed in
            await client.post(
                "/api/session", content=b"{", headers={"content-type": "application/json"}
            ),
            await client.post("/api/session", json={"user": "nobody", "password": "x"}),
            await client.post("/api/session", json={"user": "guest-h"}),  # 201: a guest
            await client.delete("/api/session"),
        ]
        assert [a.status_code for a in answers][:2] == [401, 400], answers
        for answer in answers:
            assert answer.headers.get_list("cache-control") == ["no-store"], (answer, answer.text)
