"""Figures for run reports: confusion matrix, reliability, accuracy against coverage, confused
spectrum pairs (like the paper's Fig. 7) and training curves.

Every function draws on its own `Figure` rendered by the Agg canvas (no pyplot, so no GUI
backend, no global figure registry to leak into, safe in worker threads), saves one PNG and
returns its path.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

DPI = 120


def _figure(width: float, height: float, ncols: int = 1) -> tuple[Figure, list[Axes]]:
    """A figure on an Agg canvas with `ncols` axes side by side."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="tight")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _save(fig: Figure, path: Path, dpi: float = DPI) -> Path:
    """Write the PNG (creating its folder; the tight layout runs as part of this single draw),
    then release the figure's artists."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png")
    fig.clear()
    return path


def plot_confusion(cm: np.ndarray, classes: list[str], path: Path, max_labels: int = 80) -> Path:
    """The confusion matrix as an image, log-scaled colour, zero cells left white.

    Class names label the axes only up to `max_labels` classes; beyond that the resolution is
    raised so that every class still gets at least one pixel (1400 classes stay readable).
    """
    cm = np.asarray(cm)
    n = cm.shape[0]
    total = int(cm.sum())
    acc = np.trace(cm) / total if total else 0.0
    fig, (ax,) = _figure(11, 10)
    masked = np.ma.masked_equal(cm, 0)
    image = ax.imshow(
        masked,
        norm=LogNorm(vmin=1, vmax=max(int(cm.max()), 2)),
        cmap="viridis",
        interpolation="nearest",
        aspect="equal",
    )
    fig.colorbar(image, ax=ax, shrink=0.8, label="spectra (log scale)")
    ax.set_title(f"Confusion matrix: {n} classes, {total} spectra, top-1 accuracy {acc:.4f}")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if n <= max_labels:
        size = max(4.0, min(9.0, 600 / max(n, 1)))
        ax.set_xticks(range(n), classes[:n], rotation=90, fontsize=size)
        ax.set_yticks(range(n), classes[:n], fontsize=size)
    return _save(fig, path, dpi=confusion_dpi(n))


def confusion_dpi(n_classes: int) -> int:
    """Resolution at which each of `n_classes` rows gets about 1.2 pixels: the matrix takes
    about 7.5 of the figure's 10 inches, and a class drawn on less than a pixel can vanish."""
    return max(DPI, math.ceil(1.2 * n_classes / 7.5))


def _reliability_axes(ax: Axes, bins: list[dict[str, Any]], title: str) -> None:
    """Accuracy bars per confidence bin against the diagonal of perfect calibration."""
    full = [b for b in bins if b["count"] > 0]
    lo = np.array([b["lo"] for b in full])
    width = np.array([b["hi"] - b["lo"] for b in full])
    ax.bar(
        lo,
        [b["accuracy"] for b in full],
        width=width,
        align="edge",
        edgecolor="black",
        color="tab:blue",
        label="accuracy",
    )
    ax.plot(
        [b["confidence"] for b in full],
        [b["confidence"] for b in full],
        "o",
        color="tab:red",
        markersize=4,
        label="mean confidence",
    )
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="top-1 confidence", ylabel="accuracy", title=title)
    ax.legend(loc="upper left", fontsize=8)


def plot_reliability(
    bins_before: list[dict[str, Any]],
    bins_after: list[dict[str, Any]],
    path: Path,
    ece_before: float,
    ece_after: float,
) -> Path:
    """Reliability diagrams before and after temperature scaling, side by side."""
    fig, (left, right) = _figure(10, 4.5, ncols=2)
    _reliability_axes(left, bins_before, f"Before calibration (ECE {ece_before:.4f})")
    _reliability_axes(right, bins_after, f"After temperature scaling (ECE {ece_after:.4f})")
    return _save(fig, path)


def plot_accuracy_coverage(curves: dict[str, list[dict[str, Any]]], path: Path) -> Path:
    """Accuracy of the most confident fraction against that fraction, one line per method or
    confidence measure (rows from `training.calibration.accuracy_coverage`)."""
    fig, (ax,) = _figure(7, 5)
    for name, rows in curves.items():
        ax.plot(
            [r["coverage"] for r in rows],
            [r["accuracy"] for r in rows],
            "o-",
            markersize=3,
            label=name,
        )
    ax.set(
        xlim=(0, 1.02),
        xlabel="coverage (share of predictions kept)",
        ylabel="accuracy among kept",
        title="Accuracy against coverage",
    )
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(loc="lower left")
    return _save(fig, path)


def plot_pair(
    axis: np.ndarray,
    spectrum_a: np.ndarray,
    label_a: str,
    spectrum_b: np.ndarray,
    label_b: str,
    path: Path,
    title: str,
) -> Path:
    """Two spectra overlaid on one Raman-shift axis, e.g. a class and the class it is most
    often mistaken for."""
    fig, (ax,) = _figure(9, 4.5)
    ax.plot(axis, spectrum_a, lw=1.0, label=label_a)
    ax.plot(axis, spectrum_b, lw=1.0, alpha=0.8, label=label_b)
    ax.set(xlabel="Raman shift (cm$^{-1}$)", ylabel="intensity (a.u.)", title=title)
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _curve(ax: Axes, history: list[dict[str, Any]], key: str, label: str) -> None:
    """One column of `history` against epoch, skipping rows without it."""
    rows = [r for r in history if r.get(key) is not None]
    if rows:
        ax.plot([r["epoch"] for r in rows], [r[key] for r in rows], label=label)


def plot_training_curves(history: list[dict[str, Any]], path: Path) -> Path:
    """Loss and accuracy per epoch, training and validation (and the weight average's
    validation, from its first epoch on, for a training with weight averaging)."""
    fig, (loss_ax, acc_ax) = _figure(11, 4.5, ncols=2)
    for ax, what in ((loss_ax, "loss"), (acc_ax, "acc")):
        _curve(ax, history, f"train_{what}", "training")
        _curve(ax, history, f"val_{what}", "validation")
        _curve(ax, history, f"swa_val_{what}", "validation, weight average")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    loss_ax.set(ylabel="cross-entropy loss", title="Loss")
    acc_ax.set(ylabel="accuracy", title="Accuracy")
    return _save(fig, path)
