"""Pure ASGI middleware: request metrics (outermost), HEAD answered as GET without the body, the
streaming body-size limit, and the last-resort 500 (innermost).

Pure ASGI rather than `BaseHTTPMiddleware`: no extra task per request, and the body limit can
count bytes as they arrive instead of trusting `Content-Length`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.deps import START_KEY
from service.errors import (
    PROBLEM_MEDIA_TYPE,
    BodyTimeout,
    PayloadTooLarge,
    ProblemError,
    for_path,
)
from service.metrics import Metrics
from service.traffic import Traffic

log = logging.getLogger(__name__)

UNMATCHED_ROUTE = "<unmatched>"
"""Route label for requests that matched no route (keeps label cardinality bounded)."""


class ResponseWatch:
    """A `send` that passes messages on and remembers the response's status once it started."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.status: int | None = None

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self.send(message)


class MetricsMiddleware:
    """Counts and times every HTTP request by route template, method and status, and keeps the
    count the batchers consult (see `service.traffic`): a request counts as in flight once its
    whole body has arrived, so a slow or stalled upload does not hold other requests' batches
    open."""

    def __init__(self, app: ASGIApp, metrics: Metrics, traffic: Traffic) -> None:
        self.app = app
        self.metrics = metrics
        self.traffic = traffic

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        scope.setdefault("state", {})[START_KEY] = started
        counted, response = False, ResponseWatch(send)

        async def counting_receive() -> Message:
            nonlocal counted
            message = await receive()
            if not counted and message["type"] == "http.request" and not message.get("more_body"):
                counted = True
                self.traffic.in_flight += 1
            return message

        try:
            await self.app(scope, counting_receive, response)
        finally:
            if counted:
                self.traffic.in_flight -= 1
            self._record(scope, response.status or 500, time.perf_counter() - started)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        # The router stores the matched route in the scope; its template bounds the labels.
        route = getattr(scope.get("route"), "path", None) or UNMATCHED_ROUTE
        labels = (route, scope["method"], str(status))
        self.metrics.http_requests.labels(*labels).inc()
        self.metrics.http_duration.labels(*labels).observe(seconds)


class HeadMiddleware:
    """Answers HEAD on every GET endpoint as HTTP requires (RFC 9110 section 9.3.2): the app runs
    the request as a GET, and the response goes out with the GET's status and headers, its
    Content-Length included, and no body. FastAPI routes only the methods they declare, and
    declaring HEAD on each GET route would double every operation in the OpenAPI schema.
    The app gets a copy of the scope (the server still sees HEAD and sends no body); the matched
    route is copied back for the metrics' label."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        inner = {**scope, "method": "GET"}

        async def bodiless_send(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        try:
            await self.app(inner, receive, bodiless_send)
        finally:
            if "route" in inner:
                scope["route"] = inner["route"]


class BodyError(HTTPException):
    """Raised from `receive` when the streamed body breaks a bound (FastAPI re-raises
    `HTTPException`s from body parsing, so the error handlers render it as a problem; the
    middleware answers it itself when the app lets it through)."""

    def __init__(self, error: ProblemError) -> None:
        super().__init__(error.status, error.detail)
        self.error = error


class BodyLimitMiddleware:
    """413 for bodies over `max_bytes` (at once from `Content-Length`, else while streaming),
    408 when the next part of a body takes over `idle_timeout_s` to arrive."""

    def __init__(self, app: ASGIApp, max_bytes: int, idle_timeout_s: float = 30.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.idle_timeout_s = idle_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _declared_length(scope) > self.max_bytes:
            await send_problem(send, scope.get("path", ""), self._too_large(), close=True)
            return
        received, complete, response = 0, False, ResponseWatch(send)

        async def limited_receive() -> Message:
            nonlocal received, complete
            if complete:  # a wait for the client's disconnect (streaming responses): no bound
                return await receive()
            try:
                async with asyncio.timeout(self.idle_timeout_s):
                    message = await receive()
            except TimeoutError:
                detail = f"no part of the request body arrived for {self.idle_timeout_s:g} s"
                raise BodyError(BodyTimeout(detail)) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyError(self._too_large())
                complete = not message.get("more_body")
            return message

        try:
            await self.app(scope, limited_receive, response)
        except BodyError as exc:
            if response.status is not None:
                raise
            # the unread rest of the body would be taken for the next request: close
            await send_problem(send, scope.get("path", ""), exc.error, close=True)

    def _too_large(self) -> ProblemError:
        return PayloadTooLarge(f"the request body exceeds the limit of {self.max_bytes} bytes")


class UnexpectedErrorMiddleware:
    """Renders an exception nothing else handled as a 500 problem and keeps the connection.

    Starlette's own last resort (`ServerErrorMiddleware`, where an `Exception` handler would be
    installed) re-raises after answering, and uvicorn then drops the keep-alive connection, so a
    pooled client lost its next request too. Installed innermost, just outside the routing.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response = ResponseWatch(send)
        try:
            await self.app(scope, receive, response)
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if response.status is not None:  # half an answer is out: all that is left is to close
                raise
            error = ProblemError("the server failed to handle this request; see its log")
            await send_problem(send, scope["path"], error)


async def send_problem(send: Send, path: str, error: ProblemError, close: bool = False) -> None:
    """Send `error` as a whole problem+json response (with the protocol's `error` under /v2)."""
    payload = json.dumps(for_path(error.body(path), path)).encode()
    headers = [
        (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
        (b"content-length", str(len(payload)).encode()),
        *([(b"connection", b"close")] if close else []),
    ]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def _declared_length(scope: Scope) -> int:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0
