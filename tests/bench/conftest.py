"""Fixtures of the benchmark tests: synthetic spectra wrapped as the benchmark's data set."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from spectra.grid import Grid
from training.datasets import Dataset


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
