"""``create_app(settings)``: builds the parts from Settings, wires them, starts and stops them."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic_core import to_jsonable_python
from quart import Quart
from quart.json.provider import DefaultJSONProvider
from quart_schema import Info, QuartSchema

from chat import __version__, activitystreams, api
from chat.api import routes
from chat.api.auth import Authenticator, RoomAccessPolicy
from chat.api.body import parse_json
from chat.api.cors import Cors
from chat.api.envelope import JSON
from chat.api.limiting import Limits
from chat.api.ops import PAGE_CSP, STATIC_DIR
from chat.api.pipeline import Pipeline
from chat.api.request import Identify, Policy
from chat.api.session import SESSION_ENDPOINTS
from chat.broker import Broker, LocalBroker
from chat.config import Settings, origins
from chat.delivery import Delivery
from chat.errors import Unavailable
from chat.events import Event, make_event, now_rfc3339
from chat.idle import IdleMeter
from chat.limits import Buckets, Forwarded, StreamCounts
from chat.metrics import Metrics
from chat.presence import Presence
from chat.registry import Registry
from chat.store import Store, retention, writes
from chat.store.dialect import shown_database
from chat.store.sqlite import shared_mode

log = logging.getLogger(__name__)
TYPE_OF = attrgetter("type")

PURGE_EVERY_S = 3600.0
LOAD_PROBE_S = 0.01
CURL_EXAMPLES = Path(__file__).resolve().parent / "api" / "curl.md"  # shown at the top of /docs


def _shown_broker(broker: str) -> str:
    """``CHAT_BROKER`` as the start-up line shows it, without a password: its scheme and
    host and port, or a Unix socket's path (``local`` as it is)."""
    where = urlsplit(broker)
    if not where.scheme:
        return broker
    if where.scheme == "unix":
        return f"unix://{where.path}"
    return f"{where.scheme}://{where.hostname}:{where.port or 6379}"


class ChatJSONProvider(DefaultJSONProvider):
    """The app's JSON (``app.json``), installed after QuartSchema (which replaces ``app.json``
    with its own provider when it is set up).

    Bodies are read by ``chat.api.body.parse_json`` (its rule is there), whose ValueError the
    request turns into 400 ``invalid_json``. Answers: fields in their order, characters as they are,
    ``application/json; charset=utf-8`` (API.md), pydantic models converted as quart-schema's
    provider converts them."""

    sort_keys = False  # keep the fields in event order
    ensure_ascii = False  # emoji as they are
    mimetype = JSON

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return parse_json(s)

    # pydantic's conversion, which quart-schema's provider applies too: RFC 3339 times
    default = staticmethod(to_jsonable_python)


def create_app(
    settings: Settings | None = None,
    *,
    identify: Identify | None = None,
    policies: Sequence[Policy] = (),
) -> Quart:
    """The service. ``identify`` replaces the pipeline's identity step (by default
    ``chat.api.auth.Authenticator``, ACCESS.md); ``policies`` follow its access step
    (chat/api/pipeline.py)."""
    settings = settings or Settings()
    app = Quart("chat", static_folder=str(STATIC_DIR), static_url_path="/static")
    app.url_map.merge_slashes = False  # "//" would be a redirect with an HTML page; now a 404
    # No response timeout: with one, Quart runs every response's sending in a task of its own
    # under asyncio.wait_for (docs/design/performance.md). Streams never had one, and a JSON
    # answer is written at once; a client that stops reading is Hypercorn's to close.
    app.config["RESPONSE_TIMEOUT"] = None
    QuartSchema(
        app,
        info=Info(
            title="chat",
            version=__version__,
            description=CURL_EXAMPLES.read_text(),
        ),
        swagger_ui_path=None,  # /docs is chat.api.ops.docs: the same page, with no inline script
        redoc_ui_path=None,
        scalar_ui_path=None,
    )
    app.json = ChatJSONProvider(app)  # after QuartSchema, which sets its own

    registry = Registry()
    metrics = Metrics(lambda: len(registry.subscribers), lambda: len(registry.hubs))
    published = metrics.events_published

    def on_commit(events: Sequence[Event]) -> None:
        # One count per type, not per event: labels() takes a lock each time (a batch is 500);
        # counted in C (map and attrgetter), not by a generator's step per event.
        for event_type, count in Counter(map(TYPE_OF, events)).items():
            published.labels(event_type).inc(count)
        try:
            broker.publish(events)
        except Exception:
            log.exception("publishing committed events failed; every stream catches up")
            registry.resync_all()

    def announce(room: str, user: str, state: str) -> None:
        broker.publish([make_event("presence", room, {"user": user, "state": state})])

    store = Store(settings, on_commit)
    broker: Broker
    presence: Presence
    buckets: Buckets
    streams_per_client: StreamCounts
    if settings.broker == "local":
        broker = LocalBroker(registry)
        presence = Presence(settings.presence_grace_seconds, announce)
        buckets, streams_per_client = Buckets(), StreamCounts()
    else:  # several processes: events, presence and the limits go through Redis
        from chat.redis_broker import RedisBroker  # only then: redis-py's memory
        from chat.redis_limits import SharedBuckets, SharedStreamCounts
        from chat.redis_presence import SharedPresence

        async def read_after(after: int, limit: int) -> list[Event]:
            return await store.events_after(None, after, limit)

        broker = redis = RedisBroker(settings, registry, read_after, store.latest_id, metrics)
        presence = SharedPresence(redis, settings.presence_grace_seconds, announce)
        buckets, streams_per_client = SharedBuckets(redis), SharedStreamCounts(redis)
    auth = Authenticator(settings, store, registry)
    services = api.Services(
        settings,
        store,
        registry,
        broker,
        metrics,
        Delivery(settings, store, registry, metrics, presence),
        presence,
        auth,
        buckets,
        streams_per_client,
    )
    app.extensions["chat"] = services
    api.register(app)
    plain = routes.install(app, services)
    # Every request enters the one pipeline; it hands Quart the routes it does not serve.
    app.asgi_app = Pipeline(  # type: ignore[method-assign]
        app.asgi_app,
        app.url_map,
        plain,
        metrics,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_seconds,
        identify=identify or auth,
        policies=[
            RoomAccessPolicy(registry.access),
            Limits(settings, buckets, store, metrics),
            *policies,
        ],
        forwarded=Forwarded(settings.forwarded_allow_ips),
        cors=Cors(origins(settings)),
        endpoint_headers={
            # the page's files: its CSP and referrer policy, as / has (ACCESS.md)
            "static": [
                (b"content-security-policy", PAGE_CSP.encode()),
                (b"referrer-policy", b"same-origin"),
            ],
            # every answer about a session, its errors too (ACCESS.md, Other headers)
            **{name: [(b"cache-control", b"no-store")] for name in SESSION_ENDPOINTS},
        },
        media_types={"activity.post_activity": activitystreams.AS2_MEDIA_TYPES},
    )
    background: list[asyncio.Task[None]] = []

    async def beat() -> None:
        # Ticks at a quarter period: an idle stream is pinged after 3/4 to 1 period.
        tick_s = settings.heartbeat_seconds / 4
        while True:
            await asyncio.sleep(tick_s)
            registry.heartbeat_tick(time.monotonic(), settings.heartbeat_seconds - tick_s)

    async def watch_load() -> None:
        """How much of the time the loop is idle: the coalescing window widens without it."""
        meter = IdleMeter(asyncio.get_running_loop())
        flusher = services.delivery.flusher
        while True:
            await asyncio.sleep(LOAD_PROBE_S)
            flusher.observe(*meter.sample())

    async def forget_idempotency_keys() -> None:
        ttl = timedelta(hours=settings.idempotency_ttl_hours)
        while True:
            cutoff = now_rfc3339(datetime.now(UTC) - ttl)
            try:
                await store.maintain(writes.purge_idempotency_keys(cutoff))
            except Unavailable:
                log.warning("could not purge old idempotency keys; will try again")
            await asyncio.sleep(PURGE_EVERY_S)

    async def forget_old_events() -> None:
        """CHAT_RETENTION_DAYS: at start and hourly, a chunk at a time (chat/store/retention.py)."""
        age = timedelta(days=settings.retention_days)
        while True:
            cutoff, deleted = now_rfc3339(datetime.now(UTC) - age), 0
            try:
                while covered := await store.maintain(retention.prune(cutoff)):
                    deleted += covered
            except Unavailable:
                log.warning("could not delete old events; will try again")
            except Exception:  # any other failure must not end retention for good
                log.exception("deleting old events failed; will try again")
            if deleted:
                log.info("retention: events up to %s deleted (%d ids)", cutoff, deleted)
            await asyncio.sleep(PURGE_EVERY_S)

    @app.before_serving
    async def start() -> None:
        await store.open()
        # Who may read which room, as of an id, which is where dispatch starts: the events
        # after it, which the broker brings in order, keep the book current (chat/registry.py).
        position, private, members = await store.access_state()
        registry.access.load(private, members)
        registry.position = registry.access_position = position
        await auth.load()
        await broker.start()
        presence.start()
        streams_per_client.start()
        background.append(asyncio.create_task(beat(), name="chat-heartbeat"))
        if settings.coalesce_max_ms > settings.coalesce_ms:
            background.append(asyncio.create_task(watch_load(), name="chat-load"))
        background.append(asyncio.create_task(forget_idempotency_keys(), name="chat-purge"))
        if settings.retention_days > 0:
            background.append(asyncio.create_task(forget_old_events(), name="chat-retention"))
        background.append(asyncio.create_task(auth.watch(), name="chat-credentials"))
        broker_name = _shown_broker(settings.broker)
        database = shown_database(settings.database)
        mode = shared_mode(settings.database)
        if mode is not None:
            log.warning(
                "CHAT_DATABASE %s (or its -wal or -shm file) is mode %o: other users of this "
                "machine may reach its password and token hashes; chmod 600 it and its -wal "
                "and -shm files (a new database is made so)",
                database,
                mode,
            )
        kinds = [kind.__module__ for kind in type(asyncio.get_running_loop()).__mro__]
        loop = "uvloop" if "uvloop" in kinds else kinds[0].split(".")[0]  # or asyncio
        log.info("chat ready: database %s, broker %s, loop %s", database, broker_name, loop)

    @app.after_serving
    async def stop() -> None:
        services.begin_shutdown()
        await presence.stop()
        await streams_per_client.stop()
        for task in background:
            task.cancel()
        if background:
            await asyncio.wait(background)
        await broker.stop()
        await store.close()

    return app
