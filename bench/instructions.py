"""Instructions per publish: the server's CPU work counted, not timed.

On a shared VM a throughput figure moves by 20-50% from one hour to the next, which hides a
change of 10%. This counts the instructions the server executes (valgrind's cachegrind,
user space only: the kernel's work is not counted) under a fixed load, twice: with --base
POSTs and with --posts POSTs. The difference, divided by the difference in POSTs, is the
cost of one publish (one POST and its deliveries), start-up and connects cancelled out.
Repeated runs agree within about 0.1%; timing-dependent paths (group commit, coalescing)
make the rest.

The load: --streams SSE streams over --rooms rooms, then POSTs to random rooms (a fixed
seed) from --publishers keep-alive connections, each waiting for its answer; it ends once
every stream has every message of its room. With --batch N each POST is a batch of N messages
(``POST .../messages/batch``), and the cost of one message is printed too. With --paced each
publisher sends its next POST only once every stream has had what was posted: fan-outs then
never overlap, so no two events share a write and the count repeats (a room of hundreds of
streams, whose fan-outs otherwise overlap as the timing happens to fall).

    .venv/bin/python bench/instructions.py                    # rooms-like: 200 streams, 20 rooms
    .venv/bin/python bench/instructions.py --rooms 1 --streams 1 --publishers 16   # bare POSTs
    PYTHONPATH=/path/to/other/checkout .venv/bin/python bench/instructions.py  # another version
    .venv/bin/python bench/instructions.py --rooms 1 --streams 10 --publishers 4 \
        --batch 500 --base 10 --posts 40                      # batch.py-like: 500 a POST
    .venv/bin/python bench/instructions.py --rooms 1 --streams 500 --publishers 1 --paced \
        --base 20 --posts 100                                 # one fan-out to 500 at a time

Needs valgrind (Debian's package). The server runs under valgrind ~50 times slower, so a run
takes a minute or two. Talks to 127.0.0.1 only; every wait has a timeout. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

PATTERN = b'"type":"message"'


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Tally:
    """What the streams have brought: messages by room, streams open; ``changed`` is set on
    every change."""

    def __init__(self, rooms: list[str]) -> None:
        self.counts = dict.fromkeys(rooms, 0)
        self.opened = 0
        self.changed = asyncio.Event()

    async def until(self, done: Callable[[], bool]) -> None:
        while not done():
            await self.changed.wait()
            self.changed.clear()


async def stream(port: int, room: str, tally: Tally) -> None:
    """One SSE stream on ``room``, counting the messages it brings (a frame split across two
    reads is counted once: the tail of each read is kept)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /api/rooms/{room}/events HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    tail = b""
    first = True
    while data := await reader.read(65536):
        if first:
            tally.opened += 1
            first = False
        data = tail + data
        tally.counts[room] += data.count(PATTERN)
        tail = data[-(len(PATTERN) - 1) :]
        tally.changed.set()


async def publish(
    port: int, targets: list[str], batch: int, delivered: Callable[[], Awaitable[None]] | None
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    message = {"author": "bench", "text": "x" * 64}
    body = json.dumps({"messages": [message] * batch} if batch else message).encode()
    path = "messages/batch" if batch else "messages"
    while targets:
        room = targets.pop()
        writer.write(
            f"POST /api/rooms/{room}/{path} HTTP/1.1\r\nHost: bench\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 201"):
            raise SystemExit(f"a POST was answered {head[:40]!r}")
        length = re.search(rb"(?i)content-length: *(\d+)", head)
        await reader.readexactly(int(length.group(1)) if length else 0)
        if delivered is not None:
            await delivered()  # --paced: the next POST once every stream has this one
    writer.close()


async def load(port: int, args: argparse.Namespace, posts: int) -> None:
    rooms = [f"in{k}" for k in range(args.rooms)]
    followed = [rooms[j % len(rooms)] for j in range(args.streams)]
    tally = Tally(rooms)
    readers = [asyncio.create_task(stream(port, room, tally)) for room in followed]
    try:
        async with asyncio.timeout(args.timeout):
            await tally.until(lambda: tally.opened == args.streams)
            targets = random.Random(7).choices(rooms, k=posts)
            each = args.batch or 1  # messages a POST
            due = {r: targets.count(r) * followed.count(r) * each for r in rooms}
            posts_to = {r: targets.count(r) for r in rooms}

            def expected(r: str) -> int:  # the messages of the POSTs answered so far
                return (posts_to[r] - targets.count(r)) * followed.count(r) * each

            async def delivered() -> None:
                await tally.until(lambda: all(tally.counts[r] >= expected(r) for r in rooms))

            pacing = delivered if args.paced else None
            publishers = (
                publish(port, targets, args.batch, pacing) for _ in range(args.publishers)
            )
            await asyncio.gather(*publishers)
            await tally.until(lambda: all(tally.counts[r] >= due[r] for r in rooms))
    finally:
        for task in readers:
            task.cancel()


def count(args: argparse.Namespace, posts: int) -> int:
    """The server's instructions for one run of the load with ``posts`` POSTs."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="chat-instructions-") as tmp:
        out = Path(tmp) / "cachegrind.out"
        env = {
            **os.environ,
            "CHAT_DATABASE": str(Path(tmp) / "chat.db"),
            "CHAT_WRITE_RATE_PER_S": "0",
            "CHAT_MAX_STREAMS_PER_CLIENT": "0",
        }
        command = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "-q"]
        command += [f"--cachegrind-out-file={out}", sys.executable, "-m", "chat", "serve"]
        command += ["--host", "127.0.0.1", "--port", str(port)]
        log = open(Path(tmp) / "server.log", "wb")  # noqa: SIM115 (closed below)
        server = subprocess.Popen(command, env=env, cwd=tmp, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + args.timeout
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
                    break
                except OSError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise SystemExit("the server did not start") from None
                    time.sleep(0.5)
            for k in range(args.rooms):
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/api/rooms/in{k}", b"{}", method="PUT"
                )
                request.add_header("Content-Type", "application/json")
                urllib.request.urlopen(request, timeout=60)
            asyncio.run(load(port, args, posts))
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(args.timeout)
            log.close()
        summary = re.search(r"^summary: (\d+)", out.read_text(), re.MULTILINE)
        if summary is None:
            raise SystemExit("cachegrind wrote no summary")
        return int(summary.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rooms", type=int, default=20)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--publishers", type=int, default=8)
    parser.add_argument("--base", type=int, default=300, help="POSTs of the first run")
    parser.add_argument("--posts", type=int, default=1300, help="POSTs of the second run")
    parser.add_argument(
        "--paced", action="store_true", help="each POST once every stream has the last one"
    )
    parser.add_argument("--batch", type=int, default=0, help="messages a POST (0: single)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds, for each run")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("needs valgrind (apt-get install valgrind)")
    low, high = count(args, args.base), count(args, args.posts)
    per = (high - low) / (args.posts - args.base)
    result = {"instructions_per_publish": round(per), "low": low, "high": high, **vars(args)}
    if args.batch:
        result["instructions_per_message"] = round(per / args.batch)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
