"""Axis hygiene shared by every reader and by the service's JSON input.

Policy (deliberate, documented, tested):
- arrays must be 1-D, of equal length and hold at least `MIN_POINTS` points;
- NaN or +-Inf anywhere is an error (we never guess a value for a detector dropout);
- a strictly descending axis (common in JCAMP-DX and SPC exports) is reversed;
- an axis that goes up and down is an error: it is a corrupted or concatenated file;
- repeated wavenumbers (stitched detector windows) are merged by averaging their intensities.
"""

from __future__ import annotations

import numpy as np

from spectra.errors import SpectrumError
from spectra.types import Spectrum

MIN_POINTS = 8
"""Fewer points than this cannot describe a Raman spectrum; such input is refused."""


def clean_arrays(
    wavenumbers: np.ndarray | list[float],
    intensities: np.ndarray | list[float],
    source: str = "<input>",
) -> tuple[np.ndarray, np.ndarray]:
    """Validate a pair of arrays and return them as float64, finite, ascending and unique."""
    x = _as_vector(wavenumbers, "wavenumbers", source)
    y = _as_vector(intensities, "intensities", source)
    if x.shape != y.shape:
        raise SpectrumError(f"{x.size} wavenumbers but {y.size} intensities", source)
    _check_finite(x, "wavenumbers", source)
    _check_finite(y, "intensities", source)
    x, y = _merge_duplicates(*_ascending(x, y, source))
    if x.size < MIN_POINTS:
        raise SpectrumError(
            f"only {x.size} distinct wavenumbers; at least {MIN_POINTS} needed", source
        )
    return x, y


def clean(spectrum: Spectrum) -> Spectrum:
    """Return `spectrum` with its arrays cleaned by `clean_arrays`."""
    x, y = clean_arrays(spectrum.wavenumbers, spectrum.intensities, spectrum.source)
    return Spectrum(x, y, spectrum.source, spectrum.label, dict(spectrum.meta))


def _as_vector(values: np.ndarray | list[float], what: str, source: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise SpectrumError(f"{what} are not all numbers ({exc})", source) from None
    if arr.ndim != 1:
        raise SpectrumError(f"{what} must be a flat list, got shape {arr.shape}", source)
    return arr


def _check_finite(arr: np.ndarray, what: str, source: str) -> None:
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise SpectrumError(
            f"{what} hold {bad.size} non-finite value(s) (NaN or Inf), first at index {bad[0]}",
            source,
        )


def _ascending(x: np.ndarray, y: np.ndarray, source: str) -> tuple[np.ndarray, np.ndarray]:
    step = np.diff(x)
    if np.all(step >= 0):
        return x, y
    if np.all(step <= 0):
        return x[::-1].copy(), y[::-1].copy()
    first = int(np.flatnonzero(step < 0)[0]) if step[0] > 0 else int(np.flatnonzero(step > 0)[0])
    raise SpectrumError(
        f"wavenumbers are not monotonic (direction changes at index {first + 1}: "
        f"{x[first]:g} -> {x[first + 1]:g})",
        source,
    )


def _merge_duplicates(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    unique, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    if unique.size == x.size:
        return x, y
    sums = np.bincount(inverse, weights=y, minlength=unique.size)
    return unique, sums / counts
