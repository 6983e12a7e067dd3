"""Prometheus metrics, one registry per app (tests run several apps in one process)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# The *_created series only add noise to a scrape.
disable_created_metrics()  # type: ignore[no-untyped-call]

CONTENT_TYPE = CONTENT_TYPE_LATEST


def _task_count() -> float:
    try:
        return len(asyncio.all_tasks())
    except RuntimeError:  # no running loop (a scrape outside the server)
        return 0


class Metrics:
    def __init__(self, subscriber_count: Callable[[], float], hub_count: Callable[[], float]):
        self.registry = CollectorRegistry()
        r = self.registry
        Gauge("chat_subscribers", "Open event streams.", registry=r).set_function(subscriber_count)
        Gauge("chat_hubs", "Rooms with at least one subscriber.", registry=r).set_function(
            hub_count
        )
        Gauge("chat_asyncio_tasks", "Tasks alive in the event loop.", registry=r).set_function(
            _task_count
        )
        self.events_published = Counter(
            "chat_events_published", "Events handed to the hubs, by type.", ["type"], registry=r
        )
        self.frames_sent = Counter(
            "chat_frames_sent", "Event frames written to streams (live and replayed).", registry=r
        )
        self.writes = Counter(
            "chat_stream_writes",
            "Chunks written to streams (frames coalesce into one).",
            registry=r,
        )
        self.replayed = Counter(
            "chat_replayed_events", "Events sent from the store (resume and catch-up).", registry=r
        )
        self.catchups = Counter(
            "chat_slow_subscriber_catchups",
            "Times a subscriber fell behind its buffer and caught up from the store.",
            registry=r,
        )
        self.resets = Counter(
            "chat_resets", "Reset events sent (resume point unknown or gap too large).", registry=r
        )
        self.streams_opened = Counter("chat_streams_opened", "Streams opened.", registry=r)
        self.broker_connected = Gauge(
            "chat_broker_connected",
            "1 while subscribed to the Redis broker (always 1 with the local broker).",
            registry=r,
        )
        self.broker_connected.set(1)
        self.broker_reconnects = Counter(
            "chat_broker_reconnects", "Attempts to reconnect to the Redis broker.", registry=r
        )
        self.broker_dropped = Counter(
            "chat_broker_unsent",
            "Batches of events not sent to Redis (the other processes read them from the store).",
            registry=r,
        )
        self.gap_fills = Counter(
            "chat_broker_gap_fills",
            "Reads of the store for events the broker brought late, out of order or not at all.",
            registry=r,
        )
        self.requests_rejected = Counter(
            "chat_errors", "Error responses, by status code.", ["status"], registry=r
        )
        self.requests = Counter(
            "chat_requests",
            "Requests answered, by the route table's endpoint (unmatched: no route) and what "
            "served it: a plain route of the pipeline, Quart, or the pipeline itself (a "
            "refusal before routing).",
            ["endpoint", "served_by"],
            registry=r,
        )
        self.stream_writers = Counter(
            "chat_stream_writers",
            "Streams opened, by how their body is written: straight to the server's "
            "transport, or through ASGI send (HTTP/1.0, HTTP/2, another server).",
            ["writer"],
            registry=r,
        )
        self.answer_writers = Counter(
            "chat_answer_writers",
            "Message POSTs answered, by how the answer is written: in one write straight to "
            "the server's transport, or through ASGI send (HTTP/2, another server).",
            ["writer"],
            registry=r,
        )
        self.rate_limited = Counter(
            "chat_rate_limited",
            "Requests refused with 429 by a per-client limit: write, signin, or streams (open "
            "streams per client).",
            ["limit"],
            registry=r,
        )
        self.streams_refused = Counter(
            "chat_streams_refused",
            "Streams told to come back later (200 with a retry:, API.md), by why: "
            "shutting_down, max_streams.",
            ["reason"],
            registry=r,
        )
        self.streams_ended = Counter(
            "chat_streams_ended",
            "Streams ended, by why: client_closed, lifetime (CHAT_STREAM_MAX_SECONDS), "
            "dead_peer (the network vanished: CHAT_DEAD_PEER_SECONDS), credential_expired, "
            "shutdown, server (a stream the server ended for another reason: it fell behind, "
            "its access was removed).",
            ["reason"],
            registry=r,
        )

        # Stream writes are tallied in plain ints and folded into their counters at each
        # scrape: a Counter takes a lock per inc() (docs/design/performance.md).
        self.unfolded_frames = 0
        self.unfolded_writes = 0
        # The same for requests, by (endpoint, served_by), and error answers, by status.
        self.unfolded_requests: dict[tuple[str, str], int] = {}
        self.unfolded_errors: dict[int, int] = {}
        self.unfolded_answers: dict[str, int] = {}  # message POSTs' answers, by writer

    def wrote(self, frames: int, writes: int = 1) -> None:
        """``writes`` chunks holding ``frames`` event frames in all written to streams."""
        self.unfolded_frames += frames
        self.unfolded_writes += writes

    def answered(self, endpoint: str, served_by: str, status: int) -> None:
        """A request's access record is complete (``status`` 0: it was never answered)."""
        key = (endpoint or "unmatched", served_by or "pipeline")
        self.unfolded_requests[key] = self.unfolded_requests.get(key, 0) + 1
        if status >= 400:
            self.unfolded_errors[status] = self.unfolded_errors.get(status, 0) + 1

    def answer_written(self, writer: str) -> None:
        self.unfolded_answers[writer] = self.unfolded_answers.get(writer, 0) + 1

    def limited(self, limit: str) -> None:
        self.rate_limited.labels(limit).inc()

    def stream_opened(self, writer: str) -> None:
        self.stream_writers.labels(writer).inc()

    def render(self) -> bytes:
        self.frames_sent.inc(self.unfolded_frames)
        self.writes.inc(self.unfolded_writes)
        self.unfolded_frames = self.unfolded_writes = 0
        requests, self.unfolded_requests = self.unfolded_requests, {}
        for (endpoint, served_by), count in requests.items():
            self.requests.labels(endpoint, served_by).inc(count)
        errors, self.unfolded_errors = self.unfolded_errors, {}
        for status, count in errors.items():
            self.requests_rejected.labels(str(status)).inc(count)
        answers, self.unfolded_answers = self.unfolded_answers, {}
        for writer, count in answers.items():
            self.answer_writers.labels(writer).inc(count)
        return generate_latest(self.registry)
