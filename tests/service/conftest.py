"""Fixtures for the service tests: a model store with good and broken versions, settings, app."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_fixture_models import API_KEY, BROKEN, MODEL, write_version

from service.app import create_app
from service.settings import Settings


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """`rruff-minerals` versions 1 and 2, broken versions 10-15 (numerically highest, so an
    ACTIVE file names 2), and a second model `biomolecules` with one version."""
    root = tmp_path / "models"
    write_version(root, MODEL, "1")
    write_version(root, MODEL, "2")
    for version, broken in BROKEN.items():
        write_version(root, MODEL, version, **broken)
    (root / MODEL / "ACTIVE").write_text("2\n")
    write_version(root, "biomolecules", "1")
    return root


@pytest.fixture
def make_settings(store: Path) -> Callable[..., Settings]:
    """Settings for tests: the fixture store, CPU only, a known API key, small warm-up."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "model_store": store,
            "default_model": MODEL,
            "api_keys": [API_KEY],
            "providers": ["CUDAExecutionProvider", "CPUExecutionProvider"],
            "warmup_batches": 1,
            "max_batch_size": 8,
            "max_wait_ms": 2.0,
        }
        return Settings(**(values | overrides))

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def auth() -> dict[str, str]:
    return {"X-API-Key": API_KEY}
