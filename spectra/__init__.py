"""Numpy-only spectrum core shared by `training` and `service`.

Readers for instrument files, axis cleaning, resampling onto a model grid, normalisation, the
model-card schema and library search. Nothing here imports torch or FastAPI.
"""

from spectra.clean import MIN_POINTS, clean, clean_arrays
from spectra.errors import ParseError, SpectrumError, UnsupportedFormatError
from spectra.grid import Grid, Resampled, resample
from spectra.preprocess import Prepared, Preprocessor, minmax
from spectra.types import Spectrum

__all__ = [
    "MIN_POINTS",
    "Grid",
    "ParseError",
    "Prepared",
    "Preprocessor",
    "Resampled",
    "Spectrum",
    "SpectrumError",
    "UnsupportedFormatError",
    "clean",
    "clean_arrays",
    "minmax",
    "resample",
]
