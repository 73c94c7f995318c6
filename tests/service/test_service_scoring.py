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
    assert "derivative similarity to its closest reference" in body["results"][0]["no_match_rule"]
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


def test_similarity_is_the_best_match_among_a_class_s_reference_spectra(tmp_path: Path) -> None:
    """A version carrying two reference spectra per class (its own peak, and a peak elsewhere):
    each hit's similarity is the query's cosine with the closer of its class's two spectra (not
    with their mean), and the class's reference spectrum (for overlays) is their mean."""
    name = "two-per-class"
    directory = write_version(tmp_path / "models", name, "1", calibration=Calibration())
    others = [650.0, 400.0, 1100.0, 250.0]  # a second, different spectrum for each class
    rows = [peak(GRID, p) for pair in zip(PEAKS, others, strict=True) for p in pair]
    labels = [c for c in CLASSES for _ in range(2)]
    np.savez(directory / "references.npz", references=np.stack(rows), labels=labels)
    settings = Settings(
        model_store=tmp_path / "models",
        default_model=name,
        providers=["CPUExecutionProvider"],
        warmup_batches=1,
    )
    with TestClient(create_app(settings)) as c:
        query = {"spectra": [{"intensities": spectrum_on_grid(1)}], "top_k": 4}
        body = c.post("/v1/identify", json=query | {"include_spectrum": True}).json()
        mean = c.get(f"/v1/models/{name}/references/{CLASSES[1]}").json()["intensities"]
    result = body["results"][0]
    q = np.asarray(result["spectrum"]["intensities"])
    unit = np.stack(rows) / np.linalg.norm(np.stack(rows), axis=1, keepdims=True)
    cos = unit @ (q / np.linalg.norm(q))
    for p in result["predictions"]:
        i = CLASSES.index(p["label"])
        assert p["similarity"] == pytest.approx(max(cos[2 * i], cos[2 * i + 1]), abs=1e-5)
    own = next(p["similarity"] for p in result["predictions"] if p["label"] == CLASSES[1])
    pair_mean = (rows[2] + rows[3]) / 2
    np.testing.assert_allclose(mean, pair_mean, atol=1e-6)
    assert own > float(pair_mean @ q / np.linalg.norm(pair_mean) / np.linalg.norm(q)) + 0.1


def test_a_card_s_ranking_search_is_what_the_mix_takes(tmp_path: Path) -> None:
    """A card that ranks by the adapted search (two references per class, so its whitening and
    hub penalty act): /v2's probabilities are the softmax of the adapted scores, not of the
    derivative HQI, and /v1 still shows each hit's derivative HQI (the rule's similarity)."""
    from spectra.library import LibrarySearch, make_search
    from spectra.scoring import softmax

    name = "adapted"
    calib = Calibration(1.0, 0.0, 0.0, "derivative", 1.0, 0.1, search="adapted")
    directory = write_version(tmp_path / "models", name, "1", calibration=calib)
    others = [650.0, 400.0, 1100.0, 250.0]
    rows = np.stack([peak(GRID, p) for pair in zip(PEAKS, others, strict=True) for p in pair])
    labels = np.repeat(np.arange(len(CLASSES)), 2)
    np.savez(directory / "references.npz", references=rows, labels=np.repeat(CLASSES, 2))
    settings = Settings(
        model_store=tmp_path / "models",
        default_model=name,
        providers=["CPUExecutionProvider"],
        warmup_batches=1,
    )
    y = np.asarray(spectrum_on_grid(1, noise=0.05)) + 0.6 * peak(GRID, 800.0)
    row = (y - y.min()) / (y.max() - y.min())
    tensor = {"name": "spectra", "shape": [1, 1, GRID.points], "datatype": "FP32"}
    with TestClient(create_app(settings)) as c:
        v2 = c.post(f"/v2/models/{name}/infer", json={"inputs": [tensor | {"data": row.tolist()}]})
        query = {"spectra": [{"intensities": row.tolist()}], "top_k": 4}
        v1 = c.post("/v1/identify", json=query).json()["results"][0]["predictions"]
    probs = np.asarray(
        next(o["data"] for o in v2.json()["outputs"] if o["name"] == "probabilities")
    )
    x = row[None, :].astype(np.float32)
    adapted = make_search(rows, labels, "adapted").class_scores(x, len(CLASSES))[0]
    hqi = LibrarySearch(rows, labels, "derivative").class_scores(x, len(CLASSES))[0]
    assert not np.allclose(softmax(adapted, 0.1), softmax(hqi, 0.1), atol=0.02)
    np.testing.assert_allclose(probs, softmax(adapted, 0.1), atol=1e-5)
    for p in v1:
        assert p["similarity"] == pytest.approx(hqi[CLASSES.index(p["label"])], abs=1e-5)


def test_a_spectrum_s_probabilities_do_not_depend_on_the_batch_it_rides_in(
    tmp_path: Path,
) -> None:
    """The worker scores each batch at once (the network, then the ranking search over the whole
    library): a spectrum sent alone and the same spectrum among others in one request (one
    batch) get the same probabilities, with the card's mix at 0.5 so that both parts count."""
    calib = Calibration(1.0, 0.0, 0.0, "derivative", 0.5, 0.05, search="adapted")
    settings = Settings(
        model_store=rolled_store(tmp_path / "models", calib),
        default_model=ROLLED,
        providers=["CPUExecutionProvider"],
        warmup_batches=1,
    )
    spectra = [
        {"intensities": spectrum_on_grid(c % len(CLASSES), noise=0.05, seed=c)} for c in range(6)
    ]
    with TestClient(create_app(settings)) as c:
        together = c.post("/v1/identify", json={"spectra": spectra, "top_k": 4}).json()["results"]
        alone = [
            c.post("/v1/identify", json={"spectra": [s], "top_k": 4}).json()["results"][0]
            for s in spectra
        ]
    assert {r["timings"]["batch_size"] for r in together} == {len(spectra)}
    for one, batched in zip(alone, together, strict=True):
        assert one["timings"]["batch_size"] == 1
        assert [p["label"] for p in one["predictions"]] == [
            p["label"] for p in batched["predictions"]
        ]
        for p, q in zip(one["predictions"], batched["predictions"], strict=True):
            assert p["probability"] == pytest.approx(q["probability"], abs=1e-6)
    # the mix is live: the top answer's probability is neither the graph's nor the library's alone
    assert any(0.05 < r["predictions"][0]["probability"] < 0.95 for r in together)
