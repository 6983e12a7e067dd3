"""The Redis broker: every event committed by any process reaches the hubs of every process.

Redis pub/sub carries the events; the SQLite store, shared by every process, stays the log
that makes delivery complete (docs/design/scale-out.md says why not Redis Streams):

- ``publish`` hands the events to this process's registry at once (through the sequencer) and
  queues them for Redis; one task sends everything queued as one ``PUBLISH``;
- one task listens on the channel and offers the other processes' events to the sequencer,
  which dispatches them in id order and reads any gap from the store;
- after every (re)subscribe, and every ``broker_poll_seconds`` in any case, the store's newest
  id is compared with what was dispatched, and whatever is missing is read from the store.
  Pub/sub loses what is published while a process is disconnected; this finds it again.

If Redis goes away, writes still commit (the store does not need Redis), ``ready()`` is
False so ``/readyz`` answers 503, the listener reconnects with capped exponential backoff,
and meanwhile the poll keeps every process's subscribers fed from the store.
A message on the channel is ``<origin>\\n<event json>\\n<event json>...``: a process skips its
own (it dispatched them already); event JSON never holds a raw newline.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from chat.config import Settings
from chat.events import Event, event_from_json
from chat.metrics import Metrics
from chat.registry import Registry
from chat.sequencer import ReadAfter, Sequencer

log = logging.getLogger(__name__)

PUBLISH_MAX_BYTES = 1 << 20  # one PUBLISH carries at most about this much
QUEUE_MAX_BYTES = 32 << 20  # queued for Redis while it is away; older batches are dropped
FIRST_BACKOFF_S = 0.1
REDIS_TIMEOUT_S = 2.0
SILENCE_CHECK_S = 5.0  # after this long with no message, the listener checks Redis answers
PRESENCE_ORIGIN = b"~"  # published by Redis itself (a Lua script): every process dispatches


class RedisBroker:
    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        read_after: ReadAfter,
        latest_id: Callable[[], Awaitable[int]],
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.latest_id = latest_id
        self.origin = uuid.uuid4().hex.encode()
        self.channel = f"{settings.broker_prefix}:events"
        self.sequencer = Sequencer(
            registry, read_after, settings.broker_gap_wait_ms / 1000, metrics.gap_fills.inc
        )
        # No retries inside redis-py: a lost connection must surface here, so that what was
        # published meanwhile is read back from the store.
        # TCP keepalive notices a peer gone silent; a Unix socket has no peer to lose (and
        # redis-py's Unix connection refuses the option: a unix:// broker never connected)
        tcp = {} if settings.broker.startswith("unix:") else {"socket_keepalive": True}
        self.redis = aioredis.Redis.from_url(
            settings.broker,
            socket_connect_timeout=2,
            socket_timeout=REDIS_TIMEOUT_S,  # a hung Redis fails a command, never hangs it
            health_check_interval=10,
            retry=Retry(NoBackoff(), 0),
            **tcp,
        )
        self.connected = False
        metrics.broker_connected.set(0)
        self.on_connect: list[Callable[[], Awaitable[None]]] = []  # run after each subscribe
        self._outbox: deque[bytes] = deque()
        self._outbox_bytes = 0
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # -- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Returns at once: the service starts (and commits) even while Redis is away."""
        for name, job in (("listen", self._listen), ("send", self._send), ("poll", self._poll)):
            self._tasks.append(asyncio.create_task(job(), name=f"chat-broker-{name}"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        self._tasks.clear()
        self.sequencer.close()
        self._set_connected(False)
        with contextlib.suppress(RedisError, OSError):
            await self.redis.aclose()

    async def ready(self) -> bool:
        return self.connected

    # -- out ----------------------------------------------------------------------------

    def publish(self, events: Sequence[Event]) -> None:
        self.sequencer.offer(events)
        payload = b"\n".join([self.origin, *(event.json for event in events)])
        self._outbox.append(payload)
        self._outbox_bytes += len(payload)
        while self._outbox_bytes > QUEUE_MAX_BYTES:  # Redis is away: the store has them
            self._outbox_bytes -= len(self._outbox.popleft())
            self.metrics.broker_dropped.inc()
        self._wakeup.set()

    async def _send(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._outbox:
                payload = self._next_payload()
                try:
                    await self.redis.publish(self.channel, payload)
                except Exception as exc:
                    # The other processes read these from the store (their poll, or the gap
                    # the next event shows them); the listener reconnects.
                    log.warning("publishing to Redis failed: %s", exc)
                    self.metrics.broker_dropped.inc()

    def _next_payload(self) -> bytes:
        """Queued batches joined into one message, up to about PUBLISH_MAX_BYTES."""
        first = self._outbox.popleft()
        self._outbox_bytes -= len(first)
        parts = [first]
        size = len(first)
        while self._outbox and size < PUBLISH_MAX_BYTES:
            more = self._outbox.popleft()
            self._outbox_bytes -= len(more)
            parts.append(more.partition(b"\n")[2])  # same origin: drop its header
            size += len(more)
        return parts[0] if len(parts) == 1 else b"\n".join(parts)

    # -- in -----------------------------------------------------------------------------

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = FIRST_BACKOFF_S
        for attempts in itertools.count():
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                # Subscribed first, then read from the store what was missed meanwhile.
                self.sequencer.known(await self.latest_id())
                for hook in self.on_connect:
                    await hook()
                self._set_connected(True)
                backoff = FIRST_BACKOFF_S
                heard = loop.time()
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        heard = loop.time()
                        self._receive(message["data"])
                    elif loop.time() - heard > SILENCE_CHECK_S:
                        # Quiet, or hung? A Redis that stopped answering (paused, cut off
                        # without a reset) sends nothing either: ask it, with a timeout.
                        await asyncio.wait_for(self._ping(), REDIS_TIMEOUT_S)
                        heard = loop.time()
            except Exception as exc:  # whatever it was, reconnect: this task must not end
                if self.connected or attempts == 0:
                    log.warning("no Redis broker (%r); reconnecting", exc)
                self._set_connected(False)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            self.metrics.broker_reconnects.inc()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.settings.broker_reconnect_max_seconds)

    async def _ping(self) -> None:
        await cast(Awaitable[bool], self.redis.ping())

    def _receive(self, data: bytes) -> None:
        origin, _, body = data.partition(b"\n")
        if origin == self.origin or not body:
            return  # our own: dispatched when published
        try:
            events = [event_from_json(line) for line in body.split(b"\n")]
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed message on %s", self.channel)
            return
        self.sequencer.offer(events)

    async def _poll(self) -> None:
        """The safety net: whatever pub/sub did not bring is read from the store."""
        while True:
            await asyncio.sleep(self.settings.broker_poll_seconds)
            try:
                self.sequencer.known(await self.latest_id())
            except Exception as exc:
                log.warning("polling the store for missed events failed: %s", exc)

    def _set_connected(self, connected: bool) -> None:
        self.connected = connected
        self.metrics.broker_connected.set(1 if connected else 0)
