"""Fixtures of the benchmark tests: synthetic spectra wrapped as the benchmark's data set."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from spectra.grid import Grid
from training.datasets import Dataset
from training.splits import Split


def toy_dataset(x: np.ndarray, y: np.ndarray, n_classes: int) -> Dataset:
    """Spectra `x` [N, L] labelled `y` as a Dataset of `n_classes` classes (class c named
    "m<c>"; one RRUFF sample and file per spectrum) on a grid of L points."""
    n, length = x.shape
    return Dataset(
        x.astype(np.float32),
        y.astype(np.int64),
        [f"m{i}" for i in range(n_classes)],
        np.array([f"R{i}" for i in range(n)]),
        np.array([f"f{i}.txt" for i in range(n)]),
        np.ones(n, np.float32),
        Grid(100.0, 1200.0, length),
    )


@pytest.fixture(scope="session")
def make_toy_dataset() -> Callable[[np.ndarray, np.ndarray, int], Dataset]:
    """`toy_dataset(x, y, n_classes)`: synthetic spectra as a benchmark data set."""
    return toy_dataset


@pytest.fixture(scope="module")
def noisy_peaks_split(
    make_peak_dataset: Callable[..., tuple[np.ndarray, np.ndarray]],
) -> tuple[Dataset, Split]:
    """8 classes of 9 noisy peak spectra (128 points), so that a library search is good but not
    perfect, split at random into thirds (train / validation / test)."""
    x, y = make_peak_dataset(8, 9, 128, seed=3, noise=0.25)
    order = np.random.default_rng(0).permutation(len(y))
    third = len(y) // 3
    return toy_dataset(x, y, 8), Split(order[:third], order[third : 2 * third], order[2 * third :])
