"""How much of the time the event loop waits for I/O: the coalescing window's load signal.

The event loop of ``asyncio`` blocks in its selector's ``select`` when it has nothing to
run; the time spent there, with a timeout other than zero, is the loop's idle time. The
meter wraps the loop's selector to add it up. ``loop._selector`` is private to asyncio (the
same since Python 3.4): the one library internal besides the transport write, kept because
measurement showed that the public measures mislead the window (docs/design/private-access.md).
CPU time does: whatever the core does outside the process (much of the kernel's network
work, other programs) reads as idle time, so a saturated server read as partly idle and the
window stayed narrow: fewer deliveries at full load and a longer latency tail
(docs/design/performance.md has the A/B). tests/test_idle.py
fails if asyncio's loop no longer has the selector this wraps.

A loop without one (uvloop, the default where it is installed) is measured by the CPU time
of its thread instead: what reads as idle then is also the kernel's work outside the thread,
the other threads' work (the store's write thread) and the loop's waits for the GIL, so the
window widens less at full load (docs/design/performance.md weighs that against uvloop's
cheaper loop).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any


class _TimedSelector:
    """The loop's selector, adding up the time ``select`` waits."""

    def __init__(self, selector: Any) -> None:
        self._selector = selector
        self.waited_s = 0.0

    def select(self, timeout: float | None = None) -> Any:
        if timeout is not None and timeout <= 0:
            return self._selector.select(timeout)  # ready work: a poll, not a wait
        start = time.perf_counter()
        try:
            return self._selector.select(timeout)
        finally:
            self.waited_s += time.perf_counter() - start

    def __getattr__(self, name: str) -> Any:
        return getattr(self._selector, name)


class IdleMeter:
    """``sample()``: the fraction of the time since the last sample the loop was idle."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        selector = getattr(loop, "_selector", None)
        self._timed: _TimedSelector | None = None
        if selector is not None and callable(getattr(selector, "select", None)):
            if not isinstance(selector, _TimedSelector):
                selector = _TimedSelector(selector)
                loop._selector = selector  # type: ignore[attr-defined]
            self._timed = selector
        self._wall = time.perf_counter()
        self._waited = self._waited_s()

    def _waited_s(self) -> float:
        """Seconds the loop has waited so far (without a selector: wall minus CPU time)."""
        if self._timed is not None:
            return self._timed.waited_s
        return time.perf_counter() - time.thread_time()

    def sample(self) -> tuple[float, float]:
        """(idle fraction, seconds) since the last sample."""
        wall, waited = time.perf_counter(), self._waited_s()
        elapsed, idle = wall - self._wall, waited - self._waited
        self._wall, self._waited = wall, waited
        if elapsed <= 0:
            return 1.0, 0.0
        return min(1.0, max(0.0, idle / elapsed)), elapsed
