"""The ingress body limit holds while the body streams in, with or without Content-Length."""

import asyncio
import json

import pytest

from causalrec.serve import limits
from causalrec.serve.limits import BodySizeLimit


class _Echo:
    """An ASGI app that reads the whole body and answers with its length."""

    def __init__(self):
        self.calls = 0

    async def __call__(self, scope, receive, send):
        self.calls += 1
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        payload = json.dumps({"received": len(body)}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": payload})


def _call(chunks, *, declared=None, limit=1_000):
    """Send ``chunks`` as one request; returns (status, JSON body, app calls, chunks read)."""
    app = _Echo()
    middleware = BodySizeLimit(app)
    headers = [] if declared is None else [(b"content-length", str(declared).encode())]
    scope = {"type": "http", "method": "POST", "path": "/evaluate", "headers": headers}
    queue = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]
    read, sent = [], []

    async def receive():
        message = queue.pop(0) if queue else {"type": "http.disconnect"}
        read.append(message)
        return message

    async def send(message):
        sent.append(message)

    limits.BODY_LIMIT["bytes"] = limit
    try:
        asyncio.run(middleware(scope, receive, send))
    finally:
        limits.BODY_LIMIT["bytes"] = None
    status = sent[0]["status"]
    return status, json.loads(sent[1]["body"]), app.calls, len(read)


def test_a_chunked_body_over_the_limit_is_refused_while_streaming():
    status, body, calls, read = _call([b"x" * 400] * 13)  # 5,200 bytes, no Content-Length
    assert status == 413 and "exceeds the limit of 1000 bytes" in body["detail"]
    assert calls == 0 and read == 3  # stopped at the chunk that passed the limit


def test_a_declared_length_over_the_limit_is_refused_before_reading():
    status, body, calls, read = _call([b"x" * 5_000], declared=5_000)
    assert status == 413 and "5000 bytes exceeds the limit of 1000" in body["detail"]
    assert calls == 0 and read == 0


def test_a_body_that_lies_about_its_length_is_still_bounded():
    status, _, calls, _ = _call([b"x" * 600, b"x" * 600], declared=10)
    assert status == 413 and calls == 0


@pytest.mark.parametrize("declared", [None, 1_000])
def test_a_body_within_the_limit_reaches_the_app_unchanged(declared):
    status, body, calls, _ = _call([b"x" * 500, b"y" * 500], declared=declared)
    assert (status, body, calls) == (200, {"received": 1_000}, 1)


def test_no_limit_passes_everything():
    app = _Echo()
    scope = {"type": "http", "method": "POST", "path": "/", "headers": []}
    messages = [{"type": "http.request", "body": b"x" * 10_000, "more_body": False}]
    sent = []

    async def receive():
        return messages.pop(0)

    async def send(message):
        sent.append(message)

    asyncio.run(BodySizeLimit(app)(scope, receive, send))
    assert sent[0]["status"] == 200 and json.loads(sent[1]["body"]) == {"received": 10_000}
