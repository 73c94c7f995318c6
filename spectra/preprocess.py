"""One preprocessing path for training and serving (train/serve skew is the classic bug here).

`Preprocessor.prepare` takes a raw spectrum (any axis, any resolution) or values already on the
model grid and returns float32 model input plus the quality warnings a user should see.
Steps: clean the axis -> resample onto the grid (zero fill outside) -> min-max normalise the
measured part to [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spectra.clean import clean_arrays
from spectra.errors import SpectrumError
from spectra.grid import Grid, resample

LOW_COVERAGE = 0.8
"""Below this fraction of the grid measured, a prediction carries a coverage warning."""

CLIP_RUN = 3
"""This many or more neighbouring raw points at the maximum count as detector saturation."""


@dataclass(frozen=True)
class Prepared:
    """Model input for one spectrum and what the user should know about it."""

    values: np.ndarray
    coverage: float
    warnings: list[str] = field(default_factory=list)
    measured: tuple[float, float] | None = None
    """First and last measured wavenumber (cm-1)."""


def minmax(values: np.ndarray) -> np.ndarray:
    """Scale to [0, 1]; a flat array (max == min) becomes all zeros rather than NaN."""
    values = _tame(values)
    lo, hi = float(values.min()), float(values.max())
    if hi - lo <= 0.0:
        return np.zeros_like(values)
    return (values - lo) / (hi - lo)


_HUGE = 1e300


def _tame(values: np.ndarray) -> np.ndarray:
    """`values` scaled down when they are so large that differences of them overflow float64
    (finite values such as -1e308 and 1e308); min-max and linear resampling are scale-invariant,
    so the result is the same as for a sane scale instead of NaN."""
    scale = float(np.abs(values).max()) if values.size else 0.0
    return values / scale if scale > _HUGE else values


@dataclass(frozen=True)
class Preprocessor:
    """Turns spectra into model input for one grid."""

    grid: Grid

    def describe(self) -> list[dict[str, Any]]:
        """The steps and their parameters, as written into the model card."""
        return [
            {"step": "clean", "policy": "finite; ascending; duplicates averaged"},
            {"step": "resample", "method": "linear", "fill": 0.0, **self.grid.to_dict()},
            {"step": "minmax", "range": [0.0, 1.0], "over": "measured points"},
        ]

    def prepare(self, wavenumbers: Any, intensities: Any, source: str = "<input>") -> Prepared:
        """Clean, resample and normalise a spectrum measured on any axis."""
        x, y = clean_arrays(wavenumbers, intensities, source)
        res = resample(x, _tame(y), self.grid)
        if not res.inside.any():
            raise SpectrumError(
                f"measured range {x[0]:g}-{x[-1]:g} cm-1 does not overlap the model grid "
                f"{self.grid.start:g}-{self.grid.stop:g} cm-1",
                source,
            )
        values = np.zeros(self.grid.points)
        values[res.inside] = minmax(res.values[res.inside])
        warnings = _coverage_warnings(res.coverage, x, self.grid) + _signal_warnings(y)
        measured = (float(x[0]), float(x[-1]))
        return Prepared(values.astype(np.float32), res.coverage, warnings, measured)

    def prepare_on_grid(self, intensities: Any, source: str = "<input>") -> Prepared:
        """Normalise intensities that are already sampled on this grid."""
        y = np.asarray(intensities, dtype=np.float64)
        if y.shape != (self.grid.points,):
            raise SpectrumError(
                f"expected {self.grid.points} intensities on the model grid, got {y.size}", source
            )
        if not np.isfinite(y).all():
            raise SpectrumError("intensities hold NaN or Inf", source)
        measured = (self.grid.start, self.grid.stop)
        return Prepared(minmax(y).astype(np.float32), 1.0, _signal_warnings(y), measured)


def _coverage_warnings(coverage: float, x: np.ndarray, grid: Grid) -> list[str]:
    if coverage >= LOW_COVERAGE:
        return []
    return [
        f"low_coverage: the spectrum ({x[0]:g}-{x[-1]:g} cm-1) covers {coverage:.0%} of the "
        f"model grid ({grid.start:g}-{grid.stop:g} cm-1); the rest was zero-filled"
    ]


def _signal_warnings(y: np.ndarray) -> list[str]:
    scale = float(np.abs(y).max())
    y = y / scale if scale > 0 else y  # relative tests, and no overflow of max - min
    span = float(y.max() - y.min())
    if span <= 1e-12:
        return ["flat_signal: every intensity is the same; there is nothing to identify"]
    at_max = np.flatnonzero(y >= y.max() - 1e-9 * span)
    if at_max.size >= CLIP_RUN and _longest_run(at_max) >= CLIP_RUN:
        return [
            "clipped: the maximum intensity repeats on neighbouring points (detector saturation?)"
        ]
    return []


def _longest_run(indices: np.ndarray) -> int:
    breaks = np.flatnonzero(np.diff(indices) != 1)
    edges = np.concatenate(([-1], breaks, [indices.size - 1]))
    return int(np.diff(edges).max())
