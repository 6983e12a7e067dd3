"""The client library's types: the service's models as it sends them, a stream's events,
what ``on_reset`` and ``on_reconnect`` hear, and a stream's filters."""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypeVar

from pydantic import BaseModel, ConfigDict

from chat.models import HistoryMessage, MessageEvent


class Message(MessageEvent):
    """A stored ``message`` event, exactly as the service sent it (``chat.models.MessageEvent``;
    fields the service adds later are kept as extras)."""

    model_config = ConfigDict(extra="allow")


class HistoryEntry(HistoryMessage):
    """A message in history: edits applied, ``reactions`` (emoji -> authors), ``edited_at``."""

    model_config = ConfigDict(extra="allow")


class HistoryPage(BaseModel):
    """``GET /api/rooms/{room}/messages``: messages ascending by id, and whether there are
    more beyond the page."""

    messages: list[HistoryEntry]
    has_more: bool


_M = TypeVar("_M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Event:
    """An event of a stream. ``id`` is None for ephemeral events (``typing``, ``presence``,
    ``notify``); ``payload`` is the whole flat JSON object the service sent."""

    id: int | None
    type: str
    room: str
    created_at: str
    payload: Mapping[str, Any] = field(repr=False)

    def __getitem__(self, key: str) -> Any:
        return self.payload[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.payload.get(key, default)

    def parse(self, model: builtins.type[_M]) -> _M:
        """The payload as a model, e.g. ``event.parse(Message)`` (pydantic validates it)."""
        return model.model_validate(dict(self.payload))


@dataclass(frozen=True, slots=True)
class Reset:
    """A ``reset`` event: replay could not cover the gap (``reason``); the stream goes on
    from ``latest_id``. ``room`` is ``*`` on a stream of several rooms."""

    latest_id: int
    reason: str
    room: str
    payload: Mapping[str, Any] = field(repr=False)


@dataclass(frozen=True, slots=True)
class Reconnect:
    """What ``on_reconnect`` hears before each pause: why the stream ended or could not
    open, how long the pause is, where it resumes, and the how-manieth try in a row."""

    reason: str
    delay_s: float
    last_id: int | None
    attempt: int


def _names(value: str | Sequence[str] | None) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else ",".join(value)
    return text or None


@dataclass(frozen=True, slots=True)
class Filters:
    """The server's per-stream filter (API.md, Streams); each list is a sequence of names or
    one comma-separated string. ``user``: who is connected (presence; a guest's identity for
    ``notify``); ``notify``: also the live ``notify`` events of the stream's user."""

    types: str | Sequence[str] | None = None
    authors: str | Sequence[str] | None = None
    exclude_authors: str | Sequence[str] | None = None
    mentions: str | Sequence[str] | None = None
    user: str | None = None
    notify: bool = False

    def query(self) -> dict[str, str]:
        """The query parameters, only those set."""
        params = {
            name: text
            for name, text in (
                ("types", _names(self.types)),
                ("authors", _names(self.authors)),
                ("exclude_authors", _names(self.exclude_authors)),
                ("mentions", _names(self.mentions)),
                ("user", self.user),
            )
            if text
        }
        if self.notify:
            params["notify"] = "1"
        return params


OnReset = Callable[[Reset], object]  # may return an awaitable: it is awaited
OnReconnect = Callable[[Reconnect], object]


class AsyncClosing:
    """``async with`` for a thing with ``aclose()``: leaving the block closes it."""

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
