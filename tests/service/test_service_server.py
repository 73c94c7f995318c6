"""End to end: the real server process (`python -m service`) over loopback HTTP.

Concurrent clients must be merged into batches (mean batch size from /metrics > 1), a flood on a
small queue must be refused with 429 + Retry-After (not left to time out), and SIGTERM must stop
the server cleanly.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from service_fixture_models import CLASSES, MODEL, spectrum_on_grid

pytestmark = pytest.mark.slow

STARTUP_S = 60.0
BODY = {"spectra": [{"intensities": spectrum_on_grid(2)}]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def server(store: Path, tmp_path: Path, **env: str) -> Iterator[str]:
    """Start `python -m service`, wait until ready, yield its URL, then SIGTERM it."""
    port = free_port()
    environ = os.environ | {"RAMAN_MODEL_STORE": str(store), "RAMAN_WARMUP_BATCHES": "1"} | env
    log = (tmp_path / f"server-{port}.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)],
        env=environ,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, url, log.name)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        log.close()
    # uvicorn shuts down gracefully, then re-raises the signal: exit by SIGTERM (or 0) is clean.
    output = Path(log.name).read_text()
    assert code in (0, -signal.SIGTERM), output[-3000:]
    assert "Application shutdown complete" in output, output[-3000:]


def wait_ready(proc: subprocess.Popen[bytes], url: str, log_path: str) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early:\n{Path(log_path).read_text()[-3000:]}")
        try:
            if httpx.get(url + "/v2/health/ready", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(
        f"server not ready in {STARTUP_S} s:\n{Path(log_path).read_text()[-3000:]}"
    )


def metric(text: str, name: str) -> float:
    match = re.search(rf'^{name}{{model="{MODEL}"}} (\S+)$', text, re.M)
    assert match, name
    return float(match.group(1))


def hammer(url: str, clients: int, requests_each: int) -> list[httpx.Response]:
    def one_client(_: int) -> list[httpx.Response]:
        with httpx.Client(base_url=url, timeout=30.0) as client:
            return [client.post("/v1/identify", json=BODY) for _ in range(requests_each)]

    with ThreadPoolExecutor(clients) as pool:
        return [r for batch in pool.map(one_client, range(clients)) for r in batch]


def test_concurrent_clients_are_batched(store: Path, tmp_path: Path) -> None:
    with server(store, tmp_path, RAMAN_MAX_WAIT_MS="20", RAMAN_MAX_BATCH_SIZE="64") as url:
        responses = hammer(url, clients=32, requests_each=4)
        assert [r.status_code for r in responses] == [200] * 128
        assert {r.json()["results"][0]["predictions"][0]["label"] for r in responses} == {
            CLASSES[2]
        }
        text = httpx.get(url + "/metrics").text
    count, total = metric(text, "raman_batch_size_count"), metric(text, "raman_batch_size_sum")
    assert total == 128 + 0  # every spectrum went through the batcher exactly once
    assert total / count > 1.0, f"{count:g} batches for {total:g} spectra: no batching happened"


def test_flood_on_a_small_queue_gets_429_not_timeouts(store: Path, tmp_path: Path) -> None:
    env = {
        "RAMAN_QUEUE_SIZE": "4",
        "RAMAN_MAX_WAIT_MS": "3000",  # generous: all 16 clients arrive within the window
        "RAMAN_MAX_BATCH_SIZE": "64",
        "RAMAN_BATCH_WAIT_WHEN_IDLE": "true",  # classic fixed window: the queue fills up
    }
    with server(store, tmp_path, **env) as url:
        responses = hammer(url, clients=16, requests_each=1)
        statuses = sorted(r.status_code for r in responses)
        rejected = [r for r in responses if r.status_code == 429]
        assert set(statuses) <= {200, 429}, statuses
        assert statuses.count(200) >= 4 and rejected, statuses
        assert all(r.headers["retry-after"] == "1" for r in rejected)
        assert all(r.headers["content-type"] == "application/problem+json" for r in rejected)
        text = httpx.get(url + "/metrics").text
    assert metric(text, "raman_queue_rejected_total") == len(rejected)


def test_head_is_answered_without_a_body_on_a_kept_alive_connection(
    store: Path, tmp_path: Path
) -> None:
    """HEAD then GET on one connection: a body sent after the HEAD would be read as the start
    of the next response and break it."""
    with server(store, tmp_path) as url:
        host, port = url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            conn.request("HEAD", "/v1/models")
            head = conn.getresponse()
            assert head.status == 200 and head.read() == b""
            length = int(head.headers["content-length"])
            conn.request("GET", "/v1/models")
            got = conn.getresponse()
            body = got.read()
        finally:
            conn.close()
    assert got.status == 200 and len(body) == length > 0
