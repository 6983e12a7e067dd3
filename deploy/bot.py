"""A demo bot: posts an activity item into a room every few seconds, forever.

Standard library only, so it runs in any Python 3.11+ (docker-compose.yml runs it in the
service's image). Settings from the environment:

    BOT_URL               the service (default http://nginx:80)
    BOT_ROOM              the room (default demo)
    BOT_INTERVAL_SECONDS  seconds between items (default 3)
    BOT_ACTOR             who the items are from (default demo-bot)
    BOT_TOKEN             a token (python -m chat tokens create demo-bot --role bot), sent as
                          `Authorization: Bearer`: needed when the service runs with
                          CHAT_AUTH=required (default: none, a guest in open mode)

Each item carries an Idempotency-Key that stays the same across retries of that item, so a
retry after a lost answer never posts twice. While the service is not reachable (not started
yet, restarting) the bot retries with a growing pause and never exits on a connection error.
SIGTERM or SIGINT stops it cleanly (exit status 0).
"""

from __future__ import annotations

import http.client
import itertools
import json
import logging
import os
import signal
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from types import FrameType
from typing import Any

log = logging.getLogger("bot")

REQUEST_TIMEOUT_S = 10.0
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
STOP_GRACE_S = 3.0

# What the demo feed talks about: (verb, object) pairs, cycled.
ACTIVITIES = [
    ("built", "main #{n}"),
    ("tested", "main #{n}"),
    ("deployed", "main #{n} to staging"),
    ("opened", "pull request #{n}"),
    ("merged", "pull request #{n}"),
]
STATUSES = ["green", "green", "green", "yellow"]


@dataclass(frozen=True)
class Config:
    url: str
    room: str
    interval_s: float
    actor: str
    token: str | None = None

    @classmethod
    def from_env(cls) -> Config:
        interval = float(os.environ.get("BOT_INTERVAL_SECONDS", "3"))
        if interval <= 0:
            raise SystemExit("BOT_INTERVAL_SECONDS must be above 0")
        return cls(
            url=os.environ.get("BOT_URL", "http://nginx:80").rstrip("/"),
            room=os.environ.get("BOT_ROOM", "demo"),
            interval_s=interval,
            actor=os.environ.get("BOT_ACTOR", "demo-bot"),
            token=os.environ.get("BOT_TOKEN") or None,
        )


class Rejected(Exception):
    """The service refused the request for good (a 4xx other than 429): do not retry it."""


class Unreachable(Exception):
    """No answer, or an answer that says "later" (429, 5xx): retry after ``retry_after_s``."""

    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


def request(
    config: Config, method: str, path: str, body: dict[str, Any], headers: dict[str, str]
) -> tuple[int, Any]:
    """One JSON request; returns (status, decoded body) for a 2xx, raises otherwise."""
    req = urllib.request.Request(
        config.url + path,
        data=json.dumps(body).encode(),
        method=method,
        headers={
            "Content-Type": "application/json",
            "Accept": "application/json",
            **({"Authorization": f"Bearer {config.token}"} if config.token else {}),
            **headers,
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        detail = exc.read(500).decode(errors="replace")
        if exc.code == 429 or exc.code >= 500:
            raise Unreachable(f"{exc.code}: {detail}", _retry_after(exc.headers)) from exc
        raise Rejected(f"{exc.code}: {detail}") from exc
    except (OSError, http.client.HTTPException, ValueError) as exc:
        # URLError, refused or reset connections, timeouts, a half-read or non-JSON answer
        raise Unreachable(f"{type(exc).__name__}: {exc}") from exc


def _retry_after(headers: Any) -> float | None:
    try:
        return float(headers.get("Retry-After"))
    except (TypeError, ValueError):
        return None


class Bot:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.stop = threading.Event()
        self.room_path = "/api/rooms/" + urllib.parse.quote(config.room, safe="")

    def with_retries(
        self, what: str, method: str, path: str, body: dict[str, Any], headers: dict[str, str]
    ) -> tuple[int, Any] | None:
        """Send until it is answered; None if the bot is stopping or the service refused it."""
        pause = BACKOFF_FIRST_S
        while not self.stop.is_set():
            try:
                return request(self.config, method, path, body, headers)
            except Rejected as exc:
                log.error("%s refused, skipped: %s", what, exc)
                return None
            except Unreachable as exc:
                wait = exc.retry_after_s if exc.retry_after_s is not None else pause
                log.warning("%s: service not reachable (%s), retrying in %.1fs", what, exc, wait)
                self.stop.wait(wait)
                pause = min(pause * 2, BACKOFF_MAX_S)
        return None

    def ensure_room(self) -> None:
        """Create the room with a title (posting alone would create it untitled)."""
        answer = self.with_retries(
            "creating the room", "PUT", self.room_path, {"title": "Demo activity feed"}, {}
        )
        if answer is not None:
            log.info("room %s ready at %s", self.config.room, self.config.url)

    def item(self, n: int) -> dict[str, Any]:
        verb, obj = ACTIVITIES[n % len(ACTIVITIES)]
        target = obj.format(n=n)
        status = STATUSES[n % len(STATUSES)]
        return {
            "actor": self.config.actor,
            "verb": verb,
            "object": target,
            "summary": f"{self.config.actor} {verb} {target}",
            "data": {"n": n, "status": status},
        }

    def post(self, n: int) -> None:
        body = self.item(n)
        key = str(uuid.uuid4())  # one key per item, the same on every retry of it
        answer = self.with_retries(
            f"item {n}", "POST", self.room_path + "/activity", body, {"Idempotency-Key": key}
        )
        if answer is not None:
            status, event = answer
            event_id = event.get("id") if isinstance(event, dict) else None
            replayed = " (replayed)" if status == 200 else ""
            log.info("posted item %d as event %s%s", n, event_id, replayed)

    def run(self) -> None:
        self.ensure_room()
        for n in itertools.count(1):
            if self.stop.is_set():
                break
            self.post(n)
            self.stop.wait(self.config.interval_s)
        log.info("stopped")


def main() -> int:
    logging.basicConfig(
        level=os.environ.get("BOT_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )
    bot = Bot(Config.from_env())
    failed: list[BaseException] = []

    def work() -> None:
        try:
            bot.run()
        except BaseException as exc:
            log.exception("the bot failed")
            failed.append(exc)

    # The bot works in a thread; the main thread only waits and takes the signals, so a
    # signal handler never interrupts the bot while it holds a lock (stop.set() needs one).
    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("%s received, stopping", signal.Signals(signum).name)
        bot.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    worker = threading.Thread(target=work, name="bot", daemon=True)
    worker.start()
    while worker.is_alive() and not bot.stop.is_set():
        worker.join(0.5)
    # A request in flight ends within REQUEST_TIMEOUT_S; do not wait that long to exit.
    worker.join(STOP_GRACE_S)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
