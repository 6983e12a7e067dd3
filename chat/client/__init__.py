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

from chat.client.chat_client import ChatClient
from chat.client.errors import (
    ClientClosed,
    ClientError,
    Forbidden,
    NotFound,
    RequestRefused,
    ResponseError,
    StreamReset,
    Unauthorized,
    Unreachable,
    refused,
)
from chat.client.sse import SSEComment, SSEFrame, SSEParser
from chat.client.stream import EventStream
from chat.client.types import Event, Filters, HistoryEntry, HistoryPage, Message, Reconnect, Reset
from chat.models import Room
from chat.notification_models import NotificationGroup, NotificationPage, NotificationsRead

__all__ = [
    "ChatClient",
    "ClientClosed",
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
