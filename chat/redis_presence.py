"""Presence shared by several processes through Redis (``chat.redis_limits`` shares the
limits).

``Presence`` still counts this process's streams and applies the grace period; what
it would announce becomes a change of shared counts instead. Per room, a Redis hash counts in
how many processes each user is present; per process, a hash remembers what that process
added, so the counts can be taken back when it dies. A user joins when the count goes 0 -> 1
and leaves when it goes back to 0, whichever processes their streams are on; both steps are
Lua scripts, so two processes never both announce. Each process refreshes a key that expires
after ``ALIVE_S``; one whose key expired (killed, cut off) is reaped by the others, who
announce the leaves it can no longer announce. After Redis comes back (it may have lost
everything), or after a process finds its own key expired, it takes back what it had added
and adds its present users again at once; then, once every process has had time to
subscribe again (``CHAT_BROKER_RECONNECT_MAX_SECONDS`` and a margin), it announces the joins
of users nobody else had and the leaves it could not announce while Redis was away. A join
may be announced twice; for a client a join is idempotent, a lost one is not.

While Redis is away, presence lists fall back to this process's own view.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import cast

import orjson

from chat.events import make_event
from chat.presence import Presence
from chat.redis_broker import PRESENCE_ORIGIN, RedisBroker

log = logging.getLogger(__name__)

ALIVE_S = 15  # a process that did not refresh its key for this long is reaped
KEEP_EVERY_S = 5.0
RESUBSCRIBE_MARGIN_S = 1.0

# KEYS: this process's hash, the room's hash. ARGV: field, user, +1 or -1, the channel, and
# the message announcing the join or leave. Returns the user's new count in the room, or -1
# when this process had already done so. The announcement is published by the script itself,
# so Redis orders every process's joins and leaves: a leave never overtakes the join before it.
CHANGE = """
local had = redis.call('HEXISTS', KEYS[1], ARGV[1])
local delta = tonumber(ARGV[3])
if (delta > 0 and had == 1) or (delta < 0 and had == 0) then return -1 end
if delta > 0 then redis.call('HSET', KEYS[1], ARGV[1], 1)
else redis.call('HDEL', KEYS[1], ARGV[1]) end
local n = redis.call('HINCRBY', KEYS[2], ARGV[2], delta)
if n <= 0 then redis.call('HDEL', KEYS[2], ARGV[2]) end
if ARGV[5] ~= '' and ((delta > 0 and n == 1) or (delta < 0 and n <= 0)) then
  redis.call('PUBLISH', ARGV[4], ARGV[5])
end
return n
"""

# KEYS: the set of processes. ARGV: key prefix, the process to take back, "force" or "".
# Takes back everything that process added (unless it is alive and not forced); returns the
# fields ([room, user] as JSON) whose count reached 0: the users who left.
REAP = """
local prefix, origin = ARGV[1], ARGV[2]
if ARGV[3] ~= 'force' and redis.call('EXISTS', prefix .. ':alive:' .. origin) == 1 then
  return {}
end
local proc = prefix .. ':proc:' .. origin
local left = {}
for _, field in ipairs(redis.call('HKEYS', proc)) do
  local pair = cjson.decode(field)
  local key = prefix .. ':presence:' .. pair[1]
  local n = redis.call('HINCRBY', key, pair[2], -1)
  if n <= 0 then
    redis.call('HDEL', key, pair[2])
    table.insert(left, field)
  end
end
redis.call('DEL', proc)
redis.call('SREM', KEYS[1], origin)
return left
"""

RedisList = Awaitable[Iterable[bytes]]  # redis-py types its replies loosely
Op = tuple[str, str, str]  # (room, user, "join" | "leave"), or ("", "", "resync")


class SharedPresence(Presence):
    def __init__(self, broker: RedisBroker, grace_s: float, announce: Callable[..., None]) -> None:
        super().__init__(grace_s, self._changed)
        self.broker = broker
        self.redis = broker.redis
        self.publish_change = announce  # (room, user, state): the presence event, to everyone
        prefix = broker.settings.broker_prefix
        self.prefix = prefix
        origin = broker.origin.decode()
        self.origin = origin
        self.proc_key = f"{prefix}:proc:{origin}"
        self.alive_key = f"{prefix}:alive:{origin}"
        self.procs_key = f"{prefix}:procs"
        self.change = self.redis.register_script(CHANGE)
        self.reap = self.redis.register_script(REAP)
        self._ops: deque[Op] = deque()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.unannounced: dict[tuple[str, str], str] = {}  # changes Redis has not taken yet
        self.refreshed = False
        self._later: set[asyncio.Task[None]] = set()
        broker.on_connect.append(self._resync)

    def start(self) -> None:  # after the broker's start
        self._tasks.append(asyncio.create_task(self._apply(), name="chat-presence-apply"))
        self._tasks.append(asyncio.create_task(self._keep(), name="chat-presence-keep"))

    async def stop(self) -> None:
        self.close()
        for task in [*self._tasks, *self._later]:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        self._tasks.clear()
        # The others reap what this process added (and announce who left) right away.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.redis.delete(self.alive_key), 1.0)

    async def users(self, room: str) -> list[str]:
        try:
            names = await cast(RedisList, self.redis.hkeys(f"{self.prefix}:presence:{room}"))
        except Exception:  # Redis away or hung: this process's own view
            return await super().users(room)
        return sorted(name.decode() for name in names)

    def _changed(self, room: str, user: str, state: str) -> None:
        self._ops.append((room, user, state))
        self._wake.set()

    async def _resync(self) -> None:
        self._ops.append(("", "", "resync"))
        self._wake.set()

    def _field(self, room: str, user: str) -> bytes:
        return orjson.dumps([room, user])

    async def _apply(self) -> None:
        """The changes, one at a time and in order (a leave never overtakes its join)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._ops:
                room, user, state = self._ops.popleft()
                try:
                    if state == "resync":
                        await self._readd()
                    else:
                        await self._change(room, user, state)
                        self.unannounced.pop((room, user), None)
                except Exception as exc:  # Redis away: announced after the reconnect
                    log.warning("presence change not shared yet (Redis: %r)", exc)
                    if state != "resync":
                        self.unannounced[(room, user)] = state

    async def _change(self, room: str, user: str, state: str, *, publish: bool = True) -> int:
        message = b""
        if publish:
            event = make_event("presence", room, {"user": user, "state": state})
            message = PRESENCE_ORIGIN + b"\n" + event.json
        keys = [self.proc_key, f"{self.prefix}:presence:{room}"]
        delta = 1 if state == "join" else -1
        args: list[bytes | str | int] = [
            self._field(room, user),
            user,
            delta,
            self.broker.channel,
            message,
        ]
        return int(await self.change(keys, args))

    async def _readd(self) -> None:
        """After Redis came back, or this process was taken for dead: take back what this
        process had added and add who is present here again. A join is announced for every
        user nobody else had (some may be repeats; a join is idempotent for a client, a
        missing one is not), and the leaves that could not be announced are, if true."""
        await self.reap([self.procs_key], [self.prefix, self.origin, "force"])
        await self._refresh()
        joined = []
        for room, users in list(self.streams.items()):
            for user in list(users):
                if await self._change(room, user, "join", publish=False) == 1:
                    joined.append((room, user))
        left = [pair for pair, state in self.unannounced.items() if state == "leave"]
        self.unannounced.clear()
        if joined or left:
            task = asyncio.create_task(self._announce_later(joined, left))
            self._later.add(task)
            task.add_done_callback(self._later.discard)

    async def _announce_later(
        self, joined: list[tuple[str, str]], left: list[tuple[str, str]]
    ) -> None:
        """What ``_readd`` found, once every process has had time to subscribe again: an
        announcement published before a process resubscribes never reaches its streams."""
        settings = self.broker.settings
        await asyncio.sleep(settings.broker_reconnect_max_seconds + RESUBSCRIBE_MARGIN_S)
        try:
            for room, user in joined:
                if user in self.streams.get(room, {}):
                    self.publish_change(room, user, "join")
            for room, user in left:
                key = f"{self.prefix}:presence:{room}"
                if not await cast(Awaitable[int], self.redis.hexists(key, user)):
                    self.publish_change(room, user, "leave")
        except Exception as exc:
            log.warning("presence changes after a reconnect not announced (Redis: %r)", exc)

    async def _refresh(self) -> None:
        """Keep this process alive in Redis; if its key had expired (it stalled, or Redis
        restarted), the others took back its users: add them again."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(self.alive_key, b"1", ex=ALIVE_S, get=True)
            pipe.sadd(self.procs_key, self.origin)
            previous, _ = await pipe.execute()
        if previous is None and self.refreshed and self.broker.connected:
            await self._resync()  # (while disconnected, the reconnect resyncs)
        self.refreshed = True

    async def _keep(self) -> None:
        """Refresh this process's key; reap processes whose key expired."""
        while True:
            try:
                await self._refresh()
                for member in await cast(RedisList, self.redis.smembers(self.procs_key)):
                    origin = member.decode()
                    if origin == self.origin:
                        continue
                    left = await self.reap([self.procs_key], [self.prefix, origin, ""])
                    for field in left:
                        room, user = orjson.loads(field)
                        self.publish_change(room, user, "leave")
            except Exception as exc:
                log.debug("presence keep-alive skipped (Redis: %r)", exc)
            await asyncio.sleep(KEEP_EVERY_S)
