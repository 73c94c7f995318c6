"""HEAD on every GET endpoint (RFC 9110 section 9.3.2): the GET's status and headers, no body.

Uptime monitors and load balancers probe with HEAD; FastAPI routes only declared methods, so
`service.middleware.HeadMiddleware` runs a HEAD as a GET and drops the body.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

GET_PATHS = ["/v1/models", "/v2/health/live", "/v2/health/ready", "/metrics", "/", "/openapi.json"]


@pytest.mark.parametrize("path", GET_PATHS)
def test_head_answers_like_get_without_the_body(client: TestClient, path: str) -> None:
    got = client.get(path)
    head = client.head(path)
    assert head.status_code == got.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]
    if path != "/metrics":  # the exposition's own counters grow between the two requests
        assert head.headers["content-length"] == str(len(got.content))


def test_head_on_a_post_only_endpoint_is_405_with_allow(client: TestClient) -> None:
    r = client.head("/v1/identify")
    assert r.status_code == 405
    assert r.headers["allow"] == "POST"
    assert r.headers["content-type"] == "application/problem+json"
    assert r.content == b""


def test_head_on_an_unknown_model_is_the_get_problem_status(client: TestClient) -> None:
    assert client.get("/v1/models/no-such-model").status_code == 404
    r = client.head("/v1/models/no-such-model")
    assert r.status_code == 404 and r.content == b""


def test_head_requests_are_counted_as_head_under_their_route(client: TestClient) -> None:
    client.head("/v1/models")
    text = client.get("/metrics").text
    assert 'raman_http_requests_total{method="HEAD",route="/v1/models",status="200"}' in text
    assert 'method="GET",route="/v1/models"' not in text
