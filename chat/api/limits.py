"""Request bodies over ``CHAT_MAX_BODY_BYTES``: received to the end, never kept.

Refusing a body by closing the connection early loses the answer: Hypercorn closes a
connection whose request was not read to the end, and the kernel then resets it, destroying
the 413 on its way. So this ASGI middleware lets the body arrive but drops every byte past
the limit (memory stays bounded), and marks the request; ``ChatRequest`` raises
``PayloadTooLarge`` once the body is complete. Quart's ``BODY_TIMEOUT`` bounds a slow upload.
"""

from __future__ import annotations

from typing import Any

from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope
from quart import Quart

TOO_LARGE = "chat.body_too_large"


class BodyLimit:
    def __init__(self, app: Any, limit_bytes: int) -> None:
        self.app = app
        self.limit_bytes = limit_bytes

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        received = 0
        limit = self.limit_bytes
        flags: dict[str, Any] = scope  # type: ignore[assignment]

        async def limited() -> Any:
            nonlocal received
            message: Any = await receive()
            if message["type"] == "http.request":
                body = message.get("body", b"")
                received += len(body)
                if received > limit:
                    flags[TOO_LARGE] = received
                    if body:
                        message = {**message, "body": b""}
            return message

        await self.app(scope, limited, send)


def install(app: Quart, limit_bytes: int) -> None:
    app.asgi_app = BodyLimit(app.asgi_app, limit_bytes)  # type: ignore[method-assign]
