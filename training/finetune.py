"""Transfer learning (section 2.3 of the paper): start from a published model version, swap the
last layer for the new classes, retrain, and export a new version.

The paper reloads every layer but the last and retrains. `freeze` chooses how much stays fixed:
- "none": every reloaded layer is trained further (the default; what the paper describes);
- "features": the convolutional feature extractor is frozen, the dense layers are trained;
- "all_but_last": only the new output layer is trained (a linear probe).
Frozen BatchNorm layers stay in eval mode so their statistics are not disturbed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from spectra.card import ModelCard
from training.export import ExportInputs, export_version, load_weights
from training.metrics import classification_report
from training.model import DRCNN, arch_of, output_layer
from training.pipeline import calibrate_and_publish, references_note
from training.splits import Split, stratified_split
from training.train import Arrays, Result, TrainConfig, fit, predict_logits

FREEZE_CHOICES = ("none", "features", "all_but_last")
FEATURE_PREFIXES = ("embed1.", "embed2.", "recursive.", "sup_y.", "sup_z.", "level_weights", "rec.")


@dataclass
class FinetuneConfig:
    """Hyper-parameters of a fine-tune job, with the defaults a lab should start from."""

    epochs: int = 60
    patience: int = 15
    lr: float = 1e-4
    batch_size: int = 16
    freeze: str = "none"
    val_fraction: float = 0.2
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.freeze not in FREEZE_CHOICES:
            raise ValueError(f"freeze must be one of {FREEZE_CHOICES}, not {self.freeze!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError("val_fraction must be in [0, 1)")


def prepare_model(base_dir: Path, n_classes: int, freeze: str) -> nn.Module:
    """The base version's network with a fresh output layer for `n_classes`, partly frozen."""
    model = load_weights(Path(base_dir) / "weights.pt")
    assert isinstance(model, DRCNN), "fine-tuning expects a DRCNN base"
    model.cfg.n_classes = n_classes
    model.out = output_layer(model.cfg.head, model.dense2.out_features, n_classes)
    for name, p in model.named_parameters():
        frozen = (freeze == "features" and name.startswith(FEATURE_PREFIXES)) or (
            freeze == "all_but_last" and not name.startswith("out.")
        )
        p.requires_grad_(not frozen)
    if freeze == "all_but_last":
        _freeze_batchnorm(model)
    else:
        # A few-shot job runs only tens of batches: with Keras' momentum (0.01) BatchNorm's
        # running statistics would barely move towards the new data.
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.momentum = 0.1
    return model


def _freeze_batchnorm(model: nn.Module) -> None:
    """Keep BatchNorm in eval mode even when the model is put in train mode."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.eval()
            m.train = _stay_in_eval.__get__(m)  # type: ignore[method-assign]


def _stay_in_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    """Replacement `train()` for frozen BatchNorm layers: ignore the mode."""
    return self


def split_few_shot(y: np.ndarray, val_fraction: float, seed: int) -> Split:
    """Train/validation split of the user's spectra (no test part: the user's test is theirs).
    Every class keeps at least one training spectrum."""
    if val_fraction == 0:
        return Split(np.arange(len(y)), np.zeros(0, np.int64), np.zeros(0, np.int64))
    s = stratified_split(y, seed, ratios=(1 - val_fraction, 0.0, val_fraction))
    return Split(s.train, s.test, np.zeros(0, np.int64))  # the "test" share is our validation


def finetune(
    base_dir: Path,
    x: np.ndarray,
    y: np.ndarray,
    classes: list[str],
    cfg: FinetuneConfig,
    work_dir: Path,
    on_epoch: Callable[[dict[str, float]], bool] | None = None,
) -> tuple[nn.Module, Result, Split]:
    """Train the new version; x [N, L] already preprocessed onto the base model's grid."""
    model = prepare_model(base_dir, len(classes), cfg.freeze)
    split = split_few_shot(y, cfg.val_fraction, cfg.seed)
    arrays = Arrays(x[split.train], y[split.train], x[split.val], y[split.val])
    train_cfg = TrainConfig(
        epochs=cfg.epochs,
        patience=cfg.patience,
        lr=cfg.lr,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        device=cfg.device,
        progress=False,
    )
    result = fit(
        model,
        arrays,
        train_cfg,
        work_dir,
        on_epoch=on_epoch,
        extra={"finetune": asdict(cfg), "base": str(base_dir)},
    )
    best = torch.load(result.best_path, map_location="cpu", weights_only=False)
    model.load_state_dict(best["model"])
    return model.cpu().eval(), result, split


def export_finetuned(
    model: nn.Module,
    base_dir: Path,
    x: np.ndarray,
    y: np.ndarray,
    classes: list[str],
    split: Split,
    result: Result,
    store: Path,
    name: str,
    version: str,
    data: dict[str, Any] | None = None,
    max_false_accept: float | None = None,
) -> Path:
    """Publish a fine-tuned network as a new version (calibrated on the job's validation part;
    `max_false_accept`: see `training.pipeline.calibrate`)."""
    from training.datasets import Dataset

    base = ModelCard.load(Path(base_dir))
    ds = Dataset(
        x,
        y,
        classes,
        np.array([""] * len(y)),
        np.array([""] * len(y)),
        np.ones(len(y), np.float32),
        base.grid,
    )
    # too few (or too easy) validation spectra keep the base version's calibration
    calibration, cal_stats, refs = calibrate_and_publish(
        model, ds, split, max_false_accept, prior=base.calibration
    )
    val = (
        classification_report(predict_logits(model, x[split.val]), y[split.val], len(classes))
        if len(split.val)
        else {}
    )
    inputs = ExportInputs(
        name=name,
        version=version,
        classes=classes,
        grid=base.grid,
        references=refs,
        calibration=calibration,
        metrics={
            "validation": val,
            "best_val_acc": result.best_val_acc,
            "best_epoch": result.best_epoch,
            "calibration": cal_stats,
        },
        data={
            **(data or {}),
            "base_model": f"{base.name}/{base.version}",
            "counts": {"classes": len(classes), "spectra": len(y)},
            "references": references_note(refs),
        },
        architecture={**arch_of(model), "finetuned_from": f"{base.name}/{base.version}"},
        parity_inputs=x[:64],
    )
    return export_version(model, inputs, store)
