"""The limits shared by several processes through Redis (``chat.limits``; presence is
``chat.redis_presence``'s): every token bucket (writes, sign-ins, typing: one per user and
room per interval) is one Redis key taken by a Lua script; each client's open streams are a
sorted set. While Redis is away, the limits fall back to this process's own view.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from chat.limits import UNLIMITED, Buckets, Rate, StreamCounts, Taken
from chat.redis_broker import RedisBroker

log = logging.getLogger(__name__)

# KEYS: the bucket. ARGV: interval, tolerance, cost (seconds, seconds, units). Returns
# {granted, remaining, wait_s} (numbers as strings: Lua would truncate them to integers).
TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval, tolerance = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new = tat + tonumber(ARGV[3]) * interval
local excess = new - now - tolerance
if excess > 1e-9 then return {0, '0', tostring(excess)} end
redis.call('SET', KEYS[1], tostring(new), 'PX', math.ceil((new - now) * 1000) + 1)
return {1, tostring(math.floor((tolerance - (new - now)) / interval + 1e-9)), tostring(new - now)}
"""

# A client's open streams: a sorted set of stream names scored by when each expires unless
# its process refreshes it (a process that dies leaves nothing counted for long).
# KEYS: the client's set. ARGV: now and expiry (ms), the cap, the stream's name.
ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return 1
"""
STREAM_TTL_S = 60.0
STREAM_REFRESH_S = 20.0


class SharedBuckets(Buckets):
    """The token buckets, shared by every process through Redis; this process's own while
    Redis is away (a client then gets at most one limit per process, for that while)."""

    def __init__(self, broker: RedisBroker) -> None:
        super().__init__()
        self.redis = broker.redis
        self.prefix = f"{broker.settings.broker_prefix}:rate:"
        self.script = self.redis.register_script(TAKE)

    async def take(self, rate: Rate, key: str, cost: int = 1) -> Taken:
        if not rate.on:
            return UNLIMITED
        args = [repr(rate.interval_s), repr(rate.tolerance_s), str(cost)]
        try:
            granted, remaining, wait_s = await self.script(
                [f"{self.prefix}{rate.name}:{key}"], args
            )
        except Exception:
            return self.take_here(rate, key, cost)
        return Taken(int(granted) == 1, int(float(remaining)), float(wait_s))


class SharedStreamCounts(StreamCounts):
    """Each client's open streams across processes: a Redis sorted set per client, whose
    entries this process refreshes while its streams are open (``keep``)."""

    def __init__(self, broker: RedisBroker) -> None:
        super().__init__()
        self.redis = broker.redis
        self.prefix = f"{broker.settings.broker_prefix}:streams:"
        self.origin = broker.origin.decode()
        self.script = self.redis.register_script(ACQUIRE)
        self.names: dict[str, list[str]] = {}  # client -> this process's streams counted there
        self.serial = 0
        self.task: asyncio.Task[None] | None = None

    async def acquire(self, key: str, cap: int) -> bool:
        self.serial += 1
        name = f"{self.origin}:{self.serial}"
        now_ms = int(time.time() * 1000)
        try:
            ok = await self.script(
                [self.prefix + key], [now_ms, now_ms + int(STREAM_TTL_S * 1000), cap, name]
            )
        except Exception:
            return self.acquire_here(key, cap)
        if int(ok) != 1:
            return False
        self.open[key] = self.open.get(key, 0) + 1  # this process's own, for the fallback
        self.names.setdefault(key, []).append(name)
        return True

    async def release(self, key: str) -> None:
        self.release_here(key)
        names = self.names.get(key)
        if not names:
            return
        name = names.pop()
        if not names:
            del self.names[key]
        with contextlib.suppress(Exception):  # left to expire when Redis is away
            await self.redis.zrem(self.prefix + key, name)

    def start(self) -> None:
        self.task = asyncio.create_task(self.keep(), name="chat-stream-counts")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def keep(self) -> None:
        """Push back the expiry of this process's streams, while they are open."""
        while True:
            await asyncio.sleep(STREAM_REFRESH_S)
            expiry_ms = int((time.time() + STREAM_TTL_S) * 1000)
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for key, names in list(self.names.items()):
                        pipe.zadd(self.prefix + key, dict.fromkeys(names, expiry_ms))
                        pipe.pexpireat(self.prefix + key, expiry_ms)
                    await pipe.execute()
            except Exception:
                log.warning("could not refresh the stream counts in Redis; will try again")
