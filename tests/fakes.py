"""What the core's unit tests share: events, subscribers, a fake sink, and bounded waits."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from chat.events import Event, make_event
from chat.filters import parse_filter
from chat.states import State
from chat.subscriber import Subscriber

TIMEOUT_S = 2.0


def msg(event_id: int, author: str = "alice", text: str = "hi") -> Event:
    return make_event("message", "r", {"author": author, "text": text}, event_id=event_id)


def sub(limit_bytes: int = 1 << 20, **query: str) -> Subscriber:
    """A subscriber of room ``r`` with the stream filter of ``query`` (``types="message"``)."""
    return Subscriber(("r",), parse_filter(query), limit_bytes=limit_bytes)


class FakeSink:
    """A stream's connection: records the chunks written; can refuse them, raise, or report
    a full buffer."""

    def __init__(self, *, accept: bool = True, full: bool = False, error: bool = False) -> None:
        self.chunks: list[bytes] = []
        self.accept, self.is_full, self.error = accept, full, error

    def write(self, chunk: bytes) -> bool:
        if self.error:
            raise RuntimeError("Cannot call write() after write_eof()")
        if self.accept:
            self.chunks.append(chunk)
        return self.accept

    def full(self) -> bool:
        return self.is_full

    async def drain(self) -> None:
        return None


async def settle() -> None:
    """Let every ready callback run, so a task that could finish has finished."""
    for _ in range(5):
        await asyncio.sleep(0)


async def parked(s: Subscriber) -> asyncio.Task[None]:
    """The stream's task, parked in ``wait`` with nothing to do (as in ``Delivery.open``)."""
    task = asyncio.create_task(s.wait())
    await settle()
    assert s.state is State.IDLE and not task.done()
    return task


@contextlib.asynccontextmanager
async def parked_task(s: Subscriber, *, may_end: bool = False) -> AsyncIterator[asyncio.Task[None]]:
    """``parked``, stopped at the end (``stop``; ``may_end``: the test may have ended it)."""
    task = await parked(s)
    try:
        yield task
    finally:
        await stop(task, may_have_ended=may_end)


async def stop(task: asyncio.Future[None], *, may_have_ended: bool = False) -> None:
    """Cancel a parked task and wait for it to end: it must still have been parked, unless
    ``may_have_ended``."""
    task.cancel()
    try:
        await asyncio.wait_for(task, TIMEOUT_S)
    except asyncio.CancelledError:
        return
    assert may_have_ended, "the task had ended before it was stopped"


async def until(condition: Callable[[], bool], timeout_s: float = TIMEOUT_S) -> None:
    """Poll ``condition`` every 5 ms; raise TimeoutError after ``timeout_s``."""
    for _ in range(int(timeout_s / 0.005) + 1):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise TimeoutError(f"not true within {timeout_s} s")
