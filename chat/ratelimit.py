"""At most one action per key per interval (typing indicators: one per user and room)."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable

PRUNE_ABOVE = 10_000  # keys remembered before old ones are dropped


class RateLimiter:
    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self.last: dict[Hashable, float] = {}
        self.pruned_at = float("-inf")

    def wait_s(self, key: Hashable) -> float:
        """0 when the action may happen now (and it is counted); otherwise how long to wait."""
        now = self.clock()
        last = self.last.get(key)
        if last is not None and now - last < self.interval_s:
            return self.interval_s - (now - last)
        if len(self.last) >= PRUNE_ABOVE and now - self.pruned_at >= self.interval_s:
            self.last = {k: t for k, t in self.last.items() if now - t < self.interval_s}
            self.pruned_at = now  # at most once an interval: pruning is O(keys)
        self.last[key] = now
        return 0.0

    async def check(self, key: Hashable) -> float:
        """``wait_s`` as the routes call it (a shared limiter asks Redis)."""
        return self.wait_s(key)
