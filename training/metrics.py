"""Classification metrics of the paper (section 3, eqs. 27-34) and the tables that report them.

Weighted precision, recall and F1 follow eqs. 30-33: each class present in the test set is
weighted by its share of the test spectra, so the many classes with one or two test spectra count
little. Top-k accuracy takes any score whose order ranks the classes (logits, probabilities,
library-search similarities). Numpy only: the service and benchmarks use this without torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

METRICS = ("precision", "recall", "f1", "top1", "top3", "top5")

# Row labels of the paper's Table 2.
LABELS = {
    "precision": "Precision",
    "recall": "Recall",
    "f1": "F1-score",
    "top1": "Top1 acc.",
    "top3": "Top3 acc.",
    "top5": "Top5 acc.",
}


def true_class_rank(scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    """0-based rank of the true class in each row (0 = top-1).

    Ties are broken the way `argmax` breaks them, towards the lower class index, so top-1
    accuracy always agrees with `scores.argmax(1) == y`.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    true = s[np.arange(len(y)), y][:, None]
    above = (s > true).sum(axis=1)
    tied_before = ((s == true) & (np.arange(s.shape[1]) < y[:, None])).sum(axis=1)
    return above + tied_before


def topk_accuracy(scores: np.ndarray, y: np.ndarray, k: int) -> float:
    """Share of rows whose true class is among the k best-scored ones (k > C counts as C).

    Returns 0.0 for an empty set.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    y = np.asarray(y)
    if y.size == 0:
        return 0.0
    return float(np.mean(true_class_rank(scores, y) < k))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts [n_classes, n_classes], int64: rows are true classes, columns predicted ones."""
    t = np.asarray(y_true, dtype=np.int64).ravel()
    p = np.asarray(y_pred, dtype=np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.size} vs {p.size}")
    for name, labels in (("y_true", t), ("y_pred", p)):
        if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
            raise ValueError(f"{name} holds a label outside 0..{n_classes - 1}")
    flat = np.bincount(t * n_classes + p, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes).astype(np.int64)


def _per_class(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(TP, FP, FN) per class from a confusion matrix."""
    tp = np.diag(cm).astype(np.float64)
    return tp, cm.sum(axis=0) - tp, cm.sum(axis=1) - tp


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den == 0 (sklearn's zero_division=0)."""
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def weighted_prf(
    y_true: np.ndarray, y_pred: np.ndarray, n_classes: int
) -> tuple[float, float, float]:
    """Weighted precision, recall and F1 (eqs. 31-33).

    Weights are W_i = N_i / N_total over the classes present in `y_true`; a class never
    predicted has precision 0. F1 is 2TP / (2TP + FN + FP) per class. Returns zeros for an
    empty set. Equal to sklearn's `precision_recall_fscore_support(average="weighted",
    zero_division=0)`.
    """
    cm = confusion_matrix(y_true, y_pred, n_classes)
    support = cm.sum(axis=1).astype(np.float64)
    if support.sum() == 0:
        return 0.0, 0.0, 0.0
    w = support / support.sum()
    tp, fp, fn = _per_class(cm)
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    f1 = _ratio(2 * tp, 2 * tp + fn + fp)
    return float(w @ precision), float(w @ recall), float(w @ f1)


def classification_report(
    scores: np.ndarray, y_true: np.ndarray, n_classes: int, ks: Sequence[int] = (1, 3, 5)
) -> dict[str, float]:
    """Weighted P/R/F1 of the top-1 prediction and top-k accuracies, JSON-ready.

    Keys: precision, recall, f1, top{k} for each k in `ks`, and n (the number of spectra, int).
    """
    y = np.asarray(y_true, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64).reshape(len(y), n_classes)
    pred = s.argmax(axis=1) if len(y) else np.zeros(0, dtype=np.int64)
    p, r, f = weighted_prf(y, pred, n_classes)
    report: dict[str, float] = {"precision": p, "recall": r, "f1": f}
    for k in ks:
        report[f"top{k}"] = topk_accuracy(s, y, k)
    report["n"] = len(y)
    return report


# bins of "training spectra of the test spectrum's class": (label, lowest count, highest count)
SUPPORT_BINS = (
    ("0", 0, 0),  # a class absent from training (the benchmark's splits never leave one out)
    ("1", 1, 1),
    ("2", 2, 2),
    ("3-4", 3, 4),
    ("5-9", 5, 9),
    ("10+", 10, None),
)


def top1_by_support(
    scores: np.ndarray, y_true: np.ndarray, train_counts: np.ndarray
) -> dict[str, list[int]]:
    """[right, total] top-1 answers per SUPPORT_BINS bin of how many training (library) spectra
    the test spectrum's class had; empty bins are left out. Counts rather than ratios, so that
    runs can be pooled exactly.

    This is what separates a copy of RRUFF with few spectra per mineral from one with many: a
    class seen once in training is a different task from one seen ten times.
    """
    y = np.asarray(y_true, dtype=np.int64)
    right = np.asarray(scores).reshape(len(y), -1).argmax(axis=1) == y
    support = np.asarray(train_counts)[y]
    out: dict[str, list[int]] = {}
    for label, low, high in SUPPORT_BINS:
        inside = (support >= low) & (support <= (high if high is not None else support.max()))
        if inside.any():
            out[label] = [int(right[inside].sum()), int(inside.sum())]
    return out


def aggregate(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean, sample standard deviation (ddof=1; 0 for a single run) and count per metric over
    independent runs (the paper averages 30). Non-numeric values are skipped."""
    values: dict[str, list[float]] = {}
    for run in runs:
        for key, value in run.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                values.setdefault(key, []).append(float(value))
    out: dict[str, dict[str, float]] = {}
    for key, vals in values.items():
        a = np.asarray(vals)
        std = float(a.std(ddof=1)) if a.size > 1 else 0.0
        out[key] = {"mean": float(a.mean()), "std": std, "n": a.size}
    return out


def _cell(stats: dict[str, float] | None) -> str:
    """'0.9798 ± 0.0040', or '0.9798' for a single run, or '—' when missing."""
    if not stats:
        return "—"
    if stats.get("n", 1) > 1:
        return f"{stats['mean']:.4f} ± {stats['std']:.4f}"
    return f"{stats['mean']:.4f}"


def markdown_table(
    columns: dict[str, dict[str, dict[str, float]]],
    metrics: Sequence[str] = METRICS,
    reference: dict[str, dict[str, float]] | None = None,
) -> str:
    """A Markdown table laid out like the paper's Table 2: a row per metric, a column per method.

    `columns` maps a method to the output of `aggregate`; `reference` maps a method to published
    values (metric -> value), shown in extra columns headed "<method> (paper)".
    """
    reference = reference or {}
    heads = ["metric", *columns, *(f"{m} (paper)" for m in reference)]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for metric in metrics:
        cells = [LABELS.get(metric, metric)]
        cells += [_cell(agg.get(metric)) for agg in columns.values()]
        for ref in reference.values():
            cells.append(f"{ref[metric]:.4f}" if metric in ref else "—")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def confused_pairs(cm: np.ndarray, classes: list[str], top: int = 10) -> list[tuple[str, str, int]]:
    """The `top` most frequent off-diagonal cells as (true class, predicted class, count),
    largest first; ties in count go by (true, predicted) index. Zero cells are never listed."""
    off = np.array(cm, dtype=np.int64)
    np.fill_diagonal(off, 0)
    flat = off.ravel()
    order = np.lexsort((np.arange(flat.size), -flat))
    pairs = []
    for idx in order[:top]:
        if flat[idx] == 0:
            break
        t, p = divmod(int(idx), off.shape[1])
        pairs.append((classes[t], classes[p], int(flat[idx])))
    return pairs
