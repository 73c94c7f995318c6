"""`finetune.run_job` under torchrun with two CPU processes (gloo): both ranks train, rank 0
claims the job, exports and registers exactly one new version."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from finetune_fixtures import BASE_MODEL, NEW_PEAKS, REPO_ROOT, build_base_model, labelled_json

from finetune.ingest import IngestLimits, from_json
from finetune.publish import ACTIVE_FILE
from finetune.schemas import Hyperparameters, JobSpec, LabelledSpectrum
from finetune.store import JobStore
from spectra.card import ModelCard

pytestmark = pytest.mark.slow
ENTRY = Path(__file__).with_name("ddp_cpu_entry.py")


@pytest.mark.skipif(
    shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
    reason="torchrun is not installed",
)
def test_two_rank_job_registers_one_version(tmp_path: Path) -> None:
    models = tmp_path / "models"
    build_base_model(models, epochs=2)
    store = JobStore(tmp_path / "jobs")
    items = [LabelledSpectrum.model_validate(d) for d in labelled_json(NEW_PEAKS, 6)]
    data = from_json(
        items, None, ModelCard.load(models / BASE_MODEL / "1").grid, 0.34, IngestLimits()
    )
    spec = JobSpec(
        base_model=BASE_MODEL,
        base_version="1",
        output_model="lab-ddp",
        val_fraction=0.34,
        activate=True,
        hyperparameters=Hyperparameters(epochs=3, patience=3, batch_size=4),
    )
    data.save(store.data_dir("ddpjob"))
    assert store.create("ddpjob", spec, data.summary(), max_queued=10)
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    )
    done = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc-per-node",
            "2",
            str(ENTRY),
            "--job-store",
            str(store.root),
            "--model-store",
            str(models),
            "--job-id",
            "ddpjob",
            "--threads",
            "1",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    job = store.get("ddpjob")
    assert job is not None and job.state == "succeeded", (done.stdout[-2000:], done.stderr[-4000:])
    assert done.returncode == 0
    result = job.result or {}
    assert {k: result.get(k) for k in ("model", "version", "activated", "note")} == {
        "model": "lab-ddp", "version": "1", "activated": True, "note": None}  # fmt: skip
    assert 0.0 <= result["val_accuracy"] <= 1.0
    names = {p.name for p in (models / "lab-ddp").iterdir() if not p.name.startswith(".")}
    assert names == {ACTIVE_FILE, "1"}
    messages = [m for _, _, m in store.log_lines("ddpjob")]
    assert any(m.startswith("run_job on") and "world size 2" in m for m in messages)
    assert sum(m.startswith("epoch 3/3") for m in messages) == 1  # rank 0 reports, once
    assert not store.data_dir("ddpjob").exists()  # retention 0: data removed at the end
