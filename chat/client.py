"""``chat.client``: the Python client library of the chat service (asyncio, typed).

Everything the service's HTTP contract offers a program that posts and follows rooms, on
one ``httpx.AsyncClient``::

    import asyncio
    from chat.client import ChatClient, Filters

    async def main() -> None:
        async with ChatClient("http://127.0.0.1:8000", token="chat_...") as chat:
            sent = await chat.post("general", "hello")          # a typed Message
            async for event in chat.events("general", since=sent.id - 1):
                print(event.id, event.type, event.payload)

    asyncio.run(main())

Requests (``post``, ``post_batch``, ``history``, ``notifications``, ...) are made once:
an error answer raises ``ResponseError`` (``RequestRefused`` and its subclasses for a 4xx
that repeating cannot mend), a network failure raises ``Unreachable``. A POST is retried by
nobody but the caller; give it an ``idempotency_key`` and a retry is safe.

``events(rooms, filters, since=...)`` follows one room, several, or ``"*"`` (every room,
also rooms created later) and is an async iterator of ``Event``. It guarantees:

* **Every persisted event once, in id order.** It resumes each reconnection with
  ``Last-Event-ID`` (the id of the last event it yielded), so the server replays what was
  missed, and it skips any persisted event whose id is not above the last one yielded,
  whatever a server or proxy sends again. Ephemeral events (``typing``, ``presence``,
  ``notify``) carry no id and are yielded as they come (a reconnection may miss some).
* **It reconnects by itself**: after the stream ends (a server restart, a deploy, the
  stream's lifetime), a network failure, or a ``429``/``503``/``5xx``. The first pause is the
  server's ``retry:``, then it doubles, with jitter, up to ``max_backoff`` (10 s); a
  ``Retry-After`` is honoured; a stream that delivered starts the count again.
  ``on_reconnect`` (sync or async) hears of each pause.
* **It stops only for what reconnecting cannot mend**: ``400``/``401``/``403``/``404``
  (a bad room name or filter, a token missing, revoked or expired, a room it may not
  read) raise ``RequestRefused`` (``Unauthorized``, ``Forbidden``, ``NotFound``) with the
  JSON error envelope's ``code`` and ``message``.
* **A gap it cannot fill is never silent.** When the server answers a resume with a
  ``reset`` (the gap is over ``CHAT_REPLAY_LIMIT``, or the resume point is unknown, as after
  the database was replaced), the stream raises ``StreamReset`` (``latest_id``, ``reason``):
  reload what you show over REST (``history``), then iterate the same stream again: it
  carries on live from ``latest_id``. With ``on_reset=`` (sync or async) it calls that
  instead and carries on by itself.
* ``since=None`` (the default) follows from now: it first asks for the newest event id, so
  that a reconnection before the first event still loses nothing. ``since=0`` replays the
  rooms' whole history (up to ``CHAT_REPLAY_LIMIT``), ``since=n`` everything after ``n``.
* ``stream.last_id`` is the resume cursor: keep it, and pass it as ``since=`` later.

A stream holds one HTTP connection while it is iterated; ``async with chat.events(...) as
stream:`` (or leaving ``async with ChatClient(...)``) closes it. Filters (``Filters``) are
the server's: ``types``, ``authors``, ``exclude_authors``, ``mentions``, ``user`` (presence),
``notify`` (the user's live ``notify`` events).

Types: ``Message`` and ``HistoryEntry`` extend the service's ``chat.models.MessageEvent``
and ``HistoryMessage`` (extra fields kept); ``NotificationGroup``,
``NotificationPage``, ``NotificationsRead`` and ``Room`` are ``chat.models``' own. Events
are ``Event`` (``id``, ``type``, ``room``, ``created_at`` and the whole ``payload``;
``parse`` turns one into a model, e.g. ``event.parse(Message)``). ``SSEParser`` is the
Server-Sent Events parser (WHATWG rules: ``id``/``event``/``data``/``retry`` fields,
comments, multi-line data, any line ending), usable on its own.

docs/client-python.md is the reference with examples; ``python -m chat post`` and ``tail``
are written with this module.
"""

from __future__ import annotations

import asyncio
import builtins
import codecs
import inspect
import json
import logging
import random
import re
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict

from chat.models import (
    HistoryMessage,
    MessageEvent,
    MessageIn,
    NotificationGroup,
    NotificationPage,
    NotificationsRead,
    NotificationsUnread,
    Room,
    RoomList,
)

__all__ = [
    "ChatClient",
    "ClientError",
    "Event",
    "EventStream",
    "Filters",
    "Forbidden",
    "HistoryEntry",
    "HistoryPage",
    "Message",
    "NotFound",
    "NotificationGroup",
    "NotificationPage",
    "NotificationsRead",
    "Reconnect",
    "RequestRefused",
    "Reset",
    "ResponseError",
    "Room",
    "SSEComment",
    "SSEFrame",
    "SSEParser",
    "StreamReset",
    "Unauthorized",
    "Unreachable",
    "refused",
]

log = logging.getLogger("chat.client")

DEFAULT_TIMEOUT_S = 10.0
STREAM_IDLE_TIMEOUT_S = 60.0  # four heartbeats (CHAT_HEARTBEAT_SECONDS, 15 s) of silence
MAX_BACKOFF_S = 10.0
DEFAULT_RETRY_S = 1.0  # until the server's `retry:` says otherwise
MIN_RETRY_S = 0.05


# --- errors -----------------------------------------------------------------------------------


class ClientError(Exception):
    """Anything this library raises: the service refused, failed, or could not be reached."""


class Unreachable(ClientError):
    """The request did not get an answer: connection refused or reset, DNS, TLS, timeout."""


class ResponseError(ClientError):
    """The service answered with an error status and (normally) its JSON error envelope
    ``{"error": {"code", "message", "details", "request_id"}}``. ``str()`` is
    ``"<status> <code>: <message>"``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[Any] | None = None,
        *,
        retry_after: float | None = None,
        request_id: str | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []
        self.retry_after = retry_after  # seconds, from a Retry-After header
        self.request_id = request_id
        super().__init__(f"{status} {code}: {message}" if code else f"{status}: {message}")

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed later (408, 429, 5xx)."""
        return not refused(self.status)


class RequestRefused(ResponseError):
    """A 4xx other than 408 and 429: the request itself is refused (a bad room name or
    filter, a body that breaks the schema, missing rights); repeating it cannot help."""


class Unauthorized(RequestRefused):
    """401: no credentials where the service requires them, or a token that is unknown,
    revoked or expired."""


class Forbidden(RequestRefused):
    """403: the identity may not do this (e.g. post under another author's name)."""


class NotFound(RequestRefused):
    """404: an unknown room, message or path (a private room is one, to a non-member)."""


class StreamReset(ClientError):
    """The server could not replay the gap since the stream's resume point (``reason``:
    ``gap_too_large``, ``unknown_resume_point`` or ``expired``): events up to ``latest_id``
    were skipped. Reload over REST what you show; iterating the same stream again carries on
    live from ``latest_id``."""

    def __init__(self, reset: Reset) -> None:
        self.reset = reset
        self.latest_id = reset.latest_id
        self.reason = reset.reason
        self.room = reset.room
        super().__init__(
            f"stream reset ({reset.reason}): events up to #{reset.latest_id} were skipped; "
            "reload the history"
        )


def refused(status: int) -> bool:
    """Whether retrying the same request cannot help: a 4xx other than 408 and 429."""
    return 400 <= status < 500 and status not in (408, 429)


_REFUSALS: dict[int, type[RequestRefused]] = {401: Unauthorized, 403: Forbidden, 404: NotFound}


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def error_for(response: httpx.Response) -> ResponseError:
    """The exception for an error answer (its body read already)."""
    status = response.status_code
    code, message, details, request_id = "", "", list[Any](), None
    try:
        envelope = response.json()["error"]
        code, message = str(envelope["code"]), str(envelope["message"])
        details = list(envelope.get("details") or [])
        request_id = envelope.get("request_id")
    except (ValueError, KeyError, TypeError):
        message = repr(response.content[:200])
    kind = _REFUSALS.get(status, RequestRefused) if refused(status) else ResponseError
    return kind(
        status,
        code,
        message,
        details,
        retry_after=_retry_after(response.headers.get("Retry-After")),
        request_id=request_id if isinstance(request_id, str) else None,
    )


# --- models -----------------------------------------------------------------------------------


class Message(MessageEvent):
    """A stored ``message`` event, exactly as the service sent it (``chat.models.MessageEvent``;
    fields the service adds later are kept as extras)."""

    model_config = ConfigDict(extra="allow")


class HistoryEntry(HistoryMessage):
    """A message in history: edits applied, ``reactions`` (emoji -> authors), ``edited_at``."""

    model_config = ConfigDict(extra="allow")


class HistoryPage(BaseModel):
    """``GET /api/rooms/{room}/messages``: messages ascending by id, and whether there are
    more beyond the page."""

    messages: list[HistoryEntry]
    has_more: bool


_M = TypeVar("_M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Event:
    """An event of a stream. ``id`` is None for ephemeral events (``typing``, ``presence``,
    ``notify``); ``payload`` is the whole flat JSON object the service sent."""

    id: int | None
    type: str
    room: str
    created_at: str
    payload: Mapping[str, Any] = field(repr=False)

    def __getitem__(self, key: str) -> Any:
        return self.payload[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.payload.get(key, default)

    def parse(self, model: builtins.type[_M]) -> _M:
        """The payload as a model, e.g. ``event.parse(Message)`` (pydantic validates it)."""
        return model.model_validate(dict(self.payload))


@dataclass(frozen=True, slots=True)
class Reset:
    """A ``reset`` event: replay could not cover the gap (``reason``); the stream goes on
    from ``latest_id``. ``room`` is ``*`` on a stream of several rooms."""

    latest_id: int
    reason: str
    room: str
    payload: Mapping[str, Any] = field(repr=False)


@dataclass(frozen=True, slots=True)
class Reconnect:
    """What ``on_reconnect`` hears before each pause: why the stream ended or could not
    open, how long the pause is, where it resumes, and the how-manieth try in a row."""

    reason: str
    delay_s: float
    last_id: int | None
    attempt: int


def _names(value: str | Sequence[str] | None) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else ",".join(value)
    return text or None


@dataclass(frozen=True, slots=True)
class Filters:
    """The server's per-stream filter (API.md, Streams); each list is a sequence of names or
    one comma-separated string. ``user``: who is connected (presence; a guest's identity for
    ``notify``); ``notify``: also the live ``notify`` events of the stream's user."""

    types: str | Sequence[str] | None = None
    authors: str | Sequence[str] | None = None
    exclude_authors: str | Sequence[str] | None = None
    mentions: str | Sequence[str] | None = None
    user: str | None = None
    notify: bool = False

    def query(self) -> dict[str, str]:
        """The query parameters, only those set."""
        params = {
            name: text
            for name, text in (
                ("types", _names(self.types)),
                ("authors", _names(self.authors)),
                ("exclude_authors", _names(self.exclude_authors)),
                ("mentions", _names(self.mentions)),
                ("user", self.user),
            )
            if text
        }
        if self.notify:
            params["notify"] = "1"
        return params


# --- Server-Sent Events -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SSEFrame:
    """One dispatched event: its ``event:`` type (``message`` by default), its data (the
    ``data:`` lines joined with ``\\n``), and the ``id:`` given in the frame itself (None
    when it had none: the service's ephemeral events)."""

    event: str
    data: str
    id: str | None


@dataclass(frozen=True, slots=True)
class SSEComment:
    """A comment line (``: ping``), without its colon and first space."""

    text: str


_LINE_END = re.compile(r"\r\n|\r|\n")


class SSEParser:
    """An incremental ``text/event-stream`` parser (WHATWG HTML, "Parsing an event stream"):
    feed it decoded text in chunks of any size; it returns the frames and comments that are
    complete. A ``retry:`` field sets ``retry_ms``."""

    def __init__(self) -> None:
        self.retry_ms: int | None = None
        self._buffer = ""
        self._started = False
        self._skip_lf = False  # the last chunk ended with CR: a LF first in the next is its pair
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, text: str) -> list[SSEFrame | SSEComment]:
        out: list[SSEFrame | SSEComment] = []
        if not text:
            return out
        if self._skip_lf and text.startswith("\n"):
            text = text[1:]
        self._skip_lf = False
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        buffer, pos = self._buffer + text, 0
        while (end := _LINE_END.search(buffer, pos)) is not None:
            if end.group() == "\r" and end.end() == len(buffer):
                self._skip_lf = True
            self._line(buffer[pos : end.start()], out)
            pos = end.end()
        self._buffer = buffer[pos:]
        return out

    def _line(self, line: str, out: list[SSEFrame | SSEComment]) -> None:
        if not line:
            if self._data:
                out.append(SSEFrame(self._event or "message", "\n".join(self._data), self._id))
            self._event, self._data, self._id = "", [], None
            return
        if line.startswith(":"):
            out.append(SSEComment(line[1:].removeprefix(" ")))
            return
        name, colon, value = line.partition(":")
        value = value.removeprefix(" ") if colon else ""
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)


# --- the client -------------------------------------------------------------------------------

OnReset = Callable[[Reset], object]  # may return an awaitable: it is awaited
OnReconnect = Callable[[Reconnect], object]


def _describe(error: BaseException) -> str:
    return str(error) or type(error).__name__


async def _call(callback: Callable[[Any], object], argument: Any) -> None:
    result = callback(argument)
    if inspect.isawaitable(result):
        await result


class ChatClient:
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

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every stream of this client, then its connections."""
        for stream in list(self._streams):
            await stream.aclose()
        await self._http.aclose()

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
        try:
            response = await self._http.request(
                method, path, json=body, params=params, headers=headers
            )
        except httpx.ConnectError as error:
            raise Unreachable(f"cannot reach {self.url}: {_describe(error)}") from error
        except httpx.TransportError as error:
            raise Unreachable(f"{method} {self.url}{path} failed: {_describe(error)}") from error
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
        """The rooms this client may see, sorted by name."""
        response = await self._request("GET", "/api/rooms")
        return RoomList.model_validate(response.json()).rooms

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

    async def _open(
        self, path: str, params: Mapping[str, str], last_id: int | None
    ) -> httpx.Response:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if last_id is not None:
            headers["Last-Event-ID"] = str(last_id)
        timeout = httpx.Timeout(self.timeout, read=self.stream_idle_timeout)
        request = self._http.build_request(
            "GET", path, params=params, headers=headers, timeout=timeout
        )
        try:
            response = await self._http.send(request, stream=True)
        except httpx.ConnectError as error:
            raise Unreachable(f"cannot reach {self.url}: {_describe(error)}") from error
        except httpx.TransportError as error:
            raise Unreachable(f"cannot open the stream: {_describe(error)}") from error
        if response.status_code == 200:
            kind = response.headers.get("Content-Type", "")
            if kind.split(";")[0].strip().lower() == "text/event-stream":
                return response
        try:
            await response.aread()
        except httpx.TransportError as error:
            raise Unreachable(f"the stream's answer broke off: {_describe(error)}") from error
        finally:
            await response.aclose()
        if response.status_code == 200:
            raise ResponseError(200, "", "the answer is not a text/event-stream")
        raise error_for(response)


def _room_path(room: str) -> str:
    return f"/api/rooms/{quote(room, safe='')}"


def _user_path(user: str) -> str:
    return f"/api/users/{quote(user, safe='')}"


class EventStream:
    """The events of ``ChatClient.events``: ``async for event in stream``. Iterating again
    after ``StreamReset`` carries on from the reset's ``latest_id``; ``aclose()`` (or ``async
    with``) ends it. ``last_id`` is the id of the last persisted event yielded (or the
    resume point): the cursor to resume with later."""

    def __init__(
        self,
        client: ChatClient,
        path: str,
        params: Mapping[str, str],
        since: int | None,
        on_reset: OnReset | None,
        on_reconnect: OnReconnect | None,
    ) -> None:
        self._client = client
        self._path = path
        self._params = dict(params)
        self.last_id = since
        self._on_reset = on_reset
        self._on_reconnect = on_reconnect
        self._response: httpx.Response | None = None
        self._chunks: AsyncIterator[bytes] | None = None
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._parser = SSEParser()
        self._pending: deque[SSEFrame | SSEComment] = deque()
        self._retry_s = DEFAULT_RETRY_S
        self._failures = 0  # pauses in a row without a stream that delivered
        self._why: str | None = None  # why the next connection waits first (None: it does not)
        self._retry_after: float | None = None
        self._delivered = False
        self._closed = False

    def __aiter__(self) -> EventStream:
        return self

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """End the stream (its connection too); iterating it then stops at once."""
        self._closed = True
        self._pending.clear()
        await self._disconnect()

    async def __anext__(self) -> Event:
        while not self._closed:
            while self._pending:
                event = await self._dispatch(self._pending.popleft())
                if event is not None:
                    return event
            if self._chunks is None:
                await self._connect()
                continue
            try:
                chunk = await anext(self._chunks)
            except StopAsyncIteration:
                await self._dropped("the stream ended")
                continue
            except httpx.TransportError as error:
                await self._dropped(f"the stream broke off: {_describe(error)}")
                continue
            self._pending.extend(self._parser.feed(self._decoder.decode(chunk)))
            if self._parser.retry_ms is not None:
                self._retry_s = max(MIN_RETRY_S, self._parser.retry_ms / 1000)
        raise StopAsyncIteration

    async def _dispatch(self, item: SSEFrame | SSEComment) -> Event | None:
        if isinstance(item, SSEComment):
            if item.text != "connected":  # a heartbeat: the stream is healthy
                self._delivered = True
            return None
        try:
            payload = json.loads(item.data)
        except ValueError:
            log.debug("skipped a frame that is not JSON: %.80r", item.data)
            return None
        if not isinstance(payload, dict):
            return None
        kind = str(payload.get("type") or item.event)
        room = str(payload.get("room", ""))
        if kind == "reset":
            self._delivered = True
            latest = int(payload.get("latest_id") or 0)
            self.last_id = latest  # the server goes on from here, whatever came before
            reset = Reset(latest, str(payload.get("reason", "")), room, payload)
            if self._on_reset is None:
                raise StreamReset(reset)
            await _call(self._on_reset, reset)
            return None
        event_id: int | None = None
        if item.id is not None and item.id.isascii() and item.id.isdigit():
            event_id = int(item.id)
        if event_id is not None:
            if self.last_id is not None and event_id <= self.last_id:
                return None  # yielded before a reconnection: never twice
            self.last_id = event_id
        self._delivered = True
        return Event(event_id, kind, room, str(payload.get("created_at", "")), payload)

    async def _connect(self) -> None:
        """Open the stream, pausing first when this is a reconnection; retry until it opens
        or the server refuses the request (RequestRefused)."""
        while not self._closed:
            if self._why is not None:
                await self._pause(self._why)
            try:
                if self.last_id is None:  # from now: know where "now" is before anything
                    self.last_id = await self._client.latest_id()
                response = await self._client._open(self._path, self._params, self.last_id)
            except RequestRefused:
                self._closed = True
                raise
            except ResponseError as error:
                self._why, self._retry_after = str(error), error.retry_after
                continue
            except Unreachable as error:
                self._why, self._retry_after = str(error), None
                continue
            if self._closed:  # closed while it was opening
                await response.aclose()
                return
            self._response, self._chunks = response, response.aiter_bytes()
            self._decoder.reset()
            self._parser = SSEParser()
            self._delivered = False
            self._why = None
            return

    async def _pause(self, why: str) -> None:
        self._failures += 1
        delay = min(self._client.max_backoff, self._retry_s * 2 ** (self._failures - 1))
        if self._failures > 1:
            delay = max(self._retry_s, delay * random.uniform(0.5, 1.0))
        if self._retry_after is not None:
            delay = max(delay, self._retry_after)
            self._retry_after = None
        log.debug("%s; reconnecting in %.1fs after #%s", why, delay, self.last_id)
        if self._on_reconnect is not None:
            await _call(self._on_reconnect, Reconnect(why, delay, self.last_id, self._failures))
        await asyncio.sleep(delay)

    async def _dropped(self, why: str) -> None:
        if self._delivered:
            self._failures = 0
        await self._disconnect()
        self._why = why

    async def _disconnect(self) -> None:
        chunks, response = self._chunks, self._response
        self._chunks = self._response = None
        closing = getattr(chunks, "aclose", None)
        try:
            if closing is not None:
                await closing()
        except (httpx.HTTPError, RuntimeError):
            pass
        finally:
            if response is not None:
                await response.aclose()
