"""`/v1/finetune-jobs` through the app (TestClient, no worker, no torch): submission, listing,
cancel, and every refusal: 4xx problem+json, and nothing queued (the job list is unchanged)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from fastapi.testclient import TestClient
from finetune_fixtures import (
    GRID,
    NEW_PEAKS,
    csv_bytes,
    folder_files,
    labelled_json,
    manifest_files,
    on_grid,
    zip_archive,
)
from onnx import TensorProto, helper, numpy_helper

import service.routes.finetune as finetune_routes
from finetune.publish import write_active
from finetune.schemas import Hyperparameters, JobSpec
from finetune.store import JobStore
from service.app import create_app
from service.manager import ModelManager
from service.settings import Settings
from spectra.card import ModelCard, sha256_file

KEY = "api-test-key"
MODEL = "lab-minerals"
AUTH = {"X-API-Key": KEY}
TWO = {k: NEW_PEAKS[k] for k in ("Aspirin", "Caffeine")}
SPEC = JobSpec(base_model=MODEL, base_version="1", output_model=MODEL, val_fraction=0.2,
               activate=True, hyperparameters=Hyperparameters(epochs=3))  # fmt: skip


def write_version(store: Path, name: str, version: str, weights: bool = True) -> None:
    """A servable version (Flatten -> Gemm ONNX graph, card, references) with a stand-in
    weights.pt: the API only checks that the file exists."""
    d = store / name / version
    d.mkdir(parents=True)
    classes = ["Quartz", "Calcite"]
    w = np.random.default_rng(0).normal(size=(GRID.points, 2)).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("Flatten", ["spectra"], ["flat"], axis=1),
         helper.make_node("Gemm", ["flat", "W", "b"], ["logits"])],
        "tiny",
        [helper.make_tensor_value_info("spectra", TensorProto.FLOAT, ["batch", 1, GRID.points])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        initializer=[numpy_helper.from_array(w, "W"),
                     numpy_helper.from_array(np.zeros(2, np.float32), "b")],
    )  # fmt: skip
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(d / "model.onnx"))
    ModelCard(name=name, version=version, classes=classes, grid=GRID,
              onnx_sha256=sha256_file(d / "model.onnx")).save(d)  # fmt: skip
    np.savez(d / "references.npz", references=np.ones((2, GRID.points), np.float32),
             labels=np.array(classes))  # fmt: skip
    if weights:
        (d / "weights.pt").write_bytes(b"stand-in")


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    store = tmp_path / "models"
    write_version(store, MODEL, "1")
    write_version(store, "no-weights", "1", weights=False)
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        values: dict[str, Any] = {
            "model_store": store, "job_store": tmp_path / "jobs", "default_model": MODEL,
            "api_keys": [KEY], "providers": ["CPUExecutionProvider"], "warmup_batches": 1,
            "finetune_worker": "external", "finetune_poll_s": 0.05,
            "finetune_max_upload_bytes": 200_000, "finetune_max_archive_members": 40,
            "finetune_max_uncompressed_bytes": 2_000_000, "finetune_max_epochs": 100,
        }  # fmt: skip
        client = TestClient(create_app(Settings(**(values | overrides))))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


def job_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"spectra": labelled_json(TWO, 3), "hyperparameters": {"epochs": 5}}
    return body | overrides


def test_cancelling_a_job_that_registers_its_version_is_409(
    client: TestClient, tmp_path: Path
) -> None:
    job = client.post("/v1/finetune-jobs", json=job_body(), headers=AUTH).json()
    jobs = JobStore(tmp_path / "jobs")
    assert jobs.claim(job["id"], "elsewhere:1") is not None
    assert jobs.begin_export(job["id"], {"stage": "exporting", "epoch": 5, "epochs": 5})
    r = client.post(f"/v1/finetune-jobs/{job['id']}/cancel", headers=AUTH)
    assert r.status_code == 409 and r.json()["type"].endswith("job-conflict")
    assert "too late to cancel" in r.json()["detail"] and r.json()["state"] == "running"
    after = client.get(f"/v1/finetune-jobs/{job['id']}", headers=AUTH).json()
    assert after["state"] == "running" and after["cancel_requested"] is False


def job_ids(client: TestClient) -> list[str]:
    return [j["id"] for j in client.get("/v1/finetune-jobs", headers=AUTH).json()["jobs"]]


def test_a_job_that_activates_a_version_while_the_api_starts_is_served(
    make_client: Callable[..., TestClient], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an API restarting while an external worker finishes a job: the job ends while the
    # models load, before the watcher's first poll, which took it for history (v1 served on)
    jobs = JobStore(tmp_path / "jobs")
    assert jobs.create("a" * 32, SPEC, {"spectra": 6}, 10)
    assert jobs.claim_next("elsewhere:1") is not None
    start = ModelManager.start

    async def start_while_the_job_ends(manager: ModelManager) -> None:
        await start(manager)  # v1 is loaded
        write_version(tmp_path / "models", MODEL, "2")
        write_active(tmp_path / "models", MODEL, "2")
        jobs.set_result("a" * 32, {"model": MODEL, "version": "2", "activated": True})
        jobs.finish("a" * 32, "succeeded")

    monkeypatch.setattr(ModelManager, "start", start_while_the_job_ends)
    client = make_client()
    deadline = time.monotonic() + 10
    while client.get(f"/v1/models/{MODEL}").json()["active_version"] != "2":
        assert time.monotonic() < deadline, "the version the job activated was never served"
        time.sleep(0.05)
    log = client.get(f"/v1/finetune-jobs/{'a' * 32}/log", headers=AUTH).json()["lines"]
    assert any("now serves" in line["message"] for line in log)


def test_without_torch_the_local_worker_refuses_jobs_at_once(
    make_client: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    # `make serve` installs the API without torch: jobs were accepted, then all failed
    monkeypatch.setattr(finetune_routes, "TRAINING_INSTALLED", False)
    client = make_client(finetune_worker="process")
    r = client.post("/v1/finetune-jobs", json=job_body(), headers=AUTH)
    assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"].endswith("finetune-unavailable") and "PyTorch" in r.json()["detail"]
    assert job_ids(client) == []
    external = make_client()  # an external worker trains elsewhere: accepted
    assert external.post("/v1/finetune-jobs", json=job_body(), headers=AUTH).status_code == 202


def test_submit_inspect_cancel(client: TestClient, tmp_path: Path) -> None:
    r = client.post("/v1/finetune-jobs", json=job_body(activate=True), headers=AUTH)
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/v1/finetune-jobs/{job['id']}"
    assert job["state"] == "queued" and job["base"] == {"name": MODEL, "version": "1"}
    assert job["output_model"] == MODEL and job["activate"] is True
    assert job["hyperparameters"]["epochs"] == 5 and job["hyperparameters"]["patience"] == 15
    assert job["data"]["per_class"] == {"Aspirin": 3, "Caffeine": 3}
    assert (tmp_path / "jobs" / "data" / job["id"] / "data.npz").is_file()
    listed = client.get("/v1/finetune-jobs", headers=AUTH).json()
    assert [j["id"] for j in listed["jobs"]] == [job["id"]] and listed["counts"] == {"queued": 1}
    assert client.get(f"/v1/finetune-jobs/{job['id']}", headers=AUTH).json()["state"] == "queued"
    log = client.get(f"/v1/finetune-jobs/{job['id']}/log", headers=AUTH).json()
    assert [line["message"] for line in log["lines"]] == ["queued"] and log["next_after"] == 1
    r = client.post(f"/v1/finetune-jobs/{job['id']}/cancel", headers=AUTH)
    assert r.status_code == 202 and r.json()["state"] == "cancelled"
    r = client.post(f"/v1/finetune-jobs/{job['id']}/cancel", headers=AUTH)
    assert r.status_code == 409 and r.json()["type"].endswith("job-conflict")
    time.sleep(0.3)  # the watcher counts the transitions and removes the ended job's data
    metrics = client.get("/metrics").text
    assert 'raman_finetune_jobs_total{state="cancelled"} 1.0' in metrics
    assert not (tmp_path / "jobs" / "data" / job["id"]).exists()


def test_archives_are_accepted_with_a_manifest_or_folders(client: TestClient) -> None:
    for files in (manifest_files(TWO, 3, 1), folder_files(TWO, 3, 2)):
        r = client.post(
            "/v1/finetune-jobs", headers=AUTH,
            files={"archive": ("lab.zip", zip_archive(files), "application/zip")},
            data={"spec": '{"val_fraction": 0.3, "hyperparameters": {"freeze": "features"}}'},
        )  # fmt: skip
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["data"]["source"] == "archive" and job["data"]["classes"] == 2
        assert job["hyperparameters"]["freeze"] == "features" and job["val_fraction"] == 0.3


def nan_body() -> bytes:
    return b'{"spectra": [{"label": "A", "intensities": [1.0, NaN]}]}'


def traversal_zip() -> bytes:
    return zip_archive(manifest_files(TWO, 3, 1) | {"../../etc/cron.d/x": b"1,2\n"})


def bomb_zip() -> bytes:
    return zip_archive({f"Quartz/{i}.csv": b"0" * 900_000 for i in range(3)})


JSON_CASES = [
    ("one class", job_body(spectra=labelled_json({"A": (3.0,)}, 4)), 422, "invalid-training-data"),
    ("too few", job_body(spectra=labelled_json(TWO, 3)[:4]), 422, "invalid-training-data"),
    ("count mismatch", job_body(labels=["A"] * 5), 422, "invalid-training-data"),
    ("unknown model", job_body(base_model="nope"), 404, "model-not-found"),
    ("unknown version", job_body(base_version="9"), 404, "model-not-found"),
    ("no weights", job_body(base_model="no-weights"), 422, "base-not-finetunable"),
    ("epochs", job_body(hyperparameters={"epochs": 101}), 422, "invalid-input"),
    ("freeze", job_body(hyperparameters={"freeze": "half"}), 422, "invalid-input"),
    ("val fraction", job_body(val_fraction=0.9), 422, "invalid-input"),
    ("false accept 0", job_body(max_false_accept=0.0), 422, "invalid-input"),
    ("false accept 1", job_body(max_false_accept=1.0), 422, "invalid-input"),
    ("typo", job_body(epochs=3), 422, "invalid-input"),
    # no coercion: "yes" / 1 switched activation on, "5" / true were epoch counts
    ("activate yes", job_body(activate="yes"), 422, "invalid-input"),
    ("activate 1", job_body(activate=1), 422, "invalid-input"),
    ("epochs text", job_body(hyperparameters={"epochs": "5"}), 422, "invalid-input"),
    ("epochs bool", job_body(hyperparameters={"epochs": True}), 422, "invalid-input"),
    ("rate text", job_body(hyperparameters={"learning_rate": "1e-3"}), 422, "invalid-input"),
    ("empty base", job_body(base_model=""), 422, "invalid-input"),
    ("empty output", job_body(output_model=""), 422, "invalid-input"),
    ("bad output name", job_body(output_model="../x"), 422, "invalid-input"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "body", "status", "slug"), JSON_CASES, ids=[c[0] for c in JSON_CASES]
)
def test_json_refusals_queue_nothing(
    client: TestClient, case: str, body: Any, status: int, slug: str
) -> None:
    r = client.post("/v1/finetune-jobs", json=body, headers=AUTH)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"].endswith(slug)
    assert job_ids(client) == []


def test_nan_and_wrong_media_type(client: TestClient) -> None:
    r = client.post(
        "/v1/finetune-jobs", content=nan_body(), headers=AUTH | {"content-type": "application/json"}
    )
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    r = client.post(
        "/v1/finetune-jobs", content=b"x", headers=AUTH | {"content-type": "text/plain"}
    )
    assert r.status_code == 415
    assert client.post("/v1/finetune-jobs", json=job_body()).status_code == 401
    assert job_ids(client) == []


def bad_files() -> dict[str, bytes]:
    files = manifest_files(TWO, 3, 1)
    files["spectra/aspirin_0.csv"] = b"this is not a spectrum at all"
    return files


GHOST = {"manifest.csv": b"file,label\nghost.csv,A\n"}
EXTRA = {"spectra/extra.csv": csv_bytes((400.0,), 9)}
ARCHIVE_CASES = [
    ("missing file", manifest_files(TWO, 3, 1) | GHOST, 422, "ghost.csv"),
    ("unlisted file", manifest_files(TWO, 3, 1) | EXTRA, 422, "extra.csv"),
    ("unparsable", bad_files(), 422, "spectra/aspirin_0.csv"),
    ("traversal", traversal_zip(), 422, "outside the archive"),
    ("zip bomb", bomb_zip(), 413, "unpacks to more than"),
    ("members", {f"Quartz/{i}.csv": b"1,2\n" for i in range(45)}, 413, "entries"),
    ("too big", {"Quartz/a.csv": np.random.default_rng(0).bytes(250_000)}, 413, "at most 200000"),
    ("not an archive", b"plain text", 422, "neither"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "content", "status", "named"), ARCHIVE_CASES, ids=[c[0] for c in ARCHIVE_CASES]
)
def test_archive_refusals_queue_nothing(
    client: TestClient, case: str, content: Any, status: int, named: str
) -> None:
    blob = content if isinstance(content, bytes) else zip_archive(content)
    r = client.post("/v1/finetune-jobs", headers=AUTH, files={"archive": ("a.zip", blob)})
    assert r.status_code == status, r.text
    problem = r.json()
    assert r.headers["content-type"] == "application/problem+json"
    assert named in problem["detail"] + str(problem.get("errors", ""))
    assert job_ids(client) == []


def test_multipart_without_archive_or_with_a_bad_spec(client: TestClient) -> None:
    r = client.post(
        "/v1/finetune-jobs", headers=AUTH, data={"spec": "{}"}, files={"x": ("x", b"1")}
    )
    assert r.status_code == 422 and "archive" in r.json()["detail"]
    blob = zip_archive(manifest_files(TWO, 3, 1))
    r = client.post("/v1/finetune-jobs", headers=AUTH, files={"archive": ("a.zip", blob)},
                    data={"spec": '{"epochs": 3}'})  # fmt: skip
    assert r.status_code == 422 and "spec" in r.json()["detail"]
    assert job_ids(client) == []


def test_body_limit_and_queue_bound(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_body_bytes=50_000, finetune_max_queued=1)
    big = {"archive": ("a.zip", np.random.default_rng(0).bytes(60_000))}
    assert client.post("/v1/finetune-jobs", headers=AUTH, files=big).status_code == 413
    small = job_body(spectra=[{"label": label, "intensities": on_grid(peaks, i)}
                              for label, peaks in TWO.items() for i in range(3)])  # fmt: skip
    assert client.post("/v1/finetune-jobs", json=small, headers=AUTH).status_code == 202
    r = client.post("/v1/finetune-jobs", json=small, headers=AUTH)
    assert r.status_code == 429 and r.headers["retry-after"]
    assert len(job_ids(client)) == 1


def test_unknown_jobs_are_404(client: TestClient) -> None:
    for path in ("/v1/finetune-jobs/" + "0" * 32, "/v1/finetune-jobs/not-an-id/log"):
        r = client.get(path, headers=AUTH)
        assert r.status_code == 404 and r.json()["type"].endswith("job-not-found")
    assert client.post("/v1/finetune-jobs/" + "a" * 32 + "/cancel", headers=AUTH).status_code == 404


def test_constants_shared_with_the_registry() -> None:
    from finetune.publish import ACTIVE_FILE
    from service.registry import ACTIVE_FILE as REGISTRY_ACTIVE

    assert ACTIVE_FILE == REGISTRY_ACTIVE


def test_constants_shared_with_the_training_package() -> None:
    from typing import get_args

    from finetune.schemas import DEFAULT_PATIENCE, Freeze
    from training.finetune import FREEZE_CHOICES, FinetuneConfig

    assert get_args(Freeze) == FREEZE_CHOICES
    assert FinetuneConfig().patience == DEFAULT_PATIENCE
