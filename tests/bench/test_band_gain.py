"""bench/band_gain.py: the smooth band-height change between two lasers on one RRUFF sample."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from band_gain import BAND, laser_nm, measure, pair_gain

from training.datasets import Dataset

N = 400
T = np.linspace(-1.0, 1.0, N)


def bands(centres: tuple[int, ...] = (40, 120, 200, 280, 360), width: float = 6.0) -> np.ndarray:
    """A spectrum of Gaussian bands of height 1 on the 400-point grid."""
    x = np.zeros(N)
    for c in centres:
        x += np.exp(-0.5 * ((np.arange(N) - c) / width) ** 2)
    return x


def test_laser_is_read_from_the_rruff_file_name() -> None:
    assert (
        laser_nm("Quartz__R040031__Raman__514__0__unoriented__Raman_Data_Processed__9312.txt")
        == "514"
    )
    assert laser_nm("odd.txt") == ""


def test_a_known_smooth_gain_is_recovered_with_no_residual() -> None:
    a = bands()
    log_gain = 0.4 * T - 0.3 * T**2
    b = a * np.exp(-log_gain)
    got = pair_gain(a, b, T, np.array([0.0, 0.0]))
    assert got is not None
    shared = (a > BAND) & (b > BAND)
    assert abs(got[0] - np.ptp(log_gain[shared])) < 1e-6
    assert got[1] < 1e-6 and got[2] == 0.0


def test_a_band_specific_change_leaves_a_residual() -> None:
    a = bands()
    b = bands()
    b[190:211] *= 2.0  # one band doubles, the others stay: no smooth gain explains that
    got = pair_gain(a, b, T, np.array([0.0, 0.0]))
    assert got is not None and got[1] > 0.1


def test_pairs_sharing_too_few_band_points_are_skipped() -> None:
    a, b = bands((40,)), bands((360,))
    assert pair_gain(a, b, T, np.array([0.0, 0.0])) is None


def test_only_same_sample_pairs_at_different_lasers_are_measured(
    make_toy_dataset: Callable[[np.ndarray, np.ndarray, int], Dataset],
) -> None:
    x = np.stack([bands(), bands() * np.exp(0.5 * T), bands(), bands() * np.exp(0.5 * T)])
    # R1 at two lasers (one pair), R2 twice at one laser (no pair)
    taken = (("R1", 532), ("R1", 785), ("R2", 532), ("R2", 532))
    ds = replace(
        make_toy_dataset(x, np.array([0, 0, 1, 1]), 2),
        groups=np.array([g for g, _ in taken]),
        sources=np.array([f"M__{g}__Raman__{nm}__0__x.txt" for g, nm in taken]),
    )
    result = measure(ds, gain=1.0)
    assert result["pairs"] == 1
    assert result["samples_by_number_of_lasers"] == {"1": 1, "2": 1}
    assert result["augmentation_gain"] == 1.0
