"""Temperature scaling, calibration error, rejection thresholds and open-set measures."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from spectra.card import Calibration
from spectra.scoring import softmax
from training.calibration import (
    accuracy_coverage,
    auroc,
    choose_rejection,
    expected_calibration_error,
    fit_temperature,
    nll,
    reliability_bins,
)

C = 10


def synthetic(n: int, seed: int, shift: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """(z, y) with z ~ N(shift * onehot(y), I) and uniform y: the exact posterior is
    softmax(shift * z), so logits k * shift * z are overconfident by a factor k."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, size=n)
    z = rng.normal(size=(n, C)) + shift * np.eye(C)[y]
    return shift * z, y


def test_ece_near_zero_when_calibrated_and_large_when_overconfident() -> None:
    logits, y = synthetic(20000, seed=1)
    assert expected_calibration_error(softmax(logits), y) < 0.02
    assert expected_calibration_error(softmax(3.0 * logits), y) > 0.1


def test_fit_temperature_undoes_overconfidence() -> None:
    logits, y = synthetic(4000, seed=2)
    hot = 3.0 * logits
    t = fit_temperature(hot, y)
    assert t > 1.0
    assert t == pytest.approx(3.0, rel=0.15)
    assert nll(hot, y, t) < nll(hot, y, 1.0)
    ece_before = expected_calibration_error(softmax(hot), y)
    ece_after = expected_calibration_error(softmax(hot, t), y)
    assert ece_after < ece_before / 3
    assert ece_after < 0.04


def test_fit_temperature_sharpens_underconfident_logits_and_handles_empty() -> None:
    logits, y = synthetic(2000, seed=3)
    assert fit_temperature(0.25 * logits, y) == pytest.approx(0.25, rel=0.15)
    assert fit_temperature(np.zeros((0, C)), np.array([], dtype=int)) == 1.0
    # Perfectly separable data: NLL keeps falling as T shrinks, so the lower bound is returned.
    assert fit_temperature(np.eye(3) * 5, np.arange(3), bounds=(0.1, 10)) == pytest.approx(
        0.1, rel=1e-3
    )


def test_reliability_bins_edges_and_counts() -> None:
    probs = np.array([[0.5, 0.5], [1.0, 0.0], [0.75, 0.25], [0.3, 0.7]])
    y = np.array([0, 0, 1, 1])
    bins = reliability_bins(probs, y, n_bins=4)
    assert [b["count"] for b in bins] == [0, 1, 2, 1]  # (0,.25] (.25,.5] (.5,.75] (.75,1]
    assert bins[2]["confidence"] == pytest.approx(0.725)
    assert bins[2]["accuracy"] == pytest.approx(0.5)
    assert bins[0]["lo"] == 0.0 and bins[-1]["hi"] == 1.0
    # |1-.5|*1 + |.5-.725|*2 + |1-1|*1, over 4
    assert expected_calibration_error(probs, y, n_bins=4) == pytest.approx((0.5 + 0.45) / 4)
    assert expected_calibration_error(np.zeros((0, 2)), np.array([], dtype=int)) == 0.0


def _similarities(correct: np.ndarray, seed: int) -> np.ndarray:
    """Right answers look like their reference (0.8-1); wrong ones often do not (0.3-1)."""
    rng = np.random.default_rng(seed)
    return np.where(
        correct, rng.uniform(0.8, 1.0, correct.size), rng.uniform(0.3, 1.0, correct.size)
    )


def _accepted_accuracy(
    probs: np.ndarray, sim: np.ndarray, y: np.ndarray, p: float, s: float
) -> float:
    keep = (probs.max(1) >= p) & (sim >= s)
    return float(np.mean(probs.argmax(1)[keep] == y[keep]))


def test_choose_rejection_reaches_target() -> None:
    logits, y = synthetic(5000, seed=4, shift=1.5)
    probs = softmax(logits)
    correct = probs.argmax(1) == y
    assert correct.mean() < 0.9  # the target is not met by accepting everything
    sim = _similarities(correct, seed=5)
    min_p, min_s = choose_rejection(probs, sim, y, target_accuracy=0.95)
    assert 0.0 < min_p < 1.0
    assert np.mean(sim[correct] >= min_s) == pytest.approx(0.99, abs=0.005)
    assert _accepted_accuracy(probs, sim, y, min_p, min_s) >= 0.95
    # Smallest such threshold on the 0.005 grid: one step lower misses the target.
    assert _accepted_accuracy(probs, sim, y, min_p - 0.005, min_s) < 0.95
    # And it generalises to fresh data from the same distribution.
    logits2, y2 = synthetic(5000, seed=6, shift=1.5)
    probs2 = softmax(logits2)
    sim2 = _similarities(probs2.argmax(1) == y2, seed=7)
    assert _accepted_accuracy(probs2, sim2, y2, min_p, min_s) > 0.93


def test_choose_rejection_unreachable_target_and_empty_set() -> None:
    probs = np.array([[0.6, 0.4], [0.9, 0.1], [0.95, 0.05]])
    y = np.array([0, 1, 1])  # only the least confident one is right
    min_p, min_s = choose_rejection(probs, np.ones(3), y, target_accuracy=0.99)
    assert min_p == 0.0  # accuracy is highest (1/3) when everything is accepted
    assert min_s == 1.0
    assert choose_rejection(np.zeros((0, 2)), np.zeros(0), np.array([], dtype=int)) == (0.5, 0.0)


def test_auroc_separated_identical_reversed() -> None:
    assert auroc(np.array([0.9, 0.8, 0.7]), np.array([0.1, 0.2])) == 1.0
    assert auroc(np.full(5, 0.4), np.full(3, 0.4)) == 0.5
    assert auroc(np.array([0.1, 0.2]), np.array([0.9, 0.8, 0.7])) == 0.0
    assert np.isnan(auroc(np.array([]), np.array([0.5])))


def test_auroc_matches_pairwise_count_with_ties() -> None:
    rng = np.random.default_rng(8)
    pos, neg = rng.integers(0, 5, 40).astype(float), rng.integers(0, 4, 30).astype(float)
    diff = pos[:, None] - neg[None, :]
    expected = (np.sum(diff > 0) + 0.5 * np.sum(diff == 0)) / diff.size
    assert auroc(pos, neg) == pytest.approx(expected)


def test_accuracy_coverage_by_hand() -> None:
    rows = accuracy_coverage(np.array([0.7, 0.9, 0.6, 0.8]), np.array([0, 1, 1, 1]), points=5)
    assert [r["coverage"] for r in rows] == [0.25, 0.5, 0.75, 1.0]
    assert [r["n"] for r in rows] == [1, 2, 3, 4]
    assert [r["accuracy"] for r in rows] == pytest.approx([1.0, 1.0, 2 / 3, 0.75])
    assert [r["threshold"] for r in rows] == [0.9, 0.8, 0.7, 0.6]
    assert len(accuracy_coverage(np.random.default_rng(0).random(100), np.ones(100))) == 20
    assert accuracy_coverage(np.zeros(0), np.zeros(0)) == []


# --- the card's library mix (training.pipeline.choose_library_weight) ---------------------------


def test_library_weight_follows_whichever_score_is_informative() -> None:
    from spectra.card import Calibration
    from training.pipeline import LIBRARY_WEIGHTS, choose_library_weight

    rng = np.random.default_rng(8)
    y = rng.integers(0, 6, 300)
    informative = np.eye(6)[y] * 4.0 + rng.normal(0, 1.0, (300, 6))
    noise = rng.normal(0, 1.0, (300, 6))
    base = Calibration(1.0, 0.5, 0.0, "derivative", 0.0, 0.1)
    # the network guesses, the references know: the largest mix wins
    chosen = choose_library_weight(noise, informative * 0.1, y, base)
    assert chosen.library_weight == max(LIBRARY_WEIGHTS)
    # the network knows, the references are noise: no mix (ties in accuracy go to the lower NLL)
    chosen = choose_library_weight(informative * 3, noise * 0.1, y, base)
    assert chosen.library_weight == 0.0
    assert (chosen.temperature, chosen.library_temperature) == (1.0, 0.1)


def test_joint_temperatures_fit_the_network_inside_the_mixture() -> None:
    """With both parts informative, refitting the network's temperature inside the mixture moves
    it away from the value fitted on the network alone and never raises the NLL."""
    from spectra.card import Calibration
    from spectra.scoring import combined_probabilities
    from training.calibration import fit_temperature
    from training.pipeline import choose_library_weight

    rng = np.random.default_rng(9)
    y = rng.integers(0, 6, 400)
    logits = np.eye(6)[y] * 2.0 + rng.normal(0, 1.0, (400, 6))
    sims = (np.eye(6)[y] * 2.0 + rng.normal(0, 1.0, (400, 6))) * 0.1
    base = Calibration(fit_temperature(logits, y), 0.5, 0.0, "derivative")

    def nll(c: Calibration) -> float:
        p = combined_probabilities(logits, sims, c)
        return float(-np.log(p[np.arange(len(y)), y]).mean())

    alone = choose_library_weight(logits, sims, y, base, weights=(0.5,), joint=False)
    joint = choose_library_weight(logits, sims, y, base, weights=(0.5,), joint=True)
    assert alone.temperature == base.temperature
    assert abs(joint.temperature - base.temperature) > 0.05
    assert nll(joint) <= nll(alone) + 1e-9


def _toy_data(noise: float = 0.2) -> Any:
    """A 4-class toy data set: class k is the k-th unit vector plus Gaussian `noise`."""
    from spectra.grid import Grid
    from training.datasets import Dataset

    rng = np.random.default_rng(3)
    n, length, classes = 120, 40, 4
    y = np.repeat(np.arange(classes), n // classes)
    x = (np.eye(classes, length)[y] + rng.normal(0, noise, (n, length))).astype(np.float32)
    return Dataset(
        x, y, [f"c{i}" for i in range(classes)], np.array([f"R{i}" for i in range(n)]),
        np.array([""] * n), np.ones(n, np.float32), Grid(100.0, 139.0, length),
    )  # fmt: skip


def _toy_export(max_false_accept: float | None = None) -> tuple[Any, Any, Any, Any, Any, Any]:
    """The toy data set, an untrained linear network and what export fits and publishes."""
    import torch
    from torch import nn

    from training.pipeline import calibrate_and_publish
    from training.splits import stratified_split

    ds = _toy_data()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(ds.x.shape[1], len(ds.classes)))
    split = stratified_split(ds.y, 0)
    calib, _, refs = calibrate_and_publish(model, ds, split, max_false_accept)
    return ds, model, split, calib, refs, (ds.x, ds.y)


PRIOR = Calibration(temperature=1.7, min_probability=0.6, min_similarity=0.3, library_weight=0.25,
                    library_temperature=0.02, similarity="derivative")  # fmt: skip


def _calibrate_matched_filter(
    noise: float, n_val: int | None = None, prior: Calibration | None = PRIOR
) -> tuple[Calibration, dict[str, Any]]:
    """Export's calibration of a fixed "matched filter" network (logits 10 x the first four
    points: right on every clean toy spectrum) on the toy data with `noise`, keeping the first
    `n_val` validation spectra."""
    import torch
    from torch import nn

    from training.pipeline import calibrate_and_publish
    from training.splits import Split, stratified_split

    ds = _toy_data(noise)
    model = nn.Sequential(nn.Flatten(), nn.Linear(ds.x.shape[1], len(ds.classes)))
    with torch.no_grad():
        model[1].weight.copy_(10 * torch.eye(len(ds.classes), ds.x.shape[1]))
        model[1].bias.zero_()
    split = stratified_split(ds.y, 0)
    split = Split(split.train, split.val[:n_val], split.test)
    calib, stats, _ = calibrate_and_publish(model, ds, split, prior=prior)
    return calib, stats


def test_a_validation_part_with_errors_is_fitted() -> None:
    calib, stats = _calibrate_matched_filter(noise=1.5)
    assert stats["fitted"] is True and stats["validation_spectra"] >= 10
    assert 0 < stats["val_top1_network"] < 1
    assert calib != PRIOR and calib.temperature != PRIOR.temperature


@pytest.mark.parametrize(
    ("noise", "n_val", "n_expected"),
    [(1.5, 6, 6),  # too few spectra (like a fine-tune on 18 files)
     (0.2, None, None),  # every validation spectrum right: temperatures would run to 0
     (1.5, 0, 0)],  # no validation part
)  # fmt: skip
def test_a_validation_part_that_cannot_support_a_fit_keeps_the_prior(
    noise: float, n_val: int | None, n_expected: int | None
) -> None:
    calib, stats = _calibrate_matched_filter(noise, n_val)
    assert calib == PRIOR and stats["fitted"] is False
    if n_expected is not None:
        assert stats["validation_spectra"] == n_expected
    else:
        assert stats["val_top1_network"] == stats["val_top1_served"] == 1.0


def test_without_a_prior_an_unfittable_part_gets_the_plain_softmax() -> None:
    from training.pipeline import SEARCH, SIMILARITY

    calib, stats = _calibrate_matched_filter(1.5, n_val=6, prior=None)
    assert calib == Calibration(similarity=SIMILARITY, search=SEARCH) and not stats["fitted"]


def test_published_references_are_the_training_and_validation_spectra() -> None:
    """Export fits the mix against the training part, then publishes training + validation
    spectra as the version's references; no test spectrum is ever a reference."""
    _, _, split, calib, refs, (x, y) = _toy_export()
    published = np.sort(np.concatenate([split.train, split.val]))
    np.testing.assert_array_equal(refs.spectra, x[published])
    np.testing.assert_array_equal(refs.classes, y[published])
    assert calib.library_weight > 0  # the references know the classes, the random network not


def test_served_scores_are_the_versions_probabilities_and_no_match_rule() -> None:
    """What benchmarks score as "the service" is the card's mix with the ranking search's scores
    over the published references, the predicted class's best-match HQI, and the rule's margin
    (>= 0 <=> both pass)."""
    from spectra.library import LibrarySearch, make_search
    from spectra.scoring import combined_probabilities
    from training.pipeline import card_search_scores, served_scores
    from training.train import predict_logits

    _, model, split, calib, refs, (x, _) = _toy_export()
    assert (calib.similarity, calib.ranking_search) == ("derivative", "adapted_peaks")
    x_te = x[split.test]
    logits = predict_logits(model, x_te)
    sims = LibrarySearch(refs.spectra, refs.classes, calib.similarity).class_scores(x_te, 4)
    ranks = make_search(refs.spectra, refs.classes, "adapted_peaks").class_scores(x_te, 4)
    assert not np.allclose(sims, ranks)  # two searches: the check below can tell them apart
    scores = card_search_scores(x_te, refs, calib, 4)
    np.testing.assert_allclose(scores.similarity, sims)
    np.testing.assert_allclose(scores.ranking, ranks)
    served = served_scores(logits, scores, calib)
    np.testing.assert_allclose(served.probs, combined_probabilities(logits, ranks, calib))
    rows = np.arange(len(x_te))
    assert (served.pred == served.probs.argmax(1)).all()
    np.testing.assert_allclose(served.similarity, sims[rows, served.pred])
    passes = (served.probability >= calib.min_probability) & (
        served.similarity >= calib.min_similarity
    )
    assert ((served.margin >= 0) == passes).all() and passes.sum() > 0


def test_impostor_threshold_is_the_quantile_of_best_other_class_matches() -> None:
    from training.calibration import impostor_similarity_threshold

    # own class always 0.99; best other class 0.1, 0.2, ..., 1.0 (ten spectra)
    y = np.zeros(10, dtype=np.int64)
    sims = np.stack([np.full(10, 0.99), np.linspace(0.1, 1.0, 10), np.full(10, np.nan)], axis=1)
    assert impostor_similarity_threshold(sims, y, 0.5) == pytest.approx(0.55)
    assert impostor_similarity_threshold(sims, y, 0.0) == pytest.approx(1.0)
    assert impostor_similarity_threshold(np.zeros((0, 3)), y[:0], 0.1) == float("-inf")


def test_max_false_accept_raises_min_similarity_to_the_impostor_threshold() -> None:
    """Export's stricter rule: min_similarity becomes the larger of the accuracy-chosen value
    and the impostor threshold; nothing else in the calibration changes."""
    from dataclasses import replace

    from spectra.library import LibrarySearch
    from training.calibration import impostor_similarity_threshold
    from training.pipeline import library_references

    ds, _, split, default, _, _ = _toy_export()
    *_, strict, _, _ = _toy_export(max_false_accept=0.05)
    train = library_references(ds, split.train)
    sims = LibrarySearch(train.spectra, train.classes, default.similarity).class_scores(
        ds.x[split.val], 4
    )
    t = impostor_similarity_threshold(sims, ds.y[split.val], 0.05)
    assert strict.min_similarity == pytest.approx(max(default.min_similarity, t))
    assert strict.min_similarity > default.min_similarity  # this toy's rule was lenient
    assert replace(strict, min_similarity=default.min_similarity) == default


def test_export_cli_refuses_a_false_accept_share_outside_0_1() -> None:
    from training.cli import parser

    args = parser().parse_args(["export", "--run", "r", "--max-false-accept", "0.1"])
    assert args.max_false_accept == 0.1
    assert parser().parse_args(["export", "--run", "r"]).max_false_accept is None
    for bad in ("0", "1.5", "x"):
        with pytest.raises(SystemExit):
            parser().parse_args(["export", "--run", "r", "--max-false-accept", bad])


@pytest.mark.parametrize(
    ("stats", "shown"),
    [({"fitted": True, "ece_before": 0.1, "ece_after": 0.03}, "0.1000 / 0.0300"),
     ({"fitted": False, "validation_spectra": 6, "ece_before": 0.1, "ece_after": 0.2},
      "0.1000 / 0.2000 (not fitted on 6 validation spectra, too few or none wrong: prior kept)"),
     ({"fitted": False, "validation_spectra": 0}, "n/a (no validation spectra: the prior"
      " calibration is kept)")],
)  # fmt: skip
def test_the_card_says_whether_its_calibration_was_fitted(stats: dict, shown: str) -> None:
    from training.card_markdown import _ece

    assert _ece({"calibration": stats}) == shown


def test_served_metrics_follow_whatever_searches_the_card_names() -> None:
    """A card (say a fine-tune's, keeping an old base's calibration) may name a metric the
    report does not list by itself (correlation): the served metrics are still computed."""
    from dataclasses import replace

    from training.pipeline import evaluate_split

    ds, model, split, calib, refs, _ = _toy_export()
    old = replace(calib, similarity="correlation", search="", library_weight=1.0)
    served = evaluate_split(model, ds, split, served=(refs, old))["served"]
    also = evaluate_split(model, ds, split, served=(refs, replace(old, search="adapted")))
    assert 0.0 <= served["top1"] <= 1.0 and served["n"] == len(split.test)
    assert set(also) >= {"library_search", "derivative_search", "adapted_search", "served"}
