"""``create_app(settings)``: builds the parts from Settings, wires them, starts and stops them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from quart import Quart
from quart_schema import Info, QuartSchema

from chat import __version__, api
from chat.api import limits
from chat.api.ops import DOCS_ASSETS
from chat.broker import Broker, LocalBroker
from chat.config import Settings
from chat.errors import Unavailable
from chat.events import Event, make_event
from chat.metrics import Metrics
from chat.presence import Presence
from chat.ratelimit import RateLimiter
from chat.registry import Registry
from chat.store import Store, writes
from chat.stream import Streams

log = logging.getLogger(__name__)

PURGE_EVERY_S = 3600.0


def make_broker(settings: Settings, registry: Registry) -> Broker:
    if settings.broker == "local":
        return LocalBroker(registry)
    raise ValueError(f"CHAT_BROKER={settings.broker!r} is not supported: use 'local'")


def create_app(settings: Settings | None = None) -> Quart:
    settings = settings or Settings()
    app = Quart("chat")
    limits.install(app, settings.max_body_bytes)
    app.url_map.merge_slashes = False  # "//" would be a redirect with an HTML page; now a 404
    app.config["QUART_SCHEMA_SWAGGER_JS_URL"] = DOCS_ASSETS + "/swagger-ui-bundle.js"
    app.config["QUART_SCHEMA_SWAGGER_CSS_URL"] = DOCS_ASSETS + "/swagger-ui.css"
    QuartSchema(
        app,
        info=Info(
            title="chat",
            version=__version__,
            description="Real-time multi-room chat and activity feed: REST in, SSE out.",
        ),
        swagger_ui_path="/docs",
        redoc_ui_path=None,
        scalar_ui_path=None,
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep the fields in event order
    app.json.ensure_ascii = False  # type: ignore[attr-defined]  # emoji as they are

    registry = Registry()
    metrics = Metrics(lambda: len(registry.subscribers), lambda: len(registry.hubs))
    broker = make_broker(settings, registry)
    published = metrics.events_published

    def on_commit(events: Sequence[Event]) -> None:
        for event in events:
            published.labels(event.type).inc()
        broker.publish(events)

    def announce(room: str, user: str, state: str) -> None:
        broker.publish([make_event("presence", room, {"user": user, "state": state})])

    store = Store(settings, on_commit)
    presence = Presence(settings.presence_grace_seconds, announce)
    services = api.Services(
        settings,
        store,
        registry,
        broker,
        metrics,
        Streams(settings, store, registry, metrics, presence),
        presence,
        RateLimiter(settings.typing_interval_seconds),
    )
    app.extensions["chat"] = services
    api.register(app)
    background: list[asyncio.Task[None]] = []

    async def beat() -> None:
        while True:
            await asyncio.sleep(settings.heartbeat_seconds)
            registry.heartbeat_tick()

    async def forget_idempotency_keys() -> None:
        ttl = timedelta(hours=settings.idempotency_ttl_hours)
        while True:
            cutoff = (datetime.now(UTC) - ttl).isoformat(timespec="milliseconds")
            try:
                await store.write(writes.purge_idempotency_keys(cutoff.replace("+00:00", "Z")))
            except Unavailable:
                log.warning("could not purge old idempotency keys; will try again")
            await asyncio.sleep(PURGE_EVERY_S)

    @app.before_serving
    async def start() -> None:
        await store.open()
        registry.position = await store.latest_id()
        await broker.start()
        background.append(asyncio.create_task(beat(), name="chat-heartbeat"))
        background.append(asyncio.create_task(forget_idempotency_keys(), name="chat-purge"))
        log.info("chat ready: database %s, broker %s", settings.database, settings.broker)

    @app.after_serving
    async def stop() -> None:
        services.begin_shutdown()
        presence.close()
        for task in background:
            task.cancel()
        if background:
            await asyncio.wait(background)
        await broker.stop()
        await store.close()

    return app
