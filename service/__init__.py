"""HTTP service: identification requests in, top-k answers out (FastAPI + onnxruntime).

Imports `spectra`, never `torch` or `training` (a test enforces it). Build the app with
`service.app.create_app(settings)`; run it with `python -m service`.
"""

from importlib import metadata

try:
    __version__ = metadata.version("drcnn-raman")
except metadata.PackageNotFoundError:  # a source checkout that was never installed
    __version__ = "0+unknown"
