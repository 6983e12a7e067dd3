"""``serve --certfile F --keyfile F``: HTTPS with Hypercorn's own TLS, ALPN offering h2 and
http/1.1. A certificate made here (self-signed, for 127.0.0.1); real servers; httpx as the
client, verifying the certificate. Over HTTP/2 and over HTTPS HTTP/1.1: a stream gets the
message a POST on the same client sent, and its end (the client closing it) releases the
subscriber; a sign-in over HTTPS gets a ``Secure`` cookie. The TLS handshake is bounded by the
header timeout too. The command line refuses half a pair. Every wait is bounded."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import re
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import h2.config
import h2.connection
import h2.errors
import h2.events
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.live import ROOT, LiveServer, open_stream, scrape

TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Cert:
    certfile: Path
    keyfile: Path

    def client_context(self) -> ssl.SSLContext:
        """What a client that trusts this certificate verifies the server with."""
        return ssl.create_default_context(cafile=str(self.certfile))


def make_cert(folder: Path) -> Cert:
    """A self-signed P-256 certificate for 127.0.0.1, valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = folder / "cert.pem", folder / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    keyfile.chmod(0o600)
    return Cert(certfile, keyfile)


class TLSServer(LiveServer):
    """A live server started with ``--certfile`` and ``--keyfile``, at an https:// URL."""

    def __init__(self, workdir: Path, cert: Cert, env: Mapping[str, str] | None = None) -> None:
        args = ["--certfile", str(cert.certfile), "--keyfile", str(cert.keyfile)]
        super().__init__(workdir, env, args=args)
        self.url = f"https://127.0.0.1:{self.port}"
        self.context = cert.client_context()

    def healthy(self) -> bool:
        try:
            response = httpx.get(self.url + "/healthz", timeout=1, verify=self.context)
        except httpx.HTTPError:
            return False
        return response.status_code == 200


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> Cert:
    return make_cert(tmp_path_factory.mktemp("cert"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, cert: Cert) -> Iterator[TLSServer]:
    live = TLSServer(tmp_path_factory.mktemp("tls"), cert)
    live.start()
    yield live
    log = live.log()
    live.terminate()
    assert "Traceback" not in log and " ERROR " not in log, log


@pytest.fixture(params=["HTTP/2", "HTTP/1.1"])
def version(request: pytest.FixtureRequest) -> str:
    """The HTTP version the client speaks (and the server must answer with)."""
    assert isinstance(request.param, str)
    return request.param


def tls_client(server: TLSServer, version: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=server.url, http2=version == "HTTP/2", verify=server.context, timeout=TIMEOUT_S
    )


@pytest.fixture
async def client(server: TLSServer, version: str) -> AsyncIterator[httpx.AsyncClient]:
    async with tls_client(server, version) as c:
        yield c


async def subscribers(client: httpx.AsyncClient, room: str) -> int:
    response = await asyncio.wait_for(client.get(f"/api/rooms/{room}"), TIMEOUT_S)
    assert response.status_code == 200, response.text
    count = response.json()["subscribers"]
    assert isinstance(count, int)
    return count


async def wait_for_subscribers(client: httpx.AsyncClient, room: str, count: int) -> None:
    """Until the room has ``count`` subscribers (polled: nothing announces it)."""
    async with asyncio.timeout(TIMEOUT_S):
        while await subscribers(client, room) != count:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def stream_writers(client: httpx.AsyncClient) -> dict[str, float]:
    """``chat_stream_writers_total`` by writer: how the streams so far were written."""
    values = await scrape(client)
    return {
        writer: values.get(f'chat_stream_writers_total{{writer="{writer}"}}', 0.0)
        for writer in ("transport", "asgi_send")
    }


async def test_a_stream_gets_the_message_posted_on_the_same_client(
    server: TLSServer, version: str, room: str
) -> None:
    """Over HTTP/2 the stream and the POST share one connection; over HTTP/1.1 they are two.
    When the client closes, the server releases the subscriber. (httpx does not reset an
    HTTP/2 stream it stops reading, encode/httpcore#943, so for it the stream ends with the
    connection; ``test_an_http2_stream_reset_by_the_client_is_released`` resets one.)"""
    async with tls_client(server, version) as client:
        writers_before = await asyncio.wait_for(stream_writers(client), TIMEOUT_S)
        created = await asyncio.wait_for(client.put(f"/api/rooms/{room}", json={}), TIMEOUT_S)
        assert created.status_code == 201, created.text
        assert created.http_version == version
        async with open_stream(client, f"/api/rooms/{room}/events") as stream:
            assert stream.response.http_version == version
            assert stream.response.headers["content-type"].startswith("text/event-stream")
            assert await subscribers(client, room) == 1
            posted = await asyncio.wait_for(
                client.post(
                    f"/api/rooms/{room}/messages", json={"author": "alice", "text": "over TLS"}
                ),
                TIMEOUT_S,
            )
            assert posted.status_code == 201, posted.text
            assert posted.http_version == version
            event = await stream.next(timeout_s=TIMEOUT_S)
            assert event.event == "message"
            assert event.json() == posted.json()
            assert event.id == str(posted.json()["id"])
        writers = await asyncio.wait_for(stream_writers(client), TIMEOUT_S)
    # HTTP/1.1 over TLS still takes the direct transport write; HTTP/2 goes through ASGI send.
    expected = "asgi_send" if version == "HTTP/2" else "transport"
    assert writers[expected] == writers_before[expected] + 1, (writers_before, writers)
    async with tls_client(server, version) as other:
        await wait_for_subscribers(other, room, 0)


async def test_a_sign_in_over_https_gets_a_secure_cookie(
    client: httpx.AsyncClient, version: str, room: str
) -> None:
    """CHAT_COOKIE_SECURE is not set: the request's scheme (https under Hypercorn's TLS) is
    what makes the cookie Secure."""
    answer = await asyncio.wait_for(client.post("/api/session", json={"user": room}), TIMEOUT_S)
    assert answer.status_code == 201, answer.text
    assert answer.http_version == version
    [cookie] = answer.headers.get_list("set-cookie")
    attributes = [part.strip().lower() for part in cookie.split(";")]
    assert cookie.startswith("chat_session=")
    assert "secure" in attributes, cookie
    assert "httponly" in attributes, cookie
    signed_in = await asyncio.wait_for(client.get("/api/session"), TIMEOUT_S)
    assert signed_in.json()["user"] == room


@contextlib.asynccontextmanager
async def tls_connection(
    cert: Cert, port: int, alpn: list[str]
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A TLS connection offering ``alpn``; its close is not checked (a server that has sent
    data after the client's close_notify makes the TLS shutdown fail, harmlessly)."""
    context = cert.client_context()
    context.set_alpn_protocols(alpn)
    async with asyncio.timeout(TIMEOUT_S):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname="127.0.0.1"
        )
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):  # ssl.SSLError is an OSError
            await asyncio.wait_for(writer.wait_closed(), TIMEOUT_S)


async def test_alpn_offers_h2_and_http11(server: TLSServer, cert: Cert) -> None:
    for offered, chosen in ((["h2", "http/1.1"], "h2"), (["http/1.1"], "http/1.1")):
        async with tls_connection(cert, server.port, offered) as (_reader, writer):
            assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == chosen


class H2Client:
    """An HTTP/2 client on the ``h2`` library, for what httpx does not do: reset a stream."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        acknowledge: bool = True,
    ) -> None:
        """``acknowledge=False``: a client that stopped reading, which never opens the
        server's flow-control window (64 KiB) again."""
        self.reader, self.writer = reader, writer
        self.acknowledge = acknowledge
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.conn.initiate_connection()
        self.status: dict[int, str] = {}
        self.data: dict[int, bytearray] = {}  # each stream's bytes, appended in place
        self.pongs = 0

    async def flush(self) -> None:
        self.writer.write(self.conn.data_to_send())
        await asyncio.wait_for(self.writer.drain(), TIMEOUT_S)

    async def send_body(self, stream_id: int, data: bytes) -> None:
        """Body DATA, as the stream's flow-control window lets it go (the stream goes on)."""
        size = self.conn.max_outbound_frame_size
        for start in range(0, len(data), size):
            chunk = data[start : start + size]
            await self.read_until(partial(self.window_holds, stream_id, len(chunk)))
            self.conn.send_data(stream_id, chunk)
            await self.flush()

    def window_holds(self, stream_id: int, size: int) -> bool:
        return self.conn.local_flow_control_window(stream_id) >= size

    async def read_until(self, done: Callable[[], bool]) -> None:
        async with asyncio.timeout(TIMEOUT_S):
            while not done():
                chunk = await self.reader.read(65536)
                assert chunk, "the server closed the connection"
                for event in self.conn.receive_data(chunk):
                    if isinstance(event, h2.events.ResponseReceived):
                        self.status[event.stream_id] = dict(event.headers)[":status"]
                    elif isinstance(event, h2.events.DataReceived):
                        self.data.setdefault(event.stream_id, bytearray()).extend(event.data)
                        if self.acknowledge:
                            self.conn.acknowledge_received_data(
                                event.flow_controlled_length, event.stream_id
                            )
                    elif isinstance(event, h2.events.PingAckReceived):
                        self.pongs += 1
                await self.flush()


def request_headers(
    method: str, path: str, port: int, *more: tuple[str, str]
) -> list[tuple[str, str]]:
    """An HTTP/2 request's pseudo-headers for this server, then ``more``."""
    return [
        (":method", method),
        (":path", path),
        (":scheme", "https"),
        (":authority", f"127.0.0.1:{port}"),
        *more,
    ]


async def test_an_http2_stream_reset_by_the_client_is_released(
    server: TLSServer, cert: Cert, room: str
) -> None:
    """A browser's EventSource.close() over HTTP/2 resets the stream (RST_STREAM) and keeps
    the connection: the server releases the subscriber, and the connection still answers."""
    async with (
        tls_connection(cert, server.port, ["h2"]) as (reader, writer),
        tls_client(server, "HTTP/2") as observer,
    ):
        created = await asyncio.wait_for(observer.put(f"/api/rooms/{room}", json={}), TIMEOUT_S)
        assert created.status_code == 201, created.text
        client = H2Client(reader, writer)
        headers = request_headers("GET", f"/api/rooms/{room}/events", server.port)
        client.conn.send_headers(1, headers, end_stream=True)
        await client.flush()
        await client.read_until(lambda: b": connected" in client.data.get(1, b""))
        assert client.status[1] == "200"
        assert await subscribers(observer, room) == 1
        client.conn.reset_stream(1, h2.errors.ErrorCodes.CANCEL)
        await client.flush()
        await wait_for_subscribers(observer, room, 0)
        client.conn.ping(b"still on")
        await client.flush()
        await client.read_until(lambda: client.pongs == 1)


async def ask(client: H2Client, stream_id: int, path: str, port: int) -> None:
    """GET ``path`` on a new stream, and take its answer's headers."""
    client.conn.send_headers(stream_id, request_headers("GET", path, port), end_stream=True)
    await client.flush()
    await client.read_until(lambda: stream_id in client.status)
    assert client.status[stream_id] == "200", client.status


async def stream_on(
    observer: httpx.AsyncClient,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    port: int,
    room: str,
    *,
    acknowledge: bool = True,
) -> H2Client:
    """An HTTP/2 client on the connection whose stream 1 follows ``room`` (made first), once
    its ``: connected`` has come."""
    created = await asyncio.wait_for(observer.put(f"/api/rooms/{room}", json={}), TIMEOUT_S)
    assert created.status_code == 201, created.text
    client = H2Client(reader, writer, acknowledge=acknowledge)
    await ask(client, 1, f"/api/rooms/{room}/events", port)
    await client.read_until(lambda: b": connected" in client.data.get(1, b""))
    return client


async def ping(client: H2Client) -> None:
    """A PING and its answer: the server has read everything sent before it."""
    pongs = client.pongs
    client.conn.ping(b"12345678")
    await client.flush()
    await client.read_until(lambda: client.pongs > pongs)


async def tasks_settle_at(observer: httpx.AsyncClient, count: float) -> float:
    """The server's tasks (``chat_asyncio_tasks``) once they are down to ``count``, or after
    5 s: the count then."""
    async with asyncio.timeout(TIMEOUT_S):
        for _ in range(50):
            now = (await scrape(observer))["chat_asyncio_tasks"]
            if now <= count:
                break
            await asyncio.sleep(0.1)
    return now


async def test_http2_answers_a_client_stopped_reading_leave_nothing_behind(
    server: TLSServer, cert: Cert, room: str
) -> None:
    """Over HTTP/2 an answer goes out through Hypercorn's buffer per stream, as the client's
    flow-control window allows. A client that stops reading an answer larger than its window
    (a history page, a stream's replay) and then resets the stream, or closes its connection,
    leaves nothing behind in the server: Hypercorn 0.18 kept each such request's task, and its
    connection's, until shutdown (``chat.h2_streams``)."""
    async with tls_client(server, "HTTP/1.1") as observer:
        batch = {"messages": [{"author": "ann", "text": "x" * 3000} for _ in range(14)]}
        for _ in range(3):  # 126 KB of history, in bodies under the limit (64 KiB)
            posted = await asyncio.wait_for(
                observer.post(f"/api/rooms/{room}/messages/batch", json=batch), TIMEOUT_S
            )
            assert posted.status_code == 201, posted.text
        before = (await scrape(observer))["chat_asyncio_tasks"]
        paths = [
            f"/api/rooms/{room}/messages?limit=42",
            f"/api/rooms/{room}/events?last_event_id=0",
        ]
        for path in paths:
            async with tls_connection(cert, server.port, ["h2"]) as (reader, writer):
                client = H2Client(reader, writer, acknowledge=False)
                await ping(client)
                idle = await tasks_settle_at(observer, before + 2)  # the connection's own
                for stream_id in (1, 3):  # reset, the connection still open
                    await ask(client, stream_id, path, server.port)
                    client.conn.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
                    await client.flush()
                await ping(client)
                assert await tasks_settle_at(observer, idle) == idle, f"{path}: after resets"
                await ask(client, 5, path, server.port)  # and then the connection closed
            assert await tasks_settle_at(observer, before) == before, f"{path}: after the close"
            assert all(len(data) < 70_000 for data in client.data.values())  # never read on


async def test_http2_body_data_after_an_early_answer_keeps_the_connection(
    server: TLSServer, cert: Cert, room: str
) -> None:
    """A body over the limit is answered 413 before the client has sent all of it, and over
    HTTP/2 the rest of its DATA then comes for a stream the server has finished. The
    connection goes on, and the event stream on it (Hypercorn 0.18 ended the whole
    connection: ``chat.h2_streams``). A browser sends everything over one connection."""
    async with (
        tls_client(server, "HTTP/1.1") as observer,
        tls_connection(cert, server.port, ["h2"]) as (reader, writer),
    ):
        client = await stream_on(observer, reader, writer, server.port, room)
        post = request_headers(
            "POST",
            f"/api/rooms/{room}/messages",
            server.port,
            ("content-type", "application/json"),
            ("content-length", "400000"),
        )
        client.conn.send_headers(3, post)
        await client.send_body(3, b" " * 70_000)  # over the limit (64 KiB)
        await client.read_until(lambda: 3 in client.status)
        assert client.status[3] == "413"
        await client.send_body(3, b" " * 20_000)  # the rest comes all the same
        await ping(client)
        said = await asyncio.wait_for(
            observer.post(
                f"/api/rooms/{room}/messages", json={"author": "ann", "text": "still here"}
            ),
            TIMEOUT_S,
        )
        assert said.status_code == 201, said.text
        await client.read_until(lambda: b"still here" in client.data.get(1, b""))


def stream_ids(data: bytes) -> list[int]:
    """The ``id:`` of every event in a stream's bytes, in the order they came."""
    return [int(found) for found in re.findall(rb"^id: (\d+)$", data, re.MULTILINE)]


async def post_texts(observer: httpx.AsyncClient, room: str, count: int) -> list[int]:
    """``count`` messages of 3,000 characters, 20 a batch (bodies under 64 KiB); their ids."""
    ids: list[int] = []
    for start in range(0, count, 20):
        items = [
            {"author": "ann", "text": f"{n:05d} " + "x" * 3000} for n in range(start, start + 20)
        ]
        made = await asyncio.wait_for(
            observer.post(f"/api/rooms/{room}/messages/batch", json={"messages": items}), TIMEOUT_S
        )
        assert made.status_code == 201, made.text
        ids += [event["id"] for event in made.json()["events"]]
    return ids


@pytest.fixture(scope="module")
def small_buffer_server(
    tmp_path_factory: pytest.TempPathFactory, cert: Cert
) -> Iterator[TLSServer]:
    """A TLS server whose subscribers fall behind past 64 KiB of queued events."""
    live = TLSServer(
        tmp_path_factory.mktemp("tls-small"), cert, {"CHAT_SUBSCRIBER_BUFFER_BYTES": "65536"}
    )
    live.start()
    yield live
    log = live.log()
    live.terminate()
    assert "Traceback" not in log and " ERROR " not in log, log


async def test_an_http2_stream_that_stops_reading_falls_behind_and_loses_nothing(
    small_buffer_server: TLSServer, cert: Cert, room: str
) -> None:
    """A stream over HTTP/2 whose client stops reading (its flow-control window spent) while
    6 MB of messages are posted: the server holds it back rather than buffer them (its memory
    does not grow with what is posted: Hypercorn 0.18 kept all of it, ``chat.h2_streams``),
    and when the client reads again the stream is caught up from the store, every id once, in
    order (API.md: a slow reader never makes the server's memory grow without bound)."""
    server = small_buffer_server
    async with (
        tls_client(server, "HTTP/1.1") as observer,
        tls_connection(cert, server.port, ["h2"]) as (reader, writer),
    ):
        await post_texts(observer, "warm-up", 100)  # the writer's and the allocator's caches
        before = await scrape(observer)
        rss_before = server.rss_kib()
        client = await stream_on(observer, reader, writer, server.port, room, acknowledge=False)
        ids = await post_texts(observer, room, 2000)
        await ping(client)  # the server has read all: the stream's window is long spent
        growth_kib = server.rss_kib() - rss_before  # without chat.h2_streams' pop: 7.6 MB
        assert growth_kib < 4608, f"the server grew {growth_kib} KiB with 6 MB posted"
        client.acknowledge = True  # reading again: the window opens
        client.conn.acknowledge_received_data(len(client.data[1]), 1)
        await client.flush()
        last = b"\nid: %d\n" % ids[-1]
        await client.read_until(lambda: last in client.data.get(1, b""))
        assert stream_ids(client.data[1]) == ids
        after = await scrape(observer)
        caught_up = "chat_slow_subscriber_catchups_total"
        assert after[caught_up] > before[caught_up]


async def test_an_http2_connection_past_a_thousand_requests_keeps_its_stream(
    server: TLSServer, cert: Cert, room: str
) -> None:
    """A page sends its POSTs and history requests on the connection its event stream uses.
    Past 1,000 requests (Hypercorn's ``keep_alive_max_requests``) every request is still
    answered and the stream still gets the room's messages: Hypercorn 0.18 closed h2's side
    of the connection there, and the stream went silent (``chat.h2_streams``)."""
    async with (
        tls_client(server, "HTTP/1.1") as observer,
        tls_connection(cert, server.port, ["h2"]) as (reader, writer),
    ):
        client = await stream_on(observer, reader, writer, server.port, room)
        stream_id = 3
        for _ in range(21):  # 1,050 requests, 50 at a time
            asked = range(stream_id, stream_id + 100, 2)
            for each in asked:
                headers = request_headers("GET", "/healthz", server.port)
                client.conn.send_headers(each, headers, end_stream=True)
            await client.flush()
            await client.read_until(lambda: client.conn.open_outbound_streams == 1)
            assert {client.status.get(n) for n in asked} == {"200"}
            stream_id += 100
        said = await asyncio.wait_for(
            observer.post(f"/api/rooms/{room}/messages", json={"author": "ann", "text": "later"}),
            TIMEOUT_S,
        )
        assert said.status_code == 201, said.text
        await client.read_until(lambda: b'"text":"later"' in client.data.get(1, b""))


@pytest.fixture(scope="module")
def quick_server(tmp_path_factory: pytest.TempPathFactory, cert: Cert) -> Iterator[TLSServer]:
    """A TLS server with a 1 s header timeout and heartbeats every 1.5 s."""
    live = TLSServer(
        tmp_path_factory.mktemp("tls-quick"),
        cert,
        {"CHAT_HEADER_TIMEOUT_SECONDS": "1", "CHAT_HEARTBEAT_SECONDS": "1.5"},
    )
    live.start()
    yield live
    live.terminate()


async def test_a_tls_handshake_that_never_comes_is_closed(quick_server: TLSServer) -> None:
    """A TCP connection that never starts its TLS handshake is closed after the header
    timeout (the handshake gets as long as the headers do)."""
    async with asyncio.timeout(TIMEOUT_S):
        reader, writer = await asyncio.open_connection("127.0.0.1", quick_server.port)
        try:
            async with asyncio.timeout(1.0 + 3.0):
                with contextlib.suppress(ConnectionResetError):
                    assert await reader.read() == b""
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def test_an_http2_stream_idle_for_longer_than_the_header_timeout_stays_open(
    quick_server: TLSServer, room: str
) -> None:
    """Heartbeats every 1.5 s, a header timeout of 1 s: over HTTP/2 too, an open stream stops
    the connection's idle timer, and the stream outlives two silences longer than it."""
    async with (
        tls_client(quick_server, "HTTP/2") as client,
        open_stream(client, f"/api/rooms/{room}/events") as stream,
    ):
        assert stream.response.http_version == "HTTP/2"
        await stream.until_comment("ping", TIMEOUT_S, count=2)
        posted = await asyncio.wait_for(
            client.post(f"/api/rooms/{room}/messages", json={"author": "a", "text": "hi"}),
            TIMEOUT_S,
        )
        assert posted.status_code == 201
        assert (await stream.next(timeout_s=TIMEOUT_S)).json()["text"] == "hi"


def serve_command(*args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    # refused before the store opens: the database is never created
    env = {"PATH": "/usr/bin:/bin", "CHAT_DATABASE": "/nonexistent/never.db", **settings}
    return subprocess.run(
        [sys.executable, "-m", "chat", "serve", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_half_a_pair_or_a_bad_file_is_refused(cert: Cert, tmp_path: Path) -> None:
    for args in (["--certfile", str(cert.certfile)], ["--keyfile", str(cert.keyfile)]):
        done = serve_command(*args)
        assert done.returncode == 2, done
        assert "--certfile and --keyfile go together" in done.stderr
    done = serve_command("--certfile", str(cert.certfile), "--keyfile", str(tmp_path / "none"))
    assert done.returncode == 2, done
    assert "cannot serve HTTPS" in done.stderr
    pair = ("--certfile", str(cert.certfile), "--keyfile", str(cert.keyfile))
    done = serve_command(*pair, "--workers", "2", CHAT_BROKER="redis://127.0.0.1:1/0")
    assert done.returncode == 2, done
    assert "--workers > 1 does not serve HTTPS" in done.stderr
