"""The support-aware mix of bench/mix_calibration.py: with one weight for every class it is the
served mix itself, and its fit picks a per-class weight when the data call for one."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

from mix_calibration import fit_support_weights, support_mix, support_weights  # noqa: E402

from spectra.card import Calibration  # noqa: E402
from spectra.scoring import combined_probabilities  # noqa: E402

CALIB = Calibration(1.3, 0.5, 0.0, "derivative", 0.6, 0.05)


def test_one_weight_for_all_classes_is_the_served_mix() -> None:
    rng = np.random.default_rng(0)
    logits, sims = rng.normal(size=(7, 5)), rng.uniform(0.2, 1.0, size=(7, 5))
    mixed = support_mix(logits, sims, CALIB, np.full(5, 0.6))
    np.testing.assert_allclose(mixed, combined_probabilities(logits, sims, CALIB), atol=1e-12)


def test_the_fit_trusts_the_library_for_rare_classes_when_only_it_is_right_there() -> None:
    # classes 0-1 have one reference, 2-3 have twenty; the network is right only on the common
    # classes and the library only on the rare ones, so a good fit leans on the library for
    # rare classes (b > 0: library weight falls with the number of references)
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(4), 50)
    wrong = (y + 1) % 4  # a confident wrong answer
    logits = np.where(np.eye(4)[np.where(y >= 2, y, wrong)] > 0, 4.0, 0.0)
    sims = np.where(np.eye(4)[np.where(y < 2, y, wrong)] > 0, 0.95, 0.7)
    logits, sims = logits + rng.normal(0, 0.1, logits.shape), sims + rng.normal(0, 0.01, sims.shape)
    a, b = fit_support_weights(logits, sims, y, CALIB, np.array([1, 1, 20, 20]))
    assert b > 0
    w = support_weights(a, b, np.array([1, 20]))
    assert w[0] > 0.5 > w[1]
