"""Fine-tune jobs end to end over HTTP: a real `python -m service` process, its local worker, a
tiny trained base model. Tests run in file order and share one server (module scope)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from finetune_fixtures import (
    BASE_MODEL,
    NEW_PEAKS,
    Server,
    build_base_model,
    folder_files,
    labelled_json,
    manifest_files,
    on_grid,
    targz_archive,
    wait_for,
    zip_archive,
)

pytestmark = pytest.mark.slow
FAST = {"epochs": 30, "patience": 30, "learning_rate": 3e-3, "batch_size": 8}
ENDED = {"succeeded", "failed", "cancelled"}


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("finetune-e2e")
    build_base_model(root / "models")
    return {"models": root / "models", "jobs": root / "jobs", "log": root / "server.log"}


@pytest.fixture(scope="module")
def server(stores: dict[str, Path]) -> Iterator[Server]:
    srv = Server(stores["models"], stores["jobs"], stores["log"],
                 RAMAN_FINETUNE_MAX_EPOCHS="100000").start()  # fmt: skip
    yield srv
    srv.stop()


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def identify(client: httpx.Client, label: str, **extra: Any) -> dict[str, Any]:
    body = {"spectra": [{"intensities": on_grid(NEW_PEAKS[label], 4242)}], "top_k": 3, **extra}
    r = client.post("/v1/identify", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def active_version(client: httpx.Client, timeout_s: float = 10.0, want: str | None = None) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        version = client.get(f"/v1/models/{BASE_MODEL}").json()["active_version"]
        if want is None or version == want or time.monotonic() > deadline:
            return str(version)
        time.sleep(0.2)


def long_job(client: httpx.Client) -> str:
    """A job that would train for minutes; returns once it has finished an epoch."""
    body = {"spectra": labelled_json(NEW_PEAKS, 4, seed=5), "val_fraction": 0.0,
            "hyperparameters": {"epochs": 50_000, "batch_size": 4}}  # fmt: skip
    job_id = client.post("/v1/finetune-jobs", json=body).json()["id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = client.get(f"/v1/finetune-jobs/{job_id}").json()
        if job["state"] == "running" and (job["progress"].get("epoch") or 0) >= 1:
            return str(job_id)
        assert job["state"] in ("queued", "running"), job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not start training")


def test_json_job_trains_registers_activates_and_serves(client: httpx.Client) -> None:
    body = {"spectra": labelled_json(NEW_PEAKS, 8), "activate": True, "val_fraction": 0.34,
            "hyperparameters": FAST}  # fmt: skip
    r = client.post("/v1/finetune-jobs", json=body)
    assert r.status_code == 202, r.text
    job = wait_for(client, r.json()["id"], ENDED, timeout_s=180)
    assert job["state"] == "succeeded", job
    assert job["result"]["model"] == BASE_MODEL and job["result"]["version"] == "2"
    assert job["result"]["activated"] is True and job["result"]["val_accuracy"] >= 0.5
    assert job["progress"]["stage"] == "done" and job["finished_at"] and job["started_at"]
    assert active_version(client, want="2") == "2"
    queries = [(label, seed) for label in NEW_PEAKS for seed in (4242, 7, 99)]
    spectra = [{"intensities": on_grid(NEW_PEAKS[label], seed)} for label, seed in queries]
    answer = client.post("/v1/identify", json={"spectra": spectra, "top_k": 3}).json()
    assert answer["model"]["version"] == "2"
    top1 = [r["predictions"][0]["label"] for r in answer["results"]]
    assert sum(t == label for t, (label, _) in zip(top1, queries, strict=True)) >= 7, top1
    card = client.get(f"/v1/models/{BASE_MODEL}/versions/2").json()["card"]
    assert card["architecture"]["finetuned_from"] == f"{BASE_MODEL}/1"
    messages = [
        line["message"] for line in client.get(r.headers["location"] + "/log").json()["lines"]
    ]
    assert any(m.startswith("epoch 1/30") for m in messages)
    assert f"the service now serves {BASE_MODEL} version 2" in messages


def test_two_archive_jobs_posted_at_once_both_finish(client: httpx.Client) -> None:
    two = {k: NEW_PEAKS[k] for k in ("Aspirin", "Glucose")}
    uploads = [("lab.zip", zip_archive(manifest_files(two, 4, 1))),
               ("lab.tar.gz", targz_archive(folder_files(two, 4, 2)))]  # fmt: skip
    spec = (  # both jobs ask for the stricter no-match rule, recorded in their cards
        '{"val_fraction": 0.25, "max_false_accept": 0.2, '
        '"hyperparameters": {"epochs": 3, "batch_size": 4}}'
    )
    answers: list[httpx.Response] = []

    def post(name: str, blob: bytes) -> None:
        files = {"archive": (name, blob)}
        answers.append(client.post("/v1/finetune-jobs", files=files, data={"spec": spec}))

    threads = [threading.Thread(target=post, args=upload) for upload in uploads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [a.status_code for a in answers] == [202, 202], [a.text for a in answers]
    jobs = [wait_for(client, a.json()["id"], ENDED, timeout_s=180) for a in answers]
    assert [j["state"] for j in jobs] == ["succeeded", "succeeded"], jobs
    assert sorted(j["result"]["version"] for j in jobs) == ["3", "4"]  # never the same version
    assert not any(j["result"]["activated"] for j in jobs)
    assert active_version(client) == "2"  # not asked to activate: serving is unchanged
    pinned = identify(client, "Glucose", version=jobs[0]["result"]["version"])
    assert pinned["results"][0]["predictions"][0]["label"] in two
    for j in jobs:
        url = f"/v1/models/{BASE_MODEL}/versions/{j['result']['version']}"
        card = client.get(url).json()["card"]
        strict = card["metrics"]["calibration"]
        assert strict["max_false_accept"] == 0.2
        assert card["calibration"]["min_similarity"] >= strict["impostor_min_similarity"]
        # 2 validation spectra cannot support a fit: the base version's calibration is kept
        assert strict["fitted"] is False and strict["validation_spectra"] == 2
        base_name, base_version = card["architecture"]["finetuned_from"].split("/")
        base = client.get(f"/v1/models/{base_name}/versions/{base_version}").json()["card"]
        kept = {k: v for k, v in card["calibration"].items() if k != "min_similarity"}
        assert kept == {k: v for k, v in base["calibration"].items() if k != "min_similarity"}


def test_cancel_stops_a_running_job_within_seconds(client: httpx.Client) -> None:
    job_id = long_job(client)
    asked = time.monotonic()
    r = client.post(f"/v1/finetune-jobs/{job_id}/cancel")
    assert r.status_code == 202 and r.json()["cancel_requested"] is True
    job = wait_for(client, job_id, ENDED, timeout_s=15)
    assert job["state"] == "cancelled" and time.monotonic() - asked < 10
    assert job["result"] is None and active_version(client) == "2"


def test_a_killed_worker_fails_the_job_and_serving_goes_on(client: httpx.Client) -> None:
    job_id = long_job(client)
    worker = client.get(f"/v1/finetune-jobs/{job_id}").json()["worker"]
    os.kill(int(worker.rsplit(":", 1)[1]), signal.SIGKILL)
    assert identify(client, "Caffeine")["model"]["version"] == "2"  # the API is untouched
    job = wait_for(client, job_id, ENDED, timeout_s=30)
    assert job["state"] == "failed" and "worker died" in job["error"], job
    assert active_version(client) == "2"
    metrics = client.get("/metrics").text
    assert 'raman_finetune_jobs_total{state="failed"} 1.0' in metrics
    assert 'raman_finetune_jobs{state="running"} 0.0' in metrics


def test_jobs_survive_an_api_restart_and_new_jobs_run(server: Server, client: httpx.Client) -> None:
    before = {j["id"]: j["state"] for j in client.get("/v1/finetune-jobs").json()["jobs"]}
    assert len(before) == 5
    server.stop()
    server.start()
    with server.client() as fresh:
        after = {j["id"]: j["state"] for j in fresh.get("/v1/finetune-jobs").json()["jobs"]}
        assert after == before
        assert active_version(fresh) == "2"
        body = {"spectra": labelled_json(NEW_PEAKS, 2), "val_fraction": 0.0,
                "hyperparameters": {"epochs": 1}}  # fmt: skip
        job = wait_for(fresh, fresh.post("/v1/finetune-jobs", json=body).json()["id"], ENDED, 120)
        assert job["state"] == "succeeded" and job["result"]["version"] == "5"
