"""The page in a busy room (issue 18): Debian's Chromium (Playwright) reads a room of --history
messages (default 5,000), scrolls up until --read of them are loaded (default 1,000), returns
to the bottom, and then the room receives --rate messages a second (default 50) for --seconds
(default 60), posted over REST by this script.

Measures, from the page's own performance timeline: the long tasks of its main thread
(PerformanceObserver `longtask`: tasks over 50 ms) during the busy minute, their count,
longest and total; the message rows in the page at the end; the JS heap before and after
(`performance.memory`). Target (issue 18): no long task; the rows bounded.

Checks (any failure: exit 1): the last message shows; the rows are in id order, each once.

    .venv/bin/python bench/page_busy.py                 # about 90 s
    .venv/bin/python bench/page_busy.py --seconds 20    # quicker

Run it alone: a second core busy with something else stretches the browser's frames. It
starts its own server (the per-client limits off, pinned to the first CPU), and this script
moves beside it once the browser is up: the browser may use every CPU, as on a person's own
computer, and never shares one only with the load. 127.0.0.1 only, every wait bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from typing import Any

from common import Http, Server, add_common_args, dumps, loads, post_batch, run

CHROMIUM = "/usr/bin/chromium"
LONG_TASKS = """
window.__long = [];
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) window.__long.push(e.duration);
}).observe({type: 'longtask'});
"""
ROWS = "l => l.querySelectorAll('[data-testid=message]').length"


async def measure(a: argparse.Namespace, port: int, srv: Server, out: dict[str, Any]) -> None:
    from playwright.async_api import async_playwright

    http = Http(port)
    try:
        for first in range(0, a.history, 500):
            texts = [f"old {n}" for n in range(first, min(a.history, first + 500))]
            await post_batch(http, "busy", "bob", texts)
    finally:
        http.close()
    url = f"http://127.0.0.1:{port}"
    # The browser, started from here, may use every CPU (as on a person's own computer), and
    # this script, which posts, then moves beside the server: not onto the browser's CPU.
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        if srv.pid is not None:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, os.sched_getaffinity(srv.pid))
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 800})
            rooms = "localStorage.setItem('chat.rooms', '[\"busy\"]');"  # the room to open
            await page.add_init_script(LONG_TASKS + rooms)
            await page.goto(url + "/")
            await page.get_by_test_id("name-input").fill("ann")
            await page.get_by_test_id("name-input").press("Enter")
            listing = page.get_by_test_id("message-list")
            await listing.get_by_text(f"old {a.history - 1}", exact=True).wait_for(timeout=20_000)
            async with asyncio.timeout(120):
                while await listing.evaluate(ROWS) < a.read:
                    await listing.evaluate("l => { l.scrollTop = 0; }")
                    await page.wait_for_timeout(100)
            out["rows_read"] = await listing.evaluate(ROWS)
            await listing.evaluate("l => { l.scrollTop = l.scrollHeight; }")
            await page.wait_for_timeout(1000)
            heap = "performance.memory.usedJSHeapSize"
            out["heap_before_mib"] = round(await page.evaluate(heap) / 2**20, 1)
            await page.evaluate("window.__long = []")
            sent = await publish(port, a.rate, a.seconds)
            last = listing.get_by_text(f"busy {sent - 1}", exact=True)
            await last.wait_for(timeout=20_000)
            if not await last.is_visible():
                out["failures"].append("the last message is not shown")
            long_tasks: list[float] = await page.evaluate("window.__long")
            ids = [int(i) for i in await listing.evaluate(
                "l => [...l.querySelectorAll('[data-testid=message]')].map(e => e.dataset.id)"
            )]  # fmt: skip
            if ids != sorted(set(ids)):
                out["failures"].append("rows out of order or doubled")
            out.update(
                sent=sent,
                rows_end=len(ids),
                heap_after_mib=round(await page.evaluate(heap) / 2**20, 1),
                long_tasks=len(long_tasks),
                long_task_max_ms=round(max(long_tasks, default=0)),
                long_task_total_ms=round(sum(long_tasks)),
            )
        finally:
            await browser.close()


async def publish(port: int, rate: float, seconds: float) -> int:
    http, sent = Http(port), 0
    loop = asyncio.get_running_loop()
    began = loop.time()
    try:
        while sent < rate * seconds:
            body = dumps({"author": "carl", "text": f"busy {sent}"})
            status, _, answer = await http.request("POST", "/api/rooms/busy/messages", body)
            if status != 201:
                raise RuntimeError(f"POST: {status} {loads(answer)}")
            sent += 1
            await asyncio.sleep(max(0.0, began + sent / rate - loop.time()))
    finally:
        http.close()
    return sent


def report(o: dict[str, Any]) -> str:
    met = o.get("long_tasks") == 0 and (o.get("rows_end") or 10**9) <= 200
    return (
        f"page_busy: {o.get('sent')} messages at {o.get('rate')}/s, {o.get('rows_read')} rows "
        f"read back first; long tasks {o.get('long_tasks')} (longest "
        f"{o.get('long_task_max_ms')} ms, {o.get('long_task_total_ms')} ms in all); rows at "
        f"the end {o.get('rows_end')}; JS heap {o.get('heap_before_mib')} -> "
        f"{o.get('heap_after_mib')} MiB. Target (no long task, rows bounded): "
        f"{'met' if met else 'NOT met'}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--history", type=int, default=5000, help="messages in the room first")
    ap.add_argument("--read", type=int, default=1000, help="rows loaded by scrolling up")
    ap.add_argument("--rate", type=float, default=50.0, help="messages a second")
    ap.add_argument("--seconds", type=float, default=60.0, help="how long the room is busy")
    add_common_args(ap, timeout=300.0)
    a = ap.parse_args()
    if not os.path.exists(CHROMIUM):
        ap.error(f"{CHROMIUM} is missing (apt-get install chromium)")

    def measure_with_args(a: argparse.Namespace, port: int, srv: Server, out: dict) -> Any:
        out.update(rate=a.rate, seconds=a.seconds)
        return measure(a, port, srv, out)

    return run("page_busy", a, {}, measure_with_args, report)


if __name__ == "__main__":
    sys.exit(main())
