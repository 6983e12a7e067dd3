"""Who is connected to each room, from the streams opened with ``user=``.

A user joins a room when their first stream on it opens, and leaves when their last one has
been closed for ``grace_s``: a reconnect inside the grace period (a page reload, a dropped
network) is not announced at all, so presence does not flap. In memory, never stored."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

Announce = Callable[[str, str, str], None]  # (room, user, "join" | "leave")


class Presence:
    def __init__(self, grace_s: float, announce: Announce) -> None:
        self.grace_s = grace_s
        self.announce = announce
        self.streams: dict[str, dict[str, int]] = {}  # room -> user -> open streams
        self.leaving: dict[tuple[str, str], asyncio.TimerHandle] = {}

    def connect(self, room: str, user: str) -> None:
        users = self.streams.setdefault(room, {})
        before = users.get(user, 0)
        users[user] = before + 1
        timer = self.leaving.pop((room, user), None)
        if timer is not None:
            timer.cancel()  # back inside the grace period: no leave, no second join
        elif before == 0:
            self.announce(room, user, "join")

    def disconnect(self, room: str, user: str) -> None:
        users = self.streams.get(room)
        if users is None or user not in users:
            return
        users[user] -= 1
        if users[user] == 0:
            loop = asyncio.get_running_loop()
            self.leaving[(room, user)] = loop.call_later(self.grace_s, self._leave, room, user)

    def _leave(self, room: str, user: str) -> None:
        self.leaving.pop((room, user), None)
        users = self.streams.get(room)
        if users is None or users.get(user) != 0:
            return
        del users[user]
        if not users:
            del self.streams[room]
        self.announce(room, user, "leave")

    async def users(self, room: str) -> list[str]:
        """Present users, sorted (those inside their grace period still count)."""
        return sorted(self.streams.get(room, {}))

    def start(self) -> None:
        return None

    def close(self) -> None:
        for timer in self.leaving.values():
            timer.cancel()
        self.leaving.clear()

    async def stop(self) -> None:
        self.close()
