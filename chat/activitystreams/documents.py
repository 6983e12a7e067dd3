"""Stored activity events and notification groups, out: as AS2 activities and
``OrderedCollectionPage``s."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from chat.activitystreams.vocabulary import (
    activity_url,
    as2_type,
    context,
    html_text,
    message_url,
    page_url,
    person,
    room_node,
    room_url,
    user_url,
)


def activity_to_as2(
    event: Mapping[str, Any], base_url: str, *, with_context: bool = True
) -> dict[str, Any]:
    """A stored ``activity`` event as an AS2 activity."""
    room, verb = event["room"], event["verb"]
    node: dict[str, Any] = {"@context": context(base_url)} if with_context else {}
    node |= {
        "id": activity_url(base_url, room, event["id"]),
        "type": as2_type(verb),
        "actor": person(base_url, event["actor"]),
        "object": {"type": "Object", "name": event["object"]},
        "published": event["created_at"],
        "context": room_node(base_url, room),
        "verb": verb,
        "eventId": event["id"],
    }
    if event.get("summary") is not None:
        node["summary"] = html_text(event["summary"])
    if event.get("data") is not None:
        node["data"] = event["data"]
    return node


def collection_page(
    items: Sequence[Mapping[str, Any]],
    *,
    base_url: str,
    collection_url: str,
    before: int | None,
    limit: int,
    next_before: int | None,
    prev_url: str | None,
) -> dict[str, Any]:
    """An ``OrderedCollectionPage`` of AS2 items (newest first, without their own context):
    ``next`` pages to older items (``next_before``: the JSON API's ``before`` cursor), and
    ``prev`` is the newer page when there is one."""
    page: dict[str, Any] = {
        "@context": context(base_url),
        "id": page_url(collection_url, before, limit),
        "type": "OrderedCollectionPage",
        "partOf": collection_url,
        "orderedItems": list(items),
    }
    if next_before is not None:
        page["next"] = page_url(collection_url, next_before, limit)
    if prev_url is not None:
        page["prev"] = prev_url
    return page


def activity_page(
    events: Sequence[Mapping[str, Any]],
    has_more: bool,
    base_url: str,
    room: str,
    before: int | None,
    limit: int,
    newer_before: int | None = None,
) -> dict[str, Any]:
    """A page of a room's activity history (``events`` ascending, as the store gives them).
    ``newer_before``: the cursor of the page just newer, when ``before`` is given (None:
    the newest page)."""
    collection = f"{room_url(base_url, room)}/activity"
    items = [activity_to_as2(e, base_url, with_context=False) for e in reversed(events)]
    prev = None if before is None else page_url(collection, newer_before, limit)
    oldest = events[0]["id"] if has_more and events else None
    return collection_page(
        items,
        base_url=base_url,
        collection_url=collection,
        before=before,
        limit=limit,
        next_before=oldest,
        prev_url=prev,
    )


def notification_group_to_as2(
    group: Mapping[str, Any], base_url: str, user: str, *, with_context: bool = True
) -> dict[str, Any]:
    """A notification group (API.md, Notifications) as the AS2 activity it stands for."""
    kind, room = group["kind"], group["room"]
    you = user_url(base_url, user)
    node: dict[str, Any] = {"@context": context(base_url)} if with_context else {}
    actors = [person(base_url, a) for a in group.get("actors", [])]
    node |= {
        "id": f"{you}/notifications#{group['id']}",
        "type": "Activity",
        "actor": actors[0] if len(actors) == 1 else actors,
        "published": group["first_at"],
        "updated": group["latest_at"],
        "context": room_node(base_url, room),
        "to": you,
        "kind": kind,
        "actorCount": group["actor_count"],
        "eventCount": group["count"],
        "unread": group["unread"],
        "latestEventId": group["latest_event_id"],
    }
    if group.get("summary") is not None:
        node["summary"] = html_text(group["summary"])
    if kind == "mention":
        mention = {"type": "Mention", "href": you, "name": f"@{user}"}
        note = {"type": "Note", "id": message_url(base_url, room, group["message_id"])}
        node |= {"type": "Create", "object": note | {"tag": mention}}
    elif kind == "reply":
        replied = message_url(base_url, room, group["message_id"])
        note = {"type": "Note", "id": message_url(base_url, room, group["latest_event_id"])}
        node |= {"type": "Create", "object": note | {"inReplyTo": replied}}
    elif kind == "reaction":
        note = {"type": "Note", "id": message_url(base_url, room, group["message_id"])}
        node |= {"type": "Like", "object": note, "content": html_text(group["emoji"])}
    elif kind == "activity":
        node |= {
            "type": as2_type(group["verb"]),
            "object": {"type": "Object", "name": group["object"]},
            "verb": group["verb"],
        }
    elif kind == "membership":
        node |= {"type": "Add", "object": person(base_url, user), "target": node["context"]}
    return node


def notifications_page(
    groups: Sequence[Mapping[str, Any]],
    has_more: bool,
    base_url: str,
    user: str,
    before: int | None,
    limit: int,
) -> dict[str, Any]:
    """A page of a user's notification feed (``groups`` newest first, as the JSON API gives
    them). ``next``: the older groups (``before`` = the page's smallest
    ``latest_event_id``); ``prev``, on every page but the newest: the newest page (a group
    moves to the top when it gains an event, so a page just newer has no fixed cursor)."""
    collection = f"{user_url(base_url, user)}/notifications"
    items = [notification_group_to_as2(g, base_url, user, with_context=False) for g in groups]
    oldest = min(g["latest_event_id"] for g in groups) if has_more and groups else None
    return collection_page(
        items,
        base_url=base_url,
        collection_url=collection,
        before=before,
        limit=limit,
        next_before=oldest,
        prev_url=None if before is None else page_url(collection, None, limit),
    )
