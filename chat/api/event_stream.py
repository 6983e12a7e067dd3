"""The Server-Sent Event streams: one room (``/api/rooms/{room}/events``), or several rooms
or every room on one connection (``/api/events?rooms=``). Plain routes of the pipeline.

A stream is the one request that lives for hours, so what it holds is paid once per open
connection: served as a plain route, it holds its subscriber, its generator and one small
task that waits for the disconnect, not a Quart request with its contexts, body and two
more tasks (docs/design/performance.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from hypercorn.typing import ASGIReceiveCallable

from chat import access
from chat.api.deps import Services, require_room
from chat.api.request import Request
from chat.api.transport import TransportWriter
from chat.delivery import StreamRequest
from chat.errors import InvalidQuery, NotFound, RateLimited, Unavailable
from chat.filters import parse_filter, split_list, user_name
from chat.identity import Identity
from chat.limits import client_key, pause
from chat.logs import access_log
from chat.rules import check_room
from chat.subscriber import Subscriber

log = logging.getLogger(__name__)

LIFETIME_JITTER = 0.1
STREAMS_RETRY_S = 5
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


def stream_rooms(
    room: str | None, args: Mapping[str, str], max_rooms: int = 0
) -> tuple[str, ...] | None:
    """The rooms of ``/api/rooms/{room}/events`` (``room``) or ``/api/events?rooms=``, at
    most ``max_rooms`` of them (0: any number)."""
    if room is not None:
        return (check_room(room),)
    raw = args.get("rooms")
    if raw is None:
        raise InvalidQuery("`rooms` is required: a comma-separated list, or *")
    if raw.strip() == "*":
        return None
    names = split_list(raw, "rooms")
    if not names:
        raise InvalidQuery("`rooms` names no room")
    if max_rooms and len(names) > max_rooms:
        raise InvalidQuery(f"at most {max_rooms} rooms on one stream (CHAT_MAX_ROOMS_PER_STREAM)")
    return tuple(dict.fromkeys(check_room(name) for name in names))


async def scoped_rooms(who: Identity, svc: Services) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``rooms=*`` for a credential scoped to rooms: the rooms of its scope that exist (or may
    be created), and of those the ones it may read now (``GET /api/rooms`` lists these; the
    user is present there). The stream takes the whole scope: the registry and the replay
    gate pass a private room's events from the user's ``member.added`` on (ACCESS.md), so an
    invitation made while the stream is open is followed, as on every ``rooms=*`` stream."""
    assert who.rooms is not None
    scope = []
    for name in sorted(who.rooms):
        if svc.settings.auto_create_rooms or await svc.store.get_room(name) is not None:
            scope.append(name)
    return tuple(scope), tuple(access.visible(who, scope, svc.book))


async def stream_request(
    svc: Services, request: Request, room: str | None, feed: str | None = None
) -> StreamRequest:
    """Check a stream request (400/404/503 as ChatError) and say what it asks for: a room
    stream, or (``feed``: a user name from the path) that user's notification feed."""
    if svc.shutting_down:
        raise Unavailable("the server is shutting down; reconnect in a moment")
    if len(svc.registry.subscribers) >= svc.settings.max_streams:
        raise Unavailable("too many open streams on this server", retry_after_s=5)
    query = request.scope["query_string"].decode("latin-1")
    args: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        args.setdefault(name, value)  # the first of repeated parameters, as Quart's args
    header = (request.header(b"last-event-id") or b"").decode("latin-1").strip()
    resume = header or (args.get("last_event_id", "").strip() or None)
    if feed is not None:
        owner = user_name(feed, "user", "path")
        access.check_feed(request.identity, owner)
        return StreamRequest((), None, resume, identity=request.identity, notify=owner, feed=True)
    rooms = stream_rooms(room, args, svc.settings.max_rooms_per_stream)
    who = request.identity
    present = None
    if rooms is None and who is not None and who.rooms is not None:
        rooms, present = await scoped_rooms(who, svc)
        if not present:  # a private room it may not read does not exist for it
            raise NotFound("no room of this credential's scope exists that it may read")
    else:
        for name in rooms or ():
            access.check_room(who, name, svc.book)
            await require_room(name, svc)
    flt = parse_filter(args)
    user = args.get("user", "").strip() or None
    if user is not None:
        user = user_name(user, "user")  # the one rule of user names: 400 invalid_query
    if who is not None:
        user = access.author(who, user, "user")
    elif user is not None:  # a guest: not under a name an account or a token holds (403)
        user = access.author(None, user, "user", svc.auth.reserved)
    notify = args.get("notify", "").strip().lower()
    if notify not in ("", "0", "1", "true", "false"):
        raise InvalidQuery("`notify` is 1 (or true) to carry the user's `notify` hints, or 0")
    if notify in ("1", "true") and user is None:
        raise InvalidQuery("`notify=1` needs a user: sign in, or name one with `user=`")
    hints = user if notify in ("1", "true") else None
    return StreamRequest(rooms, flt, resume, user, who, notify=hints, present=present)


class EventStreams:
    """The stream routes: ``/api/rooms/{room}/events`` and ``/api/events``."""

    def __init__(self, services: Services) -> None:
        self.services = services

    async def __call__(self, request: Request, args: Mapping[str, Any]) -> None:
        svc = self.services
        send = request.send
        start = {"type": "http.response.start", "status": 200, "headers": SSE_HEADERS}
        try:
            wanted = await stream_request(svc, request, args.get("room"), args.get("user"))
        except Unavailable as error:
            reason = "shutting_down" if svc.shutting_down else "max_streams"
            svc.metrics.streams_refused.labels(reason).inc()
            await send(start)  # type: ignore[arg-type]
            await send({"type": "http.response.body", "body": come_back(error), "more_body": False})
            return
        if request.method == "HEAD":  # the stream's headers, and no stream
            await send(start)  # type: ignore[arg-type]
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        cap = svc.settings.max_streams_per_client
        key = client_key(request.identity, request.client) if cap else ""
        if cap and not await svc.streams_per_client.acquire(key, cap):
            svc.metrics.limited("streams")
            await pause(STREAMS_RETRY_S)
            raise too_many_streams(cap)
        # One coroutine frame per stream (this one): streams are held by the thousand.
        sub = svc.delivery.subscriber(wanted)
        sub.ends_at = time.monotonic() + self.lifetime()  # the heartbeat ends it then
        watcher = asyncio.ensure_future(_close_on_disconnect(request.receive, sub))
        direct: TransportWriter | None = None
        try:
            await send(start)  # type: ignore[arg-type]
            direct = TransportWriter.under(request.raw_send)
            svc.metrics.stream_opened("transport" if direct is not None else "asgi_send")
            sub.sink = direct  # live frames are written by the flusher, the task stays parked
            async with contextlib.aclosing(svc.delivery.open(wanted, sub)) as body:
                if direct is None:
                    flusher = svc.delivery.flusher
                    async for chunk in body:
                        began = time.perf_counter()
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                        flusher.writing_s += time.perf_counter() - began  # the window's load
                else:
                    async for chunk in body:
                        if not direct.write(chunk):
                            sub.close("client_closed")
                            break  # the connection is gone
                        if direct.full():
                            await direct.drain()
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # ASGI send on a connection that is gone (the kernel gave up on it)
            sub.close("dead_peer" if direct is not None and direct.vanished() else "client_closed")
        finally:
            watcher.cancel()
            if direct is not None:  # what went past ``send``: the request line's bytes too
                request.sent_bytes += direct.written
            if cap:
                await svc.streams_per_client.release(key)
            reason = sub.ended_by or "client_closed"  # cancelled: the client went away
            svc.metrics.streams_ended.labels(reason).inc()
            if access_log.isEnabledFor(logging.INFO):
                _log_stream(request, wanted, sub, reason)

    def lifetime(self) -> float:
        """This stream's lifetime: CHAT_STREAM_MAX_SECONDS, less up to 10% at random (inf: none)."""
        most = self.services.settings.stream_max_seconds
        return most * (1 - LIFETIME_JITTER * random.random()) if most > 0 else math.inf


def too_many_streams(cap: int) -> RateLimited:
    return RateLimited(
        f"this client has {cap} open streams (CHAT_MAX_STREAMS_PER_CLIENT): close one first",
        STREAMS_RETRY_S,
        [
            (b"ratelimit-policy", b'"streams";q=%d' % cap),
            (b"ratelimit", b'"streams";r=0;t=%d' % STREAMS_RETRY_S),
        ],
    )


def _log_stream(request: Request, wanted: StreamRequest, sub: Subscriber, reason: str) -> None:
    """The stream's line in the access log, at its end (ACCESS.md, Logs)."""
    who = request.identity
    duration_s = round(time.perf_counter() - request.started, 3)
    rooms = "*" if wanted.rooms is None else ",".join(wanted.rooms)
    if wanted.feed:
        rooms = f"notifications of {wanted.notify}"
    access_log.info(
        "stream of %s ended (%s) after %.1f s, %d events",
        rooms,
        reason,
        duration_s,
        sub.events_sent,
        extra={
            "event": "stream",
            "request_id": request.request_id().decode(),
            "rooms": rooms,
            "duration_s": duration_s,
            "events": sub.events_sent,
            "bytes": sub.bytes_sent,
            "reason": reason,
            "user": None if who is None else who.user,
            "client": request.client,
        },
    )


def come_back(error: Unavailable) -> bytes:
    """The body of a stream that cannot be served now (API.md, Streams): a ``retry:`` of
    ``retry_after_s`` to twice that, at random so that the clients come back spread out, and
    the reason. A status other than 200 would end a standard EventSource for good."""
    retry_ms = int((error.retry_after_s or 1) * 1000 * (1 + random.random()))
    reason = error.message.replace("\n", " ")
    return b"retry: %d\n: %s\n\n" % (retry_ms, reason.encode())


async def _close_on_disconnect(receive: ASGIReceiveCallable, sub: Subscriber) -> None:
    """A client that goes away ends its stream: the generator leaves its loop and cleans up.
    A connection the kernel gave up on (no answer within CHAT_DEAD_PEER_SECONDS) is a dead
    peer, where the stream's connection can be seen (``TransportWriter.vanished``)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            direct = sub.sink
            vanished = isinstance(direct, TransportWriter) and direct.vanished()
            sub.close("dead_peer" if vanished else "client_closed")
            return
