"""``chat.client`` as a program uses it: against a real server (``python -m chat serve``, on
each store), restarted under a running iterator; a misbehaving fake server for what a real one
never does; the SSE parser on its own. Every await is bounded."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import httpx
import pytest

from chat.client import (
    ChatClient,
    ClientClosed,
    ClientError,
    Event,
    EventStream,
    Filters,
    Forbidden,
    Message,
    NotFound,
    Reconnect,
    RequestRefused,
    Reset,
    SSEComment,
    SSEFrame,
    SSEParser,
    StreamReset,
    Unauthorized,
    Unreachable,
)
from chat.models import MessageEvent
from chat.notification_models import NotificationGroup
from tests.access_helpers import Seed, bearer
from tests.live import LiveServer, free_port, loopback_server

pytestmark = pytest.mark.sqlite_only  # the Python client, on SQLite alone: conftest.py

T = TypeVar("T")
WAIT_S = 20.0


async def bounded(awaitable: Awaitable[T], timeout_s: float = WAIT_S) -> T:
    return await asyncio.wait_for(awaitable, timeout_s)


async def take(stream: EventStream, count: int, timeout_s: float = WAIT_S) -> list[Event]:
    async with asyncio.timeout(timeout_s):
        return [await anext(stream) for _ in range(count)]


async def subscribers(url: str, room: str) -> int:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        return int((await bounded(http.get(f"/api/rooms/{room}"))).json()["subscribers"])


async def wait_until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    try:
        async with asyncio.timeout(WAIT_S):
            while not await check():  # noqa: ASYNC110 (a server's state: nothing to await)
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


async def subscribed(url: str, room: str, count: int = 1) -> None:
    async def check() -> bool:
        return await subscribers(url, room) == count

    await wait_until(check, f"{count} subscriber(s) of {room}")


def seen(events: Sequence[Event | MessageEvent]) -> list[tuple[int | None, str]]:
    return [
        (e.id, e["text"] if isinstance(e, Event) else e.text)  # what a user reads
        for e in events
    ]


# --- requests ---------------------------------------------------------------------------------


async def test_post_batch_and_history_round_trip(server: LiveServer, room: str) -> None:
    async with ChatClient(server.url) as chat:
        first = await bounded(chat.post(room, "hello", author="alice"))
        assert isinstance(first, Message)
        assert (first.type, first.room, first.author, first.text) == (
            "message",
            room,
            "alice",
            "hello",
        )
        reply = await bounded(chat.post(room, "hi back", author="bob", reply_to=first.id))
        assert (reply.reply_to, reply.reply_to_author) == (first.id, "alice")
        batch = await bounded(
            chat.post_batch(
                room, [{"author": "carol", "text": "one"}, {"author": "carol", "text": "two"}]
            )
        )
        assert [m.text for m in batch] == ["one", "two"]
        assert batch[1].id == batch[0].id + 1  # consecutive, in order

        page = await bounded(chat.history(room))
        assert not page.has_more
        assert [(m.id, m.author, m.text) for m in page.messages] == [
            (first.id, "alice", "hello"),
            (reply.id, "bob", "hi back"),
            (batch[0].id, "carol", "one"),
            (batch[1].id, "carol", "two"),
        ]
        assert page.messages[1].reply_to_author == "alice"
        assert all(m.reactions == {} for m in page.messages)

        older = await bounded(chat.history(room, before=batch[0].id, limit=1))
        assert (seen(older.messages), older.has_more) == ([(reply.id, "hi back")], True)
        newer = await bounded(chat.history(room, after=reply.id, limit=10))
        assert seen(newer.messages) == seen(batch)
        found = await bounded(chat.history(room, q="back"))
        assert seen(found.messages) == [(reply.id, "hi back")]


async def test_a_post_with_an_idempotency_key_is_made_once(server: LiveServer, room: str) -> None:
    async with ChatClient(server.url) as chat:
        first = await bounded(chat.post(room, "once", author="alice", idempotency_key="k-1"))
        again = await bounded(chat.post(room, "once", author="alice", idempotency_key="k-1"))
        assert again == first
        page = await bounded(chat.history(room))
        assert seen(page.messages) == [(first.id, "once")]


async def test_refusals_raise_typed_errors(server: LiveServer, room: str) -> None:
    async with ChatClient(server.url) as chat:
        with pytest.raises(RequestRefused) as bad_room:
            await bounded(chat.post("Bad_Room", "x", author="alice"))
        assert (bad_room.value.status, bad_room.value.code) == (400, "invalid_room")
        assert "Bad_Room" in bad_room.value.message
        assert str(bad_room.value).startswith("400 invalid_room: ")

        with pytest.raises(NotFound) as missing:
            await bounded(chat.history(f"{room}-nowhere"))
        assert (missing.value.status, missing.value.code) == (404, "not_found")

        with pytest.raises(RequestRefused) as invalid:
            await bounded(chat.post(room, "x"))  # no author, no token: 422
        assert (invalid.value.status, invalid.value.code) == (422, "validation_error")
        assert invalid.value.details

        stream = chat.events("Bad_Room", since=0)
        with pytest.raises(RequestRefused) as refused_stream:
            await bounded(anext(stream))
        assert refused_stream.value.code == "invalid_room"
        with pytest.raises(StopAsyncIteration):  # it does not retry what cannot succeed
            await bounded(anext(stream))

        with pytest.raises(RequestRefused) as bad_filter:
            await bounded(anext(chat.events(room, Filters(types="bogus"), since=0)))
        assert bad_filter.value.code == "invalid_query"


async def test_an_unreachable_service_raises_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with ChatClient(url) as chat:
        with pytest.raises(Unreachable, match=f"cannot reach {url}"):
            await bounded(chat.post("general", "x", author="alice"))


# --- streams ----------------------------------------------------------------------------------


async def test_events_replay_then_live_in_id_order_once(server: LiveServer, room: str) -> None:
    one, two, other = f"{room}-a", f"{room}-b", f"{room}-c"
    async with ChatClient(server.url) as chat:
        start = await bounded(chat.post(one, "start", author="alice"))
        async with chat.events([one, two], since=start.id - 1) as stream:
            assert seen(await take(stream, 1)) == [(start.id, "start")]  # replayed: subscribed

            async def post(target: str, i: int) -> Message:
                return await chat.post(target, f"{target} {i}", author="alice")

            sent = await bounded(
                asyncio.gather(*(post(r, i) for i in range(10) for r in (one, two, other)))
            )
            wanted = sorted((m for m in sent if m.room != other), key=lambda m: m.id)
            got = await take(stream, len(wanted))
            end = await bounded(chat.post(two, "end", author="alice"))
            assert seen(await take(stream, 1)) == [(end.id, "end")]  # nothing else came first
    assert seen(got) == seen(wanted)  # in id order, none twice, none from the third room
    assert {e.room for e in got} == {one, two}
    assert all(e.type == "message" and e.created_at for e in got)
    assert got[0].parse(Message) == wanted[0]


async def test_events_of_every_room_and_filters(server: LiveServer, room: str) -> None:
    async with ChatClient(server.url) as chat:
        start = await bounded(chat.post(room, "start", author="alice"))
        everything = chat.events("*", since=start.id - 1)
        not_bob = chat.events(room, Filters(exclude_authors=["bob"], types="message"))
        async with everything, not_bob:
            assert seen(await take(everything, 1)) == [(start.id, "start")]
            later = asyncio.ensure_future(anext(not_bob))  # from now: it connects
            await subscribed(server.url, room, 2)
            await bounded(chat.post(room, "from bob", author="bob"))
            newcomer = await bounded(chat.post(f"{room}-new", "a new room", author="erin"))
            mine = await bounded(chat.post(room, "from alice", author="alice"))
            assert seen([await bounded(later)]) == [(mine.id, "from alice")]
            got = await take(everything, 3)
    assert [e["text"] for e in got] == ["from bob", "a new room", "from alice"]
    assert got[1].room == newcomer.room


async def test_resume_with_since_after_the_last_id(server: LiveServer, room: str) -> None:
    async with ChatClient(server.url) as chat:
        sent = await bounded(
            chat.post_batch(room, [{"author": "a", "text": f"m{i}"} for i in range(5)])
        )
        async with chat.events(room, since=sent[0].id - 1) as stream:
            first = await take(stream, 2)
        assert stream.last_id == sent[1].id
        async with chat.events(room, since=stream.last_id) as resumed:
            rest = await take(resumed, 3)
    assert seen(first + rest) == seen(sent)


async def test_from_now_misses_nothing_and_replays_nothing(server: LiveServer, room: str) -> None:
    async with ChatClient(server.url) as chat:
        await bounded(chat.post(room, "old", author="alice"))
        async with chat.events(room) as stream:  # since=None: from now
            waiting = asyncio.ensure_future(anext(stream))
            await subscribed(server.url, room)
            new = await bounded(chat.post(room, "new", author="alice"))
            assert seen([await bounded(waiting)]) == [(new.id, "new")]


async def test_rooms_and_latest_id_see_past_the_first_page(
    make_server: Callable[..., LiveServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``rooms()`` follows ``GET /api/rooms``'s pages, so ``latest_id`` (and with it a stream
    "from now", and ``chat tail``) sees a room that sorts past the first page: with one page
    of the server's default 200 it read 0 here and a stream from now replayed the history."""
    live = make_server()
    names = [f"r{i:03d}" for i in range(201)]  # one more than the server's default page
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as http:
        for name in names:
            assert (await http.put(f"/api/rooms/{name}", json={})).status_code == 201
    monkeypatch.setattr("chat.client.chat_client.ROOM_PAGE", 150)  # two pages of this client
    async with ChatClient(live.url) as chat:
        last = await bounded(chat.post(names[-1], "the newest event", author="alice"))
        assert [room.name for room in await bounded(chat.rooms())] == names
        assert await bounded(chat.latest_id()) == last.id


async def test_rooms_stops_when_a_server_pages_in_place() -> None:
    """A server (or a proxy, or an older build) that says ``has_more`` with a ``next`` that
    does not move on would have rooms() ask for the same page forever: it raises instead."""
    asked: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        room = {"name": "a", "title": "a", "created_at": "2026-12-05T00:00:00.000Z"}
        room |= {"last_event_id": 1, "subscribers": 0}
        return httpx.Response(200, json={"rooms": [room], "has_more": True, "next": "a"})

    async with ChatClient("http://chat.test", transport=httpx.MockTransport(answer)) as chat:
        with pytest.raises(ClientError, match="does not move on"):
            await bounded(chat.rooms())
    assert len(asked) == 2  # the first page, and the one that named the same `next`


@pytest.mark.parametrize("how", ["terminate", "kill"])
async def test_every_message_once_in_order_across_a_server_restart(
    make_server: Callable[..., LiveServer], how: str
) -> None:
    live = make_server(CHAT_RETRY_MS="200")
    room = "ops"
    noticed, go_on = asyncio.Event(), asyncio.Event()
    pauses: list[Reconnect] = []

    async def on_reconnect(pause: Reconnect) -> None:
        """Holds the reconnection until the test has restarted the server and posted."""
        pauses.append(pause)
        noticed.set()
        await go_on.wait()

    async with asyncio.timeout(90), ChatClient(live.url) as chat:
        sent = [await chat.post(room, f"before {i}", author="alice") for i in range(3)]
        async with chat.events(room, since=0, on_reconnect=on_reconnect) as stream:
            got = await take(stream, 3)  # replayed
            sent += [await chat.post(room, f"live {i}", author="alice") for i in range(2)]
            got += await take(stream, 2)
            waiting = asyncio.ensure_future(anext(stream))  # iterating when the server goes
            await asyncio.to_thread(live.terminate if how == "terminate" else live.kill)
            await bounded(noticed.wait())
            await asyncio.to_thread(live.start)  # the same port and database
            sent.append(await chat.post(room, "while it was away", author="alice"))
            assert await subscribers(live.url, room) == 0  # it has not reconnected yet
            go_on.set()
            got.append(await bounded(waiting))
            sent += [await chat.post(room, f"after {i}", author="alice") for i in range(3)]
            got += await take(stream, 3)
            end = await chat.post(room, "end", author="alice")
            assert seen(await take(stream, 1)) == [(end.id, "end")]  # no late duplicate first
    assert seen(got) == seen(sent)  # all, in order, none twice
    assert pauses[0].last_id == sent[4].id  # it resumed after the last event it yielded


async def test_an_unknown_resume_point_raises_stream_reset(server: LiveServer, room: str) -> None:
    async with ChatClient(server.url) as chat:
        first = await bounded(chat.post(room, "one", author="alice"))
        stream = chat.events(room, since=first.id + 1_000_000)
        async with stream:
            with pytest.raises(StreamReset) as caught:
                await bounded(anext(stream))
            assert caught.value.reason == "unknown_resume_point"
            assert caught.value.room == room
            assert first.id <= caught.value.latest_id == stream.last_id
            # reload over REST, then iterate the same stream again: it carries on, live
            assert seen((await bounded(chat.history(room))).messages) == [(first.id, "one")]
            later = await bounded(chat.post(room, "two", author="alice"))
            assert seen(await take(stream, 1)) == [(later.id, "two")]


async def test_a_gap_over_the_replay_limit_calls_on_reset(
    make_server: Callable[..., LiveServer],
) -> None:
    live = make_server(CHAT_REPLAY_LIMIT="2")
    resets: list[Reset] = []
    told = asyncio.Event()

    async def on_reset(reset: Reset) -> None:
        resets.append(reset)
        told.set()

    async with ChatClient(live.url) as chat:
        sent = await bounded(
            chat.post_batch("big", [{"author": "alice", "text": f"m{i}"} for i in range(5)])
        )
        async with chat.events("big", since=0, on_reset=on_reset) as stream:
            waiting = asyncio.ensure_future(anext(stream))
            await bounded(told.wait())
            after = await bounded(chat.post("big", "after the reset", author="alice"))
            assert seen([await bounded(waiting)]) == [(after.id, "after the reset")]
    assert [(r.reason, r.latest_id, r.room) for r in resets] == [
        ("gap_too_large", sent[-1].id, "big")
    ]


async def test_a_filtered_stream_resumes_from_what_it_passed_over_across_a_restart(
    make_server: Callable[..., LiveServer],
) -> None:
    """``tail --authors alice`` in a busy room lost alice's message posted while the server
    restarted: it resumed from alice's last message, the server counted every message of
    bob's since as the gap, and past CHAT_REPLAY_LIMIT it answered ``reset`` (a probe). The
    client now moves its cursor with the server's ``position`` events, never yielded."""
    live = make_server(CHAT_HEARTBEAT_SECONDS="0.3", CHAT_REPLAY_LIMIT="5", CHAT_RETRY_MS="100")
    resets: list[Reset] = []
    async with (
        ChatClient(live.url) as chat,
        chat.events("busy", Filters(authors="alice"), since=0, on_reset=resets.append) as stream,
    ):
        first = await bounded(chat.post("busy", "A", author="alice"))
        assert seen(await take(stream, 1)) == [(first.id, "A")]
        passed = await bounded(
            chat.post_batch("busy", [{"author": "bob", "text": f"b{i}"} for i in range(20)])
        )
        waiting = asyncio.ensure_future(anext(stream))
        try:

            async def moved() -> bool:
                return (stream.last_id or 0) >= passed[-1].id

            await wait_until(moved, "a position past bob's messages")
            assert await asyncio.to_thread(live.terminate, 20) == 0
            await asyncio.to_thread(live.start)
            await bounded(chat.post("busy", "c", author="bob"))
            missed = await bounded(chat.post("busy", "B", author="alice"))
            assert seen([await bounded(waiting)]) == [(missed.id, "B")]
        finally:
            waiting.cancel()
    assert resets == []


# --- identity ---------------------------------------------------------------------------------


async def test_a_token_is_sent_and_refusals_are_typed(
    make_server: Callable[..., LiveServer],
) -> None:
    live = make_server(CHAT_AUTH="required")
    async with Seed(live.database) as seed:
        frank, grace = await seed.token("frank"), await seed.token("grace")

    async with ChatClient(live.url) as anonymous:
        with pytest.raises(Unauthorized) as no_token:
            await bounded(anonymous.post("lobby", "hi", author="frank"))
        assert (no_token.value.status, no_token.value.code) == (401, "unauthorized")
        with pytest.raises(Unauthorized):
            await bounded(anext(anonymous.events("lobby", since=0)))
        with pytest.raises(Unauthorized):
            await bounded(anext(anonymous.events("lobby")))

    async with ChatClient(live.url, token=frank) as chat:
        hello = await bounded(chat.post("lobby", "hello"))  # the token names the author
        assert hello.author == "frank"
        async with chat.events("lobby", since=hello.id - 1) as stream:
            assert seen(await take(stream, 1)) == [(hello.id, "hello")]
        with pytest.raises(Forbidden) as other_name:
            await bounded(chat.post("lobby", "as grace", author="grace"))
        assert other_name.value.code == "forbidden" and "frank" in other_name.value.message
        async with httpx.AsyncClient(base_url=live.url, headers=bearer(frank)) as http:
            made = await bounded(http.put("/api/rooms/secret", json={"private": True}))
            assert made.status_code == 201, made.text
        await bounded(chat.post("secret", "for members"))

    async with ChatClient(live.url, token=grace) as chat:
        with pytest.raises(NotFound):  # to a non-member a private room does not exist
            await bounded(anext(chat.events("secret", since=0)))
        with pytest.raises(NotFound):
            await bounded(chat.history("secret"))


# --- notifications ----------------------------------------------------------------------------


async def test_notifications_of_a_mention(server: LiveServer, room: str) -> None:
    user = f"nina-{room}"[:60]
    async with ChatClient(server.url) as chat:
        before = await bounded(chat.unread_notifications(user))
        mention = await bounded(chat.post(room, f"look @{user}", author="alice"))
        page = await bounded(chat.notifications(user))
        assert not page.has_more
        (group,) = page.groups
        assert (group.kind, group.room, group.message_id) == ("mention", room, mention.id)
        assert (group.actors, group.count, group.unread) == (["alice"], 1, True)
        assert group.latest_event_id == mention.id
        assert await bounded(chat.unread_notifications(user)) == before + 1
        marked = await bounded(chat.mark_notifications_read(user, mention.id))
        assert (marked.read_until, marked.unread) == (mention.id, 0)
        assert await bounded(chat.unread_notifications(user)) == 0
        empty = await bounded(chat.notifications(user, before=mention.id))
        assert (empty.groups, empty.has_more) == ([], False)


async def test_a_notification_feed_followed_live_and_resumed(server: LiveServer, room: str) -> None:
    """``notification_events``: each update of a group once, in order, with its state; a
    resume from the first update sends the group as it is now, once."""
    user = f"otto-{room}"[:60]
    async with ChatClient(server.url) as chat:
        mine = await bounded(chat.post(room, "vote here", author=user))
        url = f"{server.url}/api/rooms/{room}/messages/{mine.id}/reactions"
        since = mine.id  # a stream opens when first iterated: from here, not from then
        async with chat.notification_events(user, since=since) as feed, httpx.AsyncClient() as http:
            first = await bounded(http.post(url, json={"author": "ann", "emoji": "👍"}))
            (one,) = await take(feed, 1)
            second = await bounded(http.post(url, json={"author": "cy", "emoji": "👍"}))
            (two,) = await take(feed, 1)
        assert (one.type, one.id, two.id) == (
            "notification",
            first.json()["id"],
            second.json()["id"],
        )
        group = two.parse(NotificationGroup)
        assert (group.kind, group.count, group.actors) == ("reaction", 2, ["cy", "ann"])
        assert (two.room, two.created_at) == (room, two["latest_at"])  # as every event has
        async with chat.notification_events(user, since=one.id) as again:
            (resumed,) = await take(again, 1)
        assert (resumed.id, resumed["count"]) == (two.id, 2)


# --- a server that misbehaves -----------------------------------------------------------------


class Replayer:
    """Answers a 503 first, then every stream replays ids 1..N from the start whatever
    ``Last-Event-ID`` says (N grows), and closes."""

    def __init__(self) -> None:
        self.resume_ids: list[str | None] = []
        self.url = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        headers = dict(line.split(": ", 1) for line in head.split("\r\n")[1:] if ": " in line)
        self.resume_ids.append({k.lower(): v for k, v in headers.items()}.get("last-event-id"))
        if len(self.resume_ids) == 1:
            body = b'{"error": {"code": "unavailable", "message": "busy"}}'
            writer.write(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                b"Retry-After: 0\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%b"
                % (len(body), body)
            )
        else:
            upto = 2 if len(self.resume_ids) == 2 else 4
            frames = ["retry: 50\r\n: connected\r\n\r\n"]
            for i in range(1, upto + 1):
                data = f'{{"id": {i}, "type": "message", "room": "r", "text": "m{i}"}}'
                frames.append(f"id: {i}\r\nevent: message\r\ndata: {data}\r\n\r\n")
            frames.append('event: typing\ndata: {"type": "typing", "room": "r", "user": "x"}\n\n')
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
                + "".join(frames).encode()
            )
        await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


@contextlib.asynccontextmanager
async def replayer() -> AsyncIterator[Replayer]:
    fake = Replayer()
    async with loopback_server(fake.handle) as fake.url:
        yield fake


async def test_ids_sent_again_are_never_yielded_twice() -> None:
    pauses: list[Reconnect] = []
    async with replayer() as fake, ChatClient(fake.url) as chat:
        stream = chat.events("r", since=0, on_reconnect=pauses.append)
        async with stream:
            got = await take(stream, 7)
    persisted = [e.id for e in got if e.id is not None]
    assert persisted == [1, 2, 3, 4]
    assert [e.type for e in got if e.id is None] == ["typing"] * 3
    assert fake.resume_ids[:4] == ["0", "0", "2", "4"]  # the 503 was retried, then resumed
    assert pauses[0].reason.startswith("503 unavailable")


def turned_away(retry_ms: int) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]:
    """A server that turns every stream away as one over CHAT_MAX_STREAMS is (API.md,
    Streams): 200, ``retry: retry_ms``, a comment saying why, and the end."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
            b"retry: %d\n: too many open streams on this server\n\n" % retry_ms
        )
        await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    return handle


turn_away = turned_away(3000)


async def test_a_server_that_turns_streams_away_is_backed_off_up_to_max_backoff() -> None:
    """Two defects a probe found: the comment of a server turning a stream away counted as a
    heartbeat, so the pauses never grew; and the server's ``retry:`` (3 s) was the pause
    after the first, past ``max_backoff`` (the longest pause, as documented)."""
    pauses: list[Reconnect] = []
    async with loopback_server(turn_away) as url, ChatClient(url, max_backoff=1.0) as chat:
        stream = chat.events("r", since=0, on_reconnect=pauses.append)
        waiting = asyncio.ensure_future(anext(stream))
        try:

            async def paused() -> bool:
                return len(pauses) >= 4

            await wait_until(paused, "four pauses")
        finally:
            waiting.cancel()
            await stream.aclose()
    assert [p.attempt for p in pauses[:4]] == [1, 2, 3, 4]
    assert all(p.delay_s <= 1.0 for p in pauses), pauses


async def test_closing_the_client_while_a_stream_pauses_ends_its_iteration() -> None:
    """A probe: ``aclose()`` while a stream waited to reconnect made the iteration raise
    httpx's ``RuntimeError`` (the client has been closed); and any request of a closed client
    did so too, where every error of the library is a ``ClientError``."""
    closed = f"http://127.0.0.1:{free_port()}"
    pauses: list[Reconnect] = []
    chat = ChatClient(closed)
    stream = chat.events("r", since=0, on_reconnect=pauses.append)
    waiting = asyncio.ensure_future(anext(stream))

    async def paused() -> bool:
        return len(pauses) >= 1

    await wait_until(paused, "a pause")
    await chat.aclose()
    with pytest.raises(StopAsyncIteration):
        await bounded(waiting)
    with pytest.raises(ClientClosed):
        await bounded(chat.post("r", "after the close", author="ann"))


async def ends_when_closed(
    chat: ChatClient, stream: EventStream, closed: str, ready: Callable[[], Awaitable[object]]
) -> None:
    """Iterate ``stream``; once ``ready()`` has returned, close ``closed`` ("the stream" or
    "its client"): the iteration must end (StopAsyncIteration) within 2 s."""
    waiting = asyncio.ensure_future(anext(stream))
    try:
        await ready()
        await (stream.aclose() if closed == "the stream" else chat.aclose())
        with pytest.raises(StopAsyncIteration):
            await bounded(waiting, 2.0)
    finally:
        waiting.cancel()
        await chat.aclose()


@pytest.mark.parametrize("closed", ["the stream", "its client"])
async def test_closing_during_a_long_pause_ends_the_iteration_at_once(closed: str) -> None:
    """A probe: ``aclose()`` while a stream waited a minute to reconnect (the server's
    ``retry:``) ended its iteration only when the minute was over, where the documents say
    that closing the client or the stream while it pauses ends the iteration."""
    pauses: list[Reconnect] = []
    async with loopback_server(turned_away(60_000)) as url:
        chat = ChatClient(url, max_backoff=60.0)
        stream = chat.events("r", since=0, on_reconnect=pauses.append)

        async def paused_long() -> bool:
            return any(p.delay_s >= 30 for p in pauses)

        await ends_when_closed(chat, stream, closed, lambda: wait_until(paused_long, "a pause"))


@pytest.mark.parametrize("since", [0, None])  # None: it asks for the newest id first
@pytest.mark.parametrize("closed", ["the stream", "its client"])
async def test_closing_while_a_stream_waits_for_its_answer_ends_the_iteration_at_once(
    closed: str, since: int | None
) -> None:
    """A probe: ``aclose()`` while the stream's request waited for a server slow to answer
    took effect only when the request did (up to the client's ``timeout``), where the docs
    say iterating a closed stream stops at once."""
    asked = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        asked.set()
        await reader.read()  # never answers; done when the client has gone
        writer.close()

    async with loopback_server(silent) as url:
        chat = ChatClient(url, timeout=60.0, stream_idle_timeout=60.0)
        stream = chat.events("r", since=since)
        await ends_when_closed(chat, stream, closed, lambda: bounded(asked.wait()))


async def test_a_client_closed_as_its_stream_begins_ends_the_iteration() -> None:
    """A read of the first version of the fix above: a client closed in the moment the
    stream began its request made the iteration raise ``ClientClosed``; a closed stream
    stops."""
    async with loopback_server(turn_away) as url:
        chat = ChatClient(url)
        stream = chat.events("r", since=0)
        # once the iteration has begun (one step): its request is on its way
        await ends_when_closed(chat, stream, "its client", lambda: asyncio.sleep(0))


async def test_a_stream_closed_while_its_reconnect_is_announced_asks_nothing_more() -> None:
    """Closed by another task while an async ``on_reconnect`` is awaited (before the pause
    begins): no pause and no request follow; the iteration stops."""
    connections = 0

    async def counting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await turned_away(3000)(reader, writer)

    announced = asyncio.Event()
    go_on = asyncio.Event()

    async def on_reconnect(pause: Reconnect) -> None:
        announced.set()
        await go_on.wait()

    async with loopback_server(counting) as url, ChatClient(url) as chat:
        stream = chat.events("r", since=0, on_reconnect=on_reconnect)
        waiting = asyncio.ensure_future(anext(stream))
        try:
            await bounded(announced.wait())
            await stream.aclose()
            go_on.set()
            with pytest.raises(StopAsyncIteration):
                await bounded(waiting, 2.0)
        finally:
            waiting.cancel()
    assert connections == 1  # the first only


# --- the SSE parser ---------------------------------------------------------------------------


def parse_all(chunks: list[str]) -> tuple[list[SSEFrame | SSEComment], SSEParser]:
    parser = SSEParser()
    out: list[SSEFrame | SSEComment] = []
    for chunk in chunks:
        out += parser.feed(chunk)
    return out, parser


@pytest.mark.parametrize("line_end", ["\n", "\r\n", "\r"])
def test_the_parser_reads_every_line_ending_and_chunking(line_end: str) -> None:
    text = line_end.join(
        [
            "\ufeffretry: 250",
            ": connected",
            "",
            "id: 7",
            "event: message",
            "data: first line",
            "data:second line",
            "data",
            "",
            "event: typing",
            "data: {}",
            "",
            "id: 9",
            "",  # an id with no data dispatches nothing
            "unknown: field",
            "retry: soon",  # not digits: ignored
            "data: end",
            "",
            "data: never dispatched (no blank line)",
        ]
    )
    expected: list[SSEFrame | SSEComment] = [
        SSEComment("connected"),
        SSEFrame("message", "first line\nsecond line\n", "7"),
        SSEFrame("typing", "{}", None),
        SSEFrame("message", "end", None),
    ]
    whole, parser = parse_all([text])
    assert whole == expected and parser.retry_ms == 250
    one_by_one, _ = parse_all(list(text))  # a line end split across chunks counts once
    assert one_by_one == expected


def test_events_expose_their_payload() -> None:
    payload: dict[str, Any] = {
        "id": 3,
        "type": "message",
        "room": "r",
        "created_at": "2026-11-21T20:52:49.123Z",
        "author": "a",
        "text": "t",
    }
    event = Event(3, "message", "r", payload["created_at"], payload)
    assert (event["text"], event.get("reply_to")) == ("t", None)
    assert event.parse(Message).author == "a"
