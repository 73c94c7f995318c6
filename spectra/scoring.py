"""How a model version turns logits into the probabilities it returns: one function that training
(to choose thresholds at export) and the service (to answer) share, so both agree by construction.

    p = (1 - w) * softmax(logits / T) + w * softmax(s / T_lib)

where `s` holds the query's similarity (`Calibration.similarity`, e.g. the derivative HQI) to each
class's closest reference spectrum, and w, T, T_lib come from the card's `Calibration` (fitted on
validation). With w = 0, the default of older cards, this is the plain temperature-scaled softmax.
"""

from __future__ import annotations

import numpy as np

from spectra.card import Calibration


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
    logits: np.ndarray, similarities: np.ndarray, calibration: Calibration
) -> np.ndarray:
    """[n, C] probabilities from logits and [n, C] similarities to each class's best-matching
    reference spectrum."""
    probs = softmax(logits, calibration.temperature)
    w = calibration.library_weight
    if w == 0:
        return probs
    return (1 - w) * probs + w * softmax(similarities, calibration.library_temperature)


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
