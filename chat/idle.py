"""How much of the time the server is idle: the coalescing window's load signal.

Idle share = 1 - CPU time / wall time over the sample, clamped to [0, 1], with the process's
CPU time (``time.process_time``): one public measure, the same for asyncio and uvloop.

Why the process's time and not the loop thread's: the store's write thread runs on the core
the loop runs on, and the time it takes is time the loop cannot have, so a loop sharing its
core with a busy writer rightly reads as busy. On several cores, threads running in parallel
add up to more CPU time than wall time, and the server reads as busier than its loop is: the
window widens a little early (the idle share is clamped at 0), never late.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class IdleMeter:
    """``sample()``: the fraction of the time since the last sample the process was idle."""

    __slots__ = ("_cpu", "_cpu_s", "_wall", "_wall_s")

    def __init__(
        self,
        *,
        cpu_s: Callable[[], float] = time.process_time,
        wall_s: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._cpu_s, self._wall_s = cpu_s, wall_s
        self._cpu, self._wall = cpu_s(), wall_s()

    def sample(self) -> tuple[float, float]:
        """(idle fraction, seconds) since the last sample."""
        cpu, wall = self._cpu_s(), self._wall_s()
        busy, elapsed = cpu - self._cpu, wall - self._wall
        self._cpu, self._wall = cpu, wall
        if elapsed <= 0:
            return 1.0, 0.0
        return min(1.0, max(0.0, 1.0 - busy / elapsed)), elapsed
