"""The page's notification bell (design/PAGE.md: ``notif-bell``, ``notif-count``,
``notif-item``) in Debian's Chromium against a live server, to the contract of design/API.md
(Notifications): the count rises live as other people mention the user, reply to and react to
the user's messages; the panel shows the groups with their kinds, opening it clears the count,
and clicking a group opens its room at its message.

Each test ends by asserting that no page logged a console error, threw or opened a dialog."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.live import LiveServer
from tests.page_helpers import (
    expect,
    join_room,
    message_with,
    open_as,
    post,
    react,
    room_item,
    say,
    watched,
)

pytestmark = (
    pytest.mark.sqlite_only
)  # the page (notifications run on both in test_notifications.py), on SQLite alone: conftest.py

if TYPE_CHECKING:
    from playwright.async_api import Browser, Locator, Page

FAST = {"CHAT_PRESENCE_GRACE_SECONDS": "1", "CHAT_RETRY_MS": "300"}
UNREAD = re.compile(r"\bunread\b")
FILLER = 60  # messages after the mention: more than the first page of history (50)


@pytest.fixture
def live(make_server: Callable[..., LiveServer]) -> LiveServer:
    return make_server(**FAST)


@pytest.fixture
async def client(live: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as c:
        yield c


def count(page: Page) -> Locator:
    return page.get_by_test_id("notif-count")


async def expect_count(page: Page, n: int) -> None:
    """The bell shows ``n`` (absent or empty when 0)."""
    if n:
        await expect(count(page)).to_have_text(re.compile(rf"^\s*{n}\s*$"))
    else:
        await expect(count(page).filter(has_text=re.compile(r"\S"))).to_have_count(0)


def item(page: Page, kind: str) -> Locator:
    return page.locator(f'[data-testid="notif-item"][data-kind="{kind}"]')


async def test_what_one_tab_reads_the_other_tabs_stop_showing_unread(
    browser: Browser, live: LiveServer, client: httpx.AsyncClient
) -> None:
    """A defect a probe found, fixed: two tabs of one browser, the same person. Opening a room
    in one tab left its unread count in the other (in the room list and the title), and
    opening the bell's panel in one left the other's count, until a reload or reconnection.
    The tab that reads now tells the others, which ask the server again."""
    async with watched(browser) as watch:
        first = await open_as(await watch.new_page(browser, "ann, tab 1"), live.url, "ann")
        await join_room(first, "side")
        second = await first.context.new_page()
        watch.attach(second, "ann, tab 2")
        await second.goto(live.url + "/")
        await expect(room_item(second, "side")).to_have_attribute("aria-current", "true")
        await room_item(second, "general").click()  # tab 2 reads general, tab 1 side
        await expect(room_item(second, "general")).to_have_attribute("aria-current", "true")
        await room_item(first, "side").click()
        await expect(room_item(first, "side")).to_have_attribute("aria-current", "true")
        for page in (first, second):
            await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "open")
        await say(client, "side", "bob", "@ann one for you")
        await say(client, "general", "bob", "in general")
        unread = room_item(first, "general").get_by_test_id("room-unread")
        await expect(unread).to_have_text(re.compile(r"^\s*1\s*$"))  # tab 1: general unread
        await expect(message_with(second, "in general")).to_have_count(1)  # tab 2 read it
        await expect(unread).to_have_count(0)
        await expect(first).to_have_title(re.compile(r"^(?!\()"))  # no "(1) ..." either
        await expect_count(first, 1)
        await expect_count(second, 1)
        await second.get_by_test_id("notif-bell").click()  # tab 2 reads the notification
        await expect(item(second, "mention")).to_have_count(1)
        await expect_count(second, 0)
        await expect_count(first, 0)
        watch.assert_clean()


async def test_mentions_replies_and_reactions_reach_the_bell_and_open_their_message(
    browser: Browser, live: LiveServer, client: httpx.AsyncClient
) -> None:
    async with watched(browser) as watch:
        page = await open_as(await watch.new_page(browser, "ann"), live.url, "ann")
        await expect(page.get_by_test_id("notif-bell")).to_be_visible()
        await expect_count(page, 0)
        mine = await say(client, "general", "ann", "my plan for the week")
        await expect(message_with(page, "my plan for the week")).to_have_count(1)
        await expect_count(page, 0)  # one's own message notifies nobody

        # bob mentions ann in a room she does not follow, and the room goes on without her.
        mention = await say(client, "side", "bob", "@ann can you look at this?")
        await expect_count(page, 1)
        for i in range(FILLER):
            await say(client, "side", ("cy", "dee")[i % 2], f"filler {i}")
        await say(client, "general", "bob", "sounds good", reply_to=mine["id"])
        await expect_count(page, 2)
        await react(client, "general", mine["id"], "carol", "👍")
        await expect_count(page, 3)
        await expect(room_item(page, "side")).to_have_count(0)

        bell = page.get_by_test_id("notif-bell")
        await bell.click()
        items = page.get_by_test_id("notif-item")
        await expect(items).to_have_count(3)
        kinds = await items.evaluate_all("els => els.map((e) => e.dataset.kind)")
        assert kinds == ["reaction", "reply", "mention"], kinds  # newest first
        for kind in kinds:
            await expect(item(page, kind)).to_have_class(UNREAD)
        await expect(item(page, "mention")).to_contain_text("bob")
        await expect(item(page, "mention")).to_contain_text("#side")
        await expect(item(page, "reply")).to_contain_text("bob")
        await expect(item(page, "reaction")).to_contain_text("carol")
        await expect_count(page, 0)  # opening the panel marked them read

        # The mention opens its room, scrolled to the message, which is highlighted.
        await item(page, "mention").click()
        await expect(items.first).to_be_hidden()  # the panel closes
        side = room_item(page, "side")
        await expect(side).to_have_attribute("aria-current", "true")
        target = page.get_by_test_id("message-list").locator(f'[data-id="{mention["id"]}"]')
        await expect(target).to_be_in_viewport()
        await expect(target).to_have_class(re.compile(r"\bflash\b"))
        await expect(target.get_by_test_id("message-text")).to_have_text(
            "@ann can you look at this?"
        )
        await expect(message_with(page, f"filler {FILLER - 1}")).not_to_be_in_viewport()

        # Read now: the panel shows the groups without the unread mark, the bell no count.
        await bell.click()
        await expect(page.get_by_test_id("notif-item")).to_have_count(3)
        for kind in kinds:
            await expect(item(page, kind)).not_to_have_class(UNREAD)
        await expect_count(page, 0)
        await page.keyboard.press("Escape")
        await expect(items.first).to_be_hidden()

        # A new mention while the page is live: the count rises again.
        await say(client, "general", "bob", "@ann one more thing")
        await expect_count(page, 1)
        watch.assert_clean()


async def test_a_group_without_a_message_opens_its_room_and_the_count_survives_a_reload(
    browser: Browser, live: LiveServer, client: httpx.AsyncClient
) -> None:
    async with watched(browser) as watch:
        page = await open_as(await watch.new_page(browser, "ann"), live.url, "ann")
        body = {"actor": "ci", "verb": "assigned", "object": "ticket 7 to @ann"}
        await post(client, "/api/rooms/ops/activity", body)
        await expect_count(page, 1)

        await page.reload()  # the count comes from the server, not from the page's memory
        await expect(room_item(page, "general")).to_have_attribute("aria-current", "true")
        await expect_count(page, 1)

        await page.get_by_test_id("notif-bell").click()
        activity = item(page, "activity")
        await expect(activity).to_have_count(1)
        await expect(activity).to_contain_text("#ops")
        await expect_count(page, 0)
        await activity.click()
        await expect(room_item(page, "ops")).to_have_attribute("aria-current", "true")
        await expect(page.get_by_test_id("message-list").get_by_test_id("message")).to_have_count(1)
        watch.assert_clean()


async def test_a_burst_of_mentions_asks_the_server_a_few_times_not_once_each(
    browser: Browser, live: LiveServer, client: httpx.AsyncClient
) -> None:
    """One batch of 60 messages that mention ann brings her page 60 ``notify`` events: its
    bell reaches the count with a few requests (once at the burst's start, then at most every
    half second), where it made one request each (a probe saw 500 in 8 s for 500)."""
    async with watched(browser) as watch:
        page = await open_as(await watch.new_page(browser, "ann"), live.url, "ann")
        await expect_count(page, 0)
        asked: list[str] = []
        page.on(
            "request",
            lambda request: asked.append(request.url) if "/notifications" in request.url else None,
        )
        texts = [{"author": "bob", "text": f"@ann spam {i}"} for i in range(60)]
        made = await client.post("/api/rooms/side/messages/batch", json={"messages": texts})
        assert made.status_code == 201, made.text
        unread = (await client.get("/api/users/ann/notifications/unread")).json()["unread"]
        assert unread > 0
        await expect_count(page, unread)
        assert 1 <= len(asked) <= 10, asked
        watch.assert_clean()
