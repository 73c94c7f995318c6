"""The card's probability mix (spectra.scoring) as the service applies it, in /v1 and /v2.

A version whose references are rolled by one class disagrees with its own graph: the graph says
class c for a peak at PEAKS[c], the references say class c-1. With library weight 0 the graph
decides; with weight 1 the (derivative) similarity to the references decides; /v2's probabilities
are the same numbers /v1 ranks by.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from service_fixture_models import CLASSES, GRID, PEAKS, peak, spectrum_on_grid, write_version

from service.app import create_app
from service.settings import Settings
from spectra.card import Calibration

ROLLED = "rolled"


def rolled_store(root: Path, calibration: Calibration) -> Path:
    directory = write_version(root, ROLLED, "1", calibration=calibration)
    refs = np.stack([peak(GRID, PEAKS[(i + 1) % len(PEAKS)]) for i in range(len(CLASSES))])
    np.savez(directory / "references.npz", references=refs.astype(np.float32), labels=CLASSES)
    return root


@pytest.fixture(params=[0.0, 1.0], ids=["graph-only", "library-only"])
def weight(request: pytest.FixtureRequest) -> float:
    return float(request.param)


@pytest.fixture
def client(weight: float, tmp_path: Path) -> Iterator[TestClient]:
    calib = Calibration(1.0, 0.0, 0.0, "derivative", weight, 0.01)
    settings = Settings(
        model_store=rolled_store(tmp_path / "models", calib),
        default_model=ROLLED,
        providers=["CPUExecutionProvider"],
        warmup_batches=1,
    )
    with TestClient(create_app(settings)) as c:
        yield c


def test_the_card_weight_decides_between_graph_and_references(
    client: TestClient, weight: float
) -> None:
    spectra = [{"intensities": spectrum_on_grid(c, noise=0.01)} for c in range(len(CLASSES))]
    body = client.post("/v1/identify", json={"spectra": spectra, "top_k": 4}).json()
    assert "derivative similarity to its reference" in body["results"][0]["no_match_rule"]
    for c, result in enumerate(body["results"]):
        top = result["predictions"][0]
        want = (c - 1) % len(CLASSES) if weight == 1.0 else c
        assert top["label"] == CLASSES[want]
        sims = {p["label"]: p["similarity"] for p in result["predictions"]}
        # whatever decides, each hit reports its derivative similarity to its own reference:
        # the class whose reference holds the query's peak is the most similar one
        assert max(sims, key=sims.__getitem__) == CLASSES[(c - 1) % len(CLASSES)]


def test_v2_probabilities_are_the_ones_v1_ranks_by(client: TestClient) -> None:
    y = np.asarray(spectrum_on_grid(2))
    row = ((y - y.min()) / (y.max() - y.min())).tolist()
    tensor = {"name": "spectra", "shape": [1, 1, GRID.points], "datatype": "FP32", "data": row}
    v2 = client.post(f"/v2/models/{ROLLED}/infer", json={"inputs": [tensor]}).json()
    probs = next(o["data"] for o in v2["outputs"] if o["name"] == "probabilities")
    v1 = client.post("/v1/identify", json={"spectra": [{"intensities": row}], "top_k": 4}).json()
    for p in v1["results"][0]["predictions"]:
        assert p["probability"] == pytest.approx(probs[CLASSES.index(p["label"])], abs=1e-6)
