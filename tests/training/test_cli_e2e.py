"""`python -m training` end to end, as a user runs it: RRUFF zip -> data set -> training ->
evaluation -> calibrated ONNX model in the store. The real RRUFF zip is cut down to 72 spectra of
six minerals so that the whole path takes seconds on a CPU."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import zipfile
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from spectra.card import ModelCard
from training.card_markdown import reproduce_block

REPO_ROOT = Path(__file__).resolve().parents[2]
MINERALS = ("Grossular", "Diamond", "Epidote", "Andradite", "Beryl", "Calcite")
PER_MINERAL = 12  # Dataset_1 keeps classes with >= 10: two spare for dropped files


def run_cli(*args: str, timeout: float = 540) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    return subprocess.run(
        [sys.executable, "-m", "training", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def explain(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"


def small_rruff_zip(source: Path, target: Path) -> dict[str, list[str]]:
    """Copy the first PER_MINERAL processed spectra of each mineral into a new zip."""
    chosen: dict[str, list[str]] = defaultdict(list)
    with zipfile.ZipFile(source) as src:
        for name in sorted(src.namelist()):
            mineral = name.split("__")[0]
            wanted = mineral in MINERALS and len(chosen[mineral]) < PER_MINERAL
            if wanted and "Raman_Data_Processed" in name:
                chosen[mineral].append(name)
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as dst:
            for names in chosen.values():
                for name in names:
                    dst.writestr(name, src.read(name))
    return chosen


def test_help_exits_zero() -> None:
    top = run_cli("--help", timeout=120)
    assert top.returncode == 0, explain(top)
    for command in ("dataset", "train", "evaluate", "export", "all", "recalibrate"):
        assert command in top.stdout
    train = run_cli("train", "--help", timeout=120)
    assert train.returncode == 0, explain(train)
    assert "--width-div" in train.stdout and "--split" in train.stdout


def test_a_missing_rruff_file_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    proc = run_cli("dataset", "--rruff", str(tmp_path / "nowhere.zip"), timeout=120)
    assert proc.returncode == 1, explain(proc)
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("raman-train dataset: ") and "nowhere.zip" in proc.stderr


def test_bad_arguments_exit_two() -> None:
    proc = run_cli("dataset", "--rruff", "x.zip", "--preset", "dataset_9", timeout=120)
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr


@pytest.mark.slow
@pytest.mark.data
def test_all_from_a_real_rruff_subset(shared_rruff_zip: Path, tmp_path: Path) -> None:
    chosen = small_rruff_zip(shared_rruff_zip, tmp_path / "small.zip")
    assert sorted(chosen) == sorted(MINERALS)
    assert all(len(v) == PER_MINERAL for v in chosen.values())

    run, store = tmp_path / "run", tmp_path / "models"
    options = (
        "--preset dataset_1 --grid 30 1599 256 --width-div 16 --depth 3 --epochs 4 --patience 4 "
        "--no-progress --name test-minerals"
    )
    proc = run_cli(
        "all", "--rruff", str(tmp_path / "small.zip"), "--out", str(run), "--store", str(store),
        *options.split(),
    )  # fmt: skip
    assert proc.returncode == 0, explain(proc)

    version = store / "test-minerals" / "1"
    for name in ("model.onnx", "model.json", "references.npz"):
        assert (version / name).is_file(), f"{name} missing from {version}"
    assert f"exported {version}" in proc.stdout

    metrics = json.loads((run / "metrics.json").read_text())
    for part in ("model", "library_search"):
        assert 0.0 <= metrics[part]["top1"] <= 1.0
        assert {"precision", "recall", "f1", "top3", "top5"} <= set(metrics[part])
    assert metrics["split"]["test"] > 0
    assert (run / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("run.json", "best.pt", "last.pt", "dataset.npz", "metrics.md"):
        assert (run / name).is_file(), name

    card = ModelCard.load(version)
    assert sorted(card.classes) == sorted(MINERALS)  # 12 usable spectra each: all six kept
    assert card.grid.to_dict() == {"start": 30.0, "stop": 1599.0, "points": 256}
    assert card.architecture["depth"] == 3 and card.architecture["width_div"] == 16
    assert card.data["source"] == "small.zip"
    # the references are every spectrum of the training and validation parts, none of the test
    n_refs = metrics["split"]["train"] + metrics["split"]["val"]
    with np.load(version / "references.npz") as z:
        assert len(z["labels"]) == n_refs
    assert card.data["references"].startswith(f"{n_refs} spectra of the training and validation")
    assert f"- references: {n_refs} spectra" in (version / "README.md").read_text()

    # the same network published again with today's calibration, on the same split
    again = run_cli(
        "recalibrate", "--base", str(version), "--rruff", str(tmp_path / "small.zip"),
        "--store", str(store),
    )  # fmt: skip
    assert again.returncode == 0, explain(again)
    second = ModelCard.load(store / "test-minerals" / "2")
    assert second.classes == card.classes and second.grid == card.grid
    assert second.metrics["split"] == card.metrics["split"]
    assert second.metrics["recalibrated_from"] == "test-minerals/1"
    assert second.architecture == card.architecture
    assert second.calibration.ranking_search == "adapted_peaks"
    # its card reproduces it alone: the base's own command (copied from the base's card), then
    # the recalibration
    base_command = reproduce_block(version)
    assert base_command is not None and base_command.startswith("OMP_NUM_THREADS=1 raman-train all")
    steps = reproduce_block(store / "test-minerals" / "2")
    assert steps is not None
    assert steps.index(base_command) < steps.index(f"raman-train recalibrate --base {version}")
    # a different RRUFF file does not rebuild the version's data set: refused, nothing written
    chosen.pop("Calcite")
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(tmp_path / "small.zip") as src, zipfile.ZipFile(other, "w") as dst:
        for name in (n for names in chosen.values() for n in names):
            dst.writestr(name, src.read(name))
    refused = run_cli(
        "recalibrate", "--base", str(version), "--rruff", str(other), "--store", str(store)
    )
    assert refused.returncode == 1, explain(refused)
    assert "not the file this version was built from" in refused.stderr
    assert sorted(p.name for p in (store / "test-minerals").iterdir()) == ["1", "2"]


def test_train_writes_one_line_per_epoch_to_stderr(
    make_peak_dataset: Callable[..., tuple[np.ndarray, np.ndarray]], tmp_path: Path
) -> None:
    """`raman-train train` can be followed in a log file: tqdm's per-batch bars vanish, so each
    finished epoch also writes a line of its own (here with the bars off)."""
    from spectra.grid import Grid
    from training.datasets import Dataset

    x, y = make_peak_dataset(4, 12, 256, seed=5)
    n = len(y)
    data = tmp_path / "ds.npz"
    Dataset(
        x, y, ["a", "b", "c", "d"], np.array([f"R{i}" for i in range(n)]), np.array([""] * n),
        np.ones(n, np.float32), Grid(30.0, 1599.0, 256), {"rule": {"name": "dataset_1"}},
    ).save(data)  # fmt: skip
    options = "--width-div 16 --depth 3 --epochs 3 --patience 3 --no-progress"
    proc = run_cli("train", "--data", str(data), "--out", str(tmp_path / "run7"), *options.split())
    assert proc.returncode == 0, explain(proc)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("[run7] epoch ")]
    assert [line.split(":")[0] for line in lines] == [f"[run7] epoch {k}/3" for k in (1, 2, 3)]
    assert all(", val acc " in line for line in lines)
    assert "(3 epochs, max_epochs" in proc.stdout and "] epoch " not in proc.stdout


def test_reproduce_block_reads_back_what_the_card_writes(tmp_path: Path) -> None:
    assert reproduce_block(tmp_path) is None  # no README
    readme = tmp_path / "README.md"
    readme.write_text("# Model card\n\n| metric |\n\n## Data citation\n\nRRUFF\n")
    assert reproduce_block(tmp_path) is None  # no Reproduce section
    command = "raman-train all --rruff x.zip \\\n    --store models --name m --version 1"
    readme.write_text(f"# Model card\n\n## Reproduce\n\n```bash\n{command}\n```\n\n## Data\n")
    assert reproduce_block(tmp_path) == command
    readme.write_text("# Model card\n\n## Reproduce\n\n```bash\nraman-train all")  # cut
    assert reproduce_block(tmp_path) is None


def test_the_cards_reproduce_command_rebuilds_the_same_run(tmp_path: Path) -> None:
    """Every option that shapes the network or its training survives the card's command."""
    from spectra.grid import Grid
    from training.cli import _spec, parser, reproduce_command
    from training.datasets import Dataset

    data = tmp_path / "ds.npz"
    rule = {"name": "dataset_1", "grid": {"start": 30.0, "stop": 1599.0, "points": 256}}
    n = 4
    Dataset(
        np.zeros((n, 256), np.float32), np.arange(n), ["a", "b", "c", "d"],
        np.array(["R1"] * n), np.array([""] * n), np.ones(n, np.float32),
        Grid(30.0, 1599.0, 256), {"rule": rule, "source": "small.zip"},
    ).save(data)  # fmt: skip
    options = (
        "--grid 30 1599 256 --width-div 16 --dense-width-div 2 --rec-channels 64 --depth 3 "
        "--recursive-supervision --aux-weight 0.3 --input-transform derivative --head cosine "
        "--split grouped --split-seed 2 --seed 5 "
        "--epochs 7 --patience 3 --batch-size 16 --lr 0.002 --lr-schedule cosine "
        "--label-smoothing 0.1 --grad-clip 2.5 --weight-decay 0.05 --mixup 0.4 --swa-start 5 "
        "--augment-shift 2.0 --augment-gain 0.3 --augment-noise 0.01 --top-up 4 --preset dataset_1"
    )
    args = parser().parse_args(["all", "--rruff", "small.zip", "--out", "r", *options.split()])
    spec = _spec(args, data)
    run = tmp_path / "run"
    run.mkdir()
    spec.save(run)

    command = reproduce_command(run, Path("models"), "m", "2")
    argv = command.replace("\\\n", " ").split()
    assert argv[:3] == ["OMP_NUM_THREADS=1", "raman-train", "all"]
    again = _spec(parser().parse_args(argv[2:]), data)
    assert again == spec


def test_the_cli_offers_exactly_the_heads_and_schedules_the_trainer_knows() -> None:
    """The CLI spells these out to stay torch-free at import; they must not drift apart."""
    from training.cli import parser
    from training.model import HEADS
    from training.train import LR_SCHEDULES

    train = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)).choices[
        "all"
    ]
    choices = {a.dest: a.choices for a in train._actions}
    assert tuple(choices["head"]) == HEADS
    assert tuple(choices["lr_schedule"]) == tuple(LR_SCHEDULES)
