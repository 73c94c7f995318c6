"""peak_features and PeakSearch: band positions as unit rows, and the adapted search with their
cosine added. Checked against the definition on constructed spectra, and on a library where
band heights mislead the adapted search but band positions do not."""

from __future__ import annotations

import numpy as np
import pytest

import spectra.library as library
from spectra.library import AdaptedSearch, PeakSearch, make_search, peak_features

AXIS = np.arange(600, dtype=np.float32)


def band(centre: float, height: float = 1.0, width: float = 4.0) -> np.ndarray:
    """A Lorentzian band."""
    return (height / (1.0 + ((AXIS - centre) / width) ** 2)).astype(np.float32)


def marked(row: np.ndarray) -> np.ndarray:
    """Grid points where a feature row has a local maximum (the bands it marks)."""
    return np.flatnonzero((row[1:-1] > row[:-2]) & (row[1:-1] >= row[2:])) + 1


def test_each_prominent_band_is_marked_at_its_position_with_the_same_height() -> None:
    """Three bands of very different heights are three equal bumps at their centres; a ripple
    below the prominence floor, and the rising edge of the spectrum, are not bands."""
    x = band(100, 1.0) + band(300, 0.05) + band(450, 0.3) + 0.003 * np.sin(AXIS / 2.0)
    x += np.linspace(0.2, 0.0, AXIS.size, dtype=np.float32)  # a background falling from the edge
    f = peak_features(x)[0]
    assert np.linalg.norm(f) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_array_equal(marked(f), [100, 300, 450])
    assert f[100] == pytest.approx(f[300], rel=1e-3) and f[300] == pytest.approx(f[450], rel=1e-3)


def test_band_heights_do_not_change_the_features_and_positions_do() -> None:
    one = band(100) + band(250, 0.2) + band(400, 0.6)
    other_laser = band(100, 0.4) + band(250, 0.9) + band(400, 0.3)
    shifted = band(110) + band(260, 0.2) + band(410, 0.6)
    f = peak_features(np.stack([one, other_laser, shifted]))
    assert f[0] @ f[1] == pytest.approx(1.0, abs=1e-5)
    assert f[0] @ f[2] < 0.01  # 10 points apart: five widths of 2 points


def test_the_batched_helpers_match_their_definitions() -> None:
    """convolve_rows is np.convolve per row (zero or edge padding), window_min the minimum of
    every k consecutive values; a batch of features is its rows' features, empty stays empty."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 40)).astype(np.float32)
    kernel = library.gaussian_kernel(1.5)
    want = np.stack([np.convolve(r, kernel, mode="same") for r in x])
    np.testing.assert_allclose(library.convolve_rows(x, kernel), want, atol=1e-6)
    skew = np.array([0.5, -1.0, 0.25, 2.0, 0.1], dtype=np.float32)  # not symmetric: order counts
    edge = np.stack([np.convolve(np.pad(r, 2, mode="edge"), skew, mode="valid") for r in x])
    np.testing.assert_allclose(library.convolve_rows(x, skew, pad="edge"), edge, atol=1e-5)
    for k in (1, 2, 3, 8, 15, 16):
        mins = np.stack([[r[i : i + k].min() for i in range(len(r) - k + 1)] for r in x])
        np.testing.assert_array_equal(library.window_min(x, k), mins)
    spectra = np.stack([band(c) + band(c + 200, 0.5) for c in rng.uniform(20, 380, 6)])
    whole = peak_features(spectra)
    for i in range(len(spectra)):
        np.testing.assert_allclose(peak_features(spectra[i]), whole[i : i + 1], atol=1e-7)
    assert peak_features(np.zeros((0, AXIS.size), dtype=np.float32)).shape == (0, AXIS.size)


def test_peak_search_adds_the_band_position_cosine_to_the_adapted_score() -> None:
    rng = np.random.default_rng(1)
    refs = np.stack(
        [
            sum(
                band(c, h)
                for c, h in zip(rng.uniform(20, 580, 3), rng.uniform(0.2, 1, 3), strict=True)
            )
            for _ in range(8)
        ]
    )
    labels = np.repeat(np.arange(4), 2)
    query = refs[[0, 5]] + 0.01 * rng.normal(size=(2, AXIS.size)).astype(np.float32)
    peaks = make_search(refs, labels, "adapted_peaks")
    assert isinstance(peaks, PeakSearch)
    adapted = AdaptedSearch(refs, labels).similarity(query)
    w = peaks.peak_weight
    want = (1 - w) * adapted + w * (peak_features(query) @ peak_features(refs).T)
    np.testing.assert_allclose(peaks.similarity(query), want, atol=1e-5)
    np.testing.assert_allclose(
        peaks.similarity(query, np.array([3, 1])), want[:, [3, 1]], atol=1e-5
    )
    assert peaks.class_scores(refs, 4).min() >= peaks.lowest_score


def test_band_positions_win_where_band_heights_mislead() -> None:
    """Class 0's one reference was measured at another laser (its band heights reversed); class
    1 has a band of the query's heights 3 points off each of its positions. The adapted search
    takes the heights and answers 1; with the band-position term at its default weight the
    search answers 0."""
    query = band(150, 1.0) + band(300, 0.15) + band(450, 0.5)
    refs = np.stack(
        [
            band(150, 0.2) + band(300, 1.0) + band(450, 0.3),  # class 0, another laser
            band(153, 1.0) + band(303, 0.15) + band(453, 0.5),  # class 1
            band(60) + band(520, 0.5),  # class 2, unrelated
        ]
    )
    labels = np.arange(3)
    assert AdaptedSearch(refs, labels).class_scores(query, 3)[0].argmax() == 1
    assert PeakSearch(refs, labels).class_scores(query, 3)[0].argmax() == 0
