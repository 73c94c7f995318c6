"""AdaptedSearch: the derivative library search with within-class whitening and a hubness penalty
fitted to its own library. Each part is checked against its definition computed by hand, and on
small constructed libraries where the plain search is fooled in the way each part is meant to fix.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import spectra.library as library
from spectra.library import (
    AdaptedSearch,
    LibrarySearch,
    hubness,
    make_search,
    unit_rows,
    within_class_whitening,
)

AXIS = np.arange(1000, dtype=np.float32)


def band(centre: float, width: float = 4.0) -> np.ndarray:
    """A Lorentzian band of height 1."""
    return (1.0 / (1.0 + ((AXIS - centre) / width) ** 2)).astype(np.float32)


def test_hubness_is_the_mean_of_the_k_closest_other_class_cosines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Computed in blocks of rows (a block size of 7 exercises the joins) and averaged over the
    rows that exist: a row of the biggest class has fewer other-class rows than k."""
    monkeypatch.setattr(library, "HUB_CHUNK", 7)
    rng = np.random.default_rng(0)
    unit = unit_rows(rng.normal(size=(23, 12)))
    labels = np.array([0] * 15 + [1, 1, 2, 3, 4, 5, 6, 7])
    k = 10
    got = hubness(unit, labels, k)
    sim = unit @ unit.T
    for i in range(len(unit)):
        others = np.sort(sim[i, labels != labels[i]])[::-1][:k]
        assert got[i] == pytest.approx(others.mean(), abs=1e-6)


def test_hubness_is_zero_when_the_library_holds_one_class() -> None:
    unit = unit_rows(np.random.default_rng(1).normal(size=(4, 6)))
    assert np.all(hubness(unit, np.zeros(4, dtype=int), 20) == 0.0)


def test_whitening_inverts_the_shrunk_within_class_covariance() -> None:
    """W (S_w + s I) W = I, with S_w the scatter about the class means of the classes with two
    or more rows (a singleton class contributes nothing) and s = shrinkage * mean eigenvalue."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(30, 8))
    labels = np.array([i // 3 for i in range(27)] + [100, 101, 102])
    w = within_class_whitening(x, labels, shrinkage=0.5).astype(np.float64)
    dev = np.concatenate([x[labels == c] - x[labels == c].mean(0) for c in range(9)])
    s_w = dev.T @ dev / len(dev)
    shrunk = s_w + 0.5 * np.trace(s_w) / 8 * np.eye(8)
    np.testing.assert_allclose(w @ shrunk @ w, np.eye(8), atol=1e-4)
    np.testing.assert_allclose(w, w.T, atol=1e-6)


@pytest.mark.parametrize("shrinkage", [30.0, math.inf])
def test_whitening_is_the_identity_where_the_library_cannot_say_anything(
    shrinkage: float,
) -> None:
    """No class with two rows (nothing to learn from), or infinite shrinkage (switched off)."""
    x = np.random.default_rng(3).normal(size=(5, 6))
    labels = np.arange(5) if math.isfinite(shrinkage) else np.array([0, 0, 1, 1, 2])
    np.testing.assert_array_equal(within_class_whitening(x, labels, shrinkage), np.eye(6))


def test_switched_off_it_is_the_derivative_search() -> None:
    rng = np.random.default_rng(4)
    refs = np.abs(rng.normal(size=(9, 200))).astype(np.float32)
    queries = np.abs(rng.normal(size=(3, 200))).astype(np.float32)
    labels = np.array([0, 0, 1, 1, 2, 3, 4, 4, 4])
    off = AdaptedSearch(refs, labels, shrinkage=math.inf, hub_weight=0.0)
    plain = LibrarySearch(refs, labels, "derivative")
    np.testing.assert_allclose(off.similarity(queries), plain.similarity(queries), atol=1e-6)
    assert off.lowest_score == -1.0


def test_whitening_discounts_what_varies_within_minerals() -> None:
    """A band at 800 comes and goes between spectra of the same mineral in the library (classes
    2-8). A query of mineral 0 carrying that band is closer, by plain cosine, to mineral 1's
    reference, which has it too, than to its own clean reference; whitened, it finds mineral 0."""
    nuisance = 2.0 * band(800)
    refs = [band(100), 0.5 * band(200) + nuisance]
    labels = [0, 1]
    for c, centre in enumerate(range(300, 800, 80), start=2):
        refs += [band(centre), band(centre) + nuisance]
        labels += [c, c]
    query = band(100) + nuisance
    refs_arr, labels_arr = np.stack(refs), np.array(labels)
    n = len(set(labels))
    plain = LibrarySearch(refs_arr, labels_arr, "cosine").class_scores(query, n)[0]
    whitened = AdaptedSearch(
        refs_arr, labels_arr, "cosine", shrinkage=1.0, hub_weight=0.0
    ).class_scores(query, n)[0]
    assert plain.argmax() == 1
    assert whitened.argmax() == 0


def test_hub_penalty_stops_a_reference_close_to_everything_winning() -> None:
    """Reference 5 holds the bands of minerals 0, 2, 3 and 4: a query of mineral 0 with an extra
    band it shares with that reference matches it best by plain cosine; penalised by its mean
    similarity to the other minerals' references, it no longer does."""
    centres = [100, 300, 500, 700, 900]
    refs = np.stack([band(c) for c in centres] + [band(100) + band(500) + band(700) + band(900)])
    labels = np.arange(6)
    query = band(100) + band(500)
    plain = LibrarySearch(refs, labels, "cosine").class_scores(query, 6)[0]
    adapted = AdaptedSearch(
        refs, labels, "cosine", shrinkage=math.inf, hub_weight=0.5, hub_neighbours=3
    ).class_scores(query, 6)[0]
    assert plain.argmax() == 5
    assert adapted.argmax() == 0


def test_each_library_spectrum_finds_its_own_class_and_scores_stay_above_the_floor() -> None:
    rng = np.random.default_rng(5)
    centres = rng.uniform(50, 950, size=(12, 3))
    refs = np.stack([sum(band(c) for c in row) for row in centres])
    labels = np.repeat(np.arange(6), 2)
    lib = make_search(refs, labels, "adapted")
    assert isinstance(lib, AdaptedSearch)
    scores = lib.class_scores(refs, 6)
    np.testing.assert_array_equal(scores.argmax(1), labels)
    assert scores.min() >= lib.lowest_score


def test_make_search_builds_the_plain_searches() -> None:
    refs = np.abs(np.random.default_rng(6).normal(size=(3, 50)))
    for method in library.METRICS:
        lib = make_search(refs, np.arange(3), method)
        assert type(lib) is LibrarySearch and lib.metric == method
    with pytest.raises(ValueError, match="unknown metric"):
        make_search(refs, np.arange(3), "euclid")


def test_whitening_learns_from_minerals_it_does_not_search() -> None:
    """The case above with the minerals that show the nuisance band moved out of the library into
    `scatter_extra` (their labels overlap the library's: they must stay separate classes): the
    library alone has no class of two spectra to learn from, the extra spectra teach it."""
    nuisance = 2.0 * band(800)
    refs, labels = np.stack([band(100), 0.5 * band(200) + nuisance]), np.array([0, 1])
    extra = [x for centre in range(300, 800, 80) for x in (band(centre), band(centre) + nuisance)]
    extra_labels = np.repeat(np.arange(len(extra) // 2), 2)
    query = band(100) + nuisance
    alone = AdaptedSearch(refs, labels, "cosine", shrinkage=1.0, hub_weight=0.0)
    taught = AdaptedSearch(
        refs, labels, "cosine", shrinkage=1.0, hub_weight=0.0,
        scatter_extra=(np.stack(extra), extra_labels),
    )  # fmt: skip
    assert alone.class_scores(query, 2)[0].argmax() == 1
    assert taught.class_scores(query, 2)[0].argmax() == 0
    assert taught.similarity(query).shape == (1, 2)  # the extra spectra are not searched
