"""A user's notification feed (API.md, "Notifications"): its pages, its unread count, its read
mark. Its stream (``/api/users/{user}/notifications/events``) is a plain route
(chat/api/event_stream.py)."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, request
from quart_schema import document_response, validate_querystring, validate_request

from chat import access, activitystreams
from chat.api.activity import as2_answer, base_url
from chat.api.deps import identity, services
from chat.filters import user_name
from chat.notification_models import (
    NotificationPage,
    NotificationQuery,
    NotificationsRead,
    NotificationsReadIn,
    NotificationsUnread,
)
from chat.store import notify

bp = Blueprint("notifications", __name__)


def _reader(user: str) -> tuple[str, list[str]]:
    """The feed's user (400 for no user name, 403 for a feed the asker may not read), and the
    rooms whose groups the asker is not shown."""
    user = user_name(user, "user", "path")
    who = identity()
    access.check_feed(who, user)
    return user, access.hidden_rooms(who, user, services().book)


@bp.get("/api/users/<user>/notifications")
@validate_querystring(NotificationQuery)
@document_response(NotificationPage)
async def notifications(user: str, query_args: NotificationQuery) -> Any:
    """The user's notification groups, newest `latest_event_id` first; `before` pages to older
    ones. That user or an admin (a guest: any name, public rooms only). With `Accept:
    application/activity+json`: an Activity Streams 2.0 `OrderedCollectionPage`."""
    user, hidden = _reader(user)
    before, limit = query_args.before, query_args.limit
    groups, has_more = await services().store.notifications(
        user, before=before, limit=limit, hidden=hidden
    )
    if activitystreams.wants_as2(request.headers.get("Accept")):
        page = activitystreams.notifications_page(groups, has_more, base_url(), user, before, limit)
        return as2_answer(page)
    return {"groups": groups, "has_more": has_more}, 200, {"Vary": "Accept"}


@bp.get("/api/users/<user>/notifications/unread")
@document_response(NotificationsUnread)
async def notifications_unread(user: str) -> dict[str, Any]:
    """How many of the user's notification groups are unread."""
    user, hidden = _reader(user)
    return {"unread": await services().store.notifications_unread(user, hidden)}


@bp.put("/api/users/<user>/notifications/read")
@validate_request(NotificationsReadIn)
@document_response(NotificationsRead)
async def notifications_read(user: str, data: NotificationsReadIn) -> dict[str, Any]:
    """Mark read every group whose `latest_event_id` is at most `until` (never backwards, never
    past the newest event): 200 with the mark and the unread count."""
    user, hidden = _reader(user)
    svc = services()
    held = await svc.store.holds_name(user)
    access.check_mark(identity(), user, held, bool(hidden))
    read_until, unread = await svc.store.write(notify.mark_read(user, data.until))
    return {"read_until": read_until, "unread": unread}
