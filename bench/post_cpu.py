"""CPU per message POST through Hypercorn, the request pipeline and the store, in one process
pinned to the core it starts on: raw keep-alive connections in the same event loop post
one message after another. The client's share is included and the same for any version,
so the figure compares two versions of the server's POST path with little of the VM's
noise (the harness and the network are not in it).

    taskset -c 0 .venv/bin/python bench/post_cpu.py
    PYTHONPATH=/path/to/other/checkout taskset -c 0 .venv/bin/python bench/post_cpu.py

Prints the best of 5 rounds of 1,600 POSTs (16 connections), in µs of process CPU per POST,
with the server's garbage-collector tuning (serve.tune_gc)."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time

from chat.app import create_app
from chat.config import Settings
from chat.serve import hypercorn_config, serve, tune_gc

BODY = b'{"author": "alice", "text": "hello"}'
REQUEST = (
    b"POST /api/rooms/r/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%b" % (len(BODY), BODY)
)
CONNECTIONS = 16
PER_CONNECTION = 100


async def post_many(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
    for _ in range(n):
        writer.write(REQUEST)
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        await reader.readexactly(length)


async def main() -> None:
    folder = tempfile.mkdtemp(prefix="post-cpu-")
    settings = Settings(database=os.path.join(folder, "chat.db"))
    app = create_app(settings)
    tune_gc()
    stop = asyncio.Event()
    port = 8400 + os.getpid() % 90
    server = asyncio.create_task(serve(app, hypercorn_config(settings, "127.0.0.1", port), stop))
    async with asyncio.timeout(120):
        while True:
            try:
                conns = [
                    await asyncio.open_connection("127.0.0.1", port) for _ in range(CONNECTIONS)
                ]
                break
            except OSError:
                await asyncio.sleep(0.05)
        await asyncio.gather(*(post_many(r, w, 50) for r, w in conns))  # warm up
        best = float("inf")
        for _ in range(5):
            cpu = time.process_time()
            await asyncio.gather(*(post_many(r, w, PER_CONNECTION) for r, w in conns))
            used = time.process_time() - cpu
            best = min(best, used / (CONNECTIONS * PER_CONNECTION) * 1e6)
        for _, writer in conns:
            writer.close()
        stop.set()
        await server
    print(f"process CPU per POST (server and client in one process): {best:.1f} µs")


if __name__ == "__main__":
    asyncio.run(main())
