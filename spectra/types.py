"""The in-memory spectrum: one axis, one intensity array, and what the file said about them."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Spectrum:
    """A measured Raman spectrum.

    `wavenumbers` (cm-1) and `intensities` are float64 arrays of equal length. Readers return them
    as found in the file; `spectra.clean.clean` makes them finite, ascending and unique.
    """

    wavenumbers: np.ndarray
    intensities: np.ndarray
    source: str = "<input>"
    label: str | None = None
    meta: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.wavenumbers.shape[0])

    @property
    def sample_id(self) -> str | None:
        """The RRUFF sample id (R-number) where the file gives one."""
        return self.meta.get("RRUFFID") or None
