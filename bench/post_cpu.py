"""CPU per message POST through Hypercorn, the request pipeline and the store, in one process
pinned to the core it starts on: raw keep-alive connections in the same event loop post
one message after another. The client's share is included and the same for any version,
so the figure compares two versions of the server's POST path with little of the VM's
noise (the harness and the network are not in it).

    taskset -c 0 .venv/bin/python bench/post_cpu.py
    PYTHONPATH=/path/to/other/checkout taskset -c 0 .venv/bin/python bench/post_cpu.py

Prints the best of 5 rounds of 1,280 POSTs (16 connections), in µs of process CPU per POST,
with the server's garbage-collector tuning (serve.tune_gc): POSTs as a guest (``author`` in
the body), and POSTs with ``Authorization: Bearer <service token>`` on every request (the
author filled in from the token), rounds of the two interleaved, and their ratio (issue 13:
a bearer token must cost within 10%); and POSTs with the bearer token through the per-client
write limit (issue 14: ACCESS.md, Limits), on a second server in the same process whose
bucket never empties, so that every check runs and none refuses."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from typing import Any

from chat import credentials
from chat.app import create_app
from chat.config import Settings
from chat.serve import hypercorn_config, serve, tune_gc
from chat.store import accounts

GUEST_BODY = b'{"author": "alice", "text": "hello"}'
SIGNED_IN_BODY = b'{"text": "hello"}'


def request(body: bytes, token: str | None = None) -> bytes:
    auth = b"" if token is None else b"Authorization: Bearer %b\r\n" % token.encode()
    return (
        b"POST /api/rooms/r/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"%bContent-Length: %d\r\n\r\n%b" % (auth, len(body), body)
    )


CONNECTIONS = 16
# Hypercorn closes a keep-alive connection after 1,000 requests: 2 x (25 + 5 x 80) stay below.
PER_CONNECTION = 80


Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def post_many(conn: Conn, n: int, raw: bytes) -> None:
    reader, writer = conn
    for _ in range(n):
        writer.write(raw)
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        await reader.readexactly(length)


async def start(
    folder: str, name: str, port: int, stop: asyncio.Event, **limits: float
) -> tuple[Any, asyncio.Task[None], list[Conn]]:
    settings = Settings(database=os.path.join(folder, f"{name}.db"), **limits)
    app = create_app(settings)
    server = asyncio.create_task(serve(app, hypercorn_config(settings, "127.0.0.1", port), stop))
    while True:
        try:
            conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(CONNECTIONS)]
            return app, server, conns
        except OSError:
            await asyncio.sleep(0.05)


async def main() -> None:
    folder = tempfile.mkdtemp(prefix="post-cpu-")
    stop = asyncio.Event()
    port = 8400 + os.getpid() % 45 * 2
    async with asyncio.timeout(120):
        # limits off (their settings at 0), and on with a bucket that never empties: every
        # check runs, none refuses (ACCESS.md's defaults would refuse all but 100 here)
        app, off, plain = await start(folder, "off", port, stop, write_rate_per_s=0)
        _, on, limited = await start(
            folder, "on", port + 1, stop, write_rate_per_s=1e9, write_burst=10**9
        )
        tune_gc()
        token, token_hash = credentials.new_token()
        for started in (app, _):
            await started.extensions["chat"].store.write(
                accounts.create_token("bench", token_hash, "alice", "bot", "api", None, None)
            )
        kinds = {
            "guest": (plain, request(GUEST_BODY)),
            "bearer": (plain, request(SIGNED_IN_BODY, token)),
            "bearer, limits on": (limited, request(SIGNED_IN_BODY, token)),
        }
        for conns, raw in kinds.values():  # warm up
            await asyncio.gather(*(post_many(conn, 25, raw) for conn in conns))
        best = dict.fromkeys(kinds, float("inf"))
        for _ in range(5):
            for kind, (conns, raw) in kinds.items():
                cpu = time.process_time()
                await asyncio.gather(*(post_many(conn, PER_CONNECTION, raw) for conn in conns))
                used = time.process_time() - cpu
                best[kind] = min(best[kind], used / (CONNECTIONS * PER_CONNECTION) * 1e6)
        for _, writer in plain + limited:
            writer.close()
        stop.set()
        await asyncio.gather(off, on)
    print("process CPU per POST (server and client in one process):")
    for kind, value in best.items():
        print(f"  {kind:>17}: {value:.1f} µs")
    print(f"  bearer / guest: {best['bearer'] / best['guest']:.3f}")
    print(f"  limits on / off (bearer): {best['bearer, limits on'] / best['bearer']:.3f}")


if __name__ == "__main__":
    asyncio.run(main())
