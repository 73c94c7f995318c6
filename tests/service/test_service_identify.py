"""`POST /v1/identify` through the full app (lifespan, batcher, worker thread, real ONNX model)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from service_fixture_models import (
    CALIBRATION,
    CLASSES,
    GRID,
    MODEL,
    PEAKS,
    spectrum_off_grid,
    spectrum_on_grid,
)

import service.manager as manager_module
from service.app import create_app
from service.settings import Settings
from spectra.card import ModelCard, sha256_file
from spectra.scoring import MIN_MATCH_COVERAGE


def identify(client: TestClient, spectra: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    response = client.post("/v1/identify", json={"spectra": spectra, **extra})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize("cls", range(len(CLASSES)))
def test_on_grid_spectrum_is_identified(client: TestClient, cls: int) -> None:
    body = identify(client, [{"id": "s1", "intensities": spectrum_on_grid(cls, noise=0.01)}])
    assert body["model"] == {"name": MODEL, "version": "2", "provider": "CPUExecutionProvider"}
    [result] = body["results"]
    assert result["id"] == "s1"
    assert result["predictions"][0]["label"] == CLASSES[cls]
    assert result["match"] is True
    assert result["predictions"][0]["similarity"] > 0.9
    assert result["coverage"] == 1.0
    assert result["warnings"] == []


def test_a_fragment_of_the_grid_is_never_a_confident_match(client: TestClient) -> None:
    # the peak of class 2 measured over a window around it: identified, but below the floor
    axis, y = GRID.axis, np.asarray(spectrum_on_grid(2))
    inside = np.abs(axis - PEAKS[2]) <= 0.5 * MIN_MATCH_COVERAGE * (GRID.stop - GRID.start) - 20
    fragment = {"wavenumbers": list(axis[inside]), "intensities": list(y[inside])}
    wider = np.abs(axis - PEAKS[2]) <= 0.5 * MIN_MATCH_COVERAGE * (GRID.stop - GRID.start) + 20
    enough = {"wavenumbers": list(axis[wider]), "intensities": list(y[wider])}
    short, long = identify(client, [fragment, enough], top_k=1)["results"]
    assert short["coverage"] < MIN_MATCH_COVERAGE <= long["coverage"]
    for r in (short, long):
        assert r["predictions"][0]["label"] == CLASSES[2]
        assert r["predictions"][0]["probability"] >= CALIBRATION.min_probability
        assert r["predictions"][0]["similarity"] >= CALIBRATION.min_similarity
    assert short["match"] is False and long["match"] is True
    assert f"{MIN_MATCH_COVERAGE:.0%} of the grid" in short["no_match_rule"]


def test_answer_shape_ranks_probabilities_and_timings(client: TestClient) -> None:
    body = identify(client, [{"intensities": spectrum_on_grid(1)}], top_k=3)
    [result] = body["results"]
    preds = result["predictions"]
    assert [p["rank"] for p in preds] == [1, 2, 3]
    probs = [p["probability"] for p in preds]
    assert probs == sorted(probs, reverse=True)
    assert 0.0 < sum(probs) <= 1.0 + 1e-9
    assert len({p["label"] for p in preds}) == 3
    assert result["id"] == "0"  # position in the request when no id is given
    assert result["no_match_rule"].startswith("match when top-1 probability >= 0.5")
    timings = result["timings"]
    assert set(timings) == {"queue_ms", "inference_ms", "batch_size", "total_ms"}
    assert timings["total_ms"] >= timings["queue_ms"] >= 0
    assert timings["batch_size"] >= 1


def test_any_axis_is_resampled_onto_the_grid(client: TestClient) -> None:
    x, y = spectrum_off_grid(2)  # finer, wider, descending axis, arbitrary scale
    [result] = identify(client, [{"id": "raw", "wavenumbers": x, "intensities": y}])["results"]
    assert result["predictions"][0]["label"] == CLASSES[2]
    assert result["coverage"] == 1.0


def test_include_spectrum_returns_the_model_input(client: TestClient) -> None:
    x, y = spectrum_off_grid(1, start=150.0, stop=450.0, points=200)
    body = identify(client, [{"wavenumbers": x, "intensities": y}], include_spectrum=True)
    spectrum = body["results"][0]["spectrum"]
    assert len(spectrum["intensities"]) == GRID.points
    assert min(spectrum["intensities"]) == 0.0 and max(spectrum["intensities"]) == 1.0
    assert spectrum["measured_range"] == [150.0, 450.0]
    # off by default: answers stay small
    assert "spectrum" not in identify(client, [{"wavenumbers": x, "intensities": y}])["results"][0]


def test_partial_coverage_is_warned(client: TestClient) -> None:
    x, y = spectrum_off_grid(0, start=150.0, stop=450.0, points=200)
    [result] = identify(client, [{"wavenumbers": x, "intensities": y}])["results"]
    assert result["coverage"] < 0.8
    assert any(w.startswith("low_coverage") for w in result["warnings"])


def test_flat_spectrum_is_no_match_with_a_warning(client: TestClient) -> None:
    [result] = identify(client, [{"intensities": [3.0] * GRID.points}])["results"]
    assert result["match"] is False
    assert any(w.startswith("flat_signal") for w in result["warnings"])


def test_many_spectra_keep_their_order_across_batches(client: TestClient) -> None:
    # 20 spectra with max_batch_size 8: split over at least three batches.
    spectra = [{"id": f"s{i}", "intensities": spectrum_on_grid(i % 4)} for i in range(20)]
    results = identify(client, spectra)["results"]
    assert [r["id"] for r in results] == [f"s{i}" for i in range(20)]
    assert [r["predictions"][0]["label"] for r in results] == [CLASSES[i % 4] for i in range(20)]
    assert max(r["timings"]["batch_size"] for r in results) <= 8


def test_top_k_larger_than_classes_returns_every_class(client: TestClient) -> None:
    [result] = identify(client, [{"intensities": spectrum_on_grid(0)}], top_k=50)["results"]
    assert sorted(p["label"] for p in result["predictions"]) == sorted(CLASSES)


def test_explicit_model_and_pinned_version(client: TestClient) -> None:
    spectra = [{"intensities": spectrum_on_grid(3)}]
    assert identify(client, spectra, model="biomolecules")["model"]["name"] == "biomolecules"
    body = identify(client, spectra, model=MODEL, version="1")
    assert body["model"]["version"] == "1"
    assert body["results"][0]["predictions"][0]["label"] == CLASSES[3]
    assert identify(client, spectra)["model"]["version"] == "2"  # pinning did not activate


def test_pinning_disabled_answers_409(make_settings: Any) -> None:
    with TestClient(create_app(make_settings(max_pinned_versions=0))) as c:
        r = c.post(
            "/v1/identify", json={"spectra": [{"intensities": spectrum_on_grid(0)}], "version": "1"}
        )
    assert r.status_code == 409
    assert r.json()["type"].endswith("version-not-loaded")


def test_pinned_broken_version_is_refused_and_active_keeps_serving(
    client: TestClient, store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[str] = []
    real_load = manager_module.load_model
    monkeypatch.setattr(
        manager_module, "load_model", lambda d, n, v, c: loads.append(v) or real_load(d, n, v, c)
    )
    spectra = [{"intensities": spectrum_on_grid(0)}]
    for _ in range(3):
        r = client.post("/v1/identify", json={"spectra": spectra, "version": "12"})
        assert r.status_code == 409
        assert "sha256" in r.json()["detail"]
    assert loads == ["12"]  # refused once, then answered from memory while the files are unchanged
    assert identify(client, spectra)["model"]["version"] == "2"
    fixed = store / MODEL / "12"  # repair the card in place: the changed file is noticed
    card = ModelCard.load(fixed)
    dataclasses.replace(card, onnx_sha256=sha256_file(fixed / "model.onnx")).save(fixed)
    assert identify(client, spectra, version="12")["model"]["version"] == "12"
    assert loads == ["12", "12"]


@pytest.mark.parametrize(
    ("model", "version"),
    [("no-such-model", None), (MODEL, "99"), ("../models", None), (MODEL, "../2"), ("..", None)],
)
def test_unknown_or_unsafe_model_names_are_404(
    client: TestClient, model: str, version: str | None
) -> None:
    r = client.post(
        "/v1/identify",
        json={
            "spectra": [{"intensities": spectrum_on_grid(0)}],
            "model": model,
            "version": version,
        },
    )
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"].endswith("model-not-found")


def test_identifications_are_counted_by_outcome(client: TestClient) -> None:
    identify(client, [{"intensities": spectrum_on_grid(0)}, {"intensities": [1.0] * GRID.points}])
    text = client.get("/metrics").text
    assert f'raman_identifications_total{{model="{MODEL}",outcome="match"}} 1.0' in text
    assert f'raman_identifications_total{{model="{MODEL}",outcome="no_match"}} 1.0' in text


def test_no_model_store_means_not_ready_not_a_crash(tmp_path: Any) -> None:
    for store in (tmp_path / "missing", tmp_path):
        with TestClient(create_app(Settings(model_store=store))) as c:
            assert c.get("/v2/health/live").status_code == 200
            assert c.get("/v2/health/ready").status_code == 400
            r = c.post("/v1/identify", json={"spectra": [{"intensities": [1.0] * 10}]})
            assert r.status_code == 503
            assert r.json()["type"].endswith("not-ready")
            assert c.get("/v1/models").json()["ready"] is False
