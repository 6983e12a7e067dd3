"""Settings: every knob of the service, read once from ``CHAT_*`` variables (and ``.env``)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


class Settings(BaseSettings):
    """Read from the environment (``CHAT_DATABASE=...``) or a ``.env`` file; nothing else reads
    the environment. Units are in the names."""

    # allow_inf_nan: a duration of inf or nan was accepted and broke the timer or socket
    # option it became (the shutdown watchdog, TCP_USER_TIMEOUT), at run time
    model_config = SettingsConfigDict(
        env_prefix="CHAT_", env_file=".env", extra="ignore", allow_inf_nan=False
    )

    database: str = Field(
        "chat.db",
        description="The store: a SQLite file (a path, or `sqlite:///path`), the embedded "
        "default; or a PostgreSQL URL, `postgresql://user:password@host:5432/chat` (any libpq "
        "URL), which several hosts can share (docs/design/store.md).",
    )

    @field_validator("database")
    @classmethod
    def _names_a_database(cls, value: str) -> str:
        """Empty, or SQLite's ``:memory:`` (a database of its own for each connection, gone at
        exit), would store nothing: ``tokens create`` printed a token kept nowhere."""
        if value.strip() in ("", ":memory:"):
            raise ValueError("name a SQLite file (a path, or sqlite:///path) or a PostgreSQL URL")
        return value

    database_pool_size: int = Field(
        # 10 on PostgreSQL, 4 on SQLite (as chat.store.dialect.database_kind tells them apart)
        default_factory=lambda data: (
            10 if str(data.get("database", "")).startswith(("postgresql://", "postgres://")) else 4
        ),
        ge=1,
        description="Read connections of a process. PostgreSQL (default 10): the most it keeps "
        "open. SQLite (default 4): opened at start, each on a thread of its own with its own "
        "page cache (up to about 2 MiB), so that a slow search holds one while replays and "
        "history pages use the others.",
    )
    database_connect_timeout_seconds: float = Field(
        5.0, gt=0, description="PostgreSQL: how long a connection attempt may take."
    )
    database_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="PostgreSQL: the longest a statement may run (its `statement_timeout`), "
        "a read may wait for its answer, and a connection may leave data unacknowledged "
        "(`tcp_user_timeout`: a network cut) before the request gets 503.",
    )
    migrations_dir: Path = Field(MIGRATIONS_DIR, description="Folder of numbered .sql files.")
    heartbeat_seconds: float = Field(
        15.0, ge=0.1, le=3600, description="Idle streams get `: ping` this often."
    )
    retry_ms: int = Field(3000, ge=0, description="Reconnect delay sent to EventSource clients.")
    replay_limit: int = Field(
        10000, ge=0, description="A resume gap larger than this gets a `reset` event instead."
    )
    max_body_bytes: int = Field(65536, gt=0, description="Largest request body accepted.")
    body_timeout_seconds: float = Field(
        60.0, gt=0, description="A request body must arrive within this many seconds (408)."
    )
    auto_create_rooms: bool = Field(True, description="Posting into an unknown room creates it.")
    broker: str = Field(
        "local",
        pattern=r"^(local|(redis|rediss|unix)://.*)$",
        description="`local` (one process), or a `redis://host:port/db` URL: several "
        "processes or hosts share events through Redis (docs/design/scale-out.md).",
    )

    @field_validator("broker")
    @classmethod
    def _names_a_broker(cls, value: str) -> str:
        """A port that is not a number (``redis://host:abc/0``) was a traceback at start."""
        if value != "local":
            try:
                _ = urlsplit(value).port  # read to be checked
            except ValueError as error:
                raise ValueError(f"not a Redis URL: {error}") from None
        return value

    broker_prefix: str = Field(
        "chat",
        min_length=1,
        description="Prefix of the Redis channel and keys, so several deployments can share "
        "one Redis.",
    )
    broker_gap_wait_ms: float = Field(
        50.0,
        ge=0,
        description="How long an event that arrived ahead of a smaller id waits for it before "
        "the missing ids are read from the store.",
    )
    broker_poll_seconds: float = Field(
        1.0,
        gt=0,
        description="How often each process checks the store for events the broker did not "
        "bring (Redis away, a process that died before publishing).",
    )
    broker_reconnect_max_seconds: float = Field(
        2.0, gt=0, description="Longest wait between attempts to reconnect to Redis."
    )
    subscriber_buffer_bytes: int = Field(
        1 << 20,
        gt=0,
        description="Frames queued for one subscriber before it counts as behind and catches up "
        "from the store.",
    )
    max_streams: int = Field(
        15000, gt=0, description="Open streams this process accepts; more get 503 unavailable."
    )
    presence_grace_seconds: float = Field(
        5.0, ge=0, description="A user leaves a room this long after their last stream closed."
    )
    typing_interval_seconds: float = Field(
        1.0, ge=0, description="At most one typing event per user and room this often."
    )
    retention_days: float = Field(
        0.0,
        ge=0,
        le=36500,
        description="Delete events older than this many days (at most 36500), in every room, "
        "with the messages, edits and reactions they made (not access events, nor the newest "
        "event); a stream resuming from before what is kept gets `reset` (reason `expired`). "
        "Checked at start and hourly. 0 keeps everything.",
    )
    idempotency_ttl_hours: float = Field(
        24.0,
        ge=24,
        le=876000,
        description="How long an Idempotency-Key is remembered (at least 24 h, at most "
        "876000: a century).",
    )
    coalesce_ms: float = Field(
        0.0,
        ge=0,
        description="Under load a stream writes at most once per this many ms, and the frames "
        "that arrive meanwhile go out in one write; a stream that was quiet for this long "
        "writes at once (in the next loop cycle). 0 writes every wake-up.",
    )
    coalesce_max_ms: float = Field(
        500.0,
        ge=0,
        description="While the event loop is saturated (idle under 5% of the time), the "
        "coalescing window widens, up to this many ms, until writing takes "
        "CHAT_COALESCE_WRITE_SHARE of the loop's time; it narrows back to CHAT_COALESCE_MS "
        "once the loop is idle over 20% of the time (between 5% and 20% it only narrows, as "
        "far as that share allows).",
    )
    coalesce_write_share: float = Field(
        0.15,
        gt=0,
        le=1,
        description="While the event loop is saturated, the coalescing window is steered so "
        "that writing to streams takes this share of its time: smaller accepts more "
        "publishes and delivers them later.",
    )
    replay_page_size: int = Field(500, gt=0, description="Events read per store query on replay.")
    write_queue_max: int = Field(
        10000, gt=0, description="Writes waiting for the store before more get 503."
    )
    write_batch_max: int = Field(500, gt=0, description="Most writes committed in one transaction.")
    sqlite_synchronous: Literal["NORMAL", "FULL"] = Field(
        "NORMAL",
        description="NORMAL survives a crash of the process (kill -9); FULL also a power cut.",
    )
    shutdown_grace_seconds: float = Field(
        5.0, ge=0, le=3600, description="How long shutdown waits for open requests to finish."
    )
    url: str = Field(
        "http://127.0.0.1:8000", description="Where `python -m chat post/tail` find the service."
    )
    auth: Literal["open", "required"] = Field(
        "open",
        description="`open`: a request without credentials is a guest (reads public rooms, "
        "posts under a name it declares); `required`: every API call needs a signed-in "
        "identity (ACCESS.md). `serve` on a non-loopback host refuses to start while this "
        "is not set at all.",
    )
    session_ttl_hours: float = Field(
        720.0,
        gt=0,
        le=876000,
        description="How long a sign-in (POST /api/session) stays valid (at most 876000 h).",
    )
    cookie_secure: bool = Field(
        False, description="Mark the session cookie Secure even when the request came over HTTP."
    )
    cors_origins: str = Field(
        "",
        description="Comma-separated origins, besides the service's own, whose pages may send "
        "cookie-authenticated writes (and, with issue 14, CORS requests).",
    )
    jwt_secret: SecretStr | None = Field(
        None,
        description="Shared secret (32 bytes or more) of HS256 JWTs minted by another application.",
    )
    jwt_public_key_file: Path | None = Field(
        None,
        description="PEM public key of RS256 or ES256 JWTs minted by another application "
        "(not with CHAT_JWT_SECRET).",
    )
    jwt_audience: str | None = Field(None, description="When set, a JWT's `aud` must name it.")
    metrics_public: bool = Field(
        False, description="In `required` mode, serve /metrics to anyone, not only admins and bots."
    )
    token: SecretStr | None = Field(
        None, description="The token `python -m chat post/tail` send (or --token)."
    )
    write_rate_per_s: float = Field(
        20.0, ge=0, description="Writes a client may make per second, on average (0: no limit)."
    )
    write_burst: int = Field(
        100, ge=0, description="Writes a client may make at once before the rate applies."
    )
    signin_rate_per_min: float = Field(
        10.0, ge=0, description="Sign-in attempts per minute per IP address and per user name."
    )
    max_streams_per_client: int = Field(
        20, ge=0, description="Open streams per client; more get 429 (0: no limit)."
    )
    max_rooms_per_stream: int = Field(
        100, ge=0, description="Rooms one `rooms=` may name (400 invalid_query; 0: no limit)."
    )
    stream_max_seconds: float = Field(
        3600.0,
        ge=0,
        description="A stream's lifetime, each jittered down by up to 10% so that reconnects "
        "spread; then it closes and the client resumes (0: no limit).",
    )
    dead_peer_seconds: float = Field(
        60.0,
        ge=0,
        le=86400,  # TCP_USER_TIMEOUT is milliseconds in 32 bits
        description="A client whose network vanished (no FIN) is released within this "
        "(TCP keepalive and TCP_USER_TIMEOUT; 0: the kernel's defaults).",
    )
    header_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="A connection whose request headers have not arrived within this is "
        "closed (also the idle time of a kept-alive connection).",
    )
    forwarded_allow_ips: str = Field(
        "",
        description="Comma-separated addresses or networks of proxies whose X-Forwarded-For "
        "names the client (`*`: any peer).",
    )
    loop: Literal["auto", "asyncio", "uvloop"] = Field(
        "auto",
        description="The event loop: `auto` is uvloop where it is installed (it is a "
        "dependency, except on Windows), asyncio's own otherwise.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO", description="Python logging level (any case)."
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_in_any_case(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("loop")
    @classmethod
    def _loop_installed(cls, value: str) -> str:
        """``uvloop`` asked for by name must import: failing later was a traceback after
        the port was bound."""
        if value == "uvloop":
            try:
                import uvloop  # noqa: F401
            except Exception as error:  # not installed, or installed and broken
                raise ValueError(
                    f"uvloop cannot be imported ({error}); `auto` falls back to asyncio's loop"
                ) from None
        return value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _addresses_or_networks(cls, value: str) -> str:
        """Each entry an address or a network (``10.0.0.0/8``), or ``*``: a bad one was a
        traceback at the server's start."""
        for entry in (part.strip() for part in value.split(",")):
            if entry and entry != "*":
                try:
                    ipaddress.ip_network(entry, strict=False)
                except ValueError as error:
                    raise ValueError(f"{entry!r}: {error}") from None
        return value

    log_format: Literal["text", "json"] = Field(
        "text",
        description="`json`: one JSON object a line, one line per request and per stream "
        "(ACCESS.md).",
    )


def origins(settings: Settings) -> frozenset[str]:
    """``CHAT_CORS_ORIGINS`` as a set of ``scheme://host[:port]`` strings."""
    return frozenset(o.strip().rstrip("/") for o in settings.cors_origins.split(",") if o.strip())
