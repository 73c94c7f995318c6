"""Prometheus exposition (exact names), per-app registries, overload (429) and timeout (504)."""

from __future__ import annotations

import asyncio
import re
import threading
from typing import Any

import httpx
from fastapi.testclient import TestClient
from service_fixture_models import MODEL, spectrum_on_grid

from service.app import create_app
from service.settings import Settings

SPECTRUM = {"intensities": spectrum_on_grid(0)}
NAMES = [
    "raman_http_request_duration_seconds",
    "raman_http_requests_total",
    "raman_queue_depth",
    "raman_queue_rejected_total",
    "raman_batch_size",
    "raman_inference_duration_seconds",
    "raman_identifications_total",
    "raman_model_info",
    "raman_finetune_jobs_total",
    "raman_finetune_jobs",
]
KINDS = [
    "histogram",
    "counter",
    "gauge",
    "counter",
    "histogram",
    "histogram",
    "counter",
    "gauge",
    "counter",
    "gauge",
]


def sample(text: str, metric: str, /, **labels: str) -> float | None:
    """The value of one sample in Prometheus text, or None."""
    for line in text.splitlines():
        if not line.startswith(metric + "{") and not line.startswith(metric + " "):
            continue
        series, value = line.rsplit(" ", 1)
        found = dict(re.findall(r'(\w+)="([^"]*)"', series))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(value)
    return None


def test_every_contract_metric_is_exposed_after_requests(client: TestClient) -> None:
    assert client.post("/v1/identify", json={"spectra": [SPECTRUM] * 3}).status_code == 200
    client.get(f"/v1/models/{MODEL}")
    client.get("/nowhere")
    client.app.state.metrics.finetune_job_changed(None, "queued")  # type: ignore[attr-defined]
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    for name, kind in zip(NAMES, KINDS, strict=True):
        assert f"\n# TYPE {name} {kind}\n" in text, name
    route = {"route": "/v1/identify", "method": "POST", "status": "200"}
    assert sample(text, "raman_http_requests_total", **route) == 1.0
    assert (
        sample(text, "raman_http_request_duration_seconds_bucket", le="0.0001", **route) is not None
    )
    templated = {"route": "/v1/models/{name}", "method": "GET", "status": "200"}
    assert sample(text, "raman_http_requests_total", **templated) == 1.0  # template, not the name
    assert sample(text, "raman_http_requests_total", route="<unmatched>", status="404") == 1.0
    assert sample(text, "raman_batch_size_sum", model=MODEL) == 3.0
    assert sample(text, "raman_batch_size_bucket", model=MODEL, le="4.0") is not None
    assert sample(text, "raman_inference_duration_seconds_count", model=MODEL) >= 1  # type: ignore[operator]
    assert sample(text, "raman_queue_depth", model=MODEL) == 0.0
    assert sample(text, "raman_model_info", name=MODEL, version="2") == 1.0
    assert sample(text, "raman_finetune_jobs_total", state="queued") == 1.0
    assert sample(text, "raman_finetune_jobs", state="queued") == 1.0


def test_finetune_hook_tracks_transitions(client: TestClient) -> None:
    metrics = client.app.state.metrics  # type: ignore[attr-defined]
    metrics.finetune_job_changed(None, "queued")
    metrics.finetune_job_changed("queued", "running")
    metrics.finetune_job_changed("running", "succeeded")
    text = client.get("/metrics").text
    assert sample(text, "raman_finetune_jobs", state="running") == 0.0
    assert sample(text, "raman_finetune_jobs", state="succeeded") == 1.0
    assert sample(text, "raman_finetune_jobs_total", state="running") == 1.0


def test_each_app_has_its_own_registry(settings: Settings) -> None:
    with TestClient(create_app(settings)) as a, TestClient(create_app(settings)) as b:
        a.get("/v2/health/live")
        a.get("/v2/health/live")
        live = {"route": "/v2/health/live", "method": "GET", "status": "200"}
        assert sample(a.get("/metrics").text, "raman_http_requests_total", **live) == 2.0
        assert sample(b.get("/metrics").text, "raman_http_requests_total", **live) is None


def test_full_queue_answers_429_at_once_with_retry_after(make_settings: Any) -> None:
    settings = make_settings(queue_size=2, max_batch_size=64)
    statuses, retry_after, text = asyncio.run(asyncio.wait_for(_flood(settings), 60))
    assert statuses == [200, 200, 429]
    assert retry_after == "1"
    assert sample(text, "raman_queue_rejected_total", model=MODEL) == 1.0


async def _flood(settings: Settings) -> tuple[list[int], str | None, str]:
    """The worker is held busy by request A; B's two spectra fill the queue; C is refused."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            predictor = app.state.manager.active[MODEL]
            release = threading.Event()
            real_run = predictor.model.session.run
            predictor.model.session.run = lambda batch: release.wait(30) and real_run(batch)
            a = asyncio.create_task(client.post("/v1/identify", json={"spectra": [SPECTRUM]}))
            while app.state.traffic.waiting < 1 or predictor.depth > 0:  # A is in the worker
                await asyncio.sleep(0.001)
            b = asyncio.create_task(client.post("/v1/identify", json={"spectra": [SPECTRUM] * 2}))
            while predictor.depth < 2:
                await asyncio.sleep(0.001)
            rejected = await client.post("/v1/identify", json={"spectra": [SPECTRUM]})
            assert not a.done() and not b.done()  # refused at once, while the queue was full
            release.set()
            answered = [await a, await b]
            text = (await client.get("/metrics")).text
    assert rejected.json()["type"].endswith("overloaded")
    statuses = [r.status_code for r in [*answered, rejected]]
    return statuses, rejected.headers.get("retry-after"), text


def test_request_timeout_is_504(make_settings: Any) -> None:
    settings = make_settings(
        request_timeout_s=0.05, max_wait_ms=2000.0, max_batch_size=64, batch_wait_when_idle=True
    )
    with TestClient(create_app(settings)) as c:
        r = c.post("/v1/identify", json={"spectra": [SPECTRUM]})
    assert r.status_code == 504
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"].endswith("timeout")


def test_a_lone_request_does_not_wait_for_companions(make_settings: Any) -> None:
    # max_wait far beyond the request timeout: only the idle fast path can answer in time.
    settings = make_settings(request_timeout_s=2.0, max_wait_ms=10_000.0, max_batch_size=64)
    with TestClient(create_app(settings)) as c:
        for _ in range(3):
            r = c.post("/v1/identify", json={"spectra": [SPECTRUM]})
            assert r.status_code == 200, r.text
            assert r.json()["results"][0]["timings"]["batch_size"] == 1
