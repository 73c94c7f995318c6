"""Turning Python and numpy spectra into `/v1/identify` request items."""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

SpectrumLike = Any
"""Intensities on the model grid (a list or 1-D array), a `(wavenumbers, intensities)` pair,
or a mapping with `intensities` (and optionally `wavenumbers`, `id`)."""


def floats(values: Iterable[Any], what: str) -> list[float]:
    """A list of finite floats (numpy arrays welcome); ValueError names the first bad value."""
    items = values.tolist() if hasattr(values, "tolist") else list(values)
    out = [float(v) for v in items]
    for i, v in enumerate(out):
        if not math.isfinite(v):
            raise ValueError(f"{what}[{i}] is {v}; JSON spectra must be finite numbers")
    return out


def is_pair(item: Any) -> bool:
    """Whether `item` is a `(wavenumbers, intensities)` pair rather than a list of numbers."""
    if not isinstance(item, tuple) or len(item) != 2:
        return False
    return all(hasattr(part, "__len__") and not isinstance(part, str | bytes) for part in item)


def spectrum_item(item: SpectrumLike, spectrum_id: str | None) -> dict[str, Any]:
    """One entry of the request's `spectra` list."""
    if isinstance(item, Mapping):
        wavenumbers, intensities = item.get("wavenumbers"), item["intensities"]
        spectrum_id = item.get("id", spectrum_id)
    elif is_pair(item):
        wavenumbers, intensities = item
    else:
        wavenumbers, intensities = None, item
    entry: dict[str, Any] = {"intensities": floats(intensities, "intensities")}
    if wavenumbers is not None:
        entry["wavenumbers"] = floats(wavenumbers, "wavenumbers")
        n_x, n_y = len(entry["wavenumbers"]), len(entry["intensities"])
        if n_x != n_y:
            raise ValueError(f"{n_x} wavenumbers but {n_y} intensities")
    if spectrum_id is not None:
        entry["id"] = str(spectrum_id)
    return entry


def spectrum_items(
    spectra: Collection[SpectrumLike], ids: Sequence[str] | None
) -> list[dict[str, Any]]:
    """Every request item, with ids `0..n-1` unless given (so batches keep global ids)."""
    if ids is not None and len(ids) != len(spectra):
        raise ValueError(f"{len(ids)} ids for {len(spectra)} spectra")
    return [spectrum_item(s, ids[i] if ids is not None else str(i)) for i, s in enumerate(spectra)]
