"""Tiny but real ONNX models built with `onnx.helper` (no torch), written as model versions.

The graph is `spectra [N, 1, L] -> Flatten -> Gemm(W [L, C], b) -> logits [N, C]`, with W made
so that each class responds to its own synthetic peak position: a spectrum with a peak at
`PEAKS[c]` is classified as class c. `write_version` writes `model.onnx`, a valid card (with the
file's sha256) and `references.npz`; keyword switches produce the broken variants the service
must refuse.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from spectra.card import Calibration, ModelCard, sha256_file
from spectra.grid import Grid

MODEL = "rruff-minerals"
API_KEY = "test-key-123"

BROKEN: dict[str, dict[str, Any]] = {
    "10": {"graph_classes": 5},  # card lists 4 classes, graph outputs 5
    "11": {"graph_length": 90},  # graph input length differs from the grid's 101 points
    "12": {"bad_sha": True},
    "13": {"corrupt_onnx": True},
    "14": {"references": False},
    "15": {"graph_classes": 5, "static_out": False},  # only a real run reveals the mismatch
    "16": {"reference_classes": 3},  # references.npz lacks the last class
}

GRID = Grid(200.0, 1200.0, 101)
CLASSES = ["Quartz", "Calcite", "Gypsum (selenite)", "Anatase TiO2"]
PEAKS = [300.0, 500.0, 800.0, 1000.0]
CALIBRATION = Calibration(temperature=1.5, min_probability=0.5, min_similarity=0.5)


def peak(grid: Grid, centre: float, width: float = 15.0) -> np.ndarray:
    """A Gaussian peak on the grid's axis, height 1."""
    return np.exp(-0.5 * ((grid.axis - centre) / width) ** 2)


def weights(grid: Grid, peaks: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """W [L, C] and b [C]: class c scores the overlap with its peak, minus a flat baseline."""
    w = np.stack([peak(grid, c) for c in peaks], axis=1)
    w = 8.0 * (w - w.mean(axis=0, keepdims=True))
    return w.astype(np.float32), np.zeros(len(peaks), dtype=np.float32)


def graph(
    length: int, n_classes: int, w: np.ndarray, b: np.ndarray, static_out: bool = True
) -> onnx.ModelProto:
    """The Flatten -> Gemm graph with a dynamic batch axis (`static_out=False`: symbolic C)."""
    out_dim: int | str = n_classes if static_out else "classes"
    nodes = [
        helper.make_node("Flatten", ["spectra"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "W", "b"], ["logits"]),
    ]
    g = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("spectra", TensorProto.FLOAT, ["batch", 1, length])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", out_dim])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_version(
    store: Path,
    name: str,
    version: str,
    *,
    classes: list[str] | None = None,
    graph_length: int | None = None,
    graph_classes: int | None = None,
    static_out: bool = True,
    bad_sha: bool = False,
    corrupt_onnx: bool = False,
    references: bool = True,
    reference_classes: int | None = None,
    calibration: Calibration = CALIBRATION,
    grid: Grid = GRID,
) -> Path:
    """Write one model version; the keyword switches break it in one specific way each."""
    classes = list(classes or CLASSES)
    directory = store / name / version
    directory.mkdir(parents=True)
    n_out = graph_classes or len(classes)
    peaks = (PEAKS * (n_out // len(PEAKS) + 1))[:n_out]
    length = graph_length or grid.points
    w, b = weights(Grid(grid.start, grid.stop, length), peaks)
    onnx_path = directory / "model.onnx"
    if corrupt_onnx:
        onnx_path.write_bytes(b"\x08\x07this is not a protobuf graph" * 20)
    else:
        onnx.save(graph(length, n_out, w, b, static_out), str(onnx_path))
    sha = "0" * 64 if bad_sha else sha256_file(onnx_path)
    card = ModelCard(
        name=name,
        version=version,
        classes=classes,
        grid=grid,
        calibration=calibration,
        metrics={"top1": 0.9},
        onnx_sha256=sha,
        created_at="2024-01-01T00:00:00Z",
    )
    card.save(directory)
    if references:
        n_refs = len(classes) if reference_classes is None else reference_classes
        refs = np.stack([peak(grid, PEAKS[i % len(PEAKS)]) for i in range(n_refs)])
        np.savez(directory / "references.npz", references=refs, labels=classes[:n_refs])
    return directory


def spectrum_on_grid(cls: int, grid: Grid = GRID, noise: float = 0.0, seed: int = 0) -> list[float]:
    """Intensities on the grid with class `cls`'s peak (plus a small baseline)."""
    rng = np.random.default_rng(seed)
    y = 0.1 + peak(grid, PEAKS[cls]) + rng.normal(0.0, noise, grid.points)
    return [float(v) for v in y]


def spectrum_off_grid(
    cls: int, start: float = 150.0, stop: float = 1300.0, points: int = 700
) -> tuple[list[float], list[float]]:
    """(wavenumbers, intensities) on a finer, wider, descending axis with class `cls`'s peak."""
    x = np.linspace(stop, start, points)
    y = 5.0 + 100.0 * np.exp(-0.5 * ((x - PEAKS[cls]) / 15.0) ** 2)
    return [float(v) for v in x], [float(v) for v in y]
