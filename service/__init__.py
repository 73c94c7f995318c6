"""HTTP service: identification requests in, top-k answers out (FastAPI + onnxruntime).

Imports `spectra`, never `torch` or `training` (a test enforces it). Build the app with
`service.app.create_app(settings)`; run it with `python -m service`.
"""

import os
from importlib import metadata

# Post-processing multiplies [n, L] by [L, C] per request: tiny products for which numpy's OpenBLAS
# would wake a thread per core and leave them spinning, stealing CPU from onnxruntime's threads.
# One BLAS thread is faster here. Effective only before numpy is first imported (the console
# script imports this package first); an operator's own setting wins.
for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

try:
    __version__ = metadata.version("drcnn-raman")
except metadata.PackageNotFoundError:  # a source checkout that was never installed
    __version__ = "0+unknown"
