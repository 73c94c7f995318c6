"""Retries with backoff: a tiny local stub server answers 429/503 before 200 (unit tests of the
transport; everything else is tested against the real service)."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from live_server import free_port

from raman_client import RamanAPIError, RamanClient, RamanConnectionError, RetryPolicy
from raman_client.transport import parse_retry_after

MODELS = {"default_model": "m", "ready": True, "models": []}
OVERLOADED = {
    "type": "urn:raman:problem:overloaded", "title": "Too many requests queued", "status": 429,
    "detail": "model 'm' is at capacity; retry shortly", "instance": "/v1/models",
}  # fmt: skip


class Stub:
    """Answers the queued (status, headers, body) replies in order, then 200 with MODELS."""

    def __init__(self) -> None:
        self.replies: list[tuple[int, dict[str, str], dict]] = []
        self.requests: list[str] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stub.requests.append(self.path)
                status, headers, body = stub.replies.pop(0) if stub.replies else (200, {}, MODELS)
                payload = json.dumps(body).encode()
                self.send_response(status)
                kind = "application/json" if status < 400 else "application/problem+json"
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(payload)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()


@pytest.fixture
def stub() -> Iterator[Stub]:
    s = Stub()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def client_with_clock(url: str, retries: int = 3) -> tuple[RamanClient, list[float]]:
    client = RamanClient(
        url, retries=RetryPolicy(retries=retries, backoff_s=0.5, max_backoff_s=4.0)
    )
    waits: list[float] = []
    client.transport.sleep = waits.append
    return client, waits


def test_429_twice_then_success_honours_retry_after(stub: Stub) -> None:
    stub.replies = [
        (429, {"Retry-After": "2"}, OVERLOADED),
        (429, {"Retry-After": "1"}, OVERLOADED),
    ]
    client, waits = client_with_clock(stub.url)
    assert client.models() == []
    assert stub.requests == ["/v1/models"] * 3
    assert len(waits) == 2 and 2.0 <= waits[0] < 2.1 and 1.0 <= waits[1] < 1.1


def test_503_without_retry_after_backs_off_exponentially(stub: Stub) -> None:
    stub.replies = [(503, {}, {**OVERLOADED, "status": 503})] * 3
    client, waits = client_with_clock(stub.url)
    client.models()
    assert len(stub.requests) == 4
    for attempt, wait in enumerate(waits):  # equal jitter: between half and all of base * 2^n
        ceiling = min(4.0, 0.5 * 2**attempt)
        assert ceiling / 2 <= wait <= ceiling


def test_gives_up_after_the_last_retry_with_the_problem(stub: Stub) -> None:
    stub.replies = [(429, {"Retry-After": "0"}, OVERLOADED)] * 5
    client, waits = client_with_clock(stub.url, retries=2)
    with pytest.raises(RamanAPIError) as caught:
        client.models()
    assert len(stub.requests) == 3 and len(waits) == 2
    err = caught.value
    assert (err.status, err.slug, err.retry_after) == (429, "overloaded", 0.0)
    assert err.detail == OVERLOADED["detail"]


def test_other_errors_are_not_retried(stub: Stub) -> None:
    stub.replies = [(404, {}, {**OVERLOADED, "status": 404, "title": "Not found"})]
    client, waits = client_with_clock(stub.url)
    with pytest.raises(RamanAPIError, match="404 Not found"):
        client.models()
    assert len(stub.requests) == 1 and waits == []


def test_connection_refused_is_retried_then_reported() -> None:
    client, waits = client_with_clock(f"http://127.0.0.1:{free_port()}", retries=2)
    with pytest.raises(RamanConnectionError, match="ConnectError"):
        client.models()
    assert len(waits) == 2


def test_retry_after_parsing_and_cap() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    policy = RetryPolicy(retries=1, backoff_s=0.5, max_backoff_s=5.0)
    assert 5.0 <= policy.delay(0, 3600.0, random.Random(0)) < 5.1  # capped
