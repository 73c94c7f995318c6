"""An unexpected exception is a 500 problem, and the client's keep-alive connection survives it.

Starlette's last-resort handler re-raised after answering, and uvicorn then dropped the
connection, so a pooled client lost its *next* request too. This runs a real uvicorn server.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from live_server import free_port

from service.app import create_app
from service.settings import Settings


def add_failing_routes(app: FastAPI) -> None:
    async def boom() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/v1/boom", boom)
    app.add_api_route("/v2/boom", boom)


@pytest.fixture
def live(settings: Settings) -> Iterator[int]:
    app = create_app(settings)
    add_failing_routes(app)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    yield port
    server.should_exit = True
    thread.join(timeout=10)


def get(conn: http.client.HTTPConnection, path: str) -> tuple[int, str, dict[str, object]]:
    conn.request("GET", path)
    r = conn.getresponse()
    return r.status, r.getheader("content-type") or "", json.loads(r.read())


@pytest.mark.slow
def test_a_500_keeps_the_connection_for_the_next_request(live: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", live, timeout=10)
    try:
        status, media, body = get(conn, "/v1/boom")
        assert (status, media) == (500, "application/problem+json")
        assert body["type"] == "urn:raman:problem:internal-error"
        assert body["instance"] == "/v1/boom" and "a bug" not in json.dumps(body)
        # the same connection: before, uvicorn had closed it and this raised
        assert get(conn, "/v2/health/live")[:2] == (200, "application/json")
    finally:
        conn.close()


def test_unexpected_errors_are_problems_with_the_v2_error_field(settings: Settings) -> None:
    app = create_app(settings)
    add_failing_routes(app)
    with TestClient(app) as c:  # would raise here if the exception escaped the app
        body = c.get("/v2/boom").json()
        assert body["status"] == 500 and body["error"] == body["detail"]
        assert c.get("/v1/boom").status_code == 500
