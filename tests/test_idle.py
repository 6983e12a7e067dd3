"""The event loop's idle meter (``chat.idle``): the coalescing window's load signal."""

from __future__ import annotations

import asyncio
import time

from chat.idle import IdleMeter, _TimedSelector

SPAN_S = 0.2


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def test_a_loop_waiting_for_io_is_idle_and_one_running_callbacks_is_not() -> None:
    loop = asyncio.get_running_loop()
    meter = IdleMeter(loop)
    assert isinstance(loop._selector, _TimedSelector)  # type: ignore[attr-defined]
    await asyncio.sleep(SPAN_S)  # nothing to do but wait for the timer
    idle, elapsed = meter.sample()
    assert idle > 0.8 and elapsed >= SPAN_S
    loop.call_soon(busy, SPAN_S)  # a callback that holds the loop
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    idle, elapsed = meter.sample()
    assert idle < 0.2 and elapsed >= SPAN_S
    # a second meter on the same loop shares the one wrapper
    assert IdleMeter(loop)._timed is meter._timed


async def test_the_wrapped_selector_still_serves_the_loop() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    loop = asyncio.get_running_loop()
    IdleMeter(loop)
    server = await asyncio.start_server(echo, "127.0.0.1", 0)  # registered after the wrap
    try:
        host, port = server.sockets[0].getsockname()[:2]
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
        writer.write(b"ping\n")
        assert await asyncio.wait_for(reader.readline(), 5) == b"ping\n"
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), 5)
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)


class NoSelectorLoop:
    """A loop without ``_selector`` (as uvloop's): measured by the thread's CPU time."""


def test_a_loop_without_a_selector_is_measured_by_cpu_time() -> None:
    meter = IdleMeter(NoSelectorLoop())  # type: ignore[arg-type]
    assert meter._timed is None
    time.sleep(SPAN_S)
    idle, _ = meter.sample()
    assert idle > 0.8  # asleep: no CPU used
    wall, cpu = time.perf_counter(), time.thread_time()
    busy(SPAN_S)
    # The share of the span this thread ran: 1 on an idle machine, less when other processes
    # (a parallel test run) take the core; the meter must report the rest as idle.
    share = (time.thread_time() - cpu) / (time.perf_counter() - wall)
    idle, _ = meter.sample()
    assert abs(idle - (1 - share)) < 0.1, (idle, share)
