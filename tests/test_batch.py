"""Batch publishing: all or none, consecutive ids, each broadcast as if posted alone."""

from __future__ import annotations

from typing import Any

import httpx

from tests.live import open_stream


def messages(n: int, prefix: str = "b") -> list[dict[str, Any]]:
    return [{"author": "bot", "text": f"{prefix}{i}"} for i in range(n)]


async def history_ids(client: httpx.AsyncClient, room: str) -> list[int]:
    response = await client.get(f"/api/rooms/{room}/messages", params={"limit": 200})
    return [m["id"] for m in response.json()["messages"]]


async def test_message_batch_is_streamed_in_order(client: httpx.AsyncClient, room: str) -> None:
    async with open_stream(client, f"/api/rooms/{room}/events") as stream:
        body = {"messages": [*messages(3), {"author": "ann", "text": "re", "reply_to": None}]}
        response = await client.post(f"/api/rooms/{room}/messages/batch", json=body)
        assert response.status_code == 201, response.text
        events = response.json()["events"]
        got = await stream.take(4)
    ids = [e["id"] for e in events]
    assert ids == list(range(ids[0], ids[0] + 4))  # consecutive, in the given order
    assert [e["text"] for e in events] == ["b0", "b1", "b2", "re"]
    assert [e.json() for e in got] == events  # each broadcast exactly as answered
    assert await history_ids(client, room) == ids


async def test_a_large_batch_reads_back_as_posted(client: httpx.AsyncClient, room: str) -> None:
    """Enough messages for PostgreSQL to write their events and messages with a COPY (from
    16 rows of a statement; replies never get there, each reads its parent first): history
    gives back every author and text as posted, byte for byte (accents, an emoji, quotes, a
    backslash, a tab, a newline)."""
    odd = 'é 😀 "quoted" back\\slash\ttab\nline'
    items = [{"author": f"bot{i}", "text": f"plain {i} {odd}"} for i in range(20)]
    response = await client.post(f"/api/rooms/{room}/messages/batch", json={"messages": items})
    assert response.status_code == 201, response.text
    response = await client.get(f"/api/rooms/{room}/messages", params={"limit": 100})
    stored = response.json()["messages"]
    assert [(m["author"], m["text"]) for m in stored] == [(i["author"], i["text"]) for i in items]


async def test_a_bad_item_fails_the_whole_batch(client: httpx.AsyncClient, room: str) -> None:
    await client.post(f"/api/rooms/{room}/messages", json={"author": "a", "text": "before"})
    before = await history_ids(client, room)
    bad_schema = {"messages": [*messages(2), {"author": "x", "text": ""}]}
    response = await client.post(f"/api/rooms/{room}/messages/batch", json=bad_schema)
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["loc"][:2] == ["messages", 2]
    bad_reply = {"messages": [*messages(2), {"author": "x", "text": "y", "reply_to": 999999}]}
    response = await client.post(f"/api/rooms/{room}/messages/batch", json=bad_reply)
    assert response.status_code == 422
    detail = response.json()["error"]["details"][0]
    assert detail["loc"] == ["messages", 2, "reply_to"] and detail["index"] == 2
    for empty in ({"messages": []}, {"messages": messages(501, "x")}):
        response = await client.post(f"/api/rooms/{room}/messages/batch", json=empty)
        assert response.status_code in (413, 422)
    assert await history_ids(client, room) == before  # nothing of any failed batch stored


async def test_activity_batch_and_idempotency(client: httpx.AsyncClient, room: str) -> None:
    items = [{"actor": "ci", "verb": "built", "object": f"#{i}"} for i in range(3)]
    path = f"/api/rooms/{room}/activity/batch"
    headers = {"Idempotency-Key": f"{room}-batch"}
    first = await client.post(path, json={"items": items}, headers=headers)
    assert first.status_code == 201
    assert [e["object"] for e in first.json()["events"]] == ["#0", "#1", "#2"]
    again = await client.post(path, json={"items": items}, headers=headers)
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    other = await client.post(path, json={"items": items[:1]}, headers=headers)
    assert other.status_code == 409
    page = (await client.get(f"/api/rooms/{room}/activity")).json()
    assert page["items"] == first.json()["events"]  # stored once


async def search(client: httpx.AsyncClient, room: str, q: str) -> list[str]:
    response = await client.get(f"/api/rooms/{room}/messages", params={"q": q})
    assert response.status_code == 200, response.text
    return sorted(m["text"] for m in response.json()["messages"])


async def test_batched_messages_are_searchable_and_a_failed_batch_leaves_no_trace(
    client: httpx.AsyncClient, room: str
) -> None:
    """A batch adds its messages to the full-text index at once, after its last item; a
    batch that fails indexes nothing, and edits and deletes keep the index right."""
    single = await client.post(
        f"/api/rooms/{room}/messages", json={"author": "ann", "text": "zebra alone"}
    )
    assert single.status_code == 201
    body = {
        "messages": [
            {"author": "bot", "text": "zebra one"},
            {"author": "bot", "text": "okapi two"},
            {"author": "bot", "text": "zebra three"},
        ]
    }
    response = await client.post(f"/api/rooms/{room}/messages/batch", json=body)
    assert response.status_code == 201, response.text
    ids = [e["id"] for e in response.json()["events"]]
    assert await search(client, room, "zebra") == ["zebra alone", "zebra one", "zebra three"]
    assert await search(client, room, "okapi") == ["okapi two"]

    failing = {"messages": [{"author": "bot", "text": "quagga"}, {"author": "bot", "text": ""}]}
    response = await client.post(f"/api/rooms/{room}/messages/batch", json=failing)
    assert response.status_code == 422
    assert await search(client, room, "quagga") == []

    edited = await client.patch(
        f"/api/rooms/{room}/messages/{ids[1]}", json={"author": "bot", "text": "gnu two"}
    )
    assert edited.status_code == 200, edited.text
    deleted = await client.request(
        "DELETE", f"/api/rooms/{room}/messages/{ids[0]}", json={"author": "bot"}
    )
    assert deleted.status_code == 200, deleted.text
    assert await search(client, room, "okapi") == []
    assert await search(client, room, "gnu") == ["gnu two"]
    assert await search(client, room, "zebra") == ["zebra alone", "zebra three"]


async def published(client: httpx.AsyncClient, event_type: str) -> float:
    text = (await client.get("/metrics")).text
    prefix = f'chat_events_published_total{{type="{event_type}"}} '
    return sum(float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix))


async def test_the_published_counter_counts_every_event_of_a_batch(
    client: httpx.AsyncClient, room: str
) -> None:
    before = await published(client, "message"), await published(client, "activity")
    body = {"messages": messages(7)}
    response = await client.post(f"/api/rooms/{room}/messages/batch", json=body)
    assert response.status_code == 201, response.text
    items = [{"actor": "ci", "verb": "built", "object": f"#{i}"} for i in range(4)]
    response = await client.post(f"/api/rooms/{room}/activity/batch", json={"items": items})
    assert response.status_code == 201, response.text
    after = await published(client, "message"), await published(client, "activity")
    assert (after[0] - before[0], after[1] - before[1]) == (7, 4)
