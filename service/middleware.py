"""Pure ASGI middleware: request metrics (outermost), the streaming body-size limit, and the
last-resort 500 (innermost).

Pure ASGI rather than `BaseHTTPMiddleware`: no extra task per request, and the body limit can
count bytes as they arrive instead of trusting `Content-Length`.
"""

from __future__ import annotations

import json
import logging
import time

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.deps import START_KEY
from service.errors import PROBLEM_MEDIA_TYPE, PayloadTooLarge, ProblemError
from service.metrics import Metrics
from service.traffic import Traffic

log = logging.getLogger(__name__)

UNMATCHED_ROUTE = "<unmatched>"
"""Route label for requests that matched no route (keeps label cardinality bounded)."""


class MetricsMiddleware:
    """Counts and times every HTTP request by route template, method and status, and keeps the
    in-flight count the batchers consult (see `service.traffic`)."""

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
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.traffic.in_flight += 1
        try:
            await self.app(scope, receive, send_status)
        finally:
            self.traffic.in_flight -= 1
            self._record(scope, status, time.perf_counter() - started)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        # The router stores the matched route in the scope; its template bounds the labels.
        route = getattr(scope.get("route"), "path", None) or UNMATCHED_ROUTE
        labels = (route, scope["method"], str(status))
        self.metrics.http_requests.labels(*labels).inc()
        self.metrics.http_duration.labels(*labels).observe(seconds)


class BodyTooLarge(HTTPException):
    """Raised from `receive` when the streamed body passes the limit (FastAPI re-raises
    `HTTPException`s from body parsing, so the error handlers render it as a 413 problem)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body exceeds the limit of {limit} bytes")


class BodyLimitMiddleware:
    """413 for bodies over `max_bytes`: at once from `Content-Length`, else while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _declared_length(scope) > self.max_bytes:
            await self._reject(scope, send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await self._reject(scope, send)

    async def _reject(self, scope: Scope, send: Send) -> None:
        error = PayloadTooLarge(f"the request body exceeds the limit of {self.max_bytes} bytes")
        # the unread rest of the body would be taken for the next request: close
        await send_problem(send, scope.get("path", ""), error, close=True)


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
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if started:  # half an answer is out: closing the connection is all that is left
                raise
            error = ProblemError("the server failed to handle this request; see its log")
            await send_problem(send, scope["path"], error)


async def send_problem(send: Send, path: str, error: ProblemError, close: bool = False) -> None:
    """Send `error` as a whole problem+json response (with the protocol's `error` under /v2)."""
    body = error.body(path)
    if path.startswith("/v2"):
        body = {"error": body["detail"], **body}
    payload = json.dumps(body).encode()
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
