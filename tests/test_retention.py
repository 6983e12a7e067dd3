"""Retention (CHAT_RETENTION_DAYS, issue 17; chat/store/retention.py), on both stores.

What a user sees: with retention on, history, search and replay no longer hold events older
than the setting (with their edits and reactions), while members of private rooms keep their
access; a stream that resumes from before what is kept gets one ``reset`` (reason
``expired``) and then the live stream, never a silent gap; one that resumes after it gets
every kept event. Off (the default), nothing is deleted."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import httpx
import pytest

from chat.config import Settings
from chat.delivery import Delivery, StreamRequest
from chat.events import now_rfc3339
from chat.metrics import Metrics
from chat.presence import Presence
from chat.registry import Registry
from chat.store import Store, Tx, WriteOp, accounts, retention, writes
from tests.live import LiveServer, open_stream

WAIT_S = 30.0
OLD_DAYS = 30  # how old the aged events are
KEEP_DAYS = 7


def aged(through: int, days: float) -> WriteOp[None]:
    """Make events 1..through look ``days`` old (a test's own write operation: the writer
    stamps events with the time it commits them)."""

    def op(tx: Tx) -> None:
        when = now_rfc3339(dt.datetime.now(dt.UTC) - dt.timedelta(days=days))
        tx.conn.execute("UPDATE events SET created_at = ? WHERE id <= ?", (when, through))

    return op


async def history(store: Store, room: str, q: str | None = None) -> list[str]:
    page, _ = await store.history(room, before=None, after=None, limit=200, q=q)
    return [m["text"] for m in page]


async def post(store: Store, room: str, author: str, text: str) -> int:
    event = await store.write(writes.post_message(room, author, text, None, create_room=True))
    assert event.id is not None
    return event.id


async def prune_all(store: Store, cutoff: str, chunk: int) -> int:
    covered = total = 0
    while covered := await store.write(retention.prune(cutoff, chunk)):
        total += covered
    return total


async def old_and_new(store: Store) -> tuple[int, int]:
    """Old history (OLD_DAYS): messages, a reply, an edit, reactions, a deletion, a private
    room with a member; then new messages. Returns (the last old id, the newest id)."""
    first = await post(store, "town", "ann", "ancient lore")
    await store.write(writes.add_reaction("town", first, "bob", "👍"))
    reply = await store.write(
        writes.post_message("town", "bob", "older reply", first, create_room=True)
    )
    await store.write(writes.edit_message("town", first, "ann", "ancient lore, edited"))
    doomed = await post(store, "town", "ann", "soon deleted")
    await store.write(writes.delete_message("town", doomed, "ann"))
    await store.write(accounts.create_room("vault", None, True, "ann"))
    await store.write(accounts.add_member("vault", "cat", "member", "ann"))
    await post(store, "vault", "ann", "old secret")
    old = await post(store, "town", "ann", "old last")
    await store.write(aged(old, OLD_DAYS))
    assert reply.id is not None and reply.id < old
    await post(store, "town", "ann", "fresh one")
    newest = await post(store, "vault", "cat", "fresh secret")
    return old, newest


async def test_pruning_deletes_old_events_with_what_they_made_and_keeps_access(
    database: str,
) -> None:
    store = Store(Settings(database=database), lambda events: None)
    async with asyncio.timeout(WAIT_S):
        await store.open()
        try:
            old, newest = await old_and_new(store)
            cutoff = now_rfc3339(dt.datetime.now(dt.UTC) - dt.timedelta(days=KEEP_DAYS))
            assert await prune_all(store, cutoff, chunk=3) == old  # in chunks of 3 ids
            assert await store.pruned_through() == old
            assert await history(store, "town") == ["fresh one"]
            assert await history(store, "vault") == ["fresh secret"]
            assert await history(store, "town", q="ancient") == []
            assert await history(store, "town", q="fresh") == ["fresh one"]
            kept = await store.events_after(None, 0, 100)
            assert [e.type for e in kept] == ["room.created", "member.added", "message", "message"]
            assert kept[-1].id == newest
            # access as of any kept resume point: cat was made a member long ago
            assert (await store.membership_at("cat", newest))["vault"] is True
            # nothing newer than the cutoff: a second pass deletes nothing
            assert await prune_all(store, cutoff, chunk=3) == 0
        finally:
            await store.close()


async def test_a_kept_reply_to_a_pruned_message_keeps_whom_it_answers(database: str) -> None:
    """A defect a probe found, fixed: history read a reply's ``reply_to_author`` from the
    message it answers, so once retention deleted that message the kept reply showed null
    in history while its event (replayed on a stream) still named bob. And it did not say
    that the message it answers is gone (``reply_to_deleted``), as a reply to a deleted
    message does: a client looked for it in vain (another probe)."""
    store = Store(Settings(database=database), lambda events: None)
    async with asyncio.timeout(WAIT_S):
        await store.open()
        try:
            first = await post(store, "town", "bob", "an old question")
            await store.write(aged(first, OLD_DAYS))
            reply = writes.post_message("town", "carol", "the answer", first, create_room=True)
            answer = await store.write(reply)
            cutoff = now_rfc3339(dt.datetime.now(dt.UTC) - dt.timedelta(days=KEEP_DAYS))
            assert await prune_all(store, cutoff, chunk=10) == first
            page, _ = await store.history("town", before=None, after=None, limit=10)
            shown = [
                (m["text"], m["reply_to"], m["reply_to_author"], m.get("reply_to_deleted"))
                for m in page
            ]
            assert shown == [("the answer", first, "bob", True)]
            found, _ = await store.history("town", before=None, after=None, limit=10, q="answer")
            assert [(m["reply_to_author"], m.get("reply_to_deleted")) for m in found] == [
                ("bob", True)
            ]
            replayed = [e for e in await store.events_after(None, 0, 10) if e.id == answer.id]
            assert [e.payload["reply_to_author"] for e in replayed] == ["bob"]
        finally:
            await store.close()


async def test_the_newest_event_is_kept_however_old(database: str) -> None:
    store = Store(Settings(database=database), lambda events: None)
    async with asyncio.timeout(WAIT_S):
        await store.open()
        try:
            for n in range(4):
                await post(store, "quiet", "ann", f"note {n}")
            await store.write(aged(4, OLD_DAYS))
            cutoff = now_rfc3339(dt.datetime.now(dt.UTC) - dt.timedelta(days=KEEP_DAYS))
            assert await prune_all(store, cutoff, chunk=100) == 3
            assert await history(store, "quiet") == ["note 3"]
            assert await store.latest_id() == 4
            assert await post(store, "quiet", "ann", "next") == 5  # ids go on
        finally:
            await store.close()


@pytest.fixture
def aged_server(tmp_path: Path, database: str) -> tuple[LiveServer, int, int]:
    """A live server with CHAT_RETENTION_DAYS=7 on a store holding old and new history."""

    async def fill() -> tuple[int, int]:
        store = Store(Settings(database=database), lambda events: None)
        async with asyncio.timeout(WAIT_S):
            await store.open()
            try:
                return await old_and_new(store)
            finally:
                await store.close()

    old, newest = asyncio.run(fill())
    live = LiveServer(tmp_path, {"CHAT_RETENTION_DAYS": str(KEEP_DAYS)}, database=database)
    live.start()
    yield live, old, newest  # type: ignore[misc]
    live.kill()


async def test_a_stream_resuming_from_before_what_is_kept_gets_reset_then_live(
    aged_server: tuple[LiveServer, int, int],
) -> None:
    live, old, newest = aged_server
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        async with asyncio.timeout(WAIT_S):
            while True:  # retention runs as the server starts
                answer = await client.get("/api/rooms/town/messages")
                assert answer.status_code == 200, answer.text  # what went wrong, if anything
                page = answer.json()["messages"]
                if [m["text"] for m in page] == ["fresh one"]:
                    break
                await asyncio.sleep(0.05)
            # from before what is kept: one reset, then the live stream
            async with open_stream(
                client, "/api/rooms/town/events", headers={"Last-Event-ID": "2"}
            ) as stream:
                reset = await stream.next()
                assert reset.event == "reset"
                assert reset.json() == {
                    **reset.json(),
                    "room": "town",
                    "latest_id": newest,
                    "reason": "expired",
                }
                sent = await client.post(
                    "/api/rooms/town/messages", json={"author": "dan", "text": "live"}
                )
                assert sent.status_code == 201
                got = await stream.next()
                assert (got.event, got.json()["text"]) == ("message", "live")
            # from the newest deleted id: every kept event of the room, no reset
            async with open_stream(
                client, "/api/rooms/town/events", headers={"Last-Event-ID": str(old)}
            ) as stream:
                texts = [e.json()["text"] for e in await stream.take(2)]
                assert texts == ["fresh one", "live"]


async def test_retention_off_deletes_nothing(tmp_path: Path, database: str) -> None:
    store = Store(Settings(database=database), lambda events: None)
    async with asyncio.timeout(WAIT_S):
        await store.open()
        try:
            await old_and_new(store)
        finally:
            await store.close()
    live = LiveServer(tmp_path, database=database)  # CHAT_RETENTION_DAYS unset: 0
    live.start()
    try:
        async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
            async with asyncio.timeout(WAIT_S):
                page = (await client.get("/api/rooms/town/messages")).json()["messages"]
                texts = [m["text"] for m in page]
                assert texts == ["ancient lore, edited", "older reply", "old last", "fresh one"]
                async with open_stream(
                    client, "/api/rooms/town/events", headers={"Last-Event-ID": "1"}
                ) as stream:
                    assert (await stream.next()).event == "reaction.added"
    finally:
        live.kill()


class PruningStore:
    """The store, with retention pruning just before the first replay read: the prune that
    lands between a resume's check of ``pruned_through`` and its read of the events."""

    def __init__(self, store: Store, cutoff: str) -> None:
        self.store = store
        self.cutoff = cutoff
        self.pruned = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)

    async def events_after(self, *args: object, **kwargs: object) -> object:
        if not self.pruned:
            self.pruned = await prune_all(self.store, self.cutoff, chunk=100)
        return await self.store.events_after(*args, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("retention_days", [KEEP_DAYS, 0])
async def test_a_prune_between_the_check_and_the_replay_gives_reset_not_a_gap(
    database: str, retention_days: int
) -> None:
    """retention_days 0: this process does not prune, another one sharing the store did
    before (the database has pruned events) and does again during the resume."""
    settings = Settings(database=database, retention_days=retention_days)
    store = Store(settings, lambda events: None)
    async with asyncio.timeout(WAIT_S):
        await store.open()
        try:
            old, newest = await old_and_new(store)
            await store.write(aged(2, OLD_DAYS * 2))
            cutoff = now_rfc3339(dt.datetime.now(dt.UTC) - dt.timedelta(days=KEEP_DAYS))
            if not retention_days:  # a prune before: only the oldest two, the rest is kept
                older = now_rfc3339(dt.datetime.now(dt.UTC) - dt.timedelta(days=OLD_DAYS + 1))
                assert await prune_all(store, older, chunk=100) == 2
            pruning = PruningStore(store, cutoff)
            registry = Registry()
            metrics = Metrics(lambda: 0, lambda: 0)
            presence = Presence(1.0, lambda room, user, kind: None)
            delivery = Delivery(settings, pruning, registry, metrics, presence)  # type: ignore[arg-type]
            request = StreamRequest(rooms=("town",), filter=None, resume_from="3")
            sub = delivery.subscriber(request)
            stream = delivery.open(request, sub)
            try:
                hello = await anext(stream)
                assert hello.startswith(b"retry:")
                frame = await anext(stream)
            finally:
                await stream.aclose()
            # the prune ran between the check and the read, up to the last old event
            assert pruning.pruned == old - (0 if retention_days else 2)
            assert b"event: reset" in frame, frame
            assert b'"reason":"expired"' in frame and b'"latest_id":%d' % newest in frame
        finally:
            await store.close()
