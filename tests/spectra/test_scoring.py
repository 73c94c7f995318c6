"""spectra.scoring: the probabilities a model version returns (shared by training and service)."""

from __future__ import annotations

import numpy as np
import pytest

from spectra.card import Calibration
from spectra.library import AdaptedSearch, LibrarySearch, similarity_features
from spectra.scoring import ServedSearch, combined_probabilities, match_margin, softmax

RNG = np.random.default_rng(4)
LOGITS = RNG.normal(0, 3, (5, 7))
SIMS = RNG.uniform(0.2, 1.0, (5, 7))


def test_weight_zero_is_the_temperature_scaled_softmax() -> None:
    probs = combined_probabilities(LOGITS, SIMS, Calibration(temperature=2.0))
    np.testing.assert_allclose(probs, softmax(LOGITS, 2.0))
    np.testing.assert_allclose(probs.sum(1), 1.0)


def test_weight_one_ranks_by_similarity_alone() -> None:
    calib = Calibration(library_weight=1.0, library_temperature=0.01)
    probs = combined_probabilities(LOGITS, SIMS, calib)
    np.testing.assert_array_equal(probs.argmax(1), SIMS.argmax(1))
    np.testing.assert_allclose(probs, softmax(SIMS, 0.01))


def test_a_half_mix_is_the_mean_of_both() -> None:
    calib = Calibration(temperature=1.5, library_weight=0.5, library_temperature=0.05)
    want = 0.5 * softmax(LOGITS, 1.5) + 0.5 * softmax(SIMS, 0.05)
    np.testing.assert_allclose(combined_probabilities(LOGITS, SIMS, calib), want)


def test_softmax_is_stable_and_tempered() -> None:
    p = softmax(np.array([[1000.0, 0.0, -1000.0], [1.0, 1.0, 1.0]]))
    assert np.all(np.isfinite(p))
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    np.testing.assert_allclose(p[1], 1 / 3)
    sharp, flat = softmax(np.array([2.0, 0.0]), 0.5), softmax(np.array([2.0, 0.0]), 4.0)
    np.testing.assert_allclose(sharp[0], 1 / (1 + np.exp(-4.0)))
    np.testing.assert_allclose(flat[0], 1 / (1 + np.exp(-0.5)))
    with pytest.raises(ValueError):
        softmax(np.zeros((1, 2)), 0.0)


@pytest.mark.parametrize("metric", ["cosine", "correlation", "derivative"])
def test_similarity_features_reproduce_the_library_search(metric: str) -> None:
    library, queries = RNG.uniform(0, 1, (6, 64)), RNG.uniform(0, 1, (3, 64))
    feats = similarity_features(queries, metric) @ similarity_features(library, metric).T
    want = LibrarySearch(library, np.arange(6), metric).similarity(queries)
    np.testing.assert_allclose(feats, want, rtol=1e-5, atol=1e-6)


def test_match_margin_is_non_negative_exactly_when_both_thresholds_pass() -> None:
    calib = Calibration(min_probability=0.6, min_similarity=0.8)
    p = np.array([0.6, 0.9, 0.5, 0.95, 0.7])
    s = np.array([0.8, 0.79, 0.99, 0.9, 0.85])
    margin = match_margin(p, s, calib)
    assert margin.tolist() == pytest.approx([0.0, -0.01, -0.1, 0.1, 0.05])
    assert ((margin >= 0) == ((p >= 0.6) & (s >= 0.8))).all()
    assert float(match_margin(0.59, 0.99, calib)) < 0  # one answer at a time (the service)


def test_a_card_ranks_by_its_similarity_metric_unless_it_names_a_search() -> None:
    """Cards before version 5 have no `search`: their mix takes the similarity metric's HQI;
    a card naming the adapted search mixes its scores and still shows and thresholds the HQI."""
    library = RNG.uniform(0, 1, (12, 64)).astype(np.float32)
    labels = np.repeat(np.arange(4), 3)
    queries = library[::3] + RNG.normal(0, 0.05, (4, 64)).astype(np.float32)
    old = ServedSearch.build(library, labels, Calibration(similarity="derivative"))
    assert old.ranking is old.similarity and old.similarity.metric == "derivative"
    new = ServedSearch.build(
        library, labels, Calibration(similarity="derivative", search="adapted")
    )
    assert isinstance(new.ranking, AdaptedSearch) and not isinstance(new.similarity, AdaptedSearch)
    old_scores, new_scores = old.class_scores(queries, 5), new.class_scores(queries, 5)
    np.testing.assert_array_equal(old_scores.ranking, old_scores.similarity)
    np.testing.assert_allclose(new_scores.similarity, old_scores.similarity)
    np.testing.assert_allclose(new_scores.ranking, new.ranking.class_scores(queries, 5), rtol=1e-6)
    assert not np.allclose(new_scores.ranking[:, :4], new_scores.similarity[:, :4])
    assert np.isneginf(new_scores.ranking[:, 4]).all()  # a class without references


@pytest.mark.parametrize("search", ["cosine", "derivative", "adapted", "adapted_peaks"])
def test_scores_of_some_classes_are_the_class_scores_at_them(search: str) -> None:
    """The service computes the HQI of the hits it returns only; that must equal the full
    class-score matrix at those classes, -inf for a class the library lacks."""
    from spectra.library import make_search

    library = RNG.uniform(0, 1, (15, 64)).astype(np.float32)
    labels = np.array([3, 0, 0, 1, 3, 3, 1, 0, 4, 4, 0, 1, 3, 0, 4])  # class 2 and 5: no rows
    lib = make_search(library, labels, search)
    queries = RNG.uniform(0, 1, (3, 64)).astype(np.float32)
    classes = np.array([[0, 2, 4], [5, 3, 1], [1, 1, 0]])
    full = lib.class_scores(queries, 6)
    np.testing.assert_allclose(
        lib.scores_of(queries, classes), np.take_along_axis(full, classes, axis=1), rtol=1e-5
    )
    assert np.isneginf(lib.scores_of(queries, np.array([[2], [5], [2]]))).all()
    empty = LibrarySearch(np.zeros((0, 64), np.float32), np.zeros(0, np.int64), "cosine")
    assert np.isneginf(empty.scores_of(queries, classes)).all()
