"""Per-client limits (ACCESS.md, Limits): who a client is, token buckets for writes and
sign-ins, and the count of each client's open streams; in this process, or shared by every
process through Redis (``chat.redis_limits``), so that a client never gets N times its limit
from N workers.

A client is its user when signed in with an account, a token or a JWT; a guest (and a
request with no credential) is its IP address, since anyone can take a new guest name. The
address is the peer's, or the one ``X-Forwarded-For`` names when the peer is a proxy listed
in ``CHAT_FORWARDED_ALLOW_IPS`` (``client_address``).

The buckets are GCRA (the generic cell rate algorithm): one number per client, the time at
which its bucket would be full again, so a check is one read and one write. ``0`` turns a
limit off; the tests and the yardstick, one client on loopback, run that way.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from chat.errors import RateLimited
from chat.identity import Identity

PRUNE_ABOVE = 10_000  # clients remembered before the ones with full buckets are dropped

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Forwarded:
    """Which peers are proxies whose ``X-Forwarded-For`` names the client."""

    def __init__(self, allow: str) -> None:
        entries = [part.strip() for part in allow.split(",") if part.strip()]
        self.any = "*" in entries
        self.networks: list[Network] = [
            ipaddress.ip_network(entry, strict=False) for entry in entries if entry != "*"
        ]

    @property
    def enabled(self) -> bool:
        return self.any or bool(self.networks)

    def trusts(self, address: str) -> bool:
        if self.any:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def client(self, peer: str, forwarded_for: bytes | None) -> str:
        """The client's address: the peer's own, unless the peer is a trusted proxy; then the
        nearest address in ``X-Forwarded-For`` that is not a trusted proxy itself (walking
        from the right: what is further left was written by the client and may be forged)."""
        if forwarded_for is None or not self.enabled or not self.trusts(peer):
            return peer
        client = peer
        for entry in reversed(forwarded_for.decode("latin-1").split(",")):
            candidate = entry.strip()
            try:
                candidate = str(ipaddress.ip_address(candidate))
            except ValueError:
                break  # not an address: the chain is broken here; keep the last good one
            client = candidate
            if not self.trusts(candidate):
                break
        return client


def client_key(identity: Identity | None, address: str) -> str:
    """What limits count by: the user when signed in, otherwise the address."""
    if identity is not None and not identity.guest:
        return "u:" + identity.user
    return "ip:" + address


@dataclass(frozen=True, slots=True)
class Rate:
    """A token bucket: ``burst`` at once, refilled at ``per_s``; off when either is 0."""

    name: str
    per_s: float
    burst: int

    @property
    def on(self) -> bool:
        return self.per_s > 0 and self.burst > 0

    @property
    def interval_s(self) -> float:
        return 1.0 / self.per_s

    @property
    def tolerance_s(self) -> float:
        return self.burst * self.interval_s

    def policy_header(self) -> bytes:
        """``RateLimit-Policy`` (draft-ietf-httpapi-ratelimit-headers): the quota and the
        window in which a spent quota comes back."""
        return b'"%s";q=%d;w=%d' % (self.name.encode(), self.burst, math.ceil(self.tolerance_s))


@dataclass(frozen=True, slots=True)
class Taken:
    """The outcome of taking from a bucket."""

    ok: bool
    remaining: int
    wait_s: float  # refused: until the cost fits; granted: until the bucket is full again


UNLIMITED = Taken(True, 0, 0.0)  # what a bucket that is off (a rate or burst of 0) gives


def gcra(rate: Rate, tat: float, now: float, cost: int) -> tuple[Taken, float]:
    """One GCRA step: (the outcome, the new theoretical arrival time to store if granted)."""
    tat = max(tat, now)
    new = tat + cost * rate.interval_s
    excess = new - now - rate.tolerance_s
    if excess > 1e-9:
        return Taken(False, 0, excess), tat
    remaining = int((rate.tolerance_s - (new - now)) / rate.interval_s + 1e-9)
    return Taken(True, remaining, new - now), new


# A client over a limit gets its 429 after this pause (or its Retry-After, if shorter): one
# that retries at once, in a loop, then costs one answer per pause and connection instead
# of as many as the server can make, which would slow everyone else (bench/abuse.py).
PAUSE_S = 0.25


async def pause(wait_s: float) -> None:
    await asyncio.sleep(min(wait_s, PAUSE_S))


def refuse(rate: Rate, taken: Taken, what: str) -> RateLimited:
    """The 429 of a refused take, with ``Retry-After`` and the RateLimit headers."""
    retry = max(1, math.ceil(taken.wait_s))
    return RateLimited(
        f"too many {what}: wait {retry} s (CHAT_{rate.name.upper()}_* settings)",
        retry,
        [
            (b"ratelimit-policy", rate.policy_header()),
            (b"ratelimit", b'"%s";r=0;t=%d' % (rate.name.encode(), retry)),
        ],
    )


class Buckets:
    """Token buckets in this process (one worker; also the fallback while Redis is away)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.tat: dict[tuple[str, str], float] = {}

    async def take(self, rate: Rate, key: str, cost: int = 1) -> Taken:
        return self.take_here(rate, key, cost)

    def take_here(self, rate: Rate, key: str, cost: int = 1) -> Taken:
        if not rate.on:
            return UNLIMITED
        now = self.clock()
        slot = (rate.name, key)
        taken, tat = gcra(rate, self.tat.get(slot, now), now, cost)
        if taken.ok:
            if len(self.tat) >= PRUNE_ABOVE:
                self.tat = {k: t for k, t in self.tat.items() if t > now}  # full ones: gone
            self.tat[slot] = tat
        return taken


class StreamCounts:
    """Each client's open streams in this process."""

    def __init__(self) -> None:
        self.open: dict[str, int] = {}

    async def acquire(self, key: str, cap: int) -> bool:
        """Count one more stream of ``key``; False (nothing counted) if it has ``cap``."""
        return self.acquire_here(key, cap)

    def acquire_here(self, key: str, cap: int) -> bool:
        count = self.open.get(key, 0)
        if count >= cap:
            return False
        self.open[key] = count + 1
        return True

    async def release(self, key: str) -> None:
        self.release_here(key)

    def start(self) -> None:
        """(Shared counts refresh their entries in Redis while streams are open.)"""

    async def stop(self) -> None:
        pass

    def release_here(self, key: str) -> None:
        count = self.open.get(key, 0) - 1
        if count > 0:
            self.open[key] = count
        else:
            self.open.pop(key, None)
