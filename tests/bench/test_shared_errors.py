"""bench/shared_errors.py: who gets which test spectrum wrong, checked on hand-made answers."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from shared_errors import markdown, pairs, split_errors


def one_hot(pred: list[int], n: int = 4) -> np.ndarray:
    """Scores whose best class is `pred`, second best the next class (for top-3)."""
    s = np.zeros((len(pred), n))
    for i, p in enumerate(pred):
        s[i, p], s[i, (p + 1) % n] = 2.0, 1.0
    return s


def test_split_errors_counts_shared_and_either_right() -> None:
    y = np.array([0, 1, 2, 3, 0])
    net = one_hot([0, 2, 2, 1, 3])  # wrong on 1, 3, 4
    lib = one_hot([0, 2, 1, 3, 0])  # wrong on 1, 2
    seen = np.array([True, True, False, True, False])  # their samples have spectra in the library
    counts, net_pred, lib_pred = split_errors(y, net, lib, seen)
    assert (counts["network_wrong"], counts["library_wrong"], counts["both_wrong"]) == (3, 2, 1)
    assert counts["network_wrong_sample_in_library"] == 2  # spectra 1 and 3
    assert counts["both_wrong_same_answer"] == 1  # spectrum 1: both answered class 2
    assert counts["either_right"] == 0.8 and counts["network_top1"] == 0.4
    assert counts["network_top3"] == 0.8  # spectrum 3 (answered 1, then 2): class 3 not in top 3
    np.testing.assert_array_equal(net_pred, [0, 2, 2, 1, 3])
    np.testing.assert_array_equal(lib_pred, [0, 2, 1, 3, 0])


def test_pairs_count_a_confusion_either_way_once() -> None:
    c = Counter({("Pyrope", "Almandine"): 3, ("Almandine", "Pyrope"): 2, ("Opal", "Zircon"): 4})
    assert pairs(c) == [
        {"minerals": ["Almandine", "Pyrope"], "errors": 5},
        {"minerals": ["Opal", "Zircon"], "errors": 4},
    ]


def test_markdown_sums_the_splits_of_a_kind() -> None:
    counts = {
        "network_wrong": 2,
        "network_wrong_sample_in_library": 1,
        "library_wrong": 3,
        "both_wrong": 1,
        "both_wrong_same_answer": 1,
    }
    rates = {"network_top1": 0.9, "network_top3": 1.0, "library_top1": 0.85, "either_right": 0.95}
    split = {**counts, **rates}
    result = {
        "network": "net",
        "library": "adapted",
        "splits": [{"split": "random", "seed": s, "test": 20, **split} for s in (0, 1)],
        "pairs": {"random": {"network": [{"minerals": ["A", "B"], "errors": 4}], "library": []}},
    }
    md = markdown(result)
    assert "| random 0, 1 | 40 | 4 (2) | 6 | 2 (2) | 0.9000 / 1.0000 | 0.8500 | 0.9500 |" in md
    assert "## Most confused pairs (net), random splits" in md and "| A / B | 4 |" in md
