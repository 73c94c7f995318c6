"""The model grid, resampling onto it, and the one preprocessing path shared by training and
serving (`spectra.grid`, `spectra.preprocess`)."""

from __future__ import annotations

import numpy as np
import pytest

from spectra import Grid, Preprocessor, SpectrumError, minmax, resample
from spectra.preprocess import CLIP_RUN, LOW_COVERAGE


def peaks(x: np.ndarray) -> np.ndarray:
    """Two Lorentzian peaks on a sloped baseline: a spectrum with no repeated maximum."""
    return 0.001 * x + 1 / (1 + ((x - 300) / 10) ** 2) + 0.5 / (1 + ((x - 700) / 15) ** 2)


# --- Grid -------------------------------------------------------------------------------------


def test_grid_axis_step_and_dict_round_trip() -> None:
    g = Grid(30.0, 1599.0, 1570)
    assert g.axis.shape == (1570,) and g.axis.dtype == np.float64
    assert g.axis[0] == 30.0 and g.axis[-1] == 1599.0
    assert g.step == pytest.approx(1.0)
    assert g.to_dict() == {"start": 30.0, "stop": 1599.0, "points": 1570}
    assert Grid.from_dict(g.to_dict()) == g
    assert Grid.from_dict({"start": "0", "stop": 1700, "points": 1024.0}) == Grid(0.0, 1700.0, 1024)


@pytest.mark.parametrize(
    ("start", "stop", "points"), [(10, 10, 5), (20, 10, 5), (0, 10, 1), (0, 10, 0)]
)
def test_grid_validation(start: float, stop: float, points: int) -> None:
    with pytest.raises(ValueError, match="invalid grid"):
        Grid(start, stop, points)


# --- resample ---------------------------------------------------------------------------------


def test_resample_interpolates_inside_and_fills_outside() -> None:
    grid = Grid(0.0, 10.0, 11)  # 0, 1, ..., 10
    x = np.array([2.5, 4.0, 5.5, 7.5])
    res = resample(x, 2.0 * x, grid)
    expected_inside = np.array([False] * 3 + [True] * 5 + [False] * 3)  # 3..7
    np.testing.assert_array_equal(res.inside, expected_inside)
    assert res.coverage == 5 / 11
    np.testing.assert_allclose(res.values, np.where(expected_inside, 2.0 * grid.axis, 0.0))
    filled = resample(x, 2.0 * x, grid, fill=-1.0)
    np.testing.assert_array_equal(filled.values[~expected_inside], -1.0)


def test_resample_includes_grid_points_on_the_measured_edges() -> None:
    grid = Grid(0.0, 10.0, 11)
    res = resample(np.array([3.0, 7.0]), np.array([1.0, 5.0]), grid)
    assert res.coverage == 5 / 11
    np.testing.assert_allclose(res.values[3:8], [1.0, 2.0, 3.0, 4.0, 5.0])


def test_resample_wider_than_grid_covers_it_fully() -> None:
    grid = Grid(100.0, 200.0, 51)
    x = np.linspace(0.0, 500.0, 1001)
    res = resample(x, np.sin(x / 30), grid)
    assert res.coverage == 1.0
    np.testing.assert_allclose(res.values, np.sin(grid.axis / 30), atol=1e-3)


# --- minmax -----------------------------------------------------------------------------------


def test_minmax_scales_to_unit_range() -> None:
    np.testing.assert_allclose(minmax(np.array([2.0, 4.0, 3.0])), [0.0, 1.0, 0.5])


def test_minmax_of_a_flat_array_is_zeros_not_nan() -> None:
    out = minmax(np.full(7, 3.5))
    np.testing.assert_array_equal(out, np.zeros(7))
    assert not np.isnan(out).any()


def test_minmax_of_values_whose_range_overflows_is_still_the_unit_range() -> None:
    # -1e308 and 1e308 are finite, their difference is not: the answer must not be NaN
    out = minmax(np.array([1e308, -1e308, 0.0, 5e307]))
    np.testing.assert_allclose(out, [1.0, 0.0, 0.5, 0.75])


# --- Preprocessor.prepare ---------------------------------------------------------------------

GRID = Grid(100.0, 1000.0, 256)


def test_prepare_output_is_float32_on_the_grid_in_unit_range() -> None:
    x = np.linspace(50.0, 1100.0, 2000)
    p = Preprocessor(GRID).prepare(x, 1000.0 * peaks(x) + 200.0)
    assert p.values.dtype == np.float32 and p.values.shape == (GRID.points,)
    assert p.values.min() == 0.0 and p.values.max() == 1.0
    assert p.coverage == 1.0 and p.warnings == []
    assert np.argmax(p.values) == np.argmin(np.abs(GRID.axis - 300.0))


def test_prepare_accepts_a_descending_list_axis() -> None:
    x = np.linspace(50.0, 1100.0, 500)
    up = Preprocessor(GRID).prepare(x, peaks(x))
    down = Preprocessor(GRID).prepare(list(x[::-1]), list(peaks(x)[::-1]))
    np.testing.assert_array_equal(up.values, down.values)


def test_prepare_zero_fills_outside_and_normalises_the_measured_part() -> None:
    x = np.linspace(400.0, 1000.0, 600)
    p = Preprocessor(GRID).prepare(x, peaks(x) - 5.0)  # negative intensities: min-max still [0,1]
    outside = GRID.axis < 400.0
    np.testing.assert_array_equal(p.values[outside], 0.0)
    assert p.values[~outside].min() == 0.0 and p.values[~outside].max() == 1.0
    assert p.coverage == pytest.approx((~outside).mean())


def test_low_coverage_warning_below_threshold_only() -> None:
    grid = Grid(0.0, 99.0, 100)
    prep = Preprocessor(grid)
    x = np.linspace(0.0, 79.0, 80)  # 80 grid points measured: exactly the threshold
    at = prep.prepare(x, peaks(x * 10))
    assert at.coverage == LOW_COVERAGE and at.warnings == []
    x = np.linspace(0.0, 78.5, 80)  # 79 grid points
    below = prep.prepare(x, peaks(x * 10))
    assert below.coverage == pytest.approx(0.79)
    assert len(below.warnings) == 1
    assert below.warnings[0].startswith("low_coverage:") and "79%" in below.warnings[0]


def test_clipped_warning_for_a_saturated_plateau() -> None:
    x = np.linspace(50.0, 1100.0, 1000)
    y = peaks(x)
    top = int(np.argmax(y))
    y[top - 1 : top - 1 + CLIP_RUN] = y.max() * 1.2  # three neighbours at the ceiling
    p = Preprocessor(GRID).prepare(x, y)
    assert [w.split(":")[0] for w in p.warnings] == ["clipped"]


def test_no_clipped_warning_for_a_short_or_scattered_maximum() -> None:
    x = np.linspace(50.0, 1100.0, 1000)
    y = peaks(x)
    y[[100, 101]] = 5.0  # two neighbours: below CLIP_RUN
    y[[400, 700, 900]] = 5.0  # three more, not neighbours
    assert Preprocessor(GRID).prepare(x, y).warnings == []


def test_flat_signal_warning_and_zero_values() -> None:
    x = np.linspace(50.0, 1100.0, 100)
    p = Preprocessor(GRID).prepare(x, np.full(100, 42.0))
    assert [w.split(":")[0] for w in p.warnings] == ["flat_signal"]
    np.testing.assert_array_equal(p.values, 0.0)


@pytest.mark.parametrize("scale", [1e-320, 1e-9, 1.0, 1e300])
def test_signal_warnings_do_not_depend_on_the_intensity_scale(scale: float) -> None:
    x = np.linspace(50.0, 1100.0, 1000)
    y = peaks(x) * scale
    assert Preprocessor(GRID).prepare(x, y).warnings == []
    flat = Preprocessor(GRID).prepare(x, np.full(1000, 3.0 * scale)).warnings
    assert [w.split(":")[0] for w in flat] == ["flat_signal"]


def test_huge_finite_intensities_prepare_to_finite_values_without_false_warnings() -> None:
    x = np.linspace(50.0, 1100.0, 1000)
    y = np.where(np.arange(1000) % 2 == 0, 1e308, -1e308)
    p = Preprocessor(GRID).prepare(x, y)
    assert np.isfinite(p.values).all() and p.values.max() <= 1.0
    assert p.warnings == []
    on_grid = Preprocessor(GRID).prepare_on_grid(y[: GRID.points])
    assert np.isfinite(on_grid.values).all() and set(np.unique(on_grid.values)) == {0.0, 1.0}


def test_coverage_and_signal_warnings_combine() -> None:
    x = np.linspace(900.0, 1100.0, 100)
    p = Preprocessor(GRID).prepare(x, np.ones(100))
    assert [w.split(":")[0] for w in p.warnings] == ["low_coverage", "flat_signal"]


@pytest.mark.parametrize(("lo", "hi"), [(1200.0, 1500.0), (0.0, 99.0)])
def test_spectrum_outside_the_grid_is_an_error(lo: float, hi: float) -> None:
    x = np.linspace(lo, hi, 50)
    with pytest.raises(SpectrumError, match="does not overlap the model grid") as info:
        Preprocessor(GRID).prepare(x, peaks(x), source="far.txt")
    assert info.value.source == "far.txt"


def test_prepare_propagates_cleaning_errors() -> None:
    x = np.linspace(100.0, 1000.0, 50)
    y = peaks(x)
    y[4] = np.nan
    with pytest.raises(SpectrumError, match="index 4"):
        Preprocessor(GRID).prepare(x, y)


# --- prepare_on_grid and describe ---------------------------------------------------------------


def test_prepare_on_grid_normalises_without_resampling() -> None:
    y = peaks(GRID.axis) * 300.0
    p = Preprocessor(GRID).prepare_on_grid(list(y))
    assert p.values.dtype == np.float32 and p.coverage == 1.0 and p.warnings == []
    np.testing.assert_allclose(p.values, minmax(y), atol=1e-7)


@pytest.mark.parametrize("n", [GRID.points - 1, GRID.points + 1])
def test_prepare_on_grid_wrong_length_is_an_error(n: int) -> None:
    with pytest.raises(SpectrumError, match=f"expected {GRID.points} intensities .* got {n}"):
        Preprocessor(GRID).prepare_on_grid(np.ones(n))


def test_prepare_on_grid_rejects_two_dimensional_and_non_finite_input() -> None:
    with pytest.raises(SpectrumError, match="expected 256"):
        Preprocessor(GRID).prepare_on_grid(np.ones((1, GRID.points)))
    y = np.ones(GRID.points)
    y[0] = np.inf
    with pytest.raises(SpectrumError, match="NaN or Inf"):
        Preprocessor(GRID).prepare_on_grid(y)


def test_describe_lists_the_steps_with_the_grid() -> None:
    steps = Preprocessor(GRID).describe()
    assert [s["step"] for s in steps] == ["clean", "resample", "minmax"]
    resample_step = steps[1]
    assert resample_step["fill"] == 0.0 and resample_step["method"] == "linear"
    assert {k: resample_step[k] for k in ("start", "stop", "points")} == GRID.to_dict()
    assert steps[2]["range"] == [0.0, 1.0]
