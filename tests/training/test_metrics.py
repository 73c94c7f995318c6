"""Metrics of the paper (eqs. 27-34) against hand-computed values."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.metrics import (
    aggregate,
    classification_report,
    confused_pairs,
    confusion_matrix,
    markdown_table,
    top1_by_support,
    topk_accuracy,
    weighted_prf,
)

# Four true classes 0,0,0,0 / 1,1 / 2,2; class 3 is absent from the test set but predicted once.
Y_TRUE = np.array([0, 0, 0, 0, 1, 1, 2, 2])
Y_PRED = np.array([0, 0, 1, 3, 1, 0, 2, 1])


def test_confusion_matrix_rows_true_columns_predicted() -> None:
    cm = confusion_matrix(Y_TRUE, Y_PRED, 4)
    expected = [[2, 1, 0, 1], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    np.testing.assert_array_equal(cm, expected)
    assert cm.dtype == np.int64
    with pytest.raises(ValueError):
        confusion_matrix(np.array([0, 4]), np.array([0, 1]), 4)


def test_weighted_prf_by_hand() -> None:
    # TP=[2,1,1], FP=[1,2,0], FN=[2,1,1] for the present classes; W=[4,2,2]/8.
    # P = .5*2/3 + .25*1/3 + .25*1 = 2/3;  R = .5*.5 + .25*.5 + .25*.5 = .5
    # F1 = .5*4/7 + .25*2/5 + .25*2/3 (2TP/(2TP+FN+FP) per class)
    p, r, f = weighted_prf(Y_TRUE, Y_PRED, 4)
    assert p == pytest.approx(2 / 3)
    assert r == pytest.approx(0.5)
    assert f == pytest.approx(0.5 * 4 / 7 + 0.25 * 2 / 5 + 0.25 * 2 / 3)


def test_weighted_prf_never_predicted_class_has_zero_precision() -> None:
    # sklearn, average="weighted", zero_division=0: P = .5*.5 + .5*0, R = .5*1, F1 = .5*2/3.
    p, r, f = weighted_prf(np.array([0, 1]), np.array([0, 0]), 2)
    assert (p, r) == pytest.approx((0.25, 0.5))
    assert f == pytest.approx(1 / 3)
    assert weighted_prf(np.array([], dtype=int), np.array([], dtype=int), 3) == (0.0, 0.0, 0.0)


def test_perfect_predictions_score_one() -> None:
    y = np.array([0, 1, 1, 2, 2, 2])
    assert weighted_prf(y, y, 5) == pytest.approx((1.0, 1.0, 1.0))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=1, max_size=40))
def test_weighted_recall_is_accuracy(pairs: list[tuple[int, int]]) -> None:
    y_true, y_pred = (np.array(col) for col in zip(*pairs, strict=True))
    p, r, f = weighted_prf(y_true, y_pred, 6)
    assert r == pytest.approx(float(np.mean(y_true == y_pred)))
    assert 0.0 <= p <= 1.0 and 0.0 <= f <= 1.0


def test_topk_with_ties_and_k_beyond_classes() -> None:
    scores = np.array([[1.0, 1.0, 1.0], [0.0, 2.0, 2.0], [3.0, 1.0, 2.0]])
    y = np.array([2, 2, 1])
    # Ties go to the lower class index (as argmax): ranks of the true classes are 2, 1, 2.
    assert topk_accuracy(scores, y, 1) == 0.0
    assert topk_accuracy(scores, y, 2) == pytest.approx(1 / 3)
    assert topk_accuracy(scores, y, 3) == 1.0
    assert topk_accuracy(scores, y, 5) == 1.0
    assert topk_accuracy(np.zeros((0, 3)), np.array([], dtype=int), 1) == 0.0
    with pytest.raises(ValueError):
        topk_accuracy(scores, y, 0)


def test_top1_agrees_with_argmax_under_ties() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 3, size=(500, 7)).astype(float)
    y = rng.integers(0, 7, size=500)
    assert topk_accuracy(scores, y, 1) == pytest.approx(float(np.mean(scores.argmax(1) == y)))
    accs = [topk_accuracy(scores, y, k) for k in range(1, 8)]
    assert accs == sorted(accs) and accs[-1] == 1.0


def test_classification_report_keys_and_json() -> None:
    logits = np.eye(4)[Y_PRED] * 5.0
    report = classification_report(logits, Y_TRUE, 4)
    assert list(report) == ["precision", "recall", "f1", "top1", "top3", "top5", "n"]
    assert report["n"] == 8 and isinstance(report["n"], int)
    assert report["precision"] == pytest.approx(2 / 3)
    assert report["top1"] == pytest.approx(0.5)
    assert report["top5"] == 1.0
    json.dumps(report)
    empty = classification_report(np.zeros((0, 4)), np.array([], dtype=int), 4)
    assert empty["n"] == 0 and empty["top1"] == 0.0


def test_aggregate_mean_and_sample_std() -> None:
    runs = [{"top1": 0.9, "n": 10, "name": "a"}, {"top1": 0.8, "n": 10, "name": "b"}]
    agg = aggregate(runs)  # type: ignore[arg-type]
    assert "name" not in agg
    assert agg["top1"]["mean"] == pytest.approx(0.85)
    assert agg["top1"]["std"] == pytest.approx(np.std([0.9, 0.8], ddof=1))
    assert agg["top1"]["n"] == 2
    assert aggregate([{"top1": 0.7}])["top1"] == {"mean": 0.7, "std": 0.0, "n": 1}


def test_markdown_table_like_table_2() -> None:
    drcnn = aggregate([{"top1": 0.98, "precision": 0.97}, {"top1": 0.96, "precision": 0.99}])
    single = aggregate([{"top1": 0.9}])
    table = markdown_table(
        {"DRCNN": drcnn, "library": single},
        metrics=("precision", "top1"),
        reference={"DRCNN": {"top1": 0.9798}},
    )
    lines = table.strip().splitlines()
    assert lines[0] == "| metric | DRCNN | library | DRCNN (paper) |"
    assert lines[1] == "|---|---|---|---|"
    assert lines[2] == "| Precision | 0.9800 ± 0.0141 | — | — |"
    assert lines[3] == "| Top1 acc. | 0.9700 ± 0.0141 | 0.9000 | 0.9798 |"


def test_confused_pairs_most_frequent_first() -> None:
    cm = np.array([[50, 3, 0], [1, 40, 7], [3, 0, 60]])
    pairs = confused_pairs(cm, ["a", "b", "c"], top=3)
    assert pairs == [("b", "c", 7), ("a", "b", 3), ("c", "a", 3)]
    assert len(confused_pairs(cm, ["a", "b", "c"], top=10)) == 4  # zero cells never listed
    assert confused_pairs(np.diag([5, 5]), ["a", "b"]) == []


def test_top1_by_support_counts_right_answers_per_training_count_bin() -> None:
    # classes 0..3 had 1, 2, 12 and 4 training spectra; class 4 none
    train_counts = np.array([1, 2, 12, 4, 0])
    y = np.array([0, 0, 1, 2, 2, 2, 3, 4])
    pred = np.array([0, 1, 1, 2, 0, 2, 3, 0])
    scores = np.eye(5)[pred]
    assert top1_by_support(scores, y, train_counts) == {
        "0": [0, 1],
        "1": [1, 2],
        "2": [1, 1],
        "3-4": [1, 1],
        "10+": [2, 3],
    }  # no "5-9": no test spectrum's class had 5-9 training spectra
