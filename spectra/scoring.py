"""How a model version turns logits into the probabilities it returns: one function that training
(to choose thresholds at export) and the service (to answer) share, so both agree by construction.

    p = (1 - w) * softmax(logits / T) + w * softmax(s / T_lib)

where `s` holds the query's score of the card's library search (`Calibration.ranking_search`, e.g.
the adapted search) for each class's best-matching reference spectrum, and w, T, T_lib come from
the card's `Calibration` (fitted on validation). With w = 0, the default of older cards, this is
the plain temperature-scaled softmax. `ServedSearch` runs both searches a version needs over its
references: that one, and the HQI (`Calibration.similarity`) shown and thresholded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from spectra.card import Calibration
from spectra.library import LibrarySearch, make_search


class LibraryScores(NamedTuple):
    """A version's library searches for n queries, each [n, C] (class scores: a class's best
    reference row; -inf where a class has none)."""

    similarity: np.ndarray
    """HQI of the card's `similarity` metric: shown with each hit, thresholded by the rule."""
    ranking: np.ndarray
    """Scores of the card's `ranking_search`: what the mix's library softmax takes."""


@dataclass(frozen=True)
class ServedSearch:
    """The searches a model version runs over its reference spectra (one object when the card
    ranks by its similarity metric, as cards before version 5 do)."""

    similarity: LibrarySearch
    ranking: LibrarySearch

    @classmethod
    def build(
        cls, spectra: np.ndarray, labels: np.ndarray, calibration: Calibration
    ) -> ServedSearch:
        """Both searches over labelled `spectra` (class indices); fitting the adapted search
        takes about a second for a few thousand references."""
        hqi = LibrarySearch(spectra, labels, calibration.similarity)
        if calibration.ranking_search == calibration.similarity:
            return cls(hqi, hqi)
        return cls(hqi, make_search(spectra, labels, calibration.ranking_search))

    def class_scores(self, queries: np.ndarray, n_classes: int) -> LibraryScores:
        """Both searches' [n, C] class scores for `queries` [n, L] on the version's grid."""
        sims = self.similarity.class_scores(queries, n_classes)
        if self.ranking is self.similarity:
            return LibraryScores(sims, sims)
        return LibraryScores(sims, self.ranking.class_scores(queries, n_classes))


def softmax(scores: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of `scores / temperature` in float64, shifted by the row maximum so it
    never overflows. Works on [N, C] (or any shape: the last axis holds the classes)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    z = np.asarray(scores, dtype=np.float64) / temperature
    if z.size == 0:
        return z
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def combined_probabilities(
    logits: np.ndarray, ranking: np.ndarray, calibration: Calibration
) -> np.ndarray:
    """[n, C] probabilities from logits and [n, C] scores of the card's ranking search for each
    class's best-matching reference spectrum (`LibraryScores.ranking`)."""
    probs = softmax(logits, calibration.temperature)
    w = calibration.library_weight
    if w == 0:
        return probs
    return (1 - w) * probs + w * softmax(ranking, calibration.library_temperature)


def match_margin(
    top_probability: np.ndarray | float,
    top_similarity: np.ndarray | float,
    calibration: Calibration,
) -> np.ndarray:
    """Margin of the card's "confident match" rule: min(p - min_probability, s - min_similarity)
    for the top class's probability p and similarity s (to its closest reference). It is >= 0
    exactly when both thresholds pass, i.e. when the service answers `match`; as a score it
    ranks answers for accuracy-against-coverage and known-vs-unknown curves."""
    return np.minimum(
        np.asarray(top_probability, dtype=np.float64) - calibration.min_probability,
        np.asarray(top_similarity, dtype=np.float64) - calibration.min_similarity,
    )


MIN_MATCH_COVERAGE = 0.4
"""Below this share of the model grid measured, no answer is a confident match, whatever its
probability and similarity. RRUFF's spectra cover 49-100 % of the grid, so a fragment is outside
everything a version was fitted on, and its zero-filled rest makes it look like a clean spectrum.
Cut to windows of the grid, the shipped version's test spectra were declared matches that were
wrong 4-5 % of the time as measured, 7-11 % at 40 % of the grid, 17-18 % at 30 % and 25-42 % at
20-25 % (`bench/coverage_floor.py`: the smallest share with at most one wrong match in ten on
half of the test spectra; docs/accuracy.md, "Spectra that cover part of the grid")."""


def is_match(
    top_probability: float, top_similarity: float, coverage: float, calibration: Calibration
) -> bool:
    """The service's "confident match": the card's rule (`match_margin` >= 0) on a spectrum
    that measured at least `MIN_MATCH_COVERAGE` of the grid."""
    margin = match_margin(top_probability, top_similarity, calibration)
    return bool(coverage >= MIN_MATCH_COVERAGE and margin >= 0)


def served_rule(calibration: Calibration) -> str:
    """The rule `is_match` applies, in words (returned with every answer)."""
    return f"{calibration.rule}, on a spectrum covering >= {MIN_MATCH_COVERAGE:.0%} of the grid"
