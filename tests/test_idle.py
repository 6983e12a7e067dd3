"""The idle meter (``chat.idle``): the coalescing window's load signal, from CPU time."""

from __future__ import annotations

import asyncio
import time

from chat.idle import IdleMeter

SPAN_S = 0.05


class Clocks:
    """CPU and wall time the test moves by hand."""

    def __init__(self) -> None:
        self.cpu = self.wall = 100.0

    def run(self, wall_s: float, cpu_s: float) -> None:
        self.wall += wall_s
        self.cpu += cpu_s

    def meter(self) -> IdleMeter:
        return IdleMeter(cpu_s=lambda: self.cpu, wall_s=lambda: self.wall)


def test_idle_is_one_minus_cpu_over_wall_clamped() -> None:
    clocks = Clocks()
    meter = clocks.meter()
    cases = [
        (0.01, 0.0, 1.0),  # asleep
        (0.01, 0.01, 0.0),  # busy all along
        (0.02, 0.005, 0.75),  # busy a quarter of the time
        (0.01, 0.02, 0.0),  # two threads busy in parallel on two cores: clamped
    ]
    for wall_s, cpu_s, want in cases:
        clocks.run(wall_s, cpu_s)
        idle, elapsed = meter.sample()
        assert abs(idle - want) < 1e-9 and abs(elapsed - wall_s) < 1e-9
    assert meter.sample() == (1.0, 0.0)  # no time passed: idle, and nothing to weigh


def test_a_sleeping_process_reads_idle() -> None:
    meter = IdleMeter()
    time.sleep(SPAN_S)  # no CPU used, however long the sleep actually lasts
    idle, elapsed = meter.sample()
    assert idle > 0.8 and elapsed > 0


async def test_a_loop_held_by_a_callback_reads_busy() -> None:
    """Spin until the process has used ``SPAN_S`` of CPU time (not of wall time): a busy
    machine makes the span longer, never the reading wrong. The meter's CPU time covers the
    spin's, so its idle share is at most 1 - spin CPU / elapsed: near 0 on a free core."""
    loop = asyncio.get_running_loop()
    spun: list[float] = []

    def hold_the_loop() -> None:
        start = time.process_time()
        while time.process_time() - start < SPAN_S:
            pass
        spun.append(time.process_time() - start)

    meter = IdleMeter()
    loop.call_soon(hold_the_loop)
    await asyncio.sleep(0)
    idle, elapsed = meter.sample()
    assert spun and elapsed > 0
    assert idle <= max(0.0, 1 - spun[0] / elapsed) + 1e-9
    asleep = IdleMeter()
    await asyncio.sleep(SPAN_S)  # the loop waits for its timer
    assert idle < asleep.sample()[0]
