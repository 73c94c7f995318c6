"""Every figure is written as a real PNG with something on it."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from spectra.scoring import softmax
from training.calibration import accuracy_coverage, reliability_bins
from training.plots import (
    confusion_dpi,
    plot_accuracy_coverage,
    plot_confusion,
    plot_pair,
    plot_reliability,
    plot_training_curves,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG after checking it is one with some content."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 5_000
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def confusion(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cm = np.diag(rng.integers(1, 30, n))
    rows, cols = rng.integers(0, n, n // 2 + 1), rng.integers(0, n, n // 2 + 1)
    np.add.at(cm, (rows, cols), 1)
    return cm


@pytest.mark.parametrize("n", [12, 600])  # with class names / without (above max_labels)
def test_plot_confusion(tmp_path: Path, n: int) -> None:
    out = plot_confusion(confusion(n), [f"mineral {i}" for i in range(n)], tmp_path / "cm.png")
    assert out == tmp_path / "cm.png"
    width, height = png_size(out)
    assert min(width, height) >= n  # every class gets at least a pixel


def test_confusion_resolution_grows_with_classes() -> None:
    assert confusion_dpi(12) == 120
    assert confusion_dpi(1400) * 10 * 0.75 >= 1.2 * 1400  # 1400 classes on >= 1.2 px each


def test_plot_reliability(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    logits, y = rng.normal(size=(500, 5)) * 3, rng.integers(0, 5, 500)
    before = reliability_bins(softmax(logits), y)
    after = reliability_bins(softmax(logits, 3.0), y)
    png_size(plot_reliability(before, after, tmp_path / "rel.png", 0.3, 0.05))


def test_plot_accuracy_coverage(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    conf = rng.random(300)
    curves = {
        "probability": accuracy_coverage(conf, rng.random(300) < conf),
        "similarity": accuracy_coverage(conf, rng.random(300) < 0.8),
    }
    png_size(plot_accuracy_coverage(curves, tmp_path / "sub" / "cov.png"))


def test_plot_pair(tmp_path: Path) -> None:
    axis = np.linspace(150, 1400, 1024)
    peak = lambda c: np.exp(-0.5 * ((axis - c) / 8) ** 2)  # noqa: E731
    a, b = peak(465) + 0.4 * peak(205), peak(470) + 0.3 * peak(1085)
    png_size(plot_pair(axis, a, "quartz", b, "calcite", tmp_path / "pair.png", "quartz vs calcite"))


def test_plot_training_curves(tmp_path: Path) -> None:
    history = [
        {
            "epoch": e,
            "train_loss": 2 / e,
            "train_acc": 1 - 1 / (e + 1),
            "val_loss": 2.2 / e,
            "val_acc": 1 - 1.2 / (e + 1),
        }
        for e in range(1, 21)
    ]
    png_size(plot_training_curves(history, tmp_path / "curves.png"))


def test_training_curves_show_the_weight_average_where_the_history_has_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training import plots

    history: list[dict[str, float]] = [
        {"epoch": e, "train_loss": 2 / e, "train_acc": 0.5, "val_loss": 2.2 / e, "val_acc": 0.4}
        for e in range(1, 11)
    ]
    for r in history[6:]:
        r.update(swa_val_loss=1.0 / r["epoch"], swa_val_acc=0.45)
    drawn: list[dict[str, int]] = []
    save = plots._save

    def spy(fig: Any, path: Path, dpi: float = plots.DPI) -> Path:
        drawn.extend({ln.get_label(): len(ln.get_xdata()) for ln in ax.lines} for ax in fig.axes)
        return save(fig, path, dpi)

    monkeypatch.setattr(plots, "_save", spy)
    png_size(plot_training_curves(history, tmp_path / "curves.png"))
    expected = {"training": 10, "validation": 10, "validation, weight average": 4}
    assert drawn == [expected, expected]  # loss and accuracy panels
