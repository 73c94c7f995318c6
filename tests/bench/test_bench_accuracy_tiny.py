"""The accuracy benchmark's --tiny mode end to end on the real RRUFF data (issue 4).

Runs `bench/bench_accuracy.py --tiny` in a subprocess (a few classes, width/16, 2 epochs, one
random and one grouped split) and checks that results.json holds every method with every metric
of the paper's Table 2, plus calibration and open-set entries. Skipped where ../shared/data is
absent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from training.metrics import METRICS

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from accuracy_report import OPENSET_SCORES
from bench_accuracy import DEFAULT_METHODS, merge_results

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "bench_accuracy.py"
METHODS = tuple(DEFAULT_METHODS.split(","))  # what --tiny runs


@pytest.mark.slow
@pytest.mark.data
def test_tiny_benchmark_writes_every_method_and_metric(
    shared_rruff_zip: Path, tmp_path: Path
) -> None:
    """The built subset is cached under bench/cache (git-ignored), so reruns skip the build."""
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--tiny",
        "--openset-holdouts",
        "2",
        "--rruff",
        str(shared_rruff_zip),
        "--out",
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # every training reports each epoch as it finishes (long runs are followed in their logs)
    assert "_random0/drcnn] epoch 1/2: train loss" in proc.stderr
    assert "_grouped0/drcnn] epoch 2/2: train loss" in proc.stderr
    results = json.loads((out / "results.json").read_text())
    assert (out / "results.md").read_text().startswith("# Accuracy benchmark")
    for kind in ("random", "grouped"):
        runs = {r["method"]: r for r in results["runs"] if r["split"] == kind}
        assert set(runs) == set(METHODS), kind
        for method, run in runs.items():
            missing = [m for m in METRICS if m not in run["metrics"]]
            assert not missing, f"{kind}/{method} lacks {missing}"
            assert all(0.0 <= run["metrics"][m] <= 1.0 for m in METRICS)
            # the breakdown by the true class's training spectra covers every test spectrum
            by_support = run["top1_by_support"].values()
            assert sum(total for _, total in by_support) == run["metrics"]["n"]
            right = sum(r for r, _ in by_support)
            assert right == round(run["metrics"]["top1"] * run["metrics"]["n"])
    drcnn = next(r for r in results["runs"] if r["method"] == "drcnn")
    history = drcnn["train"]["history"]  # one record per epoch, to read a failed run afterwards
    assert [h["epoch"] for h in history] == list(range(1, drcnn["train"]["epochs_run"] + 1))
    assert all(h["grad_norm_max"] > 0 and 0 <= h["val_acc"] <= 1 for h in history)
    seconds = [h["seconds"] for h in history]
    assert seconds == sorted(seconds) and seconds[-1] <= drcnn["train"]["train_seconds"] + 0.05
    cal = drcnn["calibration"]
    assert {"temperature", "ece_before", "ece_after"} <= set(cal)
    entry = results["openset"]["dataset_1"]
    assert [h["seed"] for h in entry["holdouts"]] == [0, 1]
    assert entry["summary"]["auroc_combined"]["n"] == 2
    report = (out / "results.md").read_text()
    assert "dataset_1, mean of 2" in report
    assert "## Top-1 by training spectra of the true class" in report
    assert "## Against the paper's DRCNN on the same splits" in report  # variants vs drcnn
    openset = entry["holdouts"][0]
    assert set(openset["impostor_rules"]) == {"0.05", "0.1", "0.2"}
    assert "impostor share 0.05" in report
    scores = set(OPENSET_SCORES)
    assert set(openset["auroc"]) == scores and "network_probability" in scores
    assert all(0.0 <= openset["auroc"][k] <= 1.0 for k in scores)
    assert results["datasets"]["dataset_1"]["classes"] == 6
    assert (out / "figures" / "dataset_1_drcnn_confusion.png").is_file()
    _check_merge(results, tmp_path)


def _check_merge(results: dict, tmp_path: Path) -> None:
    """--merge of two parallel jobs' parts: the library runs both jobs made on the same split are
    counted once, a run only one part has is kept, the header counts the most splits asked and
    names the commit of each part."""
    a, b = tmp_path / "part_a", tmp_path / "part_b"
    for part in (a, b):
        part.mkdir()
    (a / "results.json").write_text(json.dumps(results))
    extra = {**results["runs"][0], "seed": 7, "method": "cosine"}
    second = {**results, "runs": [*results["runs"], extra]}
    second["options"] = {**results["options"], "n_splits": 3}
    second["machine"] = {**results["machine"], "git_commit": "0123abc"}
    (b / "results.json").write_text(json.dumps(second))
    merged = merge_results([a, b], tmp_path / "merged")
    assert len(merged["runs"]) == len(results["runs"]) + 1
    assert merged["options"]["n_splits"] == 3
    report = (tmp_path / "merged" / "results.md").read_text()
    assert "random splits N = 3" in report
    commits = f"{results['machine']['git_commit']} / 0123abc"
    assert merged["machine"]["git_commit"] == commits and f"commit {commits}" in report
    assert merged["machine"]["cores"] == results["machine"]["cores"]  # the same: kept as it was
