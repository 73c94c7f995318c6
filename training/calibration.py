"""Calibration and the "no confident match" rule, fitted on the validation set at export.

Temperature scaling (Guo et al. 2017) divides the logits by one T chosen to minimise validation
NLL; it changes confidences, never the ranking. The rejection rule of `spectra.card.Calibration`
then needs two thresholds: a minimum calibrated top-1 probability and a minimum cosine similarity
of the query to the predicted class's reference spectrum (which catches spectra unlike anything
in the library even when the network is confident). The open-set measures (AUROC, accuracy
against coverage) say how well a confidence separates what to accept from what to refuse.
Numpy only, no scipy.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

GOLDEN = (math.sqrt(5) - 1) / 2


def nll(logits: np.ndarray, y: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true classes under softmax(logits / temperature)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z_max = z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z - z_max).sum(axis=1)) + z_max[:, 0]
    return float(np.mean(log_norm - z[np.arange(len(y)), y]))


def fit_temperature(
    logits: np.ndarray, y: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0)
) -> float:
    """The temperature in `bounds` that minimises validation NLL (1.0 for an empty set).

    NLL is convex in 1/T, so it has one minimum along log T: a log-spaced grid finds its
    bracket and golden-section search narrows it down to a relative width of about 1e-4.
    """
    y = np.asarray(y, dtype=np.int64)
    if y.size == 0:
        return 1.0
    z = np.asarray(logits, dtype=np.float64)
    return minimise_over_log_scale(lambda t: nll(z, y, t), bounds)


def minimise_over_log_scale(loss: Callable[[float], float], bounds: tuple[float, float]) -> float:
    """The scale in `bounds` minimising `loss`: a 33-point log-spaced grid brackets the minimum,
    golden-section search narrows it down."""
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    grid = np.linspace(lo, hi, 33)
    best = int(np.argmin([loss(math.exp(g)) for g in grid]))
    a, b = grid[max(best - 1, 0)], grid[min(best + 1, grid.size - 1)]
    return math.exp(_golden_section(lambda g: loss(math.exp(g)), a, b))


def _golden_section(f: Callable[[float], float], a: float, b: float, tol: float = 1e-4) -> float:
    """Minimiser of a unimodal function `f` on [a, b] to within `tol`."""
    c, d = b - GOLDEN * (b - a), a + GOLDEN * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - GOLDEN * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + GOLDEN * (b - a)
            fd = f(d)
    return (a + b) / 2


def _top1(probs: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(top-1 confidence, whether the top-1 class is right) per row."""
    p = np.asarray(probs, dtype=np.float64)
    if p.shape[0] == 0:
        return np.zeros(0), np.zeros(0, dtype=bool)
    return p.max(axis=1), p.argmax(axis=1) == np.asarray(y)


def reliability_bins(probs: np.ndarray, y: np.ndarray, n_bins: int = 15) -> list[dict[str, float]]:
    """Top-1 confidence against accuracy in `n_bins` equal-width bins (lo, hi].

    Every bin is listed; an empty one has count 0 and confidence and accuracy 0.0.
    """
    conf, correct = _top1(probs, y)
    idx = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    bins = []
    for b in range(n_bins):
        mask = idx == b
        count = int(mask.sum())
        bins.append(
            {
                "lo": b / n_bins,
                "hi": (b + 1) / n_bins,
                "count": count,
                "confidence": float(conf[mask].mean()) if count else 0.0,
                "accuracy": float(correct[mask].mean()) if count else 0.0,
            }
        )
    return bins


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, n_bins: int = 15) -> float:
    """ECE: the count-weighted mean gap |accuracy - confidence| over equal-width bins of the
    top-1 confidence (0.0 for an empty set)."""
    bins = reliability_bins(probs, y, n_bins)
    total = sum(b["count"] for b in bins)
    if total == 0:
        return 0.0
    return float(sum(b["count"] * abs(b["accuracy"] - b["confidence"]) for b in bins) / total)


def choose_rejection(
    probs: np.ndarray,
    similarity: np.ndarray,
    y: np.ndarray,
    target_accuracy: float = 0.95,
    similarity_quantile: float = 0.01,
) -> tuple[float, float]:
    """(min_probability, min_similarity) for `spectra.card.Calibration`, from validation data.

    min_similarity is the `similarity_quantile` quantile of the top-1 similarity among correct
    predictions (so about 99 % of right answers pass it; 0.0 when none is right).
    min_probability is the smallest threshold on a 0.005-step grid at which the accepted
    predictions (probability and similarity both passing) are at least `target_accuracy` right;
    if no threshold gets there, the one with the highest accuracy; 0.5 for an empty set.
    """
    conf, correct = _top1(probs, y)
    sim = np.asarray(similarity, dtype=np.float64)
    min_sim = float(np.quantile(sim[correct], similarity_quantile)) if correct.any() else 0.0
    passing = sim >= min_sim
    best_t, best_acc = 0.5, -1.0
    for t in np.append(np.arange(0.0, 1.0, 0.005), 0.999):
        accepted = passing & (conf >= t)
        if not accepted.any():
            continue
        acc = float(correct[accepted].mean())
        if acc >= target_accuracy:
            return float(t), min_sim
        if acc > best_acc:
            best_t, best_acc = float(t), acc
    return best_t, min_sim


def impostor_similarity_threshold(
    class_similarity: np.ndarray, y: np.ndarray, false_accept: float
) -> float:
    """A min_similarity that about `false_accept` of spectra of minerals *not* in the library
    would pass, estimated without any: each labelled spectrum's best match among the *other*
    classes' references is what it would score if its own mineral were missing (an impostor).

    `class_similarity` is [n, C] (each spectrum against each class's best reference, as the
    service computes it; -inf or nan where a class has none), `y` the true classes. Returns the
    (1 - false_accept) quantile of those impostor scores; -inf for an empty set.
    """
    sims = np.array(class_similarity, dtype=np.float64)
    if sims.size == 0:
        return float("-inf")
    sims[np.arange(len(y)), y] = -np.inf
    impostor = np.nan_to_num(sims, nan=-np.inf).max(axis=1)
    return float(np.quantile(impostor, 1.0 - false_accept))


def auroc(scores_pos: np.ndarray, scores_neg: np.ndarray) -> float:
    """Area under the ROC curve as the Mann-Whitney U statistic: the chance that a positive
    (should be accepted) outscores a negative (should be refused), ties counting one half.
    NaN when either side is empty."""
    pos = np.asarray(scores_pos, dtype=np.float64).ravel()
    neg = np.asarray(scores_neg, dtype=np.float64).ravel()
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    ranks = _average_ranks(np.concatenate([pos, neg]))
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2
    return float(u / (pos.size * neg.size))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    mean_rank = ends - (counts - 1) / 2
    return mean_rank[inverse]


def accuracy_coverage(
    confidence: np.ndarray, correct: np.ndarray, points: int = 21
) -> list[dict[str, float]]:
    """Accuracy of the most confident fraction of predictions, for coverages 1/(points-1) .. 1
    (5 %, 10 %, ..., 100 % by default).

    Each row: coverage, n (predictions kept), accuracy, threshold (the lowest confidence kept;
    where confidences tie at the cut, a threshold rule would keep a few more).
    """
    conf = np.asarray(confidence, dtype=np.float64).ravel()
    ok = np.asarray(correct, dtype=bool).ravel()
    if conf.size == 0:
        return []
    order = np.argsort(-conf, kind="stable")
    hits = np.cumsum(ok[order])
    rows = []
    for level in np.linspace(0.0, 1.0, points)[1:]:
        n = max(1, math.ceil(level * conf.size - 1e-9))
        rows.append(
            {
                "coverage": float(level),
                "n": n,
                "accuracy": float(hits[n - 1] / n),
                "threshold": float(conf[order[n - 1]]),
            }
        )
    return rows
