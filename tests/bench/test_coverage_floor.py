"""bench/coverage_floor.py: fragments of a spectrum as the service's preprocessing makes them."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from coverage_floor import noise, window

from spectra.grid import Grid
from spectra.preprocess import Preprocessor


def measured_part(points: int = 400, first: int = 100, last: int = 349) -> np.ndarray:
    """A min-max spectrum measured on grid points first..last, zero elsewhere."""
    x = np.zeros(points)
    x[first : last + 1] = np.sin(np.linspace(0.0, 9.0, last - first + 1)) ** 2
    x[first : last + 1] /= x[first : last + 1].max()
    x[first] = 1e-3  # the measured part starts where the zero fill ends
    return x


def test_window_lies_inside_the_measured_part_and_is_normalised() -> None:
    x, rng = measured_part(), np.random.default_rng(0)
    for _ in range(50):
        w = window(x, 0.25, rng)
        assert w is not None
        inside = np.flatnonzero(w != 0)
        assert inside.min() >= 100 and inside.max() <= 349
        # 100 points = 25 % of 400, contiguous (only the window's minimum is zero)
        assert inside.max() - inside.min() < 100 and inside.size >= 98
        assert w.max() == 1.0 and w.min() == 0.0
    assert window(x, 1.0, rng) is x
    assert window(x, 0.7, rng) is None  # 280 points do not fit in the 250 measured


def test_window_is_what_the_preprocessor_makes_of_that_measurement() -> None:
    grid = Grid(0.0, 399.0, 400)
    x, rng = measured_part(), np.random.default_rng(3)
    w = window(x, 0.2, rng)
    assert w is not None
    kept = np.flatnonzero(w != 0)
    lo, hi = int(kept.min()), int(kept.max())
    # measured exactly on the window's grid points, then prepared by the service's code
    prepared = Preprocessor(grid).prepare(grid.axis[lo : hi + 1], x[lo : hi + 1]).values
    np.testing.assert_allclose(prepared[lo : hi + 1], w[lo : hi + 1], atol=1e-6)
    assert not prepared[:lo].any() and not prepared[hi + 1 :].any()


def test_noise_fragment_covers_its_share() -> None:
    f = noise(400, 0.1, np.random.default_rng(1))
    support = np.flatnonzero(f)
    assert 38 <= support.size <= 40 and support.max() - support.min() <= 39
    assert f.max() == 1.0
