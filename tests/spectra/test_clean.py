"""Axis hygiene (`spectra.clean`): the policy written in the module docstring, case by case."""

from __future__ import annotations

import numpy as np
import pytest

from spectra import MIN_POINTS, Spectrum, SpectrumError, clean, clean_arrays

X = np.arange(100.0, 120.0)
Y = np.linspace(0.0, 1.0, X.size)


def test_clean_input_passes_through_as_float64() -> None:
    x, y = clean_arrays(list(X.astype(int)), list(Y))
    assert x.dtype == np.float64 and y.dtype == np.float64
    np.testing.assert_array_equal(x, X)
    np.testing.assert_array_equal(y, Y)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("which", ["wavenumbers", "intensities"])
def test_non_finite_values_are_rejected_naming_the_index(bad: float, which: str) -> None:
    x, y = X.copy(), Y.copy()
    (x if which == "wavenumbers" else y)[7] = bad
    with pytest.raises(SpectrumError, match=rf"{which} hold 1 non-finite .*first at index 7"):
        clean_arrays(x, y, source="scan.csv")


def test_error_names_the_source() -> None:
    y = Y.copy()
    y[3] = np.nan
    with pytest.raises(SpectrumError) as info:
        clean_arrays(X, y, source="scan.csv")
    assert str(info.value).startswith("scan.csv: ")
    assert info.value.source == "scan.csv"


def test_ragged_arrays_are_rejected() -> None:
    with pytest.raises(SpectrumError, match="20 wavenumbers but 19 intensities"):
        clean_arrays(X, Y[:-1])


def test_too_few_points_are_rejected() -> None:
    n = MIN_POINTS - 1
    with pytest.raises(
        SpectrumError, match=f"only {n} distinct wavenumbers; at least {MIN_POINTS}"
    ):
        clean_arrays(X[:n], Y[:n])
    x, _ = clean_arrays(X[:MIN_POINTS], Y[:MIN_POINTS])
    assert x.size == MIN_POINTS


def test_too_few_distinct_points_after_merging_duplicates() -> None:
    x = np.repeat(np.arange(5.0), 2)  # 10 points, 5 distinct
    with pytest.raises(SpectrumError, match="only 5 distinct"):
        clean_arrays(x, np.ones(10))


def test_descending_axis_is_reversed_with_its_intensities() -> None:
    x, y = clean_arrays(X[::-1], Y[::-1])
    np.testing.assert_array_equal(x, X)
    np.testing.assert_array_equal(y, Y)


def test_non_monotonic_axis_is_rejected_with_the_turning_point() -> None:
    x = X.copy()
    x[10], x[11] = x[11], x[10]  # ... 109, 111, 110, 112 ...
    with pytest.raises(SpectrumError, match=r"not monotonic .*index 11: 111 -> 110"):
        clean_arrays(x, Y)


def test_non_monotonic_descending_axis_is_rejected() -> None:
    x = X[::-1].copy()
    x[5] = 200.0  # goes back up in the middle of a descending axis
    with pytest.raises(SpectrumError, match="not monotonic"):
        clean_arrays(x, Y)


def test_duplicate_wavenumbers_are_averaged() -> None:
    x = np.array([1.0, 2.0, 3.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 8.0, 8.0])
    y = np.array([0.0, 1.0, 2.0, 4.0, 5.0, 6.0, 7.0, 8.0, 1.0, 2.0, 6.0])
    cx, cy = clean_arrays(x, y)
    np.testing.assert_array_equal(cx, np.arange(1.0, 9.0))
    np.testing.assert_allclose(cy, [0.0, 1.0, 3.0, 5.0, 6.0, 7.0, 8.0, 3.0])


def test_duplicates_on_a_descending_axis_are_merged_after_reversal() -> None:
    x = np.array([9.0, 8.0, 7.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0])
    y = np.array([9.0, 8.0, 6.0, 8.0, 6.0, 5.0, 4.0, 3.0, 2.0])
    cx, cy = clean_arrays(x, y)
    np.testing.assert_array_equal(cx, np.arange(2.0, 10.0))
    np.testing.assert_allclose(cy, [2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])


def test_two_dimensional_input_is_rejected() -> None:
    with pytest.raises(
        SpectrumError, match=r"wavenumbers must be a flat list, got shape \(2, 10\)"
    ):
        clean_arrays(np.ones((2, 10)), np.ones(20))
    with pytest.raises(SpectrumError, match="intensities must be a flat list"):
        clean_arrays(X, [[1.0] * 20])


def test_scalar_input_is_rejected() -> None:
    with pytest.raises(SpectrumError, match="flat list"):
        clean_arrays(5.0, 1.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("values", [["1", "2", "x"] + ["4"] * 7, [1.0, {}, 3.0] + [4.0] * 7])
def test_non_numeric_values_are_rejected(values: list) -> None:
    with pytest.raises(SpectrumError, match="intensities are not all numbers"):
        clean_arrays(np.arange(10.0), values)


def test_none_reads_as_nan_and_is_rejected() -> None:
    with pytest.raises(SpectrumError, match=r"non-finite value.*index 1"):
        clean_arrays(np.arange(10.0), [1.0, None, 3.0] + [4.0] * 7)


def test_numeric_strings_are_accepted() -> None:
    x, _ = clean_arrays([str(v) for v in range(10)], [1.0] * 10)
    np.testing.assert_array_equal(x, np.arange(10.0))


def test_clean_keeps_label_source_and_copies_meta() -> None:
    meta = {"RRUFFID": "R050001"}
    s = Spectrum(X[::-1].copy(), Y[::-1].copy(), "a.txt", "Quartz", meta)
    c = clean(s)
    np.testing.assert_array_equal(c.wavenumbers, X)
    assert (c.source, c.label, c.sample_id) == ("a.txt", "Quartz", "R050001")
    assert c.meta == meta and c.meta is not meta
    assert len(c) == X.size
