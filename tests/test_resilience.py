"""Resilience against live servers: a stalled reader, kill -9, SIGTERM with thousands of open
streams, closed streams leaving nothing behind, resume across a restart.

Each test runs its own ``python -m chat serve`` (tests/live.py); raw streams come from
tests/rawsse.py. Every network wait is bounded, every loop bounded in count and time. The
bounds only guard against a hang: how fast the service is (a shutdown, a catch-up) is for the
benchmarks under bench/ to measure, never for a timed assertion here."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.live import LiveServer, open_stream, scrape
from tests.rawsse import RawSSE, UnexpectedStatus

MakeServer = Callable[..., LiveServer]
MiB = 1 << 20
# How long a process may take to exit after SIGTERM before the test calls it hung (and kills
# it). A guard, not a measure; a grace period meant never to run out is set far longer.
HANG_S = 45.0
NEVER_S = "600"


async def publish(
    url: str,
    room: str,
    texts: list[str],
    publishers: int,
    acked: list[dict[str, Any]],
    *,
    kill: tuple[LiveServer, int] | None = None,
) -> None:
    """Post ``texts`` from ``publishers`` concurrent clients; every 201 event goes to ``acked``.
    With ``kill=(live, n)``, the publisher that reads the n-th 201 kills ``live`` (SIGKILL) at
    once, before any other answer is read: the kill lands mid-run, after exactly n
    acknowledgements, with the other publishers' requests in flight. From then on a publisher
    stops at its first transport error; before it, a transport error fails the run."""
    killed = False

    async def worker(k: int) -> None:
        nonlocal killed
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            for text in texts[k::publishers]:
                try:
                    response = await client.post(
                        f"/api/rooms/{room}/messages", json={"author": f"p{k}", "text": text}
                    )
                except httpx.TransportError:
                    if killed:
                        return
                    raise
                assert response.status_code == 201, response.text
                acked.append(response.json())
                if kill is not None and len(acked) == kill[1]:
                    kill[0].kill()  # blocks the loop until the process is gone
                    killed = True

    await asyncio.gather(*(worker(k) for k in range(publishers)))


async def metrics(client: httpx.AsyncClient) -> dict[str, float]:
    """The service's unlabelled metrics (``chat_*``)."""
    return {
        k: v for k, v in (await scrape(client)).items() if k.startswith("chat_") and "{" not in k
    }


async def history(client: httpx.AsyncClient, room: str, pages: int) -> list[dict[str, Any]]:
    """A room's whole history, oldest first, page by page (at most ``pages`` requests)."""
    messages: list[dict[str, Any]] = []
    for _ in range(pages):
        after = messages[-1]["id"] if messages else 0
        response = await client.get(
            f"/api/rooms/{room}/messages", params={"after": after, "limit": 200}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        messages += body["messages"]
        if not body["has_more"]:
            return messages
    raise AssertionError(f"history of {room} longer than {pages} pages")


def server_connections(port: int) -> int:
    """Connections the server side of ``port`` still holds (ESTABLISHED or CLOSE_WAIT)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, _, state = line.split()[1:4]
        if int(local.rsplit(":", 1)[1], 16) == port and state in {"01", "08"}:
            count += 1
    return count


def id_(event: dict[str, Any]) -> int:
    return int(event["id"])


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def publish_batches(url: str, room: str, texts: list[str], per_request: int = 20) -> None:
    """Post ``texts`` in batches of ``per_request`` (``POST .../messages/batch``, under the
    default 64 KiB body limit for 3,000-byte texts), one request after another."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        for start in range(0, len(texts), per_request):
            items = [{"author": "p", "text": text} for text in texts[start : start + per_request]]
            made = await client.post(f"/api/rooms/{room}/messages/batch", json={"messages": items})
            assert made.status_code == 201, made.text


def tcp_send_buffer_max() -> int:
    return int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])


def come_back(raw: bytes) -> bytes:
    """The status line of a pipelined answer; a 200 must be a stream that only says `retry:`
    and ends (API.md, Streams)."""
    status = raw.split(b"\r\n", 1)[0]
    if status == b"HTTP/1.1 200 ":
        assert b"text/event-stream" in raw and b"\r\nretry: " in raw and b"data:" not in raw, raw
    return status


async def exit_code_after_sigterm(live: LiveServer) -> int | None:
    """SIGTERM, then the exit code once the process has ended by itself; None if it was still
    running ``HANG_S`` later (it is then killed)."""
    try:
        return await asyncio.wait_for(asyncio.to_thread(live.terminate, HANG_S), HANG_S + 10)
    except subprocess.TimeoutExpired:
        return None


async def test_slow_reader_blocks_nobody_holds_little_and_loses_nothing(
    make_server: MakeServer,
) -> None:
    """A reader with a 4 KiB receive buffer stops reading. Publishers and a fast reader go on
    unhindered, the server's memory does not grow with what is posted, the slow one falls
    behind its 64 KiB buffer, and when it reads again it gets every id once, in order."""
    live = make_server(CHAT_SUBSCRIBER_BUFFER_BYTES="65536")
    # The kernel's send buffer (autotuned up to tcp_wmem's max, 4 MiB here) swallows a few MiB
    # for the stalled socket before the server's own buffer fills: post well past that.
    count = max(1200, (tcp_send_buffer_max() + 2 * MiB) // 3000 + 1)
    assert count <= 10_000, "tcp_wmem max is huge: this test would post too much"
    texts = [f"{i:05d} " + "x" * 3000 for i in range(count)]
    total_bytes = sum(len(t) for t in texts)
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        await publish(live.url, "warmup", texts[:300], 8, [])  # warm caches and allocator
        rss_before = live.rss_kib()
        slow = await RawSSE.open(live.port, "/api/rooms/r/events", rcvbuf=4096, limit=4096)
        try:
            async with open_stream(client, "/api/rooms/r/events") as fast:
                peak = rss_before

                async def sample() -> None:
                    nonlocal peak
                    for _ in range(10_000):
                        peak = max(peak, live.rss_kib())
                        await asyncio.sleep(0.01)

                sampler = asyncio.create_task(sample())
                reader = asyncio.create_task(fast.take(count, timeout_s=90))
                acked: list[dict[str, Any]] = []
                try:
                    # never blocked by the stalled reader: every POST is answered, and soon
                    await asyncio.wait_for(publish(live.url, "r", texts, 8, acked), 60)
                    got = await asyncio.wait_for(reader, 90)
                    await asyncio.sleep(0.2)
                finally:
                    for task in (sampler, reader):
                        task.cancel()
                    await asyncio.gather(sampler, reader, return_exceptions=True)
            ids = sorted(int(e["id"]) for e in acked)
            assert [int(e.id or 0) for e in got] == ids
            assert [e.json()["text"] for e in got] == [e["text"] for e in sorted(acked, key=id_)]
            growth = (peak - rss_before) * 1024
            # legitimately held: 64 KiB of queued frames, the transport's 64 KiB, one chunk
            assert growth < min(16 * MiB, total_bytes // 2), (growth, total_bytes)

            seen = [f.id for f in await slow.read_until(ids[-1], quiet_s=5, most=count)]
            missing = sorted(set(ids) - set(seen))
            assert not missing, f"{len(missing)} ids never reached the slow reader: {missing[:5]}"
            assert seen == ids  # every id exactly once, in increasing order
            after = await metrics(client)
            assert after["chat_slow_subscriber_catchups_total"] > 0
            assert after["chat_replayed_events_total"] > 0
            assert (live.rss_kib() - rss_before) * 1024 < 64 * MiB
        finally:
            await slow.close()


async def test_kill_9_loses_no_acknowledged_message(make_server: MakeServer) -> None:
    """SIGKILL while six publishers post (right after the 400th 201, requests in flight): after
    a restart on the same database every 201 is in the history with its text, whatever their
    count, and new ids are above every earlier one."""
    live = make_server()
    texts = [f"k{i:05d} " + "y" * 200 for i in range(3000)]
    acked: list[dict[str, Any]] = []
    await asyncio.wait_for(publish(live.url, "k", texts, 6, acked, kill=(live, 400)), 60)
    assert live.proc is None and len(acked) >= 400  # killed mid-run, by construction
    live.start()
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        stored = await history(client, "k", pages=len(texts) // 200 + 2)
        text_of = {m["id"]: m["text"] for m in stored}
        lost = [id_(e) for e in acked if text_of.get(e["id"]) != e["text"]]
        assert not lost, f"{len(lost)} of {len(acked)} acknowledged messages lost: {lost[:5]}"
        # only what was posted, each at most once (unacknowledged ones may or may not be there)
        assert len(set(text_of.values())) == len(stored) and set(text_of.values()) <= set(texts)
        newest = max([*text_of, *(id_(e) for e in acked)])
        response = await client.post(
            "/api/rooms/k/messages", json={"author": "after", "text": "after restart"}
        )
        assert response.status_code == 201
        assert response.json()["id"] > newest


async def test_sigterm_ends_thousands_of_streams_and_exits_promptly(
    make_server: MakeServer,
) -> None:
    """2,000 open streams, SIGTERM: every stream ends cleanly (chunked terminator, then EOF),
    and the process exits 0 by itself, without waiting out the grace period (set so long that
    waiting it out would fail). Requests pipelined behind some streams are served once their
    stream ends, that is during the shutdown: /readyz must get 503 and new streams a 200 that
    says `retry:` and ends (API.md, Streams), or no answer at all."""
    live = make_server(CHAT_SHUTDOWN_GRACE_SECONDS=NEVER_S)
    gate = asyncio.Semaphore(100)
    probes = {i: "/readyz" if i % 40 else "/api/rooms/t0/events" for i in range(0, 2000, 20)}

    async def open_one(i: int) -> RawSSE:
        async with gate:
            path = f"/api/rooms/t{i % 25}/events"
            return await RawSSE.open(live.port, path, pipeline=probes.get(i), timeout_s=30)

    opened = await asyncio.gather(*(open_one(i) for i in range(2000)), return_exceptions=True)
    streams = [s for s in opened if isinstance(s, RawSSE)]
    try:
        assert len(streams) == 2000, [e for e in opened if not isinstance(e, RawSSE)][:3]
        async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
            assert (await metrics(client))["chat_subscribers"] == 2000
        exit_code = asyncio.create_task(exit_code_after_sigterm(live))
        ends = await asyncio.gather(
            *(s.read_to_end(HANG_S) for s in streams), return_exceptions=True
        )
        code = await asyncio.wait_for(exit_code, HANG_S + 15)
    finally:
        await asyncio.gather(*(s.close() for s in streams))
    failed = [e for e in ends if not isinstance(e, list)]
    assert not failed, (len(failed), failed[:3])
    assert all(s.ended for s in streams)
    assert code == 0, f"exit code {code} (None: still running {HANG_S:.0f} s after SIGTERM)"
    answers = {i: come_back(streams[i].after_end) for i in probes}
    for i, path in probes.items():  # the stream a 200 that ends at once, /readyz never a 200
        assert answers[i] in (
            {b"", b"HTTP/1.1 200 "} if "events" in path else {b"", b"HTTP/1.1 503 "}
        )
    for path in set(probes.values()):  # observed at least once (here: every time)
        assert any(answers[i] for i, p in probes.items() if p == path), (path, answers)
    assert not any(s.after_end for i, s in enumerate(streams) if i not in probes)
    assert "Traceback" not in live.log(), live.log()[-3000:]


async def test_closed_streams_leave_nothing_behind(make_server: MakeServer) -> None:
    """200 streams (one room, several rooms, every room) closed by their clients: no
    subscriber, no hub, no task, no socket, no file descriptor remains."""
    live = make_server(CHAT_HEADER_TIMEOUT_SECONDS="5")
    paths = []
    for i in range(200):
        if i % 10 == 9:
            paths.append("/api/events?rooms=*")
        elif i % 2:
            paths.append(f"/api/rooms/n{i % 7}/events")
        else:
            paths.append(f"/api/events?rooms=n{i % 7},m{i % 3}")
    rooms = {f"n{i}" for i in range(7)} | {f"m{i}" for i in range(3)}
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        # Hypercorn keeps a connection its client closed while idle until keep_alive_timeout
        # (CHAT_HEADER_TIMEOUT_SECONDS, 5 s here): LiveServer.start's /healthz probe leaves
        # one, with its tasks. Wait it out, scraping meanwhile so that this client's own
        # connection never idles that long.
        for _ in range(150):
            await metrics(client)
            if server_connections(live.port) == 1:
                break
            await asyncio.sleep(0.1)
        before = await metrics(client)
        fds_before = open_fds(live.pid)
        gate = asyncio.Semaphore(50)

        async def open_one(path: str) -> RawSSE:
            async with gate:
                return await RawSSE.open(live.port, path)

        opened = await asyncio.gather(*(open_one(p) for p in paths), return_exceptions=True)
        streams = [s for s in opened if isinstance(s, RawSSE)]
        try:
            assert len(streams) == 200, [e for e in opened if not isinstance(e, RawSSE)][:3]
            during = await metrics(client)
            assert during["chat_subscribers"] == 200
            assert during["chat_hubs"] == len(rooms)
            assert during["chat_asyncio_tasks"] > before["chat_asyncio_tasks"]
            for room in sorted(rooms):  # something pending or unread on every stream
                response = await client.post(
                    f"/api/rooms/{room}/messages", json={"author": "a", "text": "unread"}
                )
                assert response.status_code == 201
        finally:
            await asyncio.gather(*(s.close() for s in streams))
        tasks = before["chat_asyncio_tasks"]
        want = {"chat_subscribers": 0.0, "chat_hubs": 0.0, "chat_asyncio_tasks": tasks}
        state: tuple[dict[str, float], int, int] = ({}, -1, -1)
        for _ in range(100):  # a few seconds
            now = await metrics(client)
            state = ({k: now[k] for k in want}, server_connections(live.port), open_fds(live.pid))
            if state == (want, 1, fds_before):
                break
            await asyncio.sleep(0.05)
        assert state == (want, 1, fds_before)


async def test_resume_across_restart_gets_exactly_the_missed_events(
    make_server: MakeServer,
) -> None:
    """A subscriber reads until SIGTERM ends its stream and keeps the last id it saw; after a
    restart on the same database, more messages arrive before it reconnects. With
    Last-Event-ID it gets exactly what it missed, in order, then the live stream."""
    live = make_server()
    room, path = "again", "/api/rooms/again/events"
    acked: list[dict[str, Any]] = []
    stream = await RawSSE.open(live.port, path)
    try:
        await publish(live.url, room, [f"before {i}" for i in range(10)], 1, acked)
        seen = [int(f.id or 0) for f in await stream.read_events(10, timeout_s=10)]
        await publish(live.url, "elsewhere", ["not followed"], 1, [])
        # five more, acknowledged just before the shutdown: delivered or not, none is lost
        await publish(live.url, room, [f"late {i}" for i in range(5)], 1, acked)
        assert await asyncio.to_thread(live.terminate, 20) == 0
        seen += [int(f.id or 0) for f in await stream.read_to_end(10)]
    finally:
        await stream.close()
    ids = [id_(e) for e in acked]
    assert seen == ids[: len(seen)] and len(seen) >= 10  # a gap-free prefix
    last_seen = seen[-1]

    live.start()
    await publish(live.url, room, [f"while away {i}" for i in range(7)], 1, acked)
    missed = [e for e in acked if id_(e) > last_seen]
    resumed = await RawSSE.open(live.port, path, headers={"Last-Event-ID": str(last_seen)})
    try:
        got = await resumed.read_until(id_(missed[-1]), quiet_s=3, most=len(missed) + 1)
        assert [f.id for f in got] == [id_(e) for e in missed]
        assert [json.loads(f.data) for f in got] == missed  # the very events, as stored
        live_one: list[dict[str, Any]] = []
        await publish(live.url, room, ["live again"], 1, live_one)
        assert [f.id for f in await resumed.read_events(1, timeout_s=10)] == [live_one[0]["id"]]
    finally:
        await resumed.close()


async def test_sigterm_while_streams_are_being_opened(make_server: MakeServer) -> None:
    """Streams being opened as SIGTERM lands each get no connection, or a stream that then
    ends cleanly (at once, with only a `retry:`, once the shutdown has begun: never a 503);
    the process exits 0 by itself, without waiting out the grace period (set so long that
    waiting it out would fail; three rounds: the window is narrow). Rooms must exist
    (CHAT_AUTO_CREATE_ROOMS=false), so opening a stream of 100 rooms reads the store."""
    rooms = [f"o{i}" for i in range(100)]
    path = "/api/events?rooms=" + ",".join(rooms)

    async def opener(port: int, opened: list[RawSSE]) -> None:
        for _ in range(1000):
            try:
                opened.append(await RawSSE.open(port, path))
            except UnexpectedStatus as exc:
                assert exc.status == 503
            except (OSError, EOFError):  # refused or closed: the server is going
                return

    for _ in range(3):
        live = make_server(CHAT_AUTO_CREATE_ROOMS="false", CHAT_SHUTDOWN_GRACE_SECONDS=NEVER_S)
        async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
            for room in rooms:
                assert (await client.put(f"/api/rooms/{room}", json={})).status_code == 201
        opened: list[RawSSE] = []
        openers = [asyncio.create_task(opener(live.port, opened)) for _ in range(30)]
        try:
            async with asyncio.timeout(HANG_S):  # SIGTERM once some streams are open
                while len(opened) < 20:
                    for task in openers:
                        if task.done():
                            task.result()  # its error, or:
                            raise AssertionError("an opener stopped before the shutdown")
                    await asyncio.sleep(0.01)
            code = await exit_code_after_sigterm(live)
            await asyncio.wait_for(asyncio.gather(*openers), HANG_S)
            ends = await asyncio.gather(
                *(s.read_to_end(HANG_S) for s in opened), return_exceptions=True
            )
        finally:
            for task in openers:
                task.cancel()
            await asyncio.gather(*openers, return_exceptions=True)
            await asyncio.gather(*(s.close() for s in opened))
        assert opened, "no stream opened before the shutdown"
        unclean = [e for e in ends if not isinstance(e, list)]
        assert not unclean, (len(unclean), unclean[:3])
        assert code == 0, f"exit code {code} (None: still running {HANG_S:.0f} s after SIGTERM)"


async def test_sigterm_with_a_stalled_reader_exits_after_the_grace_period(
    make_server: MakeServer,
) -> None:
    """A client that stopped reading (its socket full) cannot keep the process alive: after
    SIGTERM the process exits 0 by itself while that client is still connected and stalled."""
    live = make_server(CHAT_SHUTDOWN_GRACE_SECONDS="2")
    slow = await RawSSE.open(live.port, "/api/rooms/s/events", rcvbuf=4096, limit=4096)
    try:
        count = (tcp_send_buffer_max() + 2 * MiB) // 3000 + 1  # past the kernel's buffers
        await asyncio.wait_for(publish_batches(live.url, "s", ["z" * 3000] * count), 60)
        code = await exit_code_after_sigterm(live)
    finally:
        await slow.close()  # only now: it read nothing more until the process was gone
    assert code == 0, f"exit code {code} (None: still running {HANG_S:.0f} s after SIGTERM)"
