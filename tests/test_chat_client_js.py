"""The browser module ``static/chat-client.js`` (docs/client-js.md) in Debian's Chromium, loaded
from a live server by a page of the service's origin and by a page of another origin: one
``EventSource`` a subscription, each persisted event delivered once and in id order across a
server restart and a re-subscription, ``reset`` events handed to ``onReset``, ``post`` and
``history`` with the API's error envelope. And the page's own modules: their static imports
form no cycle and run one way (state, then client, then rendering, then the controls).

Every wait is bounded; each browser test ends by asserting that its page logged no console
error it did not expect, threw nothing and opened no dialog."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.access_helpers import Seed
from tests.live import ROOT, LiveServer
from tests.page_helpers import Watch, page_of_another_origin, say, watched

pytestmark = pytest.mark.sqlite_only  # the JavaScript client, on SQLite alone: conftest.py

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page, Route

STATIC = ROOT / "static"
FAST = {"CHAT_RETRY_MS": "300", "CHAT_SHUTDOWN_GRACE_SECONDS": "1"}
WAIT_MS = 10_000
BLANK = b"<!doctype html><meta charset=utf-8><title>client test</title><p>uses chat-client.js"
# Chromium logs every 4xx answer of a fetch or an EventSource as a console error.
STATUS = r"status of {}"
DOWN = r"ERR_CONNECTION_REFUSED|ERR_EMPTY_RESPONSE|503"

# Records what a subscription hands over, into window.__got / __states / __resets.
SUBSCRIBE = """async ({base, rooms, filters, lastEventId}) => {
    const m = await import(`${base}/static/chat-client.js`);
    window.__got = []; window.__states = []; window.__resets = [];
    const options = {
        rooms, filters, lastEventId,
        onEvent: (ev) => window.__got.push(ev),
        onReset: (ev) => window.__resets.push(ev),
        onState: (s) => window.__states.push(s),
    };
    window.__sub = base ? m.createClient({baseUrl: base}).subscribe(options) : m.subscribe(options);
}"""


@pytest.fixture
def live(make_server: Callable[..., LiveServer]) -> LiveServer:
    return make_server(**FAST)


@pytest.fixture
async def client(live: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as c:
        yield c


async def same_origin_page(watch: Watch, browser: Browser, live: LiveServer) -> Page:
    """A blank page of the service's origin (served by the test, so that no app runs in it)."""
    page = await watch.new_page(browser, "client")

    async def blank(route: Route) -> None:
        await route.fulfill(status=200, content_type="text/html", body=BLANK)

    await page.route(f"{live.url}/client-test", blank)
    response = await page.goto(f"{live.url}/client-test")
    assert response is not None and response.status == 200
    return page


async def subscribe(
    page: Page,
    rooms: list[str],
    *,
    base: str = "",
    filters: dict[str, Any] | None = None,
    last_event_id: int | str | None = None,
) -> None:
    args = {"base": base, "rooms": rooms, "filters": filters or {}, "lastEventId": last_event_id}
    async with asyncio.timeout(WAIT_MS / 1000):
        await page.evaluate(SUBSCRIBE, args)
    await until(page, "window.__states.at(-1) === 'open'")


async def until(page: Page, expression: str, arg: Any = None, timeout_ms: int = WAIT_MS) -> None:
    await page.wait_for_function(expression, arg=arg, timeout=timeout_ms)


async def got(page: Page, kind: str = "message") -> list[dict[str, Any]]:
    async with asyncio.timeout(WAIT_MS / 1000):
        events: list[dict[str, Any]] = await page.evaluate(
            "kind => window.__got.filter((e) => e.type === kind)", kind
        )
    return events


async def wait_for_messages(page: Page, count: int, timeout_ms: int = WAIT_MS) -> None:
    expr = "n => window.__got.filter((e) => e.type === 'message').length >= n"
    await until(page, expr, count, timeout_ms)


async def restart_under(page: Page, watch: Watch, live: LiveServer) -> None:
    """Stop the server, see the subscription notice it, start the server again (same port
    and store)."""
    await asyncio.to_thread(live.terminate)
    watch.tolerated = re.compile(DOWN)
    await until(page, "['reconnecting', 'offline'].includes(window.__states.at(-1))")
    await asyncio.to_thread(live.start)


async def create_rooms(client: httpx.AsyncClient, *rooms: str) -> None:
    for room in rooms:
        response = await client.put(f"/api/rooms/{room}", json={})
        assert response.status_code in (200, 201), response.text


def texts(page: dict[str, Any]) -> list[str]:
    return [m["text"] for m in page["messages"]]


def assert_once_in_order(events: list[dict[str, Any]]) -> None:
    ids = [e["id"] for e in events]
    assert ids == sorted(set(ids)), ids


async def test_messages_arrive_once_and_in_order_across_a_restart_and_a_resubscribe(
    browser: Browser, live: LiveServer, client: httpx.AsyncClient
) -> None:
    await create_rooms(client, "north", "south", "west")
    async with watched(browser) as watch:
        page = await same_origin_page(watch, browser, live)
        await subscribe(page, ["north", "south"], filters={"user": "ann"})
        assert await page.evaluate("window.__sub.rooms") == ["north", "south"]
        sent: list[str] = []
        for i in range(3):
            for room in ("north", "south"):
                sent.append(f"{room} {i}")
                await say(client, room, "bob", sent[-1])
        await wait_for_messages(page, 6)

        # The server goes away and comes back on the same port and store; messages posted
        # meanwhile come once, after the others, and nothing is delivered twice.
        await restart_under(page, watch, live)
        for i in range(3, 5):
            for room in ("north", "south"):
                sent.append(f"{room} {i}")
                await say(client, room, "bob", sent[-1])
        await wait_for_messages(page, 10, timeout_ms=20_000)
        await until(page, "window.__states.at(-1) === 'open'", timeout_ms=20_000)
        messages = await got(page)
        assert [m["text"] for m in messages] == sent
        assert_once_in_order(messages)

        # A message of a room the subscription does not follow yet, then a move to it that
        # replays that room from before the message: that message comes, the others do not
        # come again.
        before_west = await say(client, "west", "carol", "west before the move")
        since = messages[0]["id"] - 1
        async with asyncio.timeout(WAIT_MS / 1000):
            await page.evaluate(
                "since => window.__sub.setRooms(['north', 'south', 'west'], {since})", since
            )
        await wait_for_messages(page, 11)
        await say(client, "north", "bob", "north after the move")
        await wait_for_messages(page, 12)
        messages = await got(page)
        texts = [m["text"] for m in messages]
        assert texts == [*sent, "west before the move", "north after the move"], texts
        assert len({m["id"] for m in messages}) == len(messages)
        assert messages[-2]["id"] == before_west["id"]
        last = await page.evaluate("window.__sub.lastEventId")
        assert last == messages[-1]["id"]

        states: list[str] = await page.evaluate("window.__states")
        assert states[0] == "connecting" and states[1] == "open", states
        assert {"reconnecting", "offline"} & set(states), states
        await page.evaluate("window.__sub.close()")
        assert await page.evaluate("window.__states.at(-1)") == "closed"
        watch.assert_clean()


async def test_a_resume_point_the_server_cannot_place_reaches_on_reset(
    browser: Browser, live: LiveServer, client: httpx.AsyncClient
) -> None:
    await create_rooms(client, "east")
    before = await say(client, "east", "bob", "before the subscription")
    async with watched(browser) as watch:
        page = await same_origin_page(watch, browser, live)
        # A resume point past the newest event (as after the database was replaced).
        await subscribe(page, ["east"], last_event_id=10**9)
        await until(page, "window.__resets.length >= 1")
        resets: list[dict[str, Any]] = await page.evaluate("window.__resets")
        assert resets[0]["type"] == "reset"
        assert resets[0]["latest_id"] == before["id"], resets
        assert await got(page, "reset") == []  # onReset, not onEvent
        # From there on the subscription delivers what comes, though its ids are below the
        # resume point it was given.
        after = await say(client, "east", "bob", "after the reset")
        await wait_for_messages(page, 1)
        assert [m["text"] for m in await got(page)] == ["after the reset"]
        assert await page.evaluate("window.__sub.lastEventId") == after["id"]
        watch.assert_clean()


async def test_a_reset_moves_the_cursor_that_the_next_connection_resumes_from(
    browser: Browser, make_server: Callable[..., LiveServer]
) -> None:
    """A probe: after a ``gap_too_large`` reset, the subscription's next connection (a
    restart of the server) asked again from the old point, since a reset carries no id for
    the browser to keep, and got a second reset; what was posted between the two fell in
    its gap. It now reconnects from the reset's ``latest_id`` at once."""
    live = make_server(**FAST, CHAT_REPLAY_LIMIT="10")
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        await create_rooms(client, "ra")
        batch = [{"author": "bob", "text": f"old {i}"} for i in range(30)]
        made = await client.post("/api/rooms/ra/messages/batch", json={"messages": batch})
        assert made.status_code == 201, made.text
        async with watched(browser) as watch:
            page = await same_origin_page(watch, browser, live)
            await subscribe(page, ["ra"], last_event_id=0)
            await until(page, "window.__resets.length >= 1")
            await until(page, "window.__states.at(-1) === 'open'")
            await restart_under(page, watch, live)
            after = await say(client, "ra", "bob", "after the restart")
            await wait_for_messages(page, 1, timeout_ms=20_000)
            assert [m["text"] for m in await got(page)] == [after["text"]]
            resets = await page.evaluate("window.__resets.map((r) => r.reason)")
            assert resets == ["gap_too_large"]
            watch.assert_clean()


async def test_a_subscription_from_now_loses_nothing_while_it_reconnects(
    browser: Browser, make_server: Callable[..., LiveServer]
) -> None:
    """A probe: subscribed without ``lastEventId`` to a quiet room, the subscription had no
    cursor until its first event, so a reconnection (a restart) started live again and the
    message posted meanwhile was lost. It now asks where "now" is before it connects."""
    live = make_server(**{**FAST, "CHAT_RETRY_MS": "3000"})
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        await create_rooms(client, "quiet")
        await say(client, "quiet", "bob", "before the subscription")
        async with watched(browser) as watch:
            page = await same_origin_page(watch, browser, live)
            await subscribe(page, ["quiet"])
            assert await page.evaluate("window.__sub.lastEventId") is not None
            await restart_under(page, watch, live)
            meanwhile = await say(client, "quiet", "bob", "while it reconnected")
            await wait_for_messages(page, 1, timeout_ms=20_000)
            assert [m["text"] for m in await got(page)] == [meanwhile["text"]]
            watch.assert_clean()


async def test_a_subscription_from_now_to_rooms_without_events_starts_live(
    browser: Browser, live: LiveServer, client: httpx.AsyncClient
) -> None:
    """Its rooms hold nothing yet (or one cannot be read): no cursor of 0, which would replay
    the user's access events of every other room and meet retention's reset (a review)."""
    await create_rooms(client, "empty")
    async with watched(browser) as watch:
        page = await same_origin_page(watch, browser, live)
        await subscribe(page, ["empty"])
        assert await page.evaluate("window.__sub.lastEventId") is None
        first = await say(client, "empty", "bob", "the first")
        await wait_for_messages(page, 1)
        assert [m["text"] for m in await got(page)] == [first["text"]]
        watch.assert_clean()


async def test_a_cursor_kept_as_text_is_a_cursor(
    browser: Browser, live: LiveServer, client: httpx.AsyncClient
) -> None:
    """``lastEventId: "12"`` (as read back from localStorage) was ignored without a word and
    the stream started live (a probe): digits are taken as the id they spell."""
    await create_rooms(client, "kept")
    first = await say(client, "kept", "bob", "seen before")
    second = await say(client, "kept", "bob", "missed")
    async with watched(browser) as watch:
        page = await same_origin_page(watch, browser, live)
        await subscribe(page, ["kept"], last_event_id=str(first["id"]))
        await wait_for_messages(page, 1)
        assert [m["text"] for m in await got(page)] == [second["text"]]
        watch.assert_clean()


async def test_moving_to_every_room_replays_the_rooms_it_adds(
    browser: Browser, live: LiveServer, client: httpx.AsyncClient
) -> None:
    """``setRooms('*', {since})`` replays the rooms it adds from after ``since``, as a list of
    rooms does (a probe: the rooms that ``*`` added were not replayed)."""
    await create_rooms(client, "ra", "rb", "rc")
    first = await say(client, "ra", "bob", "ra 1")
    other = [await say(client, room, "bob", f"{room} 2") for room in ("rb", "rc")]
    mine = await say(client, "ra", "bob", "ra 3")
    async with watched(browser) as watch:
        page = await same_origin_page(watch, browser, live)
        await subscribe(page, ["ra"], last_event_id=first["id"])
        await wait_for_messages(page, 1)
        async with asyncio.timeout(WAIT_MS / 1000):
            await page.evaluate("since => window.__sub.setRooms('*', {since})", first["id"])
        await wait_for_messages(page, 3)
        later = await say(client, "rc", "bob", "rc 4")
        await wait_for_messages(page, 4)
        texts = [m["text"] for m in await got(page)]
        assert texts == [mine["text"], *(m["text"] for m in other), later["text"]], texts
        watch.assert_clean()


async def test_filters_go_to_the_server(
    browser: Browser, live: LiveServer, client: httpx.AsyncClient
) -> None:
    await create_rooms(client, "filtered")
    async with watched(browser) as watch:
        page = await same_origin_page(watch, browser, live)
        filters = {"types": ["message"], "exclude_authors": ["bot"], "mentions": "ann"}
        await subscribe(page, ["filtered"], filters=filters)
        await say(client, "filtered", "bot", "@ann from the bot")
        await say(client, "filtered", "bob", "no mention here")
        await say(client, "filtered", "bob", "hello @ann")
        await wait_for_messages(page, 1)
        await say(client, "filtered", "bob", "@ann again")
        await wait_for_messages(page, 2)
        assert [m["text"] for m in await got(page)] == ["hello @ann", "@ann again"]
        watch.assert_clean()


async def test_a_filtered_subscription_moves_its_cursor_with_what_it_passed_over(
    browser: Browser, make_server: Callable[..., LiveServer]
) -> None:
    """The server's ``position`` event (an idle stream that skipped events) moves the
    subscription's cursor, which it reopens from, without reaching onEvent: else a reopening
    asked for a gap counted over every skipped event and got a reset (tests/test_streams.py)."""
    live = make_server(**FAST, CHAT_HEARTBEAT_SECONDS="0.3")
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        await create_rooms(client, "skips")
        async with watched(browser) as watch:
            page = await same_origin_page(watch, browser, live)
            await subscribe(page, ["skips"], filters={"authors": ["ann"]})
            wanted = await say(client, "skips", "ann", "for me")
            await wait_for_messages(page, 1)
            skipped = [await say(client, "skips", "bob", f"not for me {i}") for i in range(3)]
            await until(page, "id => window.__sub.lastEventId === id", skipped[-1]["id"])
            assert [(e["type"], e.get("text")) for e in await page.evaluate("window.__got")] == [
                ("message", wanted["text"])
            ]
            watch.assert_clean()


async def test_post_and_history_and_the_error_envelope(
    browser: Browser, live: LiveServer, client: httpx.AsyncClient
) -> None:
    async with watched(browser) as watch:
        watch.tolerated = re.compile(STATUS.format("(400|404|422)"))
        page = await same_origin_page(watch, browser, live)
        async with asyncio.timeout(WAIT_MS / 1000):
            result: dict[str, Any] = await page.evaluate(
                """async (room) => {
                    const m = await import('/static/chat-client.js');
                    const failure = async (call) => {
                        try { await call; return null; } catch (e) {
                            return {name: e.name, status: e.status, code: e.code,
                                    message: e.message, chatError: e instanceof m.ChatError};
                        }
                    };
                    const key = `key-${room}`;
                    const first = await m.post(room, {author: 'ann', text: 'first words'},
                                               {idempotencyKey: key});
                    const again = await m.post(room, {author: 'ann', text: 'first words'},
                                               {idempotencyKey: key});
                    const second = await m.post(room, {author: 'bob', text: 'second words'});
                    const third = await m.post(room, {author: 'bob', text: 'a third one'});
                    return {
                        first, again, second, third,
                        newest: await m.history(room, {limit: 2}),
                        before: await m.history(room, {before: third.id}),
                        after: await m.history(room, {after: first.id, limit: 1}),
                        found: await m.history(room, {q: 'second'}),
                        badRoom: await failure(m.post('Not A Room', {author: 'a', text: 'x'})),
                        empty: await failure(m.post(room, {author: 'ann', text: ''})),
                        missing: await failure(m.history('no-such-room-here')),
                    };
                }""",
                "letters",
            )
        first, third = result["first"], result["third"]
        assert first["type"] == "message" and first["text"] == "first words"
        assert result["again"]["id"] == first["id"]  # the same key: posted once
        assert texts(result["newest"]) == ["second words", "a third one"]
        assert result["newest"]["has_more"] is True
        assert texts(result["before"]) == ["first words", "second words"]
        assert texts(result["after"]) == ["second words"]
        assert texts(result["found"]) == ["second words"]
        history = (await client.get("/api/rooms/letters/messages")).json()["messages"]
        assert [m["id"] for m in history] == [first["id"], result["second"]["id"], third["id"]]

        bad = result["badRoom"]
        assert bad["chatError"] and bad["name"] == "ChatError", bad
        assert (bad["status"], bad["code"]) == (400, "invalid_room"), bad
        assert bad["message"]
        assert (result["empty"]["status"], result["empty"]["code"]) == (422, "validation_error")
        assert (result["missing"]["status"], result["missing"]["code"]) == (404, "not_found")
        watch.assert_clean()


async def test_a_page_of_another_origin_uses_the_module_with_credentials(
    browser: Browser, make_server: Callable[..., LiveServer]
) -> None:
    async with page_of_another_origin(BLANK) as origin, watched(browser) as watch:
        live = make_server(**FAST, CHAT_CORS_ORIGINS=origin, CHAT_AUTH="required")
        async with Seed(live.database) as seed:
            await seed.user("alice", "alices-password")
        watch.tolerated = re.compile(STATUS.format(401))  # asked without credentials, below
        page = await watch.new_page(browser, "other origin")
        response = await page.goto(f"{origin}/app")
        assert response is not None and response.status == 200
        async with asyncio.timeout(20):
            signed_in = await page.evaluate(
                """async (base) => {
                    const m = await import(`${base}/static/chat-client.js`);
                    const anonymous = m.createClient({baseUrl: base});
                    let refused = null;
                    try { await anonymous.history('general'); } catch (e) { refused = e.code; }
                    window.__chat = m.createClient({baseUrl: base, withCredentials: true});
                    const session = await window.__chat.request(
                        'POST', '/api/session', {user: 'alice', password: 'alices-password'});
                    await window.__chat.request('PUT', '/api/rooms/cross', {});
                    return {refused, user: session.user};
                }""",
                live.url,
            )
        assert signed_in == {"refused": "unauthorized", "user": "alice"}

        async with asyncio.timeout(20):
            await page.evaluate(
                """() => {
                    window.__got = []; window.__states = [];
                    window.__sub = window.__chat.subscribe({
                        rooms: ['cross'], onEvent: (ev) => window.__got.push(ev),
                        onState: (s) => window.__states.push(s)});
                }"""
            )
        await until(page, "window.__states.at(-1) === 'open'")
        async with asyncio.timeout(20):
            posted = await page.evaluate(
                "() => window.__chat.post('cross', {text: 'from another app'})"
            )
        assert posted["author"] == "alice"
        await wait_for_messages(page, 1)
        assert [(m["text"], m["author"]) for m in await got(page)] == [
            ("from another app", "alice")
        ]
        async with asyncio.timeout(20):
            history = await page.evaluate("() => window.__chat.history('cross')")
        assert [m["id"] for m in history["messages"]] == [posted["id"]]
        await page.evaluate("window.__sub.close()")
        watch.assert_clean()


# The page's modules, by layer: each may import only from its own layer or the ones before.
LAYERS: dict[str, list[str]] = {
    "state": ["state.js", "model.js"],
    "client": ["chat-client.js", "api.js", "tabs.js"],
    "rendering": [
        "richtext.js",
        "render.js",
        "util.js",
        "connection.js",
        "messages.js",
        "roomlist.js",
        "presence.js",
        "members.js",
        "bell.js",
        "nav.js",
    ],
    "controls": [
        "unread.js",
        "history.js",
        "rooms.js",
        "membership.js",
        "notifications.js",
        "events.js",
        "actions.js",
        "composer.js",
        "gate.js",
        "desktop.js",
        "session.js",
        "app.js",
    ],
}
NOT_OF_THE_PAGE = {"docs.js"}  # /docs's Swagger UI set-up: a classic script
IMPORT = re.compile(r"""^\s*(?:import|export)\s[^;]*?\bfrom\s*['"]\./([\w.-]+)['"]""", re.M | re.S)
BARE_IMPORT = re.compile(r"""^\s*import\s*['"]\./([\w.-]+)['"]""", re.M)


def static_imports(path: Path) -> set[str]:
    text = path.read_text()
    return set(IMPORT.findall(text)) | set(BARE_IMPORT.findall(text))


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of the graph (its modules in order, the first repeated), or None."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            cycle = visit(dep)
            if cycle:
                return cycle
        path.pop()
        done.add(node)
        return None

    for node in sorted(graph):
        cycle = visit(node)
        if cycle:
            return cycle
    return None


def test_find_cycle_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_page_imports_run_one_way_without_a_cycle() -> None:
    files = {p.name for p in STATIC.glob("*.js")} - NOT_OF_THE_PAGE
    graph = {name: static_imports(STATIC / name) for name in files}
    assert graph["rooms.js"], "no import found: the pattern no longer matches the files"
    for name, deps in graph.items():
        assert deps <= files, f"{name} imports a file that is not there: {deps - files}"
    assert find_cycle(graph) is None, f"an import cycle: {' -> '.join(find_cycle(graph) or [])}"

    layer = {name: i for i, names in enumerate(LAYERS.values()) for name in names}
    assert files == set(layer), f"modules with no layer in LAYERS: {sorted(files - set(layer))}"
    names = list(LAYERS)
    upward = [
        f"{name} ({names[layer[name]]}) imports {dep} ({names[layer[dep]]})"
        for name, deps in sorted(graph.items())
        for dep in sorted(deps)
        if layer[dep] > layer[name]
    ]
    assert upward == [], upward
    assert graph["chat-client.js"] == set(), "chat-client.js stands alone"
    assert graph["state.js"] == set()
