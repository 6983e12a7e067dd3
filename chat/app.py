"""``create_app(settings)``: builds the parts from Settings, wires them, starts and stops them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from quart import Quart
from quart_schema import Info, QuartSchema

from chat import __version__, api
from chat.api import limits
from chat.api.ops import DOCS_ASSETS
from chat.broker import Broker, LocalBroker
from chat.config import Settings
from chat.events import Event
from chat.metrics import Metrics
from chat.registry import Registry
from chat.store import Store
from chat.stream import Streams

log = logging.getLogger(__name__)


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

    registry = Registry()
    metrics = Metrics(lambda: len(registry.subscribers), lambda: len(registry.hubs))
    broker = make_broker(settings, registry)
    published = metrics.events_published

    def on_commit(events: Sequence[Event]) -> None:
        for event in events:
            published.labels(event.type).inc()
        broker.publish(events)

    store = Store(settings, on_commit)
    services = api.Services(
        settings, store, registry, broker, metrics, Streams(settings, store, registry, metrics)
    )
    app.extensions["chat"] = services
    api.register(app)
    heartbeat: list[asyncio.Task[None]] = []

    async def beat() -> None:
        while True:
            await asyncio.sleep(settings.heartbeat_seconds)
            registry.heartbeat_tick()

    @app.before_serving
    async def start() -> None:
        await store.open()
        registry.position = await store.latest_id()
        await broker.start()
        heartbeat.append(asyncio.create_task(beat(), name="chat-heartbeat"))
        log.info("chat ready: database %s, broker %s", settings.database, settings.broker)

    @app.after_serving
    async def stop() -> None:
        services.begin_shutdown()
        for task in heartbeat:
            task.cancel()
        if heartbeat:
            await asyncio.wait(heartbeat)
        await broker.stop()
        await store.close()

    return app
