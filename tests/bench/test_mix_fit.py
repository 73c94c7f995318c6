"""Mixes of a network with a library search: the accuracy benchmark's `<net>+<library>_fit`
(the library weight chosen on validation as `raman-train export` does, against the fixed 0.5
mix) and bench/mix_rules.py's product of experts fitted on saved logits."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from bench_accuracy import Trained, _check_methods, ensemble_logits, library_scores
from mix_rules import log_linear, markdown, saved_logits

from training.datasets import Dataset
from training.pipeline import LIBRARY_WEIGHTS
from training.splits import Split

N_CLASSES = 8


@pytest.fixture(scope="module")
def data(noisy_peaks_split: tuple[Dataset, Split]) -> tuple[Dataset, Split]:
    assert len(noisy_peaks_split[0].classes) == N_CLASSES
    return noisy_peaks_split


def _trained(val_logits: np.ndarray, test_logits: np.ndarray) -> Trained:
    return Trained(val_logits, test_logits, nn.Identity(), {})


def _noise(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, N_CLASSES))


def _oracle(y: np.ndarray) -> np.ndarray:
    return 20.0 * np.eye(N_CLASSES)[y]


def test_a_useless_network_gets_more_library_weight(data: tuple[Dataset, Split]) -> None:
    ds, split = data
    tr = _trained(_noise(len(split.val), 1), _noise(len(split.test), 2))
    fixed, none = ensemble_logits(tr, ds, split, "derivative")
    fitted, extra = ensemble_logits(tr, ds, split, "derivative", fit_weight=True)
    assert none == {}
    # above the fixed 0.5 (not necessarily the largest: calibrated, noise is near uniform)
    assert extra["mix"]["library_weight"] in LIBRARY_WEIGHTS
    assert extra["mix"]["library_weight"] > 0.5
    y = ds.y[split.test]
    library = library_scores(ds, split, "derivative", split.test)
    # the network's noise no longer outvotes the library
    assert (fitted.argmax(1) == y).mean() >= (fixed.argmax(1) == y).mean()
    assert (fitted.argmax(1) == library.argmax(1)).mean() >= 0.9


def test_a_perfect_network_gets_no_library_weight(data: tuple[Dataset, Split]) -> None:
    ds, split = data
    library = library_scores(ds, split, "derivative", split.val)
    assert (library.argmax(1) != ds.y[split.val]).any()  # the library errs on validation
    tr = _trained(_oracle(ds.y[split.val]), _oracle(ds.y[split.test]))
    fitted, extra = ensemble_logits(tr, ds, split, "derivative", fit_weight=True)
    assert extra["mix"]["library_weight"] == 0.0
    assert (fitted.argmax(1) == ds.y[split.test]).all()


def test_fit_suffix_names_a_mix_only() -> None:
    _check_methods(["drcnn_rs+adapted_fit", "drcnn+lib_fit", "drcnn+derivative"])
    for bad in ("adapted_fit", "drcnn+tta_fit", "drcnn+embed_fit", "drcnn+bogus_fit"):
        with pytest.raises(SystemExit):
            _check_methods([bad])


def test_log_linear_mix_follows_the_informative_expert() -> None:
    """bench/mix_rules.py's product of experts: the weight moves to whichever source is right on
    validation, and at that weight test answers are that source's."""
    rng = np.random.default_rng(4)
    y_val, y_test = rng.integers(0, N_CLASSES, 60), rng.integers(0, N_CLASSES, 40)
    noise = {"val": _noise(60, 5), "test": _noise(40, 6)}
    # the informative source is right 90 % of the time, with noisy margins
    good = {
        part: _oracle(y) / 10 + 0.3 * _noise(len(y), 7 + i)
        for i, (part, y) in enumerate((("val", y_val), ("test", y_test)))
    }
    lib_good, params = log_linear(noise, good, y_val)
    assert params["library_weight"] >= 0.8
    assert (lib_good.argmax(1) == good["test"].argmax(1)).all()
    net_good, params = log_linear(good, noise, y_val)
    assert params["library_weight"] <= 0.2
    assert (net_good.argmax(1) == good["test"].argmax(1)).all()
    assert np.allclose(np.exp(net_good).sum(1), 1.0, atol=1e-6)  # renormalised


def test_saved_logits_are_found_by_subset_split_and_network(tmp_path: Path) -> None:
    for folder in ("dataset_2_1024_random12/drcnn_rs", "dataset_1_1570_grouped0/liu"):
        (tmp_path / "work" / folder).mkdir(parents=True)
        (tmp_path / "work" / folder / "logits.npz").write_bytes(b"")
    found = [f[:4] for f in saved_logits(tmp_path)]
    assert found == [("dataset_1", "grouped", 0, "liu"), ("dataset_2", "random", 12, "drcnn_rs")]


def test_mix_rules_report_compares_each_mix_with_its_library_alone() -> None:
    def run(seed: int, library: float, mix: float) -> dict[str, object]:
        rules = [("network", 0.5), ("adapted", library), ("linear fitted adapted", mix)]
        return {
            "subset": "d",
            "split": "random",
            "seed": seed,
            "network": "drcnn_rs",
            "rules": [{"rule": r, "metrics": {"top1": t, "top5": 1.0}} for r, t in rules],
        }

    report = markdown([run(0, 0.8, 0.9), run(1, 0.8, 0.8), run(2, 0.9, 0.7)])
    assert "| linear fitted adapted | 0.9000 / 0.8000 / 0.7000 | 0.8000 |" in report
    assert "-3.33 (1 / 1 / 1) |" in report  # (+10, 0, -20) / 3 points
    assert "| adapted | 0.8000 / 0.8000 / 0.9000 | 0.8333 | 1.0000 |  |" in report
