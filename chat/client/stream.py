"""``EventStream``: the events of ``ChatClient.events``, resumed by id across reconnections."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import inspect
import json
import logging
import random
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from chat.client.errors import (
    RequestRefused,
    ResponseError,
    StreamReset,
    Unreachable,
    describe,
)
from chat.client.sse import SSEComment, SSEFrame, SSEParser
from chat.client.types import AsyncClosing, Event, OnReconnect, OnReset, Reconnect, Reset

if TYPE_CHECKING:
    from chat.client.chat_client import ChatClient

log = logging.getLogger("chat.client")
T = TypeVar("T")

DEFAULT_RETRY_S = 1.0  # until the server's `retry:` says otherwise
MIN_RETRY_S = 0.05


async def _call(callback: Callable[[Any], object], argument: Any) -> None:
    result = callback(argument)
    if inspect.isawaitable(result):
        await result


class EventStream(AsyncClosing):
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
        self._waiting: asyncio.Timeout | None = None  # a pause or request aclose() cuts short

    def __aiter__(self) -> EventStream:
        return self

    async def aclose(self) -> None:
        """End the stream (its connection too); iterating it then stops at once."""
        self._closed = True
        if self._waiting is not None:  # a pause or a request under way ends at once
            with contextlib.suppress(RuntimeError):  # its end already under way
                self._waiting.reschedule(asyncio.get_running_loop().time())
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
                await self._dropped(f"the stream broke off: {describe(error)}")
                continue
            self._pending.extend(self._parser.feed(self._decoder.decode(chunk)))
            if self._parser.retry_ms is not None:
                self._retry_s = max(MIN_RETRY_S, self._parser.retry_ms / 1000)
        raise StopAsyncIteration

    async def _dispatch(self, item: SSEFrame | SSEComment) -> Event | None:
        if isinstance(item, SSEComment):
            if item.text == "ping":  # a heartbeat: the stream is healthy (not the comment of
                self._delivered = True  # a server that turns it away: that one backs off)
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
        if kind == "position":  # passed over up to here (a filter): resume from here
            self._delivered = True
            read_to = payload.get("latest_id")
            if isinstance(read_to, int) and (self.last_id is None or read_to > self.last_id):
                self.last_id = read_to
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
                if self._closed:  # closed (or its client) while it paused: iteration stops
                    return
            try:
                if self.last_id is None:  # from now: know where "now" is before anything
                    latest = await self._unless_closed(self._client.latest_id)
                    if latest is None:
                        return
                    self.last_id = latest
                response = await self._unless_closed(
                    lambda: self._client.open_stream(self._path, self._params, self.last_id)
                )
                if response is None:
                    return
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

    async def _unless_closed(self, work: Callable[[], Awaitable[T]]) -> T | None:
        """``work()``'s result; None, without starting it, once the stream is closed, or when
        ``aclose()`` cuts it short (a pause, or a request to a server slow to answer). It runs
        in this task, under a timeout that ``aclose()`` moves to now: cancelled as by a
        timeout, with httpx closing what it had opened."""
        if self._closed:
            return None
        waiting = self._waiting = asyncio.timeout(None)
        try:
            async with waiting:
                return await work()
        except TimeoutError:
            if not waiting.expired():  # the work's own, not aclose()'s
                raise
            return None
        finally:
            self._waiting = None

    async def _pause(self, why: str) -> None:
        self._failures += 1
        longest = self._client.max_backoff  # the longest pause, whatever the server's retry:
        delay = min(longest, self._retry_s * 2 ** (self._failures - 1))
        if self._failures > 1:
            delay = min(longest, max(self._retry_s, delay * random.uniform(0.5, 1.0)))
        if self._retry_after is not None:
            delay = max(delay, self._retry_after)
            self._retry_after = None
        log.debug("%s; reconnecting in %.1fs after #%s", why, delay, self.last_id)
        if self._on_reconnect is not None:
            await _call(self._on_reconnect, Reconnect(why, delay, self.last_id, self._failures))
        await self._unless_closed(lambda: asyncio.sleep(delay))

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
