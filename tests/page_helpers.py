"""Helpers of the browser tests: Debian's Chromium driven by Playwright, a watch on each page's
console and errors, and REST shortcuts. Every wait is bounded (10 s unless told)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from tests.conftest import need
from tests.live import loopback_server

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Locator, Page

try:
    from playwright.async_api import async_playwright
    from playwright.async_api import expect as expect  # re-exported for the page tests

    HAVE_PLAYWRIGHT = True
except ImportError:  # pragma: no cover - the test extras install it
    HAVE_PLAYWRIGHT = False
    expect = None  # type: ignore[assignment]


@contextlib.asynccontextmanager
async def page_of_another_origin(page: bytes) -> AsyncIterator[str]:
    """A web server of another origin on loopback (Chromium lets only loopback pages call a
    loopback service), answering every request with ``page`` (HTML); yields its origin."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(page), page)
            )
            await writer.drain()
        writer.close()

    async with loopback_server(answer) as origin:
        yield origin


class StreamDelay:
    """A loopback proxy in front of a live server whose ``hold()`` makes every stream's events
    wait (the answer's headers still pass, so the stream opens) until ``release()``: a slow
    network on the stream alone, while REST answers pass at once. Chromium opens one
    connection for a stream and sends nothing more on it, so a connection that sent
    ``GET /api/events`` carries that stream's answer from then on."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.removeprefix("http://")
        self.url = ""
        self.held = False
        self._waiting: list[tuple[asyncio.StreamWriter, bytearray]] = []

    def hold(self) -> None:
        self.held = True

    async def release(self) -> None:
        self.held = False
        for writer, data in self._waiting:
            with contextlib.suppress(ConnectionError):
                writer.write(bytes(data))
                data.clear()
                await asyncio.wait_for(writer.drain(), 10)
        self._waiting.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = self.upstream.rsplit(":", 1)
        up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
        asked = opened = False
        head, pending = bytearray(), bytearray()

        async def to_server() -> None:
            nonlocal asked
            while data := await reader.read(65536):
                asked = asked or b"GET /api/events" in data
                up_writer.write(data)
                await up_writer.drain()
            up_writer.close()  # the page closed it: so does the server

        async def to_client() -> None:
            nonlocal opened
            while data := await up_reader.read(65536):
                if asked and not opened:  # the stream's headers pass at once
                    head.extend(data)
                    end = head.find(b"\r\n\r\n") + 4
                    if end < 4:
                        continue
                    opened = True
                    writer.write(bytes(head[:end]))
                    data = bytes(head[end:])
                if opened and (self.held or pending):
                    if not pending:
                        self._waiting.append((writer, pending))
                    pending.extend(data)
                    continue
                writer.write(data)
                await writer.drain()
            writer.close()

        try:
            await asyncio.gather(to_server(), to_client())
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            up_writer.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[StreamDelay]:
        async with loopback_server(self._serve) as self.url:
            yield self


CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CHROMIUM_PRESENT = os.path.exists(CHROMIUM)
WAIT_MS = 10_000
Json = dict[str, Any]


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """One headless Chromium for one test, closed whatever happens."""
    need(HAVE_PLAYWRIGHT, "playwright is not installed")
    need(CHROMIUM_PRESENT, "Debian's chromium is not installed")
    expect.set_options(timeout=WAIT_MS)
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS, timeout=30_000
        )
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class Watch:
    """Console errors, uncaught page errors and dialogs of every page of a test."""

    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    contexts: list[BrowserContext] = field(default_factory=list)
    # Network failures expected while the server is down (the restart test), by pattern.
    tolerated: re.Pattern[str] | None = None

    def attach(self, page: Page, label: str) -> None:
        def on_console(msg: ConsoleMessage) -> None:
            if msg.type == "error":
                self.errors.append(f"{label} console: {msg.text} @ {msg.location}")

        async def on_dialog(dialog: Any) -> None:
            self.dialogs.append(f"{label} {dialog.type}: {dialog.message}")
            await dialog.dismiss()

        page.on("console", on_console)
        page.on("pageerror", lambda exc: self.errors.append(f"{label} pageerror: {exc}"))
        page.on("dialog", on_dialog)

    async def new_page(
        self, browser: Browser, label: str, width: int = 1280, height: int = 800
    ) -> Page:
        context = await browser.new_context(viewport={"width": width, "height": height})
        self.contexts.append(context)
        context.set_default_timeout(WAIT_MS)
        context.set_default_navigation_timeout(15_000)
        page = await context.new_page()
        self.attach(page, label)
        return page

    async def close(self) -> None:
        for context in self.contexts:
            with contextlib.suppress(Exception):
                await context.close()
        self.contexts.clear()

    def assert_clean(self) -> None:
        errors = self.errors
        if self.tolerated is not None:
            errors = [e for e in errors if not self.tolerated.search(e)]
        assert errors == [], "\n".join(errors)
        assert self.dialogs == [], self.dialogs


@contextlib.asynccontextmanager
async def watched(browser: Browser) -> AsyncIterator[Watch]:
    watch = Watch()
    try:
        yield watch
    finally:
        await watch.close()


async def open_as(page: Page, url: str, name: str, room: str = "general") -> Page:
    """Open the page, choose a name and wait until the room is open and the stream is up."""
    response = await page.goto(url + "/")
    assert response is not None and response.status == 200
    name_input = page.get_by_test_id("name-input")
    await expect(name_input).to_be_visible()
    await name_input.fill(name)
    await name_input.press("Enter")
    await expect(name_input).to_be_hidden()
    await expect(room_item(page, room)).to_have_attribute("aria-current", "true")
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "open")
    return page


def room_item(page: Page, room: str) -> Locator:
    return page.locator(f'[data-testid="room-item"][data-room="{room}"]')


async def join_room(page: Page, room: str) -> Locator:
    """Join (or create) ``room`` by its name in the room list's field, as a person does, until
    it is the open room: its entry in the room list."""
    field = page.get_by_test_id("room-new")
    await field.fill(room)
    await field.press("Enter")
    item = room_item(page, room)
    await expect(item).to_have_attribute("aria-current", "true")
    return item


def messages(page: Page) -> Locator:
    return page.get_by_test_id("message-list").get_by_test_id("message")


def message_with(page: Page, text: str) -> Locator:
    """The messages (or activity items) of the open room whose text is exactly ``text``."""
    return messages(page).filter(
        has=page.get_by_test_id("message-text").get_by_text(text, exact=True)
    )


async def post(client: httpx.AsyncClient, path: str, body: Json, status: int = 201) -> Json:
    response = await client.post(path, json=body)
    assert response.status_code == status, response.text
    result: Json = response.json() if response.content else {}
    return result


async def say(client: httpx.AsyncClient, room: str, author: str, text: str, **extra: Any) -> Json:
    body: Json = {"author": author, "text": text, **extra}
    return await post(client, f"/api/rooms/{room}/messages", body)


async def react(
    client: httpx.AsyncClient, room: str, message_id: int, author: str, emoji: str
) -> Json:
    body = {"author": author, "emoji": emoji}
    return await post(client, f"/api/rooms/{room}/messages/{message_id}/reactions", body)


async def data_ids(page: Page) -> list[str]:
    ids: list[str] = await messages(page).evaluate_all(
        "els => els.map(e => e.getAttribute('data-id'))"
    )
    return ids


async def sign_in(page: Page, url: str, user: str, password: str, room: str = "general") -> Page:
    """Open the page on its sign-in screen (``CHAT_AUTH=required``, or after a sign-out), sign
    in and wait until the room is open and the stream is up."""
    if not page.url.startswith(url):
        response = await page.goto(url + "/")
        assert response is not None and response.status == 200
    user_input = page.get_by_test_id("signin-user")
    await expect(user_input).to_be_visible()
    await user_input.fill(user)
    await page.get_by_test_id("signin-password").fill(password)
    await page.get_by_test_id("signin-submit").click()
    await expect(user_input).to_be_hidden()
    await expect(room_item(page, room)).to_have_attribute("aria-current", "true")
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "open")
    return page


async def open_event_sources(page: Page, urls: list[str]) -> None:
    """Standard ``EventSource`` objects in the page, one per URL (relative to the page), each
    recording what it sees into ``window.__seen`` (read it with ``seen_events``): the same
    lines as tests/node/sse_clients.mjs prints, ``{stream, kind, id, data, readyState}``."""
    await page.evaluate(
        """urls => {
            window.__seen = [];
            window.__sources = urls.map((url, stream) => {
                const source = new EventSource(url);
                const note = line =>
                    window.__seen.push({stream, readyState: source.readyState, ...line});
                source.onopen = () => note({kind: "open"});
                source.onmessage = event =>
                    note({kind: "message", id: event.lastEventId, data: event.data});
                source.onerror = () => note({kind: "error"});
                return source;
            });
        }""",
        urls,
    )


async def seen_events(page: Page, timeout_s: float = 10.0) -> list[Json]:
    """Everything the page's EventSources (``open_event_sources``) have seen so far."""
    async with asyncio.timeout(timeout_s):
        seen: list[Json] = await page.evaluate("() => window.__seen.slice()")
    return seen
