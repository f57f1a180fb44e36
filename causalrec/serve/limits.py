"""The request-body limit of the HTTP ingress, enforced while the body streams in.

A check of ``Content-Length`` alone lets a chunked body (no ``Content-Length``) of any size
through. :class:`BodySizeLimit` is a pure ASGI middleware: it refuses a declared length over the
limit at once, and otherwise reads the body message by message, answering 413 as soon as the
bytes received pass the limit (the rest is never read). A body within the limit is replayed to
the application unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["BODY_LIMIT", "BodySizeLimit"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: Body-size limit of this process's ingress, in bytes (``None``: no limit). A module attribute
#: set by the ingress at run time: Serve ships the ingress class and its FastAPI app by value, so
#: state on the app would be a copy the middleware never sees.
BODY_LIMIT: dict[str, int | None] = {"bytes": None}


async def _refuse(send: Send, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodySizeLimit:
    """ASGI middleware: 413 for request bodies over ``BODY_LIMIT["bytes"]``, chunked or not.

    Args:
        app: The ASGI application it guards.
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection, refusing its body once it passes the limit."""
        limit = BODY_LIMIT["bytes"]
        if scope["type"] != "http" or limit is None:
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _refuse(
                send, f"request body of {int(declared)} bytes exceeds the limit of {limit} bytes"
            )
            return
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body += message.get("body", b"")
            if len(body) > limit:
                await _refuse(
                    send,
                    f"request body of more than {limit} bytes exceeds the limit of {limit} bytes",
                )
                return
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
