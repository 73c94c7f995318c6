"""Export a trained network to the artifact contract (DESIGN.md): an immutable directory
`<store>/<name>/<version>/` with `model.onnx`, `model.json` and `references.npz`, plus
`weights.pt` (the float16 state dict and architecture: the base for fine-tune jobs; the service
never reads it).

Checks made before anything is written to the store (a failed check leaves the store untouched):
- the graph has a dynamic batch axis and no Loop/If nodes (the D recursions are unrolled, which
  CUDA graphs need), input `spectra` [batch, 1, L] and output `logits` [batch, C];
- onnxruntime and torch agree (max relative error < 1e-4 in fp32) on real spectra;
- the card matches the graph (L = grid points, C = number of classes, sha256 of the file);
- every class has at least one finite reference spectrum (`spectra.references`).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from spectra.card import ONNX_FILE, REFERENCES_FILE, Calibration, ModelCard, sha256_file
from spectra.grid import Grid
from spectra.preprocess import Preprocessor
from spectra.references import References, check_references, read_references, write_references
from spectra.version import code_version
from training.model import arch_of

WEIGHTS_FILE = "weights.pt"
PARITY_TOLERANCE = 1e-4
FORBIDDEN_OPS = {"Loop", "If", "Scan"}


class ExportError(RuntimeError):
    """An export check failed; nothing was written to the model store."""


@dataclass
class ExportInputs:
    """What goes into one model version besides the network."""

    name: str
    version: str
    classes: list[str]
    grid: Grid
    references: References  # labelled reference spectra (spectra.references)
    calibration: Calibration
    metrics: dict[str, Any]
    data: dict[str, Any]
    architecture: dict[str, Any]
    parity_inputs: np.ndarray  # [N, L] real spectra for the torch/onnxruntime check


def export_onnx(model: nn.Module, length: int, path: Path) -> None:
    """Trace `model` to a single-file ONNX graph with a dynamic batch axis."""
    model = model.eval().cpu()
    dummy = torch.rand(2, 1, length)
    batch = torch.export.Dim("batch", min=1, max=65536)
    program = torch.onnx.export(
        model,
        (dummy,),
        input_names=["spectra"],
        output_names=["logits"],
        dynamic_shapes=({0: batch},),
        dynamo=True,
        external_data=False,
        optimize=True,
    )
    assert program is not None
    program.save(str(path), external_data=False)


def check_graph(path: Path, length: int, n_classes: int) -> None:
    """Refuse graphs with control flow or the wrong input/output shapes."""
    graph = onnx.load(str(path)).graph
    ops = {n.op_type for n in graph.node}
    if ops & FORBIDDEN_OPS:
        raise ExportError(f"graph holds control flow {sorted(ops & FORBIDDEN_OPS)}")
    (inp,), (out,) = graph.input, graph.output
    in_dims = [d.dim_value or d.dim_param for d in inp.type.tensor_type.shape.dim]
    out_dims = [d.dim_value or d.dim_param for d in out.type.tensor_type.shape.dim]
    if inp.name != "spectra" or out.name != "logits":
        raise ExportError(f"graph names {inp.name!r} -> {out.name!r}, expected spectra -> logits")
    if not isinstance(in_dims[0], str) or in_dims[1:] != [1, length]:
        raise ExportError(f"input shape {in_dims}, expected [batch, 1, {length}]")
    if out_dims[1:] != [n_classes]:
        raise ExportError(f"output shape {out_dims}, expected [batch, {n_classes}]")


def check_parity(model: nn.Module, path: Path, x: np.ndarray) -> float:
    """Max relative error between torch and onnxruntime logits on `x` [N, L]."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inp = x[:, None, :].astype(np.float32)
    got = sess.run(["logits"], {"spectra": inp})[0]
    with torch.no_grad():
        want = model.eval().cpu()(torch.from_numpy(inp)).numpy()
    err = float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-12))
    if not err < PARITY_TOLERANCE:
        raise ExportError(f"onnxruntime and torch disagree: relative error {err:.2e}")
    return err


def export_version(model: nn.Module, inputs: ExportInputs, store: Path) -> Path:
    """Export, check and atomically publish one model version; returns its directory."""
    target = Path(store) / inputs.name / inputs.version
    if target.exists():
        raise ExportError(f"{target} exists: model versions are immutable, pick a new version")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".export-") as tmp:
        staging = Path(tmp)
        onnx_path = staging / ONNX_FILE
        try:
            check_references(inputs.references, len(inputs.classes), inputs.grid.points)
        except ValueError as exc:
            raise ExportError(str(exc)) from None
        export_onnx(model, inputs.grid.points, onnx_path)
        check_graph(onnx_path, inputs.grid.points, len(inputs.classes))
        err = check_parity(model, onnx_path, inputs.parity_inputs[:64])
        write_references(
            staging / REFERENCES_FILE, inputs.references, inputs.classes, inputs.grid.axis
        )
        save_weights(model, staging / WEIGHTS_FILE)
        card = _card(inputs, onnx_path, err)
        card.save(staging)
        ModelCard.load(staging)  # round-trip: what we wrote is what the service will read
        read_references(staging / REFERENCES_FILE, inputs.classes, inputs.grid.points)
        staging.chmod(0o755)  # mkdtemp makes 0700: a server running as another user must read it
        # rename within one filesystem: all or nothing, and it fails (rather than nesting the
        # staging folder inside) if another export created the version meanwhile
        os.rename(staging, target)
        staging.mkdir()  # TemporaryDirectory wants something to clean up
    return target


def save_weights(model: nn.Module, path: Path) -> None:
    """Float16 state dict + architecture: half the size, ample precision to start a fine-tune."""
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    torch.save({"arch": arch_of(model), "state_dict": state}, path)


def load_weights(path: Path) -> nn.Module:
    """Rebuild the float32 network saved by `save_weights`."""
    from training.model import build_model

    blob = torch.load(path, map_location="cpu", weights_only=False)
    model = build_model(blob["arch"])
    model.load_state_dict(
        {k: v.float() if v.is_floating_point() else v for k, v in blob["state_dict"].items()}
    )
    return model.eval()


def _card(inputs: ExportInputs, onnx_path: Path, parity: float) -> ModelCard:
    return ModelCard(
        name=inputs.name,
        version=inputs.version,
        classes=list(inputs.classes),
        grid=inputs.grid,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        architecture=inputs.architecture,
        preprocessing=Preprocessor(inputs.grid).describe(),
        calibration=inputs.calibration,
        data=inputs.data,
        metrics={**inputs.metrics, "export_parity_max_rel_error": parity},
        onnx_sha256=sha256_file(onnx_path),
        code_version=code_version(),
    )


def next_version(store: Path, name: str) -> str:
    """One more than the highest integer version under `<store>/<name>/` ("1" when none)."""
    root = Path(store) / name
    taken = (
        [int(p.name) for p in root.glob("*") if p.is_dir() and p.name.isdigit()]
        if root.exists()
        else []
    )
    return str(max(taken, default=0) + 1)
