"""Events: the JSON clients receive, its SSE frame, and who an event is by."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from chat.config import Settings
from chat.events import (
    EVENT_TYPES,
    PERSISTED_TYPES,
    Event,
    event_from_json,
    make_event,
    now_rfc3339,
)
from chat.filters import parse_filter
from chat.store import Store, accounts, writes

RFC3339_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def test_persisted_event_key_order_is_id_type_room_created_at_then_fields() -> None:
    event = make_event(
        "message",
        "lobby",
        {"author": "alice", "text": "hi", "reply_to": 3},
        event_id=12,
        created_at="2026-11-21T20:52:49.123Z",
    )
    keys = ["id", "type", "room", "created_at", "author", "text", "reply_to"]
    assert list(event.payload) == keys
    decoded = orjson.loads(event.json)
    assert list(decoded) == keys  # the order on the wire, not only in the dict
    assert decoded == {
        "id": 12,
        "type": "message",
        "room": "lobby",
        "created_at": "2026-11-21T20:52:49.123Z",
        "author": "alice",
        "text": "hi",
        "reply_to": 3,
    }
    assert (event.id, event.type, event.room) == (12, "message", "lobby")


def test_ephemeral_event_has_no_id_key() -> None:
    event = make_event("typing", "lobby", {"user": "bob"})
    assert event.id is None
    assert list(orjson.loads(event.json)) == ["type", "room", "created_at", "user"]
    assert not event.frame.startswith(b"id:") and b"\nid:" not in event.frame


def test_frame_carries_the_json_bytes_on_one_data_line() -> None:
    event = make_event(
        "message", "r", {"author": "a", "text": "two\nlines\r\nand\rmore"}, event_id=9
    )
    assert event.frame == b"id: 9\nevent: message\ndata: " + event.json + b"\n\n"
    assert orjson.loads(event.json)["text"] == "two\nlines\r\nand\rmore"


def test_ephemeral_frame() -> None:
    event = make_event("presence", "r", {"user": "u", "state": "join"})
    assert event.frame == b"event: presence\ndata: " + event.json + b"\n\n"


def test_created_at_format_and_value() -> None:
    before = datetime.now(UTC)
    stamp = now_rfc3339()
    after = datetime.now(UTC)
    assert RFC3339_MS.match(stamp), stamp
    parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert before - timedelta(milliseconds=1) <= parsed <= after
    made = make_event("message", "r", {"author": "a", "text": "t"}, event_id=1)
    assert RFC3339_MS.match(made.payload["created_at"])


def test_created_at_given_is_kept() -> None:
    event = make_event("typing", "r", {"user": "u"}, created_at="2001-02-03T04:05:06.007Z")
    assert orjson.loads(event.json)["created_at"] == "2001-02-03T04:05:06.007Z"


@pytest.mark.parametrize("event_id", [1, 10**12, None])
def test_event_from_json_round_trip(event_id: int | None) -> None:
    original = make_event(
        "activity",
        "ops",
        {"actor": "ci", "verb": "deployed", "object": "api", "data": {"sha": "abc", "n": [1, 2]}},
        event_id=event_id,
    )
    copy = event_from_json(original.json)
    assert copy.json == original.json
    assert copy.frame == original.frame
    assert (copy.id, copy.type, copy.room) == (original.id, original.type, original.room)
    assert copy.payload == original.payload
    assert copy.author == "ci"


def test_event_from_json_keeps_stored_bytes_as_they_are() -> None:
    stored = b'{"id": 5,  "type": "message", "room": "r", "created_at": "x", "text": "\\u00e9"}'
    event = event_from_json(stored)
    assert event.json == stored
    assert event.frame == b"id: 5\nevent: message\ndata: " + stored + b"\n\n"
    assert event.payload["text"] == "é"


@pytest.mark.parametrize(
    ("fields", "author"),
    [
        ({"author": "alice", "text": "x"}, "alice"),
        ({"actor": "deploybot", "verb": "v", "object": "o"}, "deploybot"),
        ({"user": "carol"}, "carol"),
        ({"user": "dave", "state": "leave"}, "dave"),
        ({"latest_id": 3, "reason": "gap_too_large"}, None),
        ({"actor": {"name": "not a string"}}, None),
    ],
)
def test_author_is_author_actor_or_user(fields: dict[str, Any], author: str | None) -> None:
    assert make_event("message", "r", fields).author == author


async def test_every_type_the_store_writes_is_persisted_replayed_and_can_be_asked_for(
    database: str,
) -> None:
    """Each kind of write (post, edit, react, unreact, activity, delete, a room created by a
    signed-in user, a member added and removed) through the real store:
    the types they write are exactly the persisted types; each event has an id, reaches the
    live streams (on_commit) and a resumed stream (events_after) byte for byte, and a stream
    asking for ``types=<that type>`` accepts the parameter and gets it, no other type's."""
    published: list[Event] = []
    store = Store(Settings(database=database), published.extend)
    room = "types"
    async with asyncio.timeout(30):
        await store.open()
        try:
            message = await store.write(
                writes.post_message(room, "ann", "hi", None, create_room=True)
            )
            assert message.id is not None
            written = [
                message,
                await store.write(writes.edit_message(room, message.id, "ann", "hi!")),
                await store.write(writes.add_reaction(room, message.id, "bob", "👍")),
                await store.write(writes.remove_reaction(room, message.id, "bob", "👍")),
                await store.write(
                    writes.post_activity(
                        room, {"actor": "ci", "verb": "built", "object": "x"}, create_room=False
                    )
                ),
                await store.write(writes.delete_message(room, message.id, "ann")),
            ]
            await store.write(accounts.create_room("owned", None, True, "ann"))
            written += await store.events_after(("owned",), 0, 10)
            added = await store.write(accounts.add_member("owned", "bob", "member", "ann"))
            assert added[1] is not None
            written += [
                added[1],
                await store.write(accounts.remove_member("owned", "bob", "ann")),
            ]
            replayed = await store.events_after((room, "owned"), 0, 100)
        finally:
            await store.close()

    assert {e.type for e in written} == PERSISTED_TYPES
    assert all(isinstance(e.id, int) for e in written)
    ids = [e.id or 0 for e in written]
    assert ids == sorted(set(ids))  # one id each, in the order written
    for event in written:
        assert orjson.loads(event.json)["id"] == event.id
        assert event.frame.startswith(f"id: {event.id}\nevent: {event.type}\n".encode())
    assert [e.json for e in published] == [e.json for e in written]
    assert [e.json for e in replayed] == [e.json for e in written]
    assert [(e.id, e.type, e.frame) for e in replayed] == [(e.id, e.type, e.frame) for e in written]
    for event in written:
        only = parse_filter({"types": event.type})
        assert only is not None and only.matches(event), event.type
        others = parse_filter({"types": ",".join(sorted(EVENT_TYPES - {event.type}))})
        assert others is not None and not others.matches(event), event.type
