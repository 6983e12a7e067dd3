"""The pipeline's limits step (ACCESS.md, Limits): writes and sign-ins per client, from
token buckets (``chat.limits``); the streams per client are counted where a stream opens
(``chat.api.event_stream``).

- A write (POST, PUT, PATCH or DELETE) costs 1 from the client's write bucket
  (``CHAT_WRITE_RATE_PER_S``, ``CHAT_WRITE_BURST``); a batch costs one per item (at most a
  whole burst), and a write that creates a room ``ROOM_COST`` more (taken once the write's
  own cost was granted: a client over its limit costs no read of the store), so that rooms
  cannot be made by the thousand. Typing and reactions are writes like any other.
- A sign-in (``POST /api/session``) costs 1 from its IP address's sign-in bucket and, when it
  names an account, 1 from that name's (``CHAT_SIGNIN_RATE_PER_MIN``): guessing passwords is
  slow from one address, and for one account from many.

A refusal is answered after a short pause (``chat.limits.PAUSE_S``), so that a client that
retries in a tight loop cannot keep the process busy answering it.
"""

from __future__ import annotations

import math

from chat.api.body import body_json
from chat.api.pipeline import BODY_METHODS
from chat.api.request import Request
from chat.config import Settings
from chat.limits import Buckets, Rate, client_key, pause, refuse
from chat.metrics import Metrics
from chat.store import Store

ROOM_COST = 10
KNOWN_ROOMS_KEPT = 100_000
SIGN_IN = "session.create"
SIGN_OUT = "session.end"
BATCHES = {"messages.post_batch": "messages", "activity.post_activity_batch": "items"}
CREATING = {"messages.post", "messages.post_batch", "activity.post_activity", *BATCHES}


class Limits:
    """The pipeline's limits step: refuses a write or sign-in over its client's limit (429)."""

    def __init__(self, settings: Settings, buckets: Buckets, store: Store, metrics: Metrics):
        self.write = Rate("write", settings.write_rate_per_s, settings.write_burst)
        self.room_cost = min(ROOM_COST, max(1, settings.write_burst - 1))  # 1 + it fits a burst
        per_min = settings.signin_rate_per_min
        self.signin = Rate("signin", per_min / 60, math.ceil(per_min))
        self.buckets = buckets
        self.store = store
        self.metrics = metrics
        self.auto_create = settings.auto_create_rooms
        self.known_rooms: set[str] = set()

    async def __call__(self, request: Request) -> None:
        if request.method not in BODY_METHODS:
            return
        endpoint = request.endpoint
        if endpoint == SIGN_IN:
            await self.check_signin(request)
        elif endpoint and endpoint != SIGN_OUT and self.write.on:
            key = client_key(request.identity, request.client)
            # What the request costs by itself first: a client over its limit is refused
            # before anything is read from the store.
            taken = await self.buckets.take(self.write, key, self.cost(request, endpoint))
            if taken.ok and await self.creates_room(request, endpoint):
                taken = await self.buckets.take(self.write, key, self.room_cost)
            if not taken.ok:
                self.metrics.limited("write")
                await pause(taken.wait_s)
                raise refuse(self.write, taken, "writes")

    def cost(self, request: Request, endpoint: str) -> int:
        """1, or a batch's number of items (at most a whole burst)."""
        field = BATCHES.get(endpoint)
        if field is None:
            return 1
        try:
            items = body_json(request).get(field)  # the route's own reading
        except (ValueError, AttributeError):
            return 1  # the route refuses it
        return max(1, min(len(items), self.write.burst)) if isinstance(items, list) else 1

    async def creates_room(self, request: Request, endpoint: str) -> bool:
        """Whether the write would create its room (it may be counted twice by two racing
        first writes: fine). Rooms known to exist are remembered, up to KNOWN_ROOMS_KEPT."""
        room = request.args.get("room")
        creating = endpoint == "rooms.put" or (self.auto_create and endpoint in CREATING)
        if not creating or room is None or room in self.known_rooms:
            return False
        if await self.store.get_room(room) is None:
            return True
        if len(self.known_rooms) < KNOWN_ROOMS_KEPT:
            self.known_rooms.add(room)
        return False

    async def check_signin(self, request: Request) -> None:
        if not self.signin.on:
            return
        taken = await self.buckets.take(self.signin, "ip:" + request.client)
        if taken.ok:
            name = _signin_name(request)
            if name is None:
                return
            taken = await self.buckets.take(self.signin, "name:" + name)
            if taken.ok:
                return
        self.metrics.limited("signin")
        await pause(taken.wait_s)
        raise refuse(self.signin, taken, "sign-in attempts")


def _signin_name(request: Request) -> str | None:
    """The account a sign-in names (one with a password), if any."""
    try:
        fields = body_json(request)  # the route's own reading
    except ValueError:
        return None
    if not isinstance(fields, dict) or "password" not in fields:
        return None
    user = fields.get("user")
    return user.strip().lower() if isinstance(user, str) else None
