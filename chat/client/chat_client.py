"""``ChatClient``: one service's requests, and the streams it opens (``chat.client.stream``)."""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from chat.client.errors import (
    ClientClosed,
    ClientError,
    ResponseError,
    Unreachable,
    describe,
    error_for,
)
from chat.client.stream import EventStream
from chat.client.types import AsyncClosing, Filters, HistoryPage, Message, OnReconnect, OnReset
from chat.models import ROOM_PAGE_MAX, MessageIn, Room, RoomList
from chat.notification_models import NotificationPage, NotificationsRead, NotificationsUnread

DEFAULT_TIMEOUT_S = 10.0
STREAM_IDLE_TIMEOUT_S = 60.0  # four heartbeats (CHAT_HEARTBEAT_SECONDS, 15 s) of silence
MAX_BACKOFF_S = 10.0
ROOM_PAGE = ROOM_PAGE_MAX  # rooms a GET /api/rooms asks for: the most one page holds


class ChatClient(AsyncClosing):
    """A connection to one service. ``async with ChatClient(url, token=...) as chat:``.

    ``url``: the service's base URL (a path prefix is kept). ``token``: sent as
    ``Authorization: Bearer <token>``. ``timeout``: seconds for each request (connect, read,
    write); ``stream_idle_timeout``: seconds of silence after which a stream counts as dead
    (the server pings every 15 s); ``max_backoff``: the longest pause between reconnects.
    ``http``: keyword arguments for the ``httpx.AsyncClient`` (``verify``, ``transport``,
    ...)."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        stream_idle_timeout: float = STREAM_IDLE_TIMEOUT_S,
        max_backoff: float = MAX_BACKOFF_S,
        headers: Mapping[str, str] | None = None,
        **http: Any,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.stream_idle_timeout = stream_idle_timeout
        self.max_backoff = max_backoff
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        self._http = httpx.AsyncClient(base_url=self.url, headers=sent, timeout=timeout, **http)
        self._streams: weakref.WeakSet[EventStream] = weakref.WeakSet()

    async def aclose(self) -> None:
        """Close every stream of this client, then its connections."""
        for stream in list(self._streams):
            await stream.aclose()
        await self._http.aclose()

    def _open(self) -> None:
        if self._http.is_closed:  # httpx would raise a bare RuntimeError
            raise ClientClosed(f"this client of {self.url} is closed")

    # -- requests ------------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        self._open()
        try:
            response = await self._http.request(
                method, path, json=body, params=params, headers=headers
            )
        except httpx.ConnectError as error:
            raise Unreachable(f"cannot reach {self.url}: {describe(error)}") from error
        except httpx.TransportError as error:
            raise Unreachable(f"{method} {self.url}{path} failed: {describe(error)}") from error
        if response.status_code >= 400:
            raise error_for(response)
        return response

    async def post(
        self,
        room: str,
        text: str,
        *,
        author: str | None = None,
        reply_to: int | None = None,
        idempotency_key: str | None = None,
    ) -> Message:
        """Post a message; returns the stored event, exactly what subscribers receive.
        Without ``author`` the service names the token's user. The same ``idempotency_key``
        in the same room returns the first post's event and posts nothing."""
        body: dict[str, Any] = {"text": text}
        if author is not None:
            body["author"] = author
        if reply_to is not None:
            body["reply_to"] = reply_to
        headers = {} if idempotency_key is None else {"Idempotency-Key": idempotency_key}
        response = await self._request(
            "POST", f"{_room_path(room)}/messages", body=body, headers=headers
        )
        return Message.model_validate(response.json())

    async def post_batch(
        self,
        room: str,
        messages: Sequence[MessageIn | Mapping[str, Any] | str],
        *,
        idempotency_key: str | None = None,
    ) -> list[Message]:
        """Post 1..500 messages in one transaction (all or none): consecutive ids, in order.
        Each item is a ``chat.models.MessageIn``, a mapping (``author``, ``text``,
        ``reply_to``), or just the text (from the token's user)."""
        items: list[Any] = []
        for item in messages:
            if isinstance(item, str):
                items.append({"text": item})
            elif isinstance(item, MessageIn):
                items.append(item.model_dump(exclude_none=True))
            else:
                items.append(dict(item))
        headers = {} if idempotency_key is None else {"Idempotency-Key": idempotency_key}
        response = await self._request(
            "POST", f"{_room_path(room)}/messages/batch", body={"messages": items}, headers=headers
        )
        return [Message.model_validate(event) for event in response.json()["events"]]

    async def history(
        self,
        room: str,
        *,
        before: int | None = None,
        after: int | None = None,
        limit: int | None = None,
        q: str | None = None,
    ) -> HistoryPage:
        """A page of messages (edits applied, deleted ones left out), ascending by id: the
        newest page without a cursor; ``before``/``after`` page by id; ``q`` searches."""
        params = {
            name: value
            for name, value in (("before", before), ("after", after), ("limit", limit), ("q", q))
            if value is not None
        }
        response = await self._request("GET", f"{_room_path(room)}/messages", params=params)
        return HistoryPage.model_validate(response.json())

    async def rooms(self) -> list[Room]:
        """The rooms this client may see, sorted by name: every page of ``GET /api/rooms``
        (1,000 rooms a request), following ``next`` while ``has_more``."""
        rooms: list[Room] = []
        params: dict[str, str | int] = {"limit": ROOM_PAGE}
        after = ""
        while True:
            response = await self._request("GET", "/api/rooms", params=params)
            page = RoomList.model_validate(response.json())
            rooms += page.rooms
            if not page.has_more:
                return rooms
            if page.next is None or page.next <= after:  # would ask for the same page forever
                raise ClientError(f"GET /api/rooms: `next` ({page.next!r}) does not move on")
            params["after"] = after = page.next

    async def latest_id(self) -> int:
        """The newest event id in the rooms this client may see (0 when there is none). Ids
        are global: following any rooms ``since=`` it misses nothing from now on."""
        return max((room.last_event_id for room in await self.rooms()), default=0)

    async def notifications(
        self, user: str, *, before: int | None = None, limit: int = 50
    ) -> NotificationPage:
        """A page of ``user``'s notification groups, newest ``latest_event_id`` first;
        ``before``: only groups whose ``latest_event_id`` is below it (the next page)."""
        params: dict[str, str | int] = {"limit": limit}
        if before is not None:
            params["before"] = before
        response = await self._request("GET", f"{_user_path(user)}/notifications", params=params)
        return NotificationPage.model_validate(response.json())

    async def unread_notifications(self, user: str) -> int:
        """How many of ``user``'s notification groups are unread."""
        response = await self._request("GET", f"{_user_path(user)}/notifications/unread")
        return NotificationsUnread.model_validate(response.json()).unread

    async def mark_notifications_read(self, user: str, until: int) -> NotificationsRead:
        """Mark read every group whose ``latest_event_id`` is at most ``until``."""
        response = await self._request(
            "PUT", f"{_user_path(user)}/notifications/read", body={"until": until}
        )
        return NotificationsRead.model_validate(response.json())

    # -- streams -------------------------------------------------------------------------------

    def events(
        self,
        rooms: str | Sequence[str],
        filters: Filters | None = None,
        *,
        since: int | None = None,
        on_reset: OnReset | None = None,
        on_reconnect: OnReconnect | None = None,
    ) -> EventStream:
        """Follow ``rooms`` (a room, a list of rooms, or ``"*"`` for every room): an async
        iterator of ``Event`` that reconnects and resumes by itself (see the module's
        documentation for what it guarantees). ``since``: resume after this event id (None:
        from now). ``on_reset``: called with a ``Reset`` instead of raising ``StreamReset``.
        ``on_reconnect``: called with a ``Reconnect`` before each pause (an async one is
        awaited before the pause)."""
        names = [rooms] if isinstance(rooms, str) else list(rooms)
        if not names:
            raise ValueError("events() needs a room, several, or '*'")
        params = (filters or Filters()).query()
        if len(names) == 1 and names[0] != "*" and "," not in names[0]:
            path = f"{_room_path(names[0])}/events"
        else:
            path, params["rooms"] = "/api/events", ",".join(names)
        stream = EventStream(self, path, params, since, on_reset, on_reconnect)
        self._streams.add(stream)
        return stream

    def notification_events(
        self,
        user: str,
        *,
        since: int | None = None,
        on_reset: OnReset | None = None,
        on_reconnect: OnReconnect | None = None,
    ) -> EventStream:
        """Follow ``user``'s notification feed (``GET /api/users/{user}/notifications/events``)
        with the guarantees of ``events``: an ``Event`` of type ``notification`` each time one
        of the user's groups changes, ``id`` its ``latest_event_id``, ``payload`` the group
        (``event.parse(NotificationGroup)``)."""
        stream = EventStream(
            self, f"{_user_path(user)}/notifications/events", {}, since, on_reset, on_reconnect
        )
        self._streams.add(stream)
        return stream

    async def open_stream(
        self, path: str, params: Mapping[str, str], last_id: int | None
    ) -> httpx.Response:
        """One connection of a stream: the open ``text/event-stream`` answer of ``GET path``
        from ``last_id`` (close it when done). ``EventStream`` (``events``) calls this for
        each connection and adds what a user wants: parsing, resume and reconnection."""
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if last_id is not None:
            headers["Last-Event-ID"] = str(last_id)
        self._open()
        timeout = httpx.Timeout(self.timeout, read=self.stream_idle_timeout)
        request = self._http.build_request(
            "GET", path, params=params, headers=headers, timeout=timeout
        )
        try:
            response = await self._http.send(request, stream=True)
        except httpx.ConnectError as error:
            raise Unreachable(f"cannot reach {self.url}: {describe(error)}") from error
        except httpx.TransportError as error:
            raise Unreachable(f"cannot open the stream: {describe(error)}") from error
        if response.status_code == 200:
            kind = response.headers.get("Content-Type", "")
            if kind.split(";")[0].strip().lower() == "text/event-stream":
                return response
        try:
            await response.aread()
        except httpx.TransportError as error:
            raise Unreachable(f"the stream's answer broke off: {describe(error)}") from error
        finally:
            await response.aclose()
        if response.status_code == 200:
            raise ResponseError(200, "", "the answer is not a text/event-stream")
        raise error_for(response)


def _room_path(room: str) -> str:
    return f"/api/rooms/{quote(room, safe='')}"


def _user_path(user: str) -> str:
    return f"/api/users/{quote(user, safe='')}"
