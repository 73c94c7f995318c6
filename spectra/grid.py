"""The model's wavenumber grid and resampling onto it.

Resampling policy:
- inside the measured range, intensities are linearly interpolated at the grid points;
- outside it (below the first or above the last measured wavenumber) the grid is filled with
  `fill` (0.0 by default, as the published RRUFF pipelines do: after min-max normalisation 0 is the
  spectrum's own floor, so padding reads as "no signal");
- `coverage` is the fraction of grid points that lie inside the measured range. It is reported with
  every prediction, because a spectrum that covers half the grid is judged on half its evidence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Grid:
    """An evenly spaced wavenumber axis: `points` values from `start` to `stop` inclusive (cm-1)."""

    start: float
    stop: float
    points: int

    def __post_init__(self) -> None:
        if self.points < 2 or not self.stop > self.start:
            raise ValueError(f"invalid grid {self}: need stop > start and points >= 2")

    @property
    def axis(self) -> np.ndarray:
        """The grid's wavenumbers as a float64 array."""
        return np.linspace(self.start, self.stop, self.points)

    @property
    def step(self) -> float:
        """Spacing between neighbouring grid points (cm-1)."""
        return (self.stop - self.start) / (self.points - 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON form used in the model card."""
        return {"start": self.start, "stop": self.stop, "points": self.points}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Grid:
        """Inverse of `to_dict`."""
        return cls(float(data["start"]), float(data["stop"]), int(data["points"]))


@dataclass(frozen=True)
class Resampled:
    """Intensities on a grid, the mask of grid points that were measured, and its mean."""

    values: np.ndarray
    inside: np.ndarray

    @property
    def coverage(self) -> float:
        """Fraction of grid points inside the measured range (0..1)."""
        return float(self.inside.mean())


def resample(
    wavenumbers: np.ndarray, intensities: np.ndarray, grid: Grid, fill: float = 0.0
) -> Resampled:
    """Interpolate a cleaned (ascending, unique) spectrum onto `grid`; see the module policy."""
    axis = grid.axis
    inside = (axis >= wavenumbers[0]) & (axis <= wavenumbers[-1])
    values = np.full(axis.shape, fill, dtype=np.float64)
    values[inside] = np.interp(axis[inside], wavenumbers, intensities)
    return Resampled(values, inside)
