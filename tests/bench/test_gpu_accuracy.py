"""The GPU accuracy launcher (bench/gpu_accuracy.py), the paired comparison of the report and
the library-only open-set experiment.

The launcher is run in miniature (`--smoke`: 6 classes, width/16, 2 epochs) on the real RRUFF
data with a deadline far shorter than its 30 splits need, which is what happens on a lent GPU:
the job must stop at the deadline, exit cleanly and leave everything it finished in one tarball.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

from accuracy_report import _paired_md, paired, pooled_by_support, write_markdown  # noqa: E402
from bench_accuracy import (  # noqa: E402
    NETWORKS,
    _merge_openset,
    openset_library,
    parse_args,
    train_config,
)
from gpu_accuracy import PLAN, PLANS, wait_all, with_library_variants  # noqa: E402

from spectra.library import SEARCHES  # noqa: E402
from training.datasets import Dataset  # noqa: E402


def _run(seed: int, method: str, top1: float, kind: str = "random") -> dict[str, object]:
    return {"subset": "d", "split": kind, "seed": seed, "method": method, "metrics": {"top1": top1}}


def test_support_breakdown_pools_counts_over_splits_and_skips_older_runs() -> None:
    runs = [
        {**_run(0, "cosine", 0.5), "top1_by_support": {"1": [1, 4], "2": [3, 3]}},
        {**_run(1, "cosine", 0.5), "top1_by_support": {"1": [2, 4]}},
        _run(2, "cosine", 0.5),  # written before the breakdown existed
        _run(0, "drcnn", 0.9),
    ]
    pooled = pooled_by_support({"runs": runs})
    assert pooled == {("d", "random", "cosine"): {"1": [3, 8], "2": [3, 3]}}


def test_paired_uses_only_the_splits_both_methods_ran_on() -> None:
    runs = [
        _run(0, "cosine", 0.90),
        _run(1, "cosine", 0.80),
        _run(2, "cosine", 0.70),
        _run(0, "net", 0.95),
        _run(1, "net", 0.80),
        _run(5, "net", 0.10),  # no cosine on seed 5: must not count
        _run(0, "net", 0.50, kind="grouped"),  # no cosine on grouped splits at all
    ]
    (row,) = paired({"runs": runs})
    assert (row["method"], row["split"], row["n"]) == ("net", "random", 2)
    assert row["method_mean"] == pytest.approx(0.875)
    assert row["baseline_mean"] == pytest.approx(0.85)
    assert row["diff_mean"] == pytest.approx(0.025)
    assert (row["wins"], row["ties"], row["losses"]) == (1, 1, 0)


def test_paired_tables_only_for_baselines_the_run_has() -> None:
    runs = [_run(s, m, 0.8 + 0.01 * s) for s in (0, 1) for m in ("adapted", "drcnn_rs")]
    runs += [_run(0, "drcnn_rs_nc", 0.85), _run(1, "drcnn_rs_nc", 0.79)]
    results = {"runs": runs}
    assert _paired_md(results, "cosine") == _paired_md(results, "drcnn") == ""
    against_rs = _paired_md(results, "drcnn_rs")
    assert against_rs.startswith("## Against DRCNN with recursive supervision on the same splits")
    (row,) = [line for line in against_rs.splitlines() if "| drcnn_rs_nc |" in line]
    assert "| 2 | 0.8200 | 0.8050 | +0.0150 ± 0.0495 | 1 / 0 / 1 |" in row
    assert "## Against the adapted library search" in _paired_md(results, "adapted")


def test_library_openset_scores_every_search_over_each_hold_out(
    make_peak_dataset: Callable[..., tuple[np.ndarray, np.ndarray]],
    make_toy_dataset: Callable[[np.ndarray, np.ndarray, int], Dataset],
) -> None:
    x, y = make_peak_dataset(10, 8, 200, seed=3)
    ds = make_toy_dataset(x, y, 10)
    opts = parse_args(["--openset-method", "library", "--openset-share", "0.2"])
    out = openset_library(ds, opts, range(3))
    assert (out["method"], out["seeds"], out["classes_unknown"]) == ("library", [0, 1, 2], 2)
    assert set(out["metrics"]) == set(SEARCHES)  # adapted_pre needs a subset's outside
    for m in out["metrics"].values():
        assert m["auroc"]["n"] == 3 and 0.0 <= m["auroc"]["mean"] <= 1.0
        assert m["known_top1"]["mean"] > 0.5  # 8 spectra of distinct peaks per class
    md = write_markdown(
        {
            "options": vars(opts) | {"rruff": "x", "cache": "x", "out": "x"},
            "machine": {
                "cpu": "c",
                "cores": 1,
                "gpu": None,
                "torch": "t",
                "torch_threads": 1,
                "git_commit": "abc",
            },
            "started": "now",
            "datasets": {},
            "runs": [],
            "openset": {"synthetic": out},
        }
    )
    assert "Open-set rejection by the library searches alone" in md
    assert md.count("| synthetic | 3 | 2 |") == len(SEARCHES)


@pytest.mark.parametrize("plan", sorted(PLANS))
def test_every_job_of_a_named_plan_is_a_valid_benchmark_command(plan: str) -> None:
    # a typo in a job's methods would otherwise surface only on the lent GPU, costing the lease
    for name in PLANS[plan]:
        opts = parse_args([*PLAN[name], "--out", "/tmp/unused"])
        assert opts.methods == PLAN[name][-1].split(",")


def test_jobs_measure_the_adapted_search_wherever_they_measure_the_derivative_one() -> None:
    assert with_library_variants("cosine,derivative,drcnn,drcnn+derivative,drcnn+tta") == (
        "cosine,derivative,adapted,drcnn,drcnn+derivative,drcnn+adapted,drcnn+derivative_fit,"
        "drcnn+adapted_fit,drcnn+tta"
    )
    assert with_library_variants("cosine,drcnn") == "cosine,drcnn"


def test_wait_all_kills_jobs_past_the_deadline() -> None:
    quick = subprocess.Popen([sys.executable, "-c", "pass"])
    slow = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    start = time.time()
    codes = wait_all({"quick": quick, "slow": slow}, time.time() + 1.0)
    assert codes == {"quick": 0, "slow": None}
    assert time.time() - start < 30
    assert slow.poll() is not None


@pytest.mark.slow
@pytest.mark.data
def test_smoke_plan_stops_at_the_deadline_and_packs_one_tarball(
    shared_rruff_zip: Path, tmp_path: Path
) -> None:
    out, work = tmp_path / "out", tmp_path / "work"
    cmd = [
        sys.executable,
        str(REPO / "bench" / "gpu_accuracy.py"),
        "--smoke",
        "--jobs",
        "d1_random_rs_liu",
        "--deadline",
        # one split takes ~5 s on a 2-core CPU (~7 s beside two trainings); 40 s leaves room
        # for a slower or busier machine and still stops long before 30 splits (~150 s)
        "40",
        "--threads",
        "1",
        "--first-seed",
        "3",
        "--rruff",
        str(shared_rruff_zip),
        "--work",
        str(work),
        "--out",
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=400, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert [p.name for p in out.iterdir()] == ["gpu_accuracy.tgz"]
    with tarfile.open(out / "gpu_accuracy.tgz") as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    root = tmp_path / "unpacked" / "work"
    assert json.loads((root / "summary.json").read_text())["exit_codes"] == {"d1_random_rs_liu": 0}
    results = json.loads((root / "parts" / "d1_random_rs_liu" / "results.json").read_text())
    assert results["deadline_reached"] is True
    seeds = {r["seed"] for r in results["runs"]}
    assert 1 <= len(seeds) < 30  # some splits finished, not all 30
    assert min(seeds) == 3  # --first-seed: a later lease continues with new splits
    methods = {r["method"] for r in results["runs"] if r["seed"] == 3}
    # the job's methods, with the adapted search and the network's mixes added by job()
    assert methods == {
        "cosine",
        "derivative",
        "adapted",
        "drcnn_rs",
        "liu",
        "drcnn_rs+derivative",
        "drcnn_rs+adapted",
        "drcnn_rs+derivative_fit",
        "drcnn_rs+adapted_fit",
    }
    assert (root / "logs" / "d1_random_rs_liu.log").read_text().strip()


def test_each_network_variant_trains_with_its_one_change() -> None:
    """bench_accuracy's method names map onto TrainConfig: the cosine variants anneal the
    learning rate, recursive supervision sets the auxiliary weight, the rest keep the paper's."""
    opts = parse_args(["--methods", ",".join(NETWORKS), "--lr", "1e-3"])
    configs = {m: train_config(m, opts, seed=0) for m in NETWORKS}
    cosine = {m for m, c in configs.items() if c.lr_schedule == "cosine"}
    assert cosine == {"drcnn_cos", "drcnn_rs_cos"}
    assert configs["drcnn_rs_cos"].aux_weight == opts.aux_weight > 0
    assert configs["drcnn_cos"].aux_weight == 0 and {c.lr for c in configs.values()} == {1e-3}


def _holdout(seed: int, known_top1: float) -> dict[str, object]:
    return {"seed": seed, "known_top1": known_top1, "auroc": {"combined": 0.8 + seed / 100},
            "rule_operating_point": {"known_accepted": 0.9}}  # fmt: skip


def test_merge_pools_a_networks_holdouts_across_parts_one_per_seed() -> None:
    """Hold-outs run in separate parts (--seed 0 and --seed 1) merge into one summary; a seed
    present twice counts once; library entries are not pooled (a later part wins)."""
    first = {"dataset_2": {"method": "drcnn", "holdouts": [_holdout(0, 0.90)]}}
    second = {"dataset_2": {"method": "drcnn", "holdouts": [_holdout(1, 0.80), _holdout(0, 0.90)]},
              "dataset_1": {"method": "library", "seeds": [0]}}  # fmt: skip
    later_library = {"dataset_1": {"method": "library", "seeds": [3]}}
    merged = _merge_openset([first, second, later_library])
    entry = merged["dataset_2 (drcnn)"]
    assert [h["seed"] for h in entry["holdouts"]] == [0, 1]
    assert entry["summary"]["known_top1"]["n"] == 2
    assert entry["summary"]["known_top1"]["mean"] == pytest.approx(0.85)
    assert entry["summary"]["auroc_combined"]["mean"] == pytest.approx(0.805)
    assert merged["dataset_1 (library)"]["seeds"] == [3]
