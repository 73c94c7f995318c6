"""The model card (`spectra.card`) and the nearest-neighbour library search (`spectra.library`)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from spectra.card import CARD_FILE, Calibration, CardError, ModelCard, sha256_file
from spectra.grid import Grid
from spectra.library import (
    LibrarySearch,
    derivative_features,
    pairwise_similarity,
    savgol_coefficients,
    unit_rows,
)
from spectra.preprocess import Preprocessor

GRID = Grid(0.0, 1700.0, 1024)


def make_card(**overrides: Any) -> ModelCard:
    fields: dict[str, Any] = {
        "name": "rruff-minerals",
        "version": "3",
        "classes": ["Calcite", "Quartz", "Agardite-(Y)"],
        "grid": GRID,
        "created_at": "2024-05-01T12:00:00+00:00",
        "architecture": {"arch": "drcnn", "depth": 9, "embed_channels": [64, 128]},
        "preprocessing": Preprocessor(GRID).describe(),
        "calibration": Calibration(1.7, 0.4, 0.6),
        "data": {"counts": {"classes": 3}},
        "metrics": {"test": {"top1": 0.9}},
        "onnx_sha256": "ab" * 32,
        "code_version": "0.1.0+gabc1234",
    }
    fields.update(overrides)
    return ModelCard(**fields)


def card_dict(**overrides: Any) -> dict[str, Any]:
    d = make_card().to_dict()
    d.update(overrides)
    return d


# --- ModelCard ---------------------------------------------------------------------------------


def test_card_save_load_round_trip(tmp_path: Path) -> None:
    card = make_card()
    path = card.save(tmp_path)
    assert path == tmp_path / CARD_FILE
    raw = json.loads(path.read_text())
    assert raw["grid"] == {"start": 0.0, "stop": 1700.0, "points": 1024}
    assert raw["calibration"] == {
        "temperature": 1.7,
        "min_probability": 0.4,
        "min_similarity": 0.6,
        "similarity": "cosine",
        "library_weight": 0.0,
        "library_temperature": 1.0,
        "search": "",
    }
    assert raw["schema_version"] == 1 and raw["input_name"] == "spectra"
    loaded = ModelCard.load(tmp_path)
    assert loaded == card
    assert loaded.grid == GRID and loaded.calibration.temperature == 1.7


def test_card_defaults_are_filled_in() -> None:
    card = ModelCard.from_dict(
        {"name": "m", "version": "1", "classes": ["a", "b"], "grid": GRID.to_dict()}
    )
    assert card.calibration == Calibration()
    assert (card.input_name, card.output_name) == ("spectra", "logits")


def test_calibration_rule_in_words() -> None:
    assert Calibration(1.0, 0.5, 0.25).rule == (
        "match when top-1 probability >= 0.5 and cosine similarity to its closest reference >= 0.25"
    )
    assert "derivative similarity" in Calibration(similarity="derivative").rule


def test_a_card_of_the_first_schema_loads_with_the_plain_softmax() -> None:
    """Cards written before the library mix existed have only the first three fields."""
    card = ModelCard.from_dict(
        card_dict(calibration={"temperature": 1.2, "min_probability": 0.3, "min_similarity": 0.5})
    )
    assert card.calibration == Calibration(1.2, 0.3, 0.5, "cosine", 0.0, 1.0)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({k: v for k, v in card_dict().items() if k != "grid"}, "invalid model card: 'grid'"),
        (card_dict(grid={"start": 0, "stop": 10}), "invalid model card"),
        (card_dict(grid={"start": 10, "stop": 0, "points": 5}), "invalid grid"),
        (card_dict(grid=None), "invalid model card"),
        (card_dict(classes=["Quartz", "Calcite", "Quartz"]), "lists a class twice"),
        (card_dict(classes=["Quartz"]), "lists 1 classes; need at least 2"),
        (card_dict(classes=[]), "lists 0 classes"),
        (card_dict(calibration={"temperature": 0.0}), "temperatures must be positive"),
        (card_dict(calibration={"temperature": -1.0}), "temperatures must be positive"),
        (card_dict(calibration={"temperature": float("nan")}), "temperatures must be positive"),
        (card_dict(calibration={"temperature": "1.0"}), "invalid model card"),
        (card_dict(calibration={"temp": 1.0}), "invalid model card"),
        (card_dict(calibration={"library_temperature": 0.0}), "temperatures must be positive"),
        (card_dict(calibration={"library_weight": 1.5}), r"library_weight must lie in \[0, 1\]"),
        (card_dict(calibration={"library_weight": -0.1}), "library_weight must lie"),
        (card_dict(calibration={"similarity": "euclid"}), "similarity must be one of"),
        (card_dict(calibration={"search": "euclid"}), "search must be one of"),
        (card_dict(calibration={"search": 3}), "search must be one of"),
        (card_dict(calibration={"similarity": "adapted"}), "similarity must be one of"),
        (card_dict(calibration={"library_weight": "half"}), "invalid model card"),
        (card_dict(name=""), "no name or version"),
        (card_dict(version=""), "no name or version"),
        ({k: v for k, v in card_dict().items() if k != "name"}, "invalid model card"),
        (card_dict(unexpected_field=1), "invalid model card"),
    ],
)
def test_invalid_cards_raise_card_error(data: dict[str, Any], match: str) -> None:
    with pytest.raises(CardError, match=match):
        ModelCard.from_dict(data)


@pytest.mark.parametrize(
    ("content", "match"),
    [("{not json", "cannot read"), ("[1, 2]", "expected a JSON object"), ("", "cannot read")],
)
def test_unreadable_card_files(tmp_path: Path, content: str, match: str) -> None:
    (tmp_path / CARD_FILE).write_text(content)
    with pytest.raises(CardError, match=match):
        ModelCard.load(tmp_path)


def test_missing_card_file(tmp_path: Path) -> None:
    with pytest.raises(CardError, match="cannot read"):
        ModelCard.load(tmp_path)


def test_binary_card_file(tmp_path: Path) -> None:
    (tmp_path / CARD_FILE).write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(CardError, match="cannot read"):
        ModelCard.load(tmp_path)


def test_card_error_is_a_value_error() -> None:
    assert issubclass(CardError, ValueError)


def test_sha256_file_streams_past_one_block(tmp_path: Path) -> None:
    data = np.random.default_rng(0).integers(0, 256, (1 << 20) * 2 + 123, dtype=np.uint8).tobytes()
    path = tmp_path / "model.onnx"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert sha256_file(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()


# --- LibrarySearch -------------------------------------------------------------------------------

AXIS = np.linspace(0.0, 1000.0, 500)


def lorentz(centre: float, width: float = 10.0) -> np.ndarray:
    return 1.0 / (1.0 + ((AXIS - centre) / width) ** 2)


def test_both_metrics_find_the_right_class_for_noisy_peaks() -> None:
    rng = np.random.default_rng(1)
    centres = [(150.0, 600.0), (300.0,), (450.0, 800.0), (700.0, 900.0)]
    library = np.stack([sum(lorentz(c + s) for c in cs) for cs in centres for s in (-3.0, 3.0)])
    labels = np.repeat(np.arange(4), 2)
    queries = np.stack([sum(lorentz(c + 1.0) for c in cs) for cs in centres])
    queries = queries + rng.normal(0, 0.02, queries.shape)
    for metric in ("cosine", "correlation", "derivative"):
        lib = LibrarySearch(library, labels, metric=metric)
        sim = lib.similarity(queries)
        assert sim.shape == (4, 8)
        assert np.all(sim <= 1.0 + 1e-6)
        np.testing.assert_array_equal(lib.class_scores(queries, 4).argmax(1), np.arange(4))


def test_correlation_ignores_an_offset_that_fools_cosine() -> None:
    # Class 0: a sharp peak at 300. Class 1: a high flat floor with a small peak at 700.
    library = np.stack([lorentz(300.0), 1.0 + 0.1 * lorentz(700.0)])
    query = lorentz(300.0) + 5.0  # class 0 on a large constant offset
    cos = LibrarySearch(library, np.array([0, 1]), "cosine").class_scores(query, 2)
    corr = LibrarySearch(library, np.array([0, 1]), "correlation").class_scores(query, 2)
    assert cos.argmax() == 1
    assert corr.argmax() == 0
    assert corr[0, 0] == pytest.approx(1.0, abs=1e-5)


def test_class_scores_shape_max_per_class_and_missing_classes() -> None:
    library = np.stack([lorentz(100.0), lorentz(500.0), lorentz(510.0)])
    lib = LibrarySearch(library, [2, 0, 0])
    scores = lib.class_scores(np.stack([lorentz(505.0), lorentz(100.0)]), n_classes=4)
    assert scores.shape == (2, 4) and scores.dtype == np.float32
    sim = lib.similarity(np.stack([lorentz(505.0), lorentz(100.0)]))
    np.testing.assert_allclose(scores[:, 0], sim[:, 1:].max(axis=1))
    np.testing.assert_allclose(scores[:, 2], sim[:, 0])
    assert np.all(np.isneginf(scores[:, [1, 3]]))
    assert scores[1, 2] == pytest.approx(1.0, abs=1e-6)


def test_a_single_query_vector_is_accepted() -> None:
    lib = LibrarySearch(np.stack([lorentz(100.0), lorentz(500.0)]), [0, 1])
    assert lib.similarity(lorentz(500.0)).shape == (1, 2)


@pytest.mark.parametrize("metric", ["cosine", "correlation", "derivative"])
def test_zero_and_constant_rows_do_not_produce_nan(metric: str) -> None:
    library = np.stack([np.zeros_like(AXIS), np.full_like(AXIS, 3.0), lorentz(400.0)])
    lib = LibrarySearch(library, [0, 1, 2], metric)
    queries = np.stack([np.zeros_like(AXIS), np.full_like(AXIS, 2.0), lorentz(400.0)])
    sim = lib.similarity(queries)
    assert np.all(np.isfinite(sim))
    assert sim[0].tolist() == [0.0, 0.0, 0.0]
    assert lib.class_scores(queries, 3)[2].argmax() == 2


def test_unknown_metric_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown metric 'euclid'"):
        LibrarySearch(np.ones((2, 10)), [0, 1], "euclid")


def test_unit_rows_and_pairwise_similarity() -> None:
    x = np.array([[3.0, 4.0], [0.0, 0.0], [1.0, 3.0]])
    np.testing.assert_allclose(
        unit_rows(x), [[0.6, 0.8], [0.0, 0.0], np.array([1, 3]) / np.sqrt(10)]
    )
    np.testing.assert_allclose(
        unit_rows(x, centre=True)[0], [-np.sqrt(0.5), np.sqrt(0.5)], rtol=1e-6
    )
    sims = pairwise_similarity(x, np.array([[6.0, 8.0], [1.0, 1.0], [-1.0, -3.0]]))
    np.testing.assert_allclose(sims, [1.0, 0.0, -1.0], atol=1e-6)


def test_savgol_coefficients_match_the_published_tables() -> None:
    # Savitzky & Golay (1964): 5-point quadratic smoothing and first derivative
    np.testing.assert_allclose(savgol_coefficients(5, 2, 0) * 35, [-3, 12, 17, 12, -3], atol=1e-9)
    np.testing.assert_allclose(savgol_coefficients(5, 2, 1) * 10, [-2, -1, 0, 1, 2], atol=1e-9)
    with pytest.raises(ValueError, match="odd"):
        savgol_coefficients(4, 2, 1)


def test_derivative_features_are_the_slope_of_the_square_root() -> None:
    t = np.arange(100, dtype=np.float64)
    x = np.stack([(t / 99) ** 2, np.full(100, -1.0)])  # sqrt of the first is a ramp
    d = derivative_features(x, window=7)
    assert d.shape == (2, 100)
    np.testing.assert_allclose(d[0, 3:-3], 1 / 99, rtol=1e-4)  # away from the padded edges
    assert np.all(d[1] == 0)  # negative intensities count as zero


def test_derivative_search_lets_a_weak_band_decide() -> None:
    """Two minerals share their strongest band and differ in a band 5 % as high: under cosine
    of min-max spectra the weak band barely moves the score; the derivative search separates them
    several times more clearly."""
    a = lorentz(300.0) + 0.05 * lorentz(700.0)
    b = lorentz(300.0) + 0.05 * lorentz(600.0)
    query = np.stack([a])
    margins = {}
    for metric in ("cosine", "derivative"):
        scores = LibrarySearch(np.stack([a, b]), [0, 1], metric).class_scores(query, 2)[0]
        margins[metric] = scores[0] - scores[1]
    assert margins["cosine"] > 0
    assert margins["derivative"] > 5 * margins["cosine"]


@pytest.mark.parametrize("metric", ["cosine", "correlation", "derivative"])
def test_a_spectrum_matches_itself_with_similarity_exactly_one_at_most(metric: str) -> None:
    rng = np.random.default_rng(3)
    library = rng.random((20, 1024)).astype(np.float32) ** 4  # peaky rows, as min-max spectra
    sim = LibrarySearch(library, np.arange(20), metric).similarity(library)
    assert sim.max() <= 1.0 and sim.min() >= -1.0
    np.testing.assert_allclose(np.diag(sim), 1.0, atol=1e-5)
