"""The browser page with identities and private rooms (design/ACCESS.md, design/PAGE.md), in
Debian's Chromium against a live server: the sign-in screen in ``required`` mode, signing out,
a session that ends under the page, guest names bound by a session in ``open`` mode, and two
people (separate browser contexts, so separate cookies) sharing a private room.

Each page keeps ONE event stream, whatever the number of rooms it follows: counted in the
page (a test-only wrapper of ``EventSource``, injected before the page's scripts) and on the
server (its ``chat_subscribers`` gauge of open streams).

Accounts are written into the server's SQLite file through the real store. Every wait is
bounded. Each test ends by asserting that no page threw, opened a dialog or logged a console
error, except the 4xx answers the test itself provokes (listed in ``watch.tolerated``)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from chat import credentials
from chat.config import Settings
from chat.store import Store, accounts
from tests.live import LiveServer, scrape
from tests.page_helpers import (
    Watch,
    expect,
    join_room,
    message_with,
    open_as,
    room_item,
    sign_in,
    watched,
)

pytestmark = (
    pytest.mark.sqlite_only
)  # the page (the access rules run on both in test_private_rooms.py), on SQLite alone: conftest.py

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page, Request

FAST = {"CHAT_PRESENCE_GRACE_SECONDS": "1", "CHAT_RETRY_MS": "300"}
# Test-only: every EventSource the page creates, kept, so that the test can count those not
# closed (readyState 2) and read their URLs. Injected before the page's own scripts.
STREAM_COUNTER = """
(() => {
  const Native = window.EventSource;
  const made = [];
  const open = () => made.filter((s) => s.readyState !== Native.CLOSED);
  window.__streams = () => open().length;
  window.__streamUrls = () => open().map((s) => s.url);
  window.EventSource = class extends Native {
    constructor(...args) { super(...args); made.push(this); }
  };
})();
"""
PASSWORDS = {"alice": "alice-pw-123456", "bob": "bob-pw-1234567", "dave": "dave-pw-123456"}
# Chromium logs every 4xx answer of a fetch or an EventSource as a console error.
STATUS = r"status of {}"


async def add_accounts(database: Path, *names: str) -> None:
    """Accounts (role member) with the passwords of PASSWORDS, through the real store."""
    store = Store(Settings(database=str(database)), lambda events: None)
    async with asyncio.timeout(30):
        await store.open()
        try:
            for name in names:
                hashed = credentials.hash_password(PASSWORDS[name])
                await store.write(accounts.add_user(name, hashed, "member"))
        finally:
            await store.close()


@contextlib.asynccontextmanager
async def api_as(live: LiveServer, user: str) -> AsyncIterator[httpx.AsyncClient]:
    """A REST client signed in as ``user`` with a bearer token."""
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        body = {"user": user, "password": PASSWORDS[user]}
        response = await client.post("/api/session", json=body)
        assert response.status_code == 201, response.text
        client.cookies.clear()
        client.headers["Authorization"] = f"Bearer {response.json()['token']}"
        yield client


async def subscribers(client: httpx.AsyncClient, room: str) -> int:
    response = await client.get(f"/api/rooms/{room}")
    assert response.status_code == 200, response.text
    count: int = response.json()["subscribers"]
    return count


async def until(probe: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 10.0) -> None:
    """Poll an async probe until it answers True, for at most ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await probe():
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout_s}s: {what}")
        await asyncio.sleep(0.1)


async def counted_page(watch: Watch, browser: Browser, label: str) -> Page:
    page = await watch.new_page(browser, label)
    await page.add_init_script(STREAM_COUNTER)
    return page


async def streams_of(page: Page) -> list[str]:
    """The query strings of the page's EventSources that are not closed."""
    urls: list[str] = await page.evaluate("window.__streamUrls()")
    return [url.partition("?")[2] for url in urls]


def one_stream_with(page: Page, *rooms: str) -> Callable[[], Awaitable[bool]]:
    """A probe: the page has exactly one open EventSource, and it lists these rooms."""

    async def probe() -> bool:
        streams = await streams_of(page)
        if len(streams) != 1:
            return False
        query = dict(pair.partition("=")[::2] for pair in streams[0].split("&"))
        return sorted(query.get("rooms", "").split(",")) == sorted(rooms)

    return probe


async def open_streams(live: LiveServer) -> int:
    """The server's gauge of open event streams (``chat_subscribers``)."""
    async with httpx.AsyncClient(timeout=10) as client:
        return int((await scrape(client, live.url))["chat_subscribers"])


def members_are(page: Page, *names: str) -> Callable[[], Awaitable[bool]]:
    """A probe: the page's member-list has exactly these children's texts, in this order."""

    async def probe() -> bool:
        items = page.get_by_test_id("member-list").locator(":scope > li")
        return [t.strip() for t in await items.all_text_contents()] == list(names)

    return probe


async def test_required_mode_signs_in_rejects_a_wrong_password_and_signs_out(
    browser: Browser, make_server: Callable[..., LiveServer]
) -> None:
    live = make_server(CHAT_AUTH="required", **FAST)
    await add_accounts(live.database, "alice")
    async with watched(browser) as watch:
        # The page asks who is signed in (401) and the wrong password is a 401: expected.
        watch.tolerated = re.compile(STATUS.format(401))
        page = await watch.new_page(browser, "alice")
        response = await page.goto(live.url + "/")
        assert response is not None and response.status == 200
        user_input = page.get_by_test_id("signin-user")
        await expect(user_input).to_be_visible()
        await expect(page.get_by_test_id("name-input")).to_be_hidden()
        await expect(page.get_by_test_id("room-list")).to_be_hidden()

        await user_input.fill("alice")
        await page.get_by_test_id("signin-password").fill("not her password")
        await page.get_by_test_id("signin-submit").click()
        error = page.get_by_test_id("signin-error")
        await expect(error).to_be_visible()
        await expect(error).to_contain_text(re.compile("wrong", re.IGNORECASE))
        await expect(user_input).to_be_visible()
        assert watch.dialogs == []

        await sign_in(page, live.url, "alice", PASSWORDS["alice"])
        await expect(page.get_by_test_id("signout")).to_be_visible()
        composer = page.get_by_test_id("composer")
        await composer.fill("signed in and talking")
        await composer.press("Enter")
        sent = message_with(page, "signed in and talking")
        await expect(sent.get_by_test_id("message-author")).to_have_text("alice")

        async with api_as(live, "alice") as api:
            await until(lambda: _more(subscribers(api, "general"), 0), "the page's stream")
            await page.get_by_test_id("signout").click()
            await expect(user_input).to_be_visible()
            await expect(page.get_by_test_id("room-list")).to_be_hidden()
            await until(lambda: _equal(subscribers(api, "general"), 0), "the streams closed")
            # Signed out for real: the page's cookie no longer signs anything in.
            who = await page.context.request.get(live.url + "/api/session")
            assert who.status == 401
        # And in again, on the same page, without a reload.
        await sign_in(page, live.url, "alice", PASSWORDS["alice"])
        await expect(message_with(page, "signed in and talking")).to_have_count(1)
        watch.assert_clean()


async def _more(count: Awaitable[int], than: int) -> bool:
    return await count > than


async def _equal(count: Awaitable[int], wanted: int) -> bool:
    return await count == wanted


async def revoke_cookie_session(page: Page, url: str) -> None:
    """Sign the page's session out from elsewhere (another client holding its cookie)."""
    cookies = {c["name"]: c["value"] for c in await page.context.cookies()}
    assert "chat_session" in cookies
    async with httpx.AsyncClient(base_url=url, timeout=10) as other:
        other.cookies.set("chat_session", cookies["chat_session"])
        response = await other.delete("/api/session", headers={"Origin": url})
        assert response.status_code == 204, response.text


def session_calls(page: Page) -> list[str]:
    """From now on, every request of the page to /api/session, as "METHOD path"."""
    calls: list[str] = []

    def on_request(request: Request) -> None:
        if "/api/session" in request.url:
            calls.append(f"{request.method} {request.url.partition('/api/')[2]}")

    page.on("request", on_request)
    return calls


async def test_a_session_revoked_under_the_page_returns_it_to_the_sign_in_screen(
    browser: Browser, make_server: Callable[..., LiveServer]
) -> None:
    live = make_server(CHAT_AUTH="required", **FAST)
    await add_accounts(live.database, "alice")
    async with watched(browser) as watch:
        watch.tolerated = re.compile(STATUS.format(401))
        page = await sign_in(
            await counted_page(watch, browser, "alice"), live.url, "alice", PASSWORDS["alice"]
        )
        calls = session_calls(page)
        await revoke_cookie_session(page, live.url)
        # The server ends the page's stream; its reconnection is refused (401, and the answer
        # clears the cookie): back to the sign-in screen, with no stream left open.
        await expect(page.get_by_test_id("signin-user")).to_be_visible(timeout=15_000)
        await expect(page.get_by_test_id("signin-error")).to_contain_text("session")
        assert "chat_session" not in {c["name"] for c in await page.context.cookies()}
        assert await page.evaluate("window.__streams()") == 0
        calls.clear()
        # Signing in again is one POST, nothing more (no sign-out of a stale cookie first).
        await sign_in(page, live.url, "alice", PASSWORDS["alice"])
        assert calls == ["POST session"], calls
        composer = page.get_by_test_id("composer")
        await composer.fill("back after a revocation")
        await composer.press("Enter")
        await expect(message_with(page, "back after a revocation")).to_have_count(1)
        await until(one_stream_with(page, "general"), "one stream again")
        watch.assert_clean()


async def test_open_mode_a_revoked_guest_session_returns_to_the_name_screen(
    browser: Browser, make_server: Callable[..., LiveServer]
) -> None:
    live = make_server(**FAST)
    async with watched(browser) as watch:
        watch.tolerated = re.compile(STATUS.format(401))
        page = await open_as(await counted_page(watch, browser, "erin"), live.url, "erin")
        calls = session_calls(page)
        await revoke_cookie_session(page, live.url)
        name_input = page.get_by_test_id("name-input")
        await expect(name_input).to_be_visible(timeout=15_000)
        await expect(page.get_by_test_id("room-list")).to_be_hidden()
        assert "chat_session" not in {c["name"] for c in await page.context.cookies()}
        calls.clear()
        await expect(name_input).to_have_value("erin")
        await page.get_by_test_id("name-save").click()
        await expect(name_input).to_be_hidden()
        await expect(room_item(page, "general")).to_have_attribute("aria-current", "true")
        await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "open")
        assert calls == ["POST session"], calls
        who = await page.context.request.get(live.url + "/api/session")
        assert who.status == 200 and await who.json() == {
            "user": "erin",
            "role": "member",
            "guest": True,
        }
        watch.assert_clean()


async def test_private_room_invite_and_removal_reach_the_other_page_live(
    browser: Browser, make_server: Callable[..., LiveServer]
) -> None:
    live = make_server(CHAT_AUTH="required", CHAT_METRICS_PUBLIC="true", **FAST)
    await add_accounts(live.database, "alice", "bob")
    async with watched(browser) as watch:
        watch.tolerated = re.compile(STATUS.format(401))  # the pages ask who is signed in
        a = await sign_in(
            await counted_page(watch, browser, "alice"), live.url, "alice", PASSWORDS["alice"]
        )
        b = await sign_in(
            await counted_page(watch, browser, "bob"), live.url, "bob", PASSWORDS["bob"]
        )
        await b.evaluate("window.__noReload = 'still here'")
        for page in (a, b):  # accounts: the private-room control is offered
            await expect(page.get_by_test_id("room-new-private")).to_be_visible()

        # alice creates a public room (she owns it); bob joins it by name all the same.
        team = await join_room(a, "team")
        await expect(team.get_by_test_id("room-private")).to_have_count(0)
        await join_room(b, "team")
        await expect(b.get_by_test_id("room-new")).to_have_value("")
        # Several rooms, one stream a page (and on the server, one a page).
        await until(one_stream_with(b, "general", "team"), "bob's one stream of two rooms")
        await until(one_stream_with(a, "general", "team"), "alice's one stream of two rooms")
        await until(lambda: _equal(open_streams(live), 2), "two streams open on the server")

        # alice creates a private room: the lock, and herself as its owner.
        await a.get_by_test_id("room-new-private").check()
        secret_a = await join_room(a, "secret")
        await expect(secret_a.get_by_test_id("room-private")).to_have_count(1)
        await expect(room_item(a, "general").get_by_test_id("room-private")).to_have_count(0)
        await expect(a.get_by_test_id("member-list")).to_be_visible()
        await until(members_are(a, "alice"), "alice alone a member")
        await expect(a.get_by_test_id("connection")).to_have_attribute("data-state", "open")

        # bob does not see it, and may not join it by name.
        secret_b = room_item(b, "secret")
        await expect(b.get_by_test_id("room-list")).to_be_visible()
        await expect(secret_b).to_have_count(0)
        joining = STATUS.format(404) + r".*/api/rooms/secret'"  # bob's attempt, refused
        watch.tolerated = re.compile(f"{STATUS.format(401)}|{joining}")
        await b.get_by_test_id("room-new").fill("secret")
        await b.get_by_test_id("room-new").press("Enter")
        refusal = b.locator("#room-error")
        await expect(refusal).to_have_text(
            "#secret is private: ask one of its owners to invite you."
        )
        await expect(secret_b).to_have_count(0)

        # alice invites bob: his page shows the room, live, without a reload.
        invite = a.get_by_test_id("member-invite")
        await invite.fill("bob")
        await invite.press("Enter")
        await expect(invite).to_have_value("")
        await until(members_are(a, "alice", "bob"), "bob listed on alice's page")
        await expect(secret_b).to_have_count(1)
        await expect(secret_b.get_by_test_id("room-private")).to_have_count(1)
        await expect(refusal).to_have_text("")  # answered (a probe saw it stay)
        # It came on bob's one stream, which now lists the room too.
        await until(one_stream_with(b, "general", "team", "secret"), "bob's stream with secret")
        await until(lambda: _equal(open_streams(live), 2), "still two streams on the server")
        await secret_b.click()
        await expect(secret_b).to_have_attribute("aria-current", "true")
        await until(members_are(b, "alice", "bob"), "both listed on bob's page")
        owner = b.get_by_test_id("member-list").locator('li[data-user="alice"]')
        await expect(owner).to_have_attribute("data-role", "owner")
        await expect(b.get_by_test_id("member-invite")).to_be_hidden()  # bob is no owner
        await expect(b.get_by_test_id("member-leave")).to_be_visible()
        await expect(b.get_by_test_id("connection")).to_have_attribute("data-state", "open")

        composer = a.get_by_test_id("composer")
        await composer.fill("welcome to the secret room")
        await composer.press("Enter")
        welcome = message_with(b, "welcome to the secret room")
        await expect(welcome).to_have_count(1)
        await expect(welcome.get_by_test_id("message-author")).to_have_text("alice")

        # alice removes bob: the room leaves his list, nothing of it reaches his page. His page
        # may have just sent the room's read marker (300 ms after the welcome arrived): if
        # the removal commits first, that PUT is 404, which the page ignores and Chromium logs.
        watch.tolerated = re.compile(
            f"{STATUS.format(401)}|{joining}|" + STATUS.format(404) + r".*/api/rooms/secret/read'"
        )
        bob_item = a.get_by_test_id("member-list").locator('li[data-user="bob"]')
        await bob_item.hover()
        await bob_item.get_by_test_id("member-remove").click()
        await until(members_are(a, "alice"), "bob gone from alice's list")
        await expect(secret_b).to_have_count(0)
        await expect(room_item(b, "general")).to_have_attribute("aria-current", "true")
        await expect(b.get_by_test_id("member-list")).to_be_hidden()
        await until(one_stream_with(b, "general", "team"), "bob's stream without secret")

        async with api_as(live, "alice") as api:
            hidden = await api.post("/api/rooms/secret/messages", json={"text": "after removal"})
            assert hidden.status_code == 201, hidden.text
            shown = await api.post(
                "/api/rooms/general/messages", json={"text": "public still live"}
            )
            assert shown.status_code == 201, shown.text
            later = await api.post("/api/rooms/secret/messages", json={"text": "later secret"})
            assert later.status_code == 201, later.text
        # The public message, posted after the private one, arrives: the page is live.
        await expect(message_with(b, "public still live")).to_have_count(1)
        await expect(message_with(a, "later secret")).to_have_count(1)  # alice, still a member
        await b.wait_for_timeout(1000)  # a bounded look for anything that should not come
        for text in ("after removal", "later secret"):
            await expect(b.get_by_text(text)).to_have_count(0, timeout=1000)
        await expect(secret_b).to_have_count(0)
        assert await b.evaluate("window.__noReload") == "still here"
        watch.assert_clean()


async def test_open_mode_name_input_binds_a_guest_session_and_posts(
    browser: Browser, make_server: Callable[..., LiveServer]
) -> None:
    live = make_server(**FAST)
    async with watched(browser) as watch:
        page = await open_as(await counted_page(watch, browser, "carol"), live.url, "carol")
        who = await page.context.request.get(live.url + "/api/session")
        assert who.status == 200
        assert await who.json() == {"user": "carol", "role": "member", "guest": True}
        # A guest name: no private rooms to create, nothing to manage.
        await expect(page.get_by_test_id("room-new")).to_be_visible()
        await expect(page.get_by_test_id("room-new-private")).to_be_hidden()
        await expect(page.get_by_test_id("member-invite")).to_be_hidden()
        await expect(page.get_by_test_id("member-remove")).to_have_count(0)
        # Several rooms, still one stream (the page's and the server's count).
        await join_room(page, "lobby")
        await until(one_stream_with(page, "general", "lobby"), "one stream of two rooms")
        await until(lambda: _equal(open_streams(live), 1), "one stream on the server")
        await room_item(page, "general").click()
        await expect(room_item(page, "general")).to_have_attribute("aria-current", "true")
        composer = page.get_by_test_id("composer")
        await composer.fill("a guest, bound")
        await composer.press("Enter")
        sent = message_with(page, "a guest, bound")
        await expect(sent.get_by_test_id("message-author")).to_have_text("carol")
        async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
            history = (await client.get("/api/rooms/general/messages")).json()["messages"]
            assert [(m["author"], m["text"]) for m in history] == [("carol", "a guest, bound")]
            # A guest posting over REST still shows up (open mode is as before).
            body = {"author": "zed", "text": "from a guest over REST"}
            assert (await client.post("/api/rooms/general/messages", json=body)).status_code == 201
        await expect(message_with(page, "from a guest over REST")).to_have_count(1)
        # A reload keeps the session: straight back in, no name asked.
        await page.reload()
        await expect(room_item(page, "general")).to_have_attribute("aria-current", "true")
        await expect(page.get_by_test_id("name-input")).to_be_hidden()
        await expect(message_with(page, "a guest, bound")).to_have_count(1)
        # Signing out returns to the name screen.
        await page.get_by_test_id("signout").click()
        await expect(page.get_by_test_id("name-input")).to_be_visible()
        await expect(page.get_by_test_id("room-list")).to_be_hidden()
        watch.assert_clean()


async def test_open_mode_an_account_name_asks_for_its_password(
    browser: Browser, make_server: Callable[..., LiveServer]
) -> None:
    live = make_server(**FAST)
    await add_accounts(live.database, "dave")
    async with watched(browser) as watch:
        watch.tolerated = re.compile(STATUS.format(409))  # the guest name is an account's
        page = await watch.new_page(browser, "dave")
        await page.goto(live.url + "/")
        name_input = page.get_by_test_id("name-input")
        await name_input.fill("dave")
        await page.get_by_test_id("name-save").click()
        password = page.get_by_test_id("signin-password")
        await expect(password).to_be_visible()
        await expect(page.get_by_test_id("signin-user")).to_have_value("dave")
        await password.fill(PASSWORDS["dave"])
        await password.press("Enter")
        await expect(room_item(page, "general")).to_have_attribute("aria-current", "true")
        await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "open")
        who = await page.context.request.get(live.url + "/api/session")
        assert await who.json() == {"user": "dave", "role": "member", "guest": False}
        # An account (a password) may create private rooms, in open mode too.
        await expect(page.get_by_test_id("room-new-private")).to_be_visible()
        assert watch.dialogs == []
        watch.assert_clean()


async def test_more_rooms_than_one_stream_may_name_keep_the_page_live(
    browser: Browser, make_server: Callable[..., LiveServer]
) -> None:
    """Anyone signed in may add bob to private rooms, as many as they like: past
    CHAT_MAX_ROOMS_PER_STREAM (3 here, 100 by default) a stream naming them all is refused
    (400), and bob's page was offline for good, reload or not. The page now follows
    ``rooms=*`` then, on its one stream: it stays live, in its rooms and the new ones."""
    live = make_server(CHAT_AUTH="required", CHAT_MAX_ROOMS_PER_STREAM="3", **FAST)
    await add_accounts(live.database, "alice", "bob")
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as http:
        token = (
            await http.post("/api/session", json={"user": "alice", "password": PASSWORDS["alice"]})
        ).json()["token"]
    head = {"Authorization": f"Bearer {token}"}
    async with (
        watched(browser) as watch,
        httpx.AsyncClient(base_url=live.url, timeout=10, headers=head) as alice,
    ):
        watch.tolerated = re.compile(STATUS.format(401))  # the page asks who is signed in
        b = await sign_in(
            await counted_page(watch, browser, "bob"), live.url, "bob", PASSWORDS["bob"]
        )
        await until(one_stream_with(b, "general"), "bob's stream of general")
        rooms = [f"trap-{n}" for n in range(4)]
        for room in rooms:
            assert (
                await alice.put(f"/api/rooms/{room}", json={"private": True})
            ).status_code == 201
            assert (await alice.put(f"/api/rooms/{room}/members/bob", json={})).status_code == 201
        for room in rooms:
            await expect(room_item(b, room)).to_have_count(1)

        async def one_stream_of_every_room() -> bool:
            streams = await streams_of(b)
            return len(streams) == 1 and "rooms=*" in streams[0]

        await until(one_stream_of_every_room, "bob's one stream of every room")
        await expect(b.get_by_test_id("connection")).to_have_attribute("data-state", "open")
        await alice.post("/api/rooms/general/messages", json={"text": "still live here"})
        await expect(message_with(b, "still live here")).to_have_count(1)
        await alice.post("/api/rooms/trap-3/messages", json={"text": "and in a new room"})
        unread = room_item(b, "trap-3").get_by_test_id("room-unread")
        await expect(unread).to_have_text(re.compile(r"^\s*1\s*$"))

        await b.reload()  # after a reload too: the page starts on rooms=*
        await until(one_stream_of_every_room, "bob's one stream of every room, reloaded")
        await expect(b.get_by_test_id("connection")).to_have_attribute("data-state", "open")
        await alice.post("/api/rooms/general/messages", json={"text": "after the reload"})
        await expect(message_with(b, "after the reload")).to_have_count(1)
        watch.assert_clean()
