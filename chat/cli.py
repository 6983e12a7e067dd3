"""``python -m chat``: serve, migrate."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sqlite3
import sys
from collections.abc import Sequence
from urllib.parse import urlsplit

from pydantic import ValidationError

from chat import __version__
from chat.config import Settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m chat",
        description="Real-time multi-room chat and activity-feed service. Settings come from "
        "CHAT_* environment variables or a .env file (see README.md).",
    )
    parser.add_argument("--version", action="version", version=f"chat {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="start the HTTP server",
        description="Start the service under Hypercorn. The database (CHAT_DATABASE, default "
        "chat.db) is created and migrated on start. SIGTERM or Ctrl-C ends every stream "
        "and exits.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes on the same port (default 1); more than 1 needs the Redis "
        "broker (CHAT_BROKER=redis://host:port/0)",
    )
    serve.add_argument("--worker-of", type=int, default=1, help=argparse.SUPPRESS)

    post = commands.add_parser(
        "post",
        help="post a message to a room",
        description="Post a message and print the stored event (JSON).",
    )
    post.add_argument("room")
    post.add_argument("text")
    post.add_argument("--author", required=True, help="who the message is from")
    post.add_argument("--url", help="the service (default: CHAT_URL, http://127.0.0.1:8000)")

    tail = commands.add_parser(
        "tail",
        help="print a room's events as they arrive",
        description="Follow one or more rooms (or * for all) and print each event once. "
        "Reconnects by itself after a dropped connection or a server restart and resumes "
        "where it left off (Last-Event-ID). Ctrl-C stops it.",
    )
    tail.add_argument("rooms", nargs="+", metavar="ROOM", help="room names, or * for all")
    tail.add_argument("--types", help="only these event types, e.g. message,activity")
    tail.add_argument("--authors", help="only events by these authors or actors")
    tail.add_argument("--mentions", help="only messages mentioning @NAME")
    tail.add_argument("--since", type=int, help="start after this event id (replays history)")
    tail.add_argument("--json", action="store_true", help="print each event as one JSON line")
    tail.add_argument("--url", help="the service (default: CHAT_URL, http://127.0.0.1:8000)")

    commands.add_parser(
        "migrate",
        help="apply pending database migrations",
        description="Apply the migrations in migrations/ that CHAT_DATABASE has not seen yet.",
    )
    return parser


def _migrate(settings: Settings) -> int:
    from chat.migrations import apply_pending

    conn = sqlite3.connect(settings.database, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.execute("PRAGMA journal_mode = WAL")
        applied = apply_pending(conn, settings.migrations_dir)
    finally:
        conn.close()
    for migration in applied:
        print(f"applied {migration.version:04d}_{migration.name}")
    print(f"{settings.database}: up to date ({len(applied)} applied)")
    return 0


def _client(args: argparse.Namespace, url: str) -> int:
    from chat import client

    if urlsplit(url).scheme != "http":
        print(f"--url must be an http:// URL, not {url!r}", file=sys.stderr)
        return 2
    if args.command == "post":
        try:
            event = client.post_message(url, args.room, args.author, args.text)
        except client.ClientError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        print(json.dumps(event, ensure_ascii=False))
        return 0
    query = {
        name: value
        for name, value in (
            ("types", args.types),
            ("authors", args.authors),
            ("mentions", args.mentions),
        )
        if value
    }
    tail = client.Tail(url, args.rooms, query, as_json=args.json, last_id=args.since)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a tail ends
        try:
            tail.run()
        except client.RequestRefused as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as error:
        for problem in error.errors():
            name = "CHAT_" + "_".join(str(part) for part in problem["loc"]).upper()
            print(f"{name}: {problem['msg']}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.command == "migrate":
        return _migrate(settings)
    if args.command in ("post", "tail"):
        return _client(args, args.url or settings.url)
    if args.workers < 1:
        print("--workers must be at least 1", file=sys.stderr)
        return 2
    if args.workers > 1 and settings.broker == "local":
        print(
            "--workers > 1 needs a broker shared by the workers: with the local broker each "
            "worker would only see its own events. Set CHAT_BROKER=redis://host:port/0.",
            file=sys.stderr,
        )
        return 2
    if args.workers > 1:
        from chat.workers import run_workers

        return run_workers(args.host, args.port, args.workers, settings.shutdown_grace_seconds)
    from chat.serve import run

    run(settings, args.host, args.port, reuse_port=args.worker_of > 1)
    return 0
