"""The pure ASGI middleware on its own: the body's idle timeout, and what counts as in flight."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from service.metrics import Metrics
from service.middleware import BodyLimitMiddleware, MetricsMiddleware
from service.traffic import Traffic

SCOPE: dict[str, Any] = {"type": "http", "method": "POST", "path": "/v1/identify", "headers": []}


async def reads_body(scope: Scope, receive: Receive, send: Send) -> None:
    """An app that reads the whole body, then answers 200."""
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def client(*parts: bytes, stall: bool = False) -> tuple[Receive, list[Message]]:
    """A receive that delivers `parts` (then hangs when `stall`) and a list of what was sent."""
    queue = [{"type": "http.request", "body": p, "more_body": True} for p in parts]
    if not stall:
        queue.append({"type": "http.request", "body": b"", "more_body": False})

    async def receive() -> Message:
        if queue:
            return queue.pop(0)
        await asyncio.sleep(3600)  # the client went quiet
        raise AssertionError("unreachable")

    return receive, []


def test_a_stalled_body_is_answered_408_and_closed() -> None:
    receive, sent = client(b'{"spectra": [', stall=True)

    async def send(message: Message) -> None:
        sent.append(message)

    app = BodyLimitMiddleware(reads_body, max_bytes=1 << 20, idle_timeout_s=0.05)
    asyncio.run(asyncio.wait_for(app(SCOPE, receive, send), 5))
    start, body = sent
    assert start["status"] == 408 and (b"connection", b"close") in start["headers"]
    problem = json.loads(body["body"])
    assert problem["type"] == "urn:raman:problem:body-timeout" and "0.05 s" in problem["detail"]


def test_a_body_that_keeps_arriving_is_not_timed_out() -> None:
    receive, sent = client(b"a", b"b", b"c")

    async def slow_receive() -> Message:
        await asyncio.sleep(0.03)  # each part within the idle timeout, all three beyond it
        return await receive()

    async def send(message: Message) -> None:
        sent.append(message)

    app = BodyLimitMiddleware(reads_body, max_bytes=1 << 20, idle_timeout_s=0.05)
    asyncio.run(app(SCOPE, slow_receive, send))
    assert sent[0]["status"] == 200


def test_once_the_body_is_in_a_wait_for_the_disconnect_is_not_timed_out() -> None:
    # streaming responses wait on receive() for http.disconnect for as long as they stream
    receive, sent = client(b"body")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        while (await receive()).get("more_body"):
            pass
        waiting = asyncio.create_task(receive())  # what a streaming response does
        await asyncio.sleep(0.2)  # four idle timeouts
        assert not waiting.done()
        waiting.cancel()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(
        BodyLimitMiddleware(app, max_bytes=1 << 20, idle_timeout_s=0.05)(SCOPE, receive, send)
    )
    assert sent[0]["status"] == 200


def test_a_request_counts_as_in_flight_only_once_its_body_has_arrived() -> None:
    traffic, seen = Traffic(), []
    gate = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(("before body", traffic.in_flight))
        await receive()  # first part
        seen.append(("mid body", traffic.in_flight))
        await gate.wait()
        await receive()  # the last part
        seen.append(("after body", traffic.in_flight))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    receive, _ = client(b"part")

    async def send(message: Message) -> None:
        pass

    async def run() -> None:
        task = asyncio.create_task(MetricsMiddleware(app, Metrics(), traffic)(SCOPE, receive, send))
        await asyncio.sleep(0.01)
        assert not traffic.expect_more()  # a stalled upload holds no batch open
        gate.set()
        await task

    asyncio.run(run())
    assert seen == [("before body", 0), ("mid body", 0), ("after body", 1)]
    assert traffic.in_flight == 0
