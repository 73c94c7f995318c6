"""A real service process on a store of tiny ONNX models, and spectrum files for it.

The fixture model (tests/service/service_fixture_models.py) has four classes, each answering to
one peak position: Quartz 300, Calcite 500, Gypsum (selenite) 800, Anatase TiO2 1000 cm-1.
The server is started with small limits (4 files, 8 spectra per request) so that batching is
exercised with few files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from live_server import LiveServer, fixture_models, start_server

MODEL = "rruff-minerals"
API_KEY = "client-test-key"
LIMITS = {"max_files_per_request": "4", "max_spectra_per_request": "8", "max_top_k": "10"}


@pytest.fixture(scope="session")
def models_module() -> ModuleType:
    return fixture_models()


@pytest.fixture(scope="session")
def model_store(tmp_path_factory: pytest.TempPathFactory, models_module: ModuleType) -> Path:
    root = tmp_path_factory.mktemp("client-store") / "models"
    models_module.write_version(root, MODEL, "1")
    models_module.write_version(root, "biomolecules", "1")
    return root


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, model_store: Path) -> Iterator[LiveServer]:
    live = start_server(
        model_store, tmp_path_factory.mktemp("client-server"), api_keys=API_KEY, **LIMITS
    )
    yield live
    live.stop()


@pytest.fixture(scope="session")
def write_spectrum(models_module: ModuleType) -> Callable[[Path, int], Path]:
    """`write_spectrum(path, cls)`: a two-column CSV with class `cls`'s peak, off the grid."""

    def write(path: Path, cls: int) -> Path:
        x, y = models_module.spectrum_off_grid(cls)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            "wavenumber,intensity\n"
            + "".join(f"{a:.3f},{b:.5f}\n" for a, b in zip(x, y, strict=True))
        )
        return path

    return write
