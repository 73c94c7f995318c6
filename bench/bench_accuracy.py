"""Accuracy benchmark of issue 4: the paper's Table 2 on our RRUFF copy, in one command.

For each subset (dataset_1 = classes with >= 10 spectra, dataset_2 = >= 2, built by the paper's
rules and cached as .npz), every method runs on the *same* splits: N random stratified 56:14:30
splits (the paper's protocol) and M splits grouped by RRUFF sample. Methods:

- ``cosine``, ``correlation``: nearest-neighbour library search (HQI) against the training part;
  ``derivative``: the same search on first derivatives of the square-root spectra (ours);
  ``adapted``: the derivative search with a metric fitted to the training part (within-class
  whitening and a hubness penalty, `spectra.library.AdaptedSearch`; ours); ``adapted_pre``: the
  same with the whitening fitted on the spectra a ``_pre`` network pre-trains on besides (the
  search given the same extra data as that network);
- ``drcnn``: DRCNN by the paper's protocol; ``drcnn_rs``: with recursive supervision;
- ``liu``: Liu et al. 2017's CNN;
- ``drcnn_aug``: DRCNN trained with augmentation (shift, noise and intensity scale together);
  ``drcnn_shift``, ``drcnn_noise``, ``drcnn_baseline``: one of those transforms alone (scale
  alone is no method: min-max re-normalisation undoes it); ``drcnn_gain``: a random smooth
  multiplicative gain (band heights reweighted along the spectrum, as between lasers);
  ``drcnn_ls``: with label smoothing;
  ``drcnn_bn``: BatchNorm running statistics updated with momentum 0.1 instead of Keras' 0.01;
  ``drcnn_dx``: DRCNN whose input is the derivative features (a fixed first layer);
  ``drcnn_rs_dx``: both recursive supervision and the derivative input; ``drcnn_cos``,
  ``drcnn_rs_cos``: the learning rate annealed on a cosine to 1 % over --epochs; ``drcnn_nc``,
  ``drcnn_rs_nc``: a normalised (cosine) output layer instead of the paper's dense one;
  ``drcnn_rs_wd``: with decoupled weight decay; ``drcnn_rs_mix``: with mixup;
  ``drcnn_rs_swa``: with the weights averaged over the second half of --epochs (SWA);
  ``drcnn_rs_gain``: with that gain; ``drcnn_rs_pre``: recursive supervision, initialised from
  a network pre-trained on the other RRUFF minerals (dataset_2's classes outside the subset, so
  no class, sample or spectrum of the subset; trained once per configuration and cached), every
  layer but the output layer reloaded and trained further on the split (the paper's transfer
  learning, section 2.3, used as pre-training);
- ``<net>+<library method>``: a trained network's calibrated softmax averaged with a softmax over
  that library search's similarities (temperatures fitted on validation; ``<net>+lib`` =
  ``<net>+cosine``); ``<net>+<library method>_fit``: the same mix with the library weight chosen
  on validation as ``raman-train export`` chooses the service's; ``<net>+tta``: test-time
  augmentation (softmax averaged over shifts of -2..2 grid points); ``<net>+embed``: a library
  search in the network's last hidden layer (best cosine match per class among the training
  spectra); ``<net>+embed_derivative``: the same with each reference's similarity averaged with
  its derivative HQI.

Besides Table 2 metrics it measures calibration (ECE before/after temperature scaling), an
open-set rejection experiment (20 % of the classes never seen in training), and optionally the
wall time of one full-size training epoch. Partial results are rewritten after every run.

    python bench/bench_accuracy.py --subsets dataset_1 --n-splits 3 --width-div 8 --out bench/out/x
    python bench/bench_accuracy.py --tiny --out /tmp/bench_tiny      # CI: < 2 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy_report import OPENSET_SCORES, write_markdown

from spectra.card import Calibration
from spectra.grid import Grid
from spectra.library import SEARCHES, AdaptedSearch, LibrarySearch, make_search
from spectra.references import References
from spectra.scoring import combined_probabilities, match_margin, softmax
from training.augment import AugmentConfig
from training.calibration import (
    accuracy_coverage,
    auroc,
    expected_calibration_error,
    fit_temperature,
    impostor_similarity_threshold,
    reliability_bins,
)
from training.datasets import PRESETS, Dataset, SubsetRule, build_dataset
from training.metrics import (
    aggregate,
    classification_report,
    confusion_matrix,
    top1_by_support,
)
from training.model import (
    DRCNN,
    DRCNNConfig,
    LiuCNN,
    LiuCNNConfig,
    count_parameters,
)
from training.pipeline import (
    LIB_T_BOUNDS,
    calibrate_and_publish,
    card_search_scores,
    choose_library_weight,
    library_references,
    reference_similarities,
    served_scores,
)
from training.splits import Split, make_split, stratified_split
from training.train import (
    Arrays,
    TrainConfig,
    epoch_logger,
    fit,
    load_checkpoint,
    predict_embeddings,
    predict_logits,
    resolve_device,
)

DEFAULT_RRUFF = Path("/work/shared/data/rruff_excellent_unoriented_2019/excellent_unoriented.zip")
# cosine, correlation, derivative, adapted; and adapted_pre: the adapted search whose whitening
# also learns from the minerals outside the subset that a "_pre" network pre-trains on
LIBRARY_METHODS = (*SEARCHES, "adapted_pre")
# log-gain coefficients +-1.0: over the bands two spectra of one RRUFF sample at different
# lasers share, the drawn log gain ranges 0.23-0.70 (quartiles; median 0.43), the fitted log
# ratio of the real pairs 0.33-0.81 (median 0.53; part of it band-specific): bench/band_gain.py
GAIN = 1.0
AUGMENT = AugmentConfig(shift=2.0, noise=0.005, baseline=0.0, scale=0.1)
# the augmentation variants, one transform each; scale alone is the identity after the min-max
# re-normalisation that `augment` ends with, so it only acts together with noise or baseline
AUGMENT_ALONE = {
    "drcnn_shift": AugmentConfig(shift=2.0),
    "drcnn_noise": AugmentConfig(noise=0.005),
    "drcnn_baseline": AugmentConfig(baseline=0.05),
    "drcnn_gain": AugmentConfig(gain=GAIN),
}
WEIGHT_DECAY = 0.05  # decoupled; what ConvNeXt and most AdamW-trained CNNs use
MIXUP_ALPHA = 0.4  # Beta(0.4, 0.4): within the 0.1-0.4 that Zhang et al. found best on ImageNet
NETWORKS: dict[str, dict[str, Any]] = {
    "drcnn": {},
    "drcnn_rs": {"recursive_supervision": True},
    "liu": {"arch": "liu2017"},
    "drcnn_aug": {"augment": AUGMENT},
    **{name: {"augment": cfg} for name, cfg in AUGMENT_ALONE.items()},
    "drcnn_ls": {"label_smoothing": 0.1},
    "drcnn_bn": {"bn_momentum": 0.1},
    "drcnn_dx": {"input_transform": "derivative"},
    "drcnn_rs_dx": {"recursive_supervision": True, "input_transform": "derivative"},
    "drcnn_cos": {"lr_schedule": "cosine"},
    "drcnn_rs_cos": {"recursive_supervision": True, "lr_schedule": "cosine"},
    "drcnn_nc": {"head": "cosine"},
    "drcnn_rs_nc": {"recursive_supervision": True, "head": "cosine"},
    "drcnn_rs_mix": {"recursive_supervision": True, "mixup": MIXUP_ALPHA},
    "drcnn_rs_wd": {"recursive_supervision": True, "weight_decay": WEIGHT_DECAY},
    "drcnn_rs_swa": {"recursive_supervision": True, "swa": True},
    "drcnn_rs_gain": {"recursive_supervision": True, "augment": AugmentConfig(gain=GAIN)},
    "drcnn_rs_pre": {"recursive_supervision": True, "pretrain": True},
}
# what a "pretrain" network is pre-trained on: this subset's classes, less the target subset's
PRETRAIN_SOURCE = "dataset_2"
DEFAULT_METHODS = ",".join(
    (
        "cosine",
        "correlation",
        "derivative",
        "adapted",
        "drcnn",
        "drcnn_rs",
        "liu",
        "drcnn_aug",
        "drcnn+lib",
        "drcnn+derivative",
        "drcnn+tta",
    )
)
TTA_SHIFTS = (-2, -1, 0, 1, 2)
# library searches in a trained network's feature space ("<net>+embed", see embedding_scores)
EMBED_METHODS = ("embed", "embed_derivative")
# "<net>+<library method>_fit": the mix's library weight chosen on validation as export does
# (`choose_library_weight`); without the suffix the weight is fixed at 0.5
FIT_SUFFIX = "_fit"
HISTORY_KEYS = (
    "epoch",
    "train_loss",
    "train_acc",
    "grad_norm_mean",
    "grad_norm_max",
    "val_loss",
    "val_acc",
    "swa_val_loss",  # with weight averaging: the average's, from its first epoch on
    "swa_val_acc",
    "seconds",  # since the training started: where a slow run spent its time
)
IMPOSTOR_SHARES = (0.05, 0.1, 0.2)  # false-accept targets of the stricter open-set rules
OPENSET_LIBRARY_SEEDS = 5  # class hold-outs of the library-only open-set experiment
MIN_UNIT_SECONDS = 10.0  # with less time before --deadline no (split, method) unit starts


@dataclass
class Options:
    """Resolved command-line options."""

    rruff: Path
    cache: Path
    out: Path
    subsets: list[str]
    n_splits: int
    n_grouped: int
    width_div: int
    dense_width_div: int | None
    epochs: int
    patience: int
    lr: float
    aux_weight: float
    methods: list[str]
    device: str
    threads: int
    grid_points: int | None
    max_classes: int | None
    openset: bool
    openset_share: float
    openset_method: str
    openset_holdouts: int | None
    time_full_epoch: int
    tiny: bool
    deadline_at: float | None = None  # wall clock (time.time()) after which no unit starts
    # A training stops train_reserve seconds before the deadline, so that its evaluation, figures
    # and the units derived from it (+derivative, +tta) still run; none starts with less than
    # min_train seconds left: a network cut off after a few epochs says nothing about the method.
    train_reserve: float = 45.0
    min_train: float = 120.0
    grad_clip: float = 0.0  # TrainConfig.grad_clip (0 = off, the paper)
    keep_logits: bool = False  # each trained network's logits.npz in its work folder
    seed: int = 0
    # added to a split's seed to seed its networks' initialisation and batch order: trainings of
    # the same split that differ only there (ensembles, run-to-run spread); 0 = earlier runs
    init_seed_offset: int = 0
    pretrain_epochs: int = 30  # of a "pretrain" network's pre-training (no validation: last epoch)
    pretrain_lr: float | None = None  # its learning rate (None: --lr, as the split's training)
    tag: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- data


def subset_rule(name: str, grid_points: int | None) -> SubsetRule:
    """The paper's rule for `name`, optionally on a grid of `grid_points` over the same range."""
    rule = PRESETS[name]
    if grid_points and grid_points != rule.grid.points:
        grid = Grid(rule.grid.start, rule.grid.stop, grid_points)
        rule = replace(rule, name=f"{name}_L{grid_points}", grid=grid)
    return rule


def load_subset(rruff: Path, rule: SubsetRule, cache: Path) -> Dataset:
    """Build the subset from the RRUFF zip, or load it from the .npz cache (then the zip itself
    need not be present: a GPU machine gets the cache only)."""
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"{Path(rruff).stem}_{rule.name}_{rule.grid.points}.npz"
    if path.exists():
        return Dataset.load(path)
    if not Path(rruff).exists():
        raise SystemExit(f"RRUFF data not found: {rruff} (pass --rruff), and no cache {path}")
    ds, _ = build_dataset(rruff, rule)
    ds.info["source"] = str(rruff)
    ds.save(path)
    return ds


def subset_dataset(
    rruff: Path, cache: Path, name: str, grid_points: int | None, max_classes: int | None
) -> Dataset:
    """Subset `name` as the benchmark runs it: on `grid_points` (see `subset_rule`), cached
    (`load_subset`), and with `max_classes` only its largest classes."""
    ds = load_subset(rruff, subset_rule(name, grid_points), cache)
    return restrict_classes(ds, largest_classes(ds, max_classes)) if max_classes else ds


def restrict_classes(ds: Dataset, keep: np.ndarray) -> Dataset:
    """The spectra of the classes in `keep` (class indices), re-indexed 0..len(keep)-1."""
    keep = np.sort(np.asarray(keep))
    remap = np.full(len(ds.classes), -1, dtype=np.int64)
    remap[keep] = np.arange(keep.size)
    rows = np.flatnonzero(remap[ds.y] >= 0)
    return Dataset(
        ds.x[rows],
        remap[ds.y[rows]],
        [ds.classes[i] for i in keep],
        ds.groups[rows],
        ds.sources[rows],
        ds.coverage[rows],
        ds.grid,
        dict(ds.info),
    )


def largest_classes(ds: Dataset, k: int) -> np.ndarray:
    """Indices of the k most populated classes (ties by index)."""
    counts = np.bincount(ds.y, minlength=len(ds.classes))
    return np.argsort(-counts, kind="stable")[:k]


def dataset_counts(ds: Dataset) -> dict[str, Any]:
    """Classes, spectra, samples and the build report, for the results."""
    per_class = np.bincount(ds.y, minlength=len(ds.classes))
    return {
        "classes": len(ds.classes),
        "spectra": len(ds),
        "samples": int(np.unique(ds.groups).size),
        "spectra_per_class": {"min": int(per_class.min()), "max": int(per_class.max())},
        "grid": ds.grid.to_dict(),
        "build_report": ds.info.get("report", {}),
    }


# ----------------------------------------------------------------------------- networks


def build_network(
    method: str, ds: Dataset, opts: Options, n_classes: int | None = None
) -> nn.Module:
    """The network of a method, sized for the data set (or for `n_classes` outputs)."""
    spec = NETWORKS[method]
    length, n = ds.grid.points, n_classes or len(ds.classes)
    if spec.get("arch") == "liu2017":
        return LiuCNN(LiuCNNConfig(input_length=length, n_classes=n, width_div=opts.width_div))
    cfg = DRCNNConfig(
        input_length=length,
        n_classes=n,
        width_div=opts.width_div,
        dense_width_div=opts.dense_width_div,
        recursive_supervision=bool(spec.get("recursive_supervision")),
        input_transform=spec.get("input_transform", "none"),
        head=spec.get("head", "linear"),
    )
    net = DRCNN(cfg)
    if "bn_momentum" in spec:  # the paper's Keras BatchNorm uses 0.01 (see docs/accuracy.md)
        for m in net.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.momentum = spec["bn_momentum"]
    return net


def time_left(opts: Options) -> float:
    """Seconds until --deadline (infinite without one)."""
    return float("inf") if opts.deadline_at is None else opts.deadline_at - time.time()


def swa_start(epochs: int) -> int:
    """First epoch of the weight average: the second half of the schedule (the constant-rate
    networks' validation accuracy is flat from about a half to two thirds of 60 epochs on)."""
    return epochs // 2 + 1


def train_config(method: str, opts: Options, seed: int) -> TrainConfig:
    """The paper's optimisation settings plus the method's one change. No per-epoch checkpoint
    files (a benchmark keeps only the best weights); a run that reaches --deadline stops there
    and is recorded as stopped by "time_limit"."""
    spec = NETWORKS[method]
    left = time_left(opts)
    return TrainConfig(
        epochs=opts.epochs,
        patience=opts.patience,
        lr=opts.lr,
        lr_schedule=str(spec.get("lr_schedule", "constant")),
        seed=seed + opts.init_seed_offset,
        device=opts.device,
        progress=False,
        label_smoothing=float(spec.get("label_smoothing", 0.0)),
        weight_decay=float(spec.get("weight_decay", 0.0)),
        grad_clip=opts.grad_clip,
        aux_weight=opts.aux_weight if spec.get("recursive_supervision") else 0.0,
        augment=spec.get("augment", AugmentConfig()),
        mixup=float(spec.get("mixup", 0.0)),
        swa_start=swa_start(opts.epochs) if spec.get("swa") else 0,
        checkpoint_every_epoch=False,
        max_seconds=None if left == float("inf") else max(left - opts.train_reserve, 0.0),
    )


@dataclass
class Trained:
    """A trained network's logits on one split (what derived methods reuse)."""

    val_logits: np.ndarray
    test_logits: np.ndarray
    model: nn.Module
    info: dict[str, Any]


def train_network(
    method: str, ds: Dataset, split: Split, opts: Options, seed: int, run_dir: Path
) -> Trained:
    """Train on the split's training part (early stopping on validation), keep the best."""
    net = build_network(method, ds, opts)
    cfg = train_config(method, opts, seed)
    pre: dict[str, Any] = {}
    if NETWORKS[method].get("pretrain"):
        state, pre = pretrained_state(method, ds, opts)
        load_features(net, state)
    data = Arrays(ds.x[split.train], ds.y[split.train], ds.x[split.val], ds.y[split.val])
    progress = epoch_logger(f"{run_dir.parent.name}/{run_dir.name}", cfg.epochs)
    result = fit(net, data, cfg, run_dir, on_epoch=progress)
    # evaluate where it trained: a paper-size DRCNN on 2 CPU threads takes minutes per split
    model, _ = load_checkpoint(result.best_path, str(resolve_device(cfg.device)))
    info = {
        "parameters": count_parameters(model),
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "best_val_acc": result.best_val_acc,
        "stopped": result.stopped,
        "train_seconds": round(result.seconds, 1),
        **({"pretrain": pre} if pre else {}),
        # per-epoch curve, so that a run that went wrong can be read afterwards
        "history": [
            {k: round(v, 4) for k, v in h.items() if k in HISTORY_KEYS} for h in result.history
        ],
    }
    for p in run_dir.glob("*.pt"):  # checkpoints of a benchmark are not kept
        p.unlink()
    trained = Trained(
        predict_logits(model, ds.x[split.val]), predict_logits(model, ds.x[split.test]), model, info
    )
    if opts.keep_logits:  # per-spectrum outputs, so that new mixes need no retraining
        np.savez_compressed(
            run_dir / "logits.npz",
            val_rows=split.val,
            val_logits=trained.val_logits,
            test_rows=split.test,
            test_logits=trained.test_logits,
        )
    return trained


_OUTSIDE: dict[tuple[str, ...], Dataset] = {}  # outside_spectra's, by data source and subset


def outside_spectra(ds: Dataset, opts: Options) -> Dataset:
    """RRUFF spectra of the minerals outside `ds`: PRETRAIN_SOURCE's classes not in `ds`, on its
    grid, less any spectrum of an RRUFF sample that `ds` holds (none in our copy: the build drops
    spectra filed under two names). No test spectrum of any split of `ds` can be among them.
    Built once per subset (every split's pre-training lookup and `adapted_pre` search use it)."""
    key = (str(opts.rruff), str(opts.cache), str(opts.grid_points), *ds.classes)
    if key not in _OUTSIDE:
        _OUTSIDE[key] = _build_outside(ds, opts)
    return _OUTSIDE[key]


def _build_outside(ds: Dataset, opts: Options) -> Dataset:
    src = subset_dataset(opts.rruff, opts.cache, PRETRAIN_SOURCE, opts.grid_points, None)
    src = take_rows(src, np.flatnonzero(~np.isin(src.groups, ds.groups)))
    inside, present = set(ds.classes), np.bincount(src.y, minlength=len(src.classes)) > 0
    keep = [i for i, c in enumerate(src.classes) if c not in inside and present[i]]
    if not keep:
        raise SystemExit(f"no {PRETRAIN_SOURCE} mineral lies outside the subset to pre-train on")
    return restrict_classes(src, np.array(keep, dtype=np.int64))


def take_rows(ds: Dataset, rows: np.ndarray) -> Dataset:
    """The spectra `rows` of `ds`, with all its classes."""
    return Dataset(
        ds.x[rows],
        ds.y[rows],
        ds.classes,
        ds.groups[rows],
        ds.sources[rows],
        ds.coverage[rows],
        ds.grid,
        dict(ds.info),
    )


def pretrained_state(
    method: str, ds: Dataset, opts: Options
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The weights of `method`'s network pre-trained on `outside_spectra` for --pretrain-epochs
    (all of them trained on, the last epoch kept), and what the pre-training did. Cached under
    --cache by everything that shapes it, so the splits and parallel runs share one."""
    src = outside_spectra(ds, opts)
    cfg = replace(
        train_config(method, opts, 0),
        epochs=opts.pretrain_epochs,
        patience=opts.pretrain_epochs,
        lr=opts.pretrain_lr or opts.lr,
    )
    key = {
        "method": method,
        "source": PRETRAIN_SOURCE,
        "grid": ds.grid.to_dict(),
        "classes": src.classes,
        "spectra": len(src),
        "width_div": opts.width_div,
        "dense_width_div": opts.dense_width_div,
        "train": {k: v for k, v in cfg.to_dict().items() if k not in ("device", "max_seconds")},
    }
    digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]
    path = opts.cache / f"pretrained_{method}_{digest}.pt"
    if path.exists():
        blob = torch.load(path, map_location="cpu", weights_only=False)
        return blob["state_dict"], blob["stats"]
    net = build_network(method, ds, opts, n_classes=len(src.classes))
    empty = np.zeros((0, ds.grid.points), np.float32)
    data = Arrays(src.x, src.y, empty, np.zeros(0, np.int64))
    work = opts.out / "work" / f"pretrain_{method}_{digest}"
    result = fit(net, data, cfg, work, on_epoch=epoch_logger(work.name, cfg.epochs))
    last = result.history[-1]
    stats = {
        "source": PRETRAIN_SOURCE,
        "classes": len(src.classes),
        "spectra": len(src),
        "samples": int(np.unique(src.groups).size),
        "epochs_run": result.epochs_run,
        "stopped": result.stopped,
        "final_train_acc": round(last["train_acc"], 4),
        "final_train_loss": round(last["train_loss"], 4),
        "seconds": round(result.seconds, 1),
        "cache": path.name,
    }
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    for p in work.glob("*.pt"):
        p.unlink()
    if result.stopped != "time_limit":  # a cut pre-training is used once, never cached
        tmp = path.with_suffix(".tmp")
        torch.save({"state_dict": state, "stats": stats, "key": key}, tmp)
        tmp.replace(path)  # atomic: a parallel run never reads half a file
    return state, stats


def load_features(net: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Every pre-trained weight but the output layer's into `net` (whose classes differ)."""
    features = {k: v for k, v in state.items() if not k.startswith("out.")}
    missing, unexpected = net.load_state_dict(features, strict=False)
    if unexpected or any(not k.startswith("out.") for k in missing):
        raise ValueError(f"pre-trained weights do not fit: {missing=} {unexpected=}")


def tta_logits(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """Log of the softmax averaged over integer shifts of the input (zero fill)."""
    probs = np.zeros((len(x), 0))
    for s in TTA_SHIFTS:
        p = softmax(predict_logits(model, shift_points(x, s)))
        probs = p if probs.size == 0 else probs + p
    return np.log(probs / len(TTA_SHIFTS) + 1e-12)


def shift_points(x: np.ndarray, s: int) -> np.ndarray:
    """Spectra shifted by `s` grid points to the right (zero fill at the edge)."""
    out = np.zeros_like(x)
    if s > 0:
        out[:, s:] = x[:, :-s]
    elif s < 0:
        out[:, :s] = x[:, -s:]
    else:
        out[:] = x
    return out


# ----------------------------------------------------------------------------- scores


def library_scores(
    ds: Dataset, split: Split, metric: str, rows: np.ndarray, outside: Dataset | None = None
) -> np.ndarray:
    """Best similarity per class of `rows` against the training part (the library); `outside`:
    the spectra of other minerals that "adapted_pre" fits its whitening on besides."""
    lib = bench_search(ds.x[split.train], ds.y[split.train], metric, outside)
    scores = lib.class_scores(ds.x[rows], len(ds.classes))
    return np.where(np.isfinite(scores), scores, lib.lowest_score)


def bench_search(
    x: np.ndarray, y: np.ndarray, metric: str, outside: Dataset | None = None
) -> LibrarySearch:
    """The library search `metric` (one of LIBRARY_METHODS) over the labelled spectra."""
    if metric != "adapted_pre":
        return make_search(x, y, metric)
    if outside is None:
        raise ValueError("adapted_pre needs the spectra outside the subset")
    return AdaptedSearch(x, y, scatter_extra=(outside.x, outside.y))


def mix_calibration(
    val_logits: np.ndarray, lib_val: np.ndarray, y_val: np.ndarray, fit_weight: bool = False
) -> Calibration:
    """How a network's logits and a library's class scores are mixed, fitted on validation:
    both temperatures, and the library weight 0.5, or with `fit_weight` the one of the
    service's weights with the lowest validation NLL (what `raman-train export` serves)."""
    calib = Calibration(
        temperature=fit_temperature(val_logits, y_val),
        library_weight=0.5,
        library_temperature=fit_temperature(lib_val, y_val, bounds=LIB_T_BOUNDS),
    )
    return choose_library_weight(val_logits, lib_val, y_val, calib) if fit_weight else calib


def ensemble_logits(
    trained: Trained,
    ds: Dataset,
    split: Split,
    metric: str,
    fit_weight: bool = False,
    outside: Dataset | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Log of the network's softmax mixed with a softmax over the library scores of `metric`
    (`mix_calibration`); with `fit_weight` the fitted mix is recorded under "mix"."""
    y_val = ds.y[split.val]
    rows = np.concatenate([split.val, split.test])
    scores = library_scores(ds, split, metric, rows, outside)
    lib_val, lib_test = scores[: len(y_val)], scores[len(y_val) :]
    calib = mix_calibration(trained.val_logits, lib_val, y_val, fit_weight)
    extra = {"mix": mix_record(calib)} if fit_weight else {}
    probs = combined_probabilities(trained.test_logits, lib_test, calib)
    return np.log(probs + 1e-12), extra


def mix_record(calib: Calibration) -> dict[str, float]:
    """The fitted mix's weight and temperatures, for a run's record."""
    return {
        "library_weight": calib.library_weight,
        "library_temperature": calib.library_temperature,
        "temperature": calib.temperature,
    }


def embedding_scores(
    model: nn.Module, ds: Dataset, split: Split, rows: np.ndarray, metric: str
) -> np.ndarray:
    """A library search in the network's learned feature space: each class scored by the
    query's best cosine match, in the last hidden layer, among the training part's spectra.
    With metric "embed_derivative" each reference's similarity is the mean of that cosine and
    the derivative HQI (no weight fitted): two views of the same reference must agree."""
    y_train = ds.y[split.train]
    # cosine search over the training part's embeddings: the library search, in feature space
    lib = LibrarySearch(predict_embeddings(model, ds.x[split.train]), y_train, metric="cosine")
    sim = lib.similarity(predict_embeddings(model, ds.x[rows]))
    if metric == "embed_derivative":
        deriv = LibrarySearch(ds.x[split.train], y_train, metric="derivative")
        sim = 0.5 * (sim + deriv.similarity(ds.x[rows]))
    scores = lib.best_per_class(sim, len(ds.classes))
    return np.where(np.isfinite(scores), scores, lib.lowest_score)


def calibration_stats(trained: Trained, y_val: np.ndarray, y_test: np.ndarray) -> dict[str, Any]:
    """Temperature fitted on validation; ECE on test before and after."""
    t = fit_temperature(trained.val_logits, y_val)
    before, after = softmax(trained.test_logits), softmax(trained.test_logits, t)
    return {
        "temperature": t,
        "ece_before": expected_calibration_error(before, y_test),
        "ece_after": expected_calibration_error(after, y_test),
        "bins_before": reliability_bins(before, y_test),
        "bins_after": reliability_bins(after, y_test),
    }


# ----------------------------------------------------------------------------- open set


def openset_classes(n: int, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(known, unknown) class indices: `share` of the n classes held out, drawn by seed."""
    rng = np.random.default_rng(10_000 + seed)
    unknown = rng.choice(n, max(1, round(share * n)), replace=False)
    return np.setdiff1d(np.arange(n), unknown), unknown


def openset_library(ds: Dataset, opts: Options, seeds: range) -> dict[str, Any]:
    """The open-set experiment for the library searches alone (no network to train): over
    several class hold-outs, how well each search's best HQI separates known test spectra
    from spectra of held-out minerals (AUROC), and its known-class top-1."""
    per_metric: dict[str, list[dict[str, float]]] = {m: [] for m in SEARCHES}
    for seed in seeds:
        known, unknown = openset_classes(len(ds.classes), opts.openset_share, seed)
        kds = restrict_classes(ds, known)
        split = stratified_split(kds.y, seed)
        x_unk = ds.x[np.isin(ds.y, unknown)]
        for metric in SEARCHES:
            lib = make_search(kds.x[split.train], kds.y[split.train], metric)
            sim_known, sim_unk = lib.similarity(kds.x[split.test]), lib.similarity(x_unk)
            pred = lib.labels[sim_known.argmax(1)]
            per_metric[metric].append(
                {
                    "auroc": auroc(sim_known.max(1), sim_unk.max(1)),
                    "known_top1": float((pred == kds.y[split.test]).mean()),
                }
            )
    return {
        "method": "library",
        "seeds": list(seeds),
        "classes_unknown": max(1, round(opts.openset_share * len(ds.classes))),
        "metrics": {m: aggregate(v) for m, v in per_metric.items()},
    }


def openset_summary(method: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A network's open-set entry: every hold-out's result, and the mean and std over them of
    known top-1, each score's AUROC and the rule's operating point."""
    flat = [
        {
            "known_top1": r["known_top1"],
            **{f"auroc_{k}": v for k, v in r["auroc"].items()},
            **{f"rule_{k}": v for k, v in r["rule_operating_point"].items()},
            **{
                f"impostor_{share}_{k}": v
                for share, point in r.get("impostor_rules", {}).items()
                for k, v in point.items()
            },
        }
        for r in runs
    ]
    return {"method": method, "holdouts": runs, "summary": aggregate(flat)}


def openset_experiment(ds: Dataset, opts: Options, seed: int, work: Path) -> dict[str, Any]:
    """Hold out a share of the classes entirely (drawn by `seed`), train on the rest, and ask
    how well each "no confident match" score separates known test spectra from unknown ones.
    The network is calibrated and given its references exactly as export does
    (`calibrate_and_publish`), so "probability", "similarity" and "combined" are what the
    service would return and apply."""
    known, unknown = openset_classes(len(ds.classes), opts.openset_share, seed)
    kds = restrict_classes(ds, known)
    split = stratified_split(kds.y, seed)
    method = opts.openset_method
    trained = train_network(method, kds, split, opts, seed, work / f"openset_{method}")
    calib, _, refs = calibrate_and_publish(trained.model, kds, split)
    x_unk = ds.x[np.isin(ds.y, unknown)]
    known_sc = _open_scores(trained.model, kds.x[split.test], calib, refs)
    unk_sc = _open_scores(trained.model, x_unk, calib, refs)
    known_right = known_sc["pred"] == kds.y[split.test]
    correct = np.concatenate([known_right, np.zeros(len(x_unk), bool)])
    out: dict[str, Any] = {
        "method": method,
        "seed": seed,
        "classes_known": int(known.size),
        "classes_unknown": int(unknown.size),
        "test_known": int(split.test.size),
        "test_unknown": len(x_unk),
        "references": len(refs.classes),
        "calibration": asdict(calib),
        "rule": {"min_probability": calib.min_probability, "min_similarity": calib.min_similarity},
        "known_top1": float(known_right.mean()),
        "known_top1_network": float((known_sc["network_pred"] == kds.y[split.test]).mean()),
        "train": trained.info,
        "auroc": {},
        "coverage": {},
    }
    for key in OPENSET_SCORES:
        out["auroc"][key] = auroc(known_sc[key], unk_sc[key])
        conf = np.concatenate([known_sc[key], unk_sc[key]])
        out["coverage"][key] = accuracy_coverage(conf, correct)
    out["rule_operating_point"] = _operating_point(calib, known_sc, unk_sc, known_right)
    # stricter rules for users who expect unknown minerals: min_similarity raised to what a
    # share of "impostors" (validation spectra matched against the other classes) would pass
    val_sims = reference_similarities(
        kds.x[split.val], library_references(kds, split.train), calib.similarity, len(known)
    )
    out["impostor_rules"] = {}
    for share in IMPOSTOR_SHARES:
        t = impostor_similarity_threshold(val_sims, kds.y[split.val], share)
        strict = replace(calib, min_similarity=max(calib.min_similarity, t))
        point = _operating_point(strict, known_sc, unk_sc, known_right)
        out["impostor_rules"][str(share)] = {"min_similarity": strict.min_similarity, **point}
    return out


def _operating_point(
    calib: Calibration,
    known_sc: dict[str, np.ndarray],
    unk_sc: dict[str, np.ndarray],
    known_right: np.ndarray,
) -> dict[str, float]:
    """Shares of known and unknown test spectra the rule of `calib` accepts as a match, and
    the accuracy among the accepted known ones."""
    acc_k, acc_u = (
        match_margin(sc["probability"], sc["similarity"], calib) >= 0 for sc in (known_sc, unk_sc)
    )
    return {
        "known_accepted": float(acc_k.mean()),
        "unknown_accepted": float(acc_u.mean()),
        "accuracy_of_accepted_known": float(known_right[acc_k].mean() if acc_k.any() else 0.0),
    }


def _open_scores(
    model: nn.Module, x: np.ndarray, calib: Calibration, refs: References
) -> dict[str, np.ndarray]:
    """Per spectrum, what the service would answer with this calibration and these references:
    its prediction, top-1 probability (network and library mixed), the card metric's similarity
    to the predicted class's closest reference and the rule's margin (>= 0 means "match"); the
    network's own prediction and calibrated top-1 probability; and the best HQI of the cosine and
    derivative searches over the same references."""
    logits = predict_logits(model, x)
    n = logits.shape[1]
    served = served_scores(logits, card_search_scores(x, refs, calib, n), calib)
    sims = {m: reference_similarities(x, refs, m, n) for m in ("cosine", "derivative")}
    network = softmax(logits, calib.temperature)
    return {
        "pred": served.pred,
        "network_pred": network.argmax(1),
        "network_probability": network.max(1),
        "probability": served.probability,
        "similarity": served.similarity,
        "combined": served.margin,
        # a class's score is its best row, so the best class score is the search's best HQI
        "library_hqi": sims["cosine"].max(1),
        "library_derivative": sims["derivative"].max(1),
    }


# ----------------------------------------------------------------------------- timing


def time_full_epoch(ds: Dataset, n_train: int, batches: int) -> dict[str, Any]:
    """Wall time of `batches` training steps (batch 32) of the paper-size DRCNN on this CPU,
    extrapolated to one epoch of `n_train` spectra."""
    torch.manual_seed(0)
    net = DRCNN(DRCNNConfig(input_length=ds.grid.points, n_classes=len(ds.classes)))
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    x = torch.from_numpy(ds.x[:32]).unsqueeze(1)
    y = torch.from_numpy(ds.y[:32])
    net.train()
    times = []
    for _ in range(batches + 1):  # the first step warms up allocators: not counted
        start = time.perf_counter()
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    per_batch = float(np.median(times[1:]))
    n_batches = -(-n_train // 32)
    return {
        "parameters": count_parameters(net),
        "input_length": ds.grid.points,
        "classes": len(ds.classes),
        "batches_measured": batches,
        "seconds_per_batch": per_batch,
        "batch_times": times,
        "train_spectra": n_train,
        "batches_per_epoch": n_batches,
        "epoch_seconds_extrapolated": per_batch * n_batches,
        "threads": torch.get_num_threads(),
        "note": "median of measured steps x batches per epoch (extrapolated, validation excluded)",
    }


# ----------------------------------------------------------------------------- machine


def machine_info() -> dict[str, Any]:
    """CPU model and cores from /proc/cpuinfo, GPU name if any, software versions."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "git_commit": _git_commit(),
    }


def _git_commit() -> str:
    """HEAD's short hash, else $GIT_COMMIT (a GPU machine gets the working tree without .git)."""
    if os.environ.get("GIT_COMMIT"):
        return os.environ["GIT_COMMIT"][:7]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# ----------------------------------------------------------------------------- orchestration


class Bench:
    """Runs every (subset, split, method) and rewrites results after each one."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.start = time.time()
        self.results: dict[str, Any] = {
            "options": _jsonable(opts.__dict__),
            "machine": machine_info(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "datasets": {},
            "runs": [],
            "calibration": {},
            "openset": {},
            "figures": {},
        }

    def save(self) -> None:
        """Write results.json and results.md (called after every finished unit)."""
        self.results["wall_seconds"] = round(time.time() - self.start, 1)
        out = self.opts.out
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(self.results, indent=1) + "\n")
        (out / "results.md").write_text(write_markdown(self.results))

    def run(self) -> dict[str, Any]:
        """The whole benchmark."""
        for name in self.opts.subsets:
            ds = self._dataset(name)
            if self.opts.time_full_epoch:
                n_train = stratified_split(ds.y, 0).train.size
                timing = time_full_epoch(ds, n_train, self.opts.time_full_epoch)
                self.results.setdefault("full_size_epoch", {})[name] = timing
                self.save()
            kinds = ["random"] * self.opts.n_splits + ["grouped"] * self.opts.n_grouped
            seeds = list(range(self.opts.n_splits)) + list(range(self.opts.n_grouped))
            for kind, seed in zip(kinds, seeds, strict=True):
                if not self._has_time():
                    break
                self._split(name, ds, kind, self.opts.seed + seed)
            if self.opts.openset and self._has_time():
                self._openset(name, ds)
        self.save()
        return self.results

    def _has_time(self, needed: float = MIN_UNIT_SECONDS) -> bool:
        """Whether a unit needing `needed` seconds may start before --deadline (noted in the
        results when not)."""
        if time_left(self.opts) >= needed:
            return True
        self.results["deadline_reached"] = True
        return False

    def _dataset(self, name: str) -> Dataset:
        o = self.opts
        ds = subset_dataset(o.rruff, o.cache, name, o.grid_points, o.max_classes)
        self.results["datasets"][name] = dataset_counts(ds)
        self.save()
        return ds

    def _split(self, name: str, ds: Dataset, kind: str, seed: int) -> None:
        split = make_split(kind, ds.y, ds.groups, seed)
        trained: dict[str, Trained] = {}
        for method in self.opts.methods:
            base = method.partition("+")[0]
            if base in NETWORKS and base not in trained and not self._has_time(self.opts.min_train):
                continue  # the library methods later in the list may still fit
            if not self._has_time():
                break
            t0 = time.time()
            work = self.opts.out / "work" / f"{name}_{ds.grid.points}_{kind}{seed}"
            scores, extra = self._scores(method, ds, split, seed, trained, work)
            y_te = ds.y[split.test]
            rec = {
                "subset": name,
                "split": kind,
                "seed": seed,
                "method": method + self.opts.tag,
                "split_sizes": split.sizes(),
                "metrics": classification_report(scores, y_te, len(ds.classes)),
                "top1_by_support": top1_by_support(
                    scores, y_te, np.bincount(ds.y[split.train], minlength=len(ds.classes))
                ),
                "seconds": round(time.time() - t0, 1),
                **extra,
            }
            pred = scores.argmax(1)
            rec["confusion_pairs"] = _pairs(confusion_matrix(y_te, pred, len(ds.classes)))
            self.results["runs"].append(rec)
            if kind == "random" and seed == self.opts.seed and method == self._figure_method():
                figs = f"{name}_{method}"
                self._figures_split(figs, ds, split, scores, trained[method])
            self.save()
            print(f"[{name} {kind} {seed}] {method}: top1 {rec['metrics']['top1']:.4f}", flush=True)

    def _figure_method(self) -> str | None:
        """The network whose first random split gets figures: drcnn, else the first network."""
        nets = [m for m in self.opts.methods if m in NETWORKS]
        return "drcnn" if "drcnn" in nets else (nets[0] if nets else None)

    def _scores(
        self,
        method: str,
        ds: Dataset,
        split: Split,
        seed: int,
        trained: dict[str, Trained],
        work: Path,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """The method's [n_test, C] scores on the split, and what its record adds; a network
        is trained on first use (under `work`/<network>) and reused by its derived methods."""
        if method in LIBRARY_METHODS:
            return library_scores(ds, split, method, split.test, self._outside(method, ds)), {}
        base, _, derived = method.partition("+")
        if base not in trained:
            trained[base] = train_network(base, ds, split, self.opts, seed, work / base)
        tr = trained[base]
        lib_method = derived.removesuffix(FIT_SUFFIX)
        if lib_method == "lib" or lib_method in LIBRARY_METHODS:  # "+lib" = "+cosine"
            metric = "cosine" if lib_method == "lib" else lib_method
            fit_weight, outside = derived.endswith(FIT_SUFFIX), self._outside(metric, ds)
            return ensemble_logits(tr, ds, split, metric, fit_weight, outside)
        if derived == "tta":
            return tta_logits(tr.model, ds.x[split.test]), {}
        if derived in EMBED_METHODS:
            return embedding_scores(tr.model, ds, split, split.test, derived), {}
        cal = calibration_stats(tr, ds.y[split.val], ds.y[split.test])
        return tr.test_logits, {"train": tr.info, "calibration": cal}

    def _outside(self, metric: str, ds: Dataset) -> Dataset | None:
        """The spectra outside `ds` where the search `metric` learns from them, else None."""
        return outside_spectra(ds, self.opts) if metric == "adapted_pre" else None

    def _figures_split(
        self, name: str, ds: Dataset, split: Split, scores: np.ndarray, tr: Trained
    ) -> None:
        from accuracy_report import split_figures

        figs = split_figures(name, ds, split, scores, tr, self.opts.out / "figures")
        self.results["figures"].update(figs)

    def _openset(self, name: str, ds: Dataset) -> None:
        """The open-set experiment over --openset-holdouts class hold-outs (seeds --seed,
        --seed + 1, ...; parts run with other seeds merge into one entry):
        the library searches over all of them at once; a network is trained once per hold-out,
        each saved as it finishes, while time remains."""
        opts, entries = self.opts, self.results["openset"]
        if opts.openset_method == "library":
            entries[name] = openset_library(
                ds,
                opts,
                range(opts.seed, opts.seed + (opts.openset_holdouts or OPENSET_LIBRARY_SEEDS)),
            )
            self.save()
            return
        runs: list[dict[str, Any]] = []
        for seed in range(opts.seed, opts.seed + (opts.openset_holdouts or 1)):
            if runs and not self._has_time():
                break
            runs.append(openset_experiment(ds, opts, seed, opts.out / "work" / name))
            entries[name] = openset_summary(opts.openset_method, runs)
            self.save()
        self._figures_openset(name)
        self.save()

    def _figures_openset(self, name: str) -> None:
        from training.plots import plot_accuracy_coverage

        curves = self.results["openset"][name]["holdouts"][0]["coverage"]
        path = self.opts.out / "figures" / f"{name}_openset_coverage.png"
        plot_accuracy_coverage(curves, path)
        self.results["figures"][f"{name}_openset_coverage"] = path.name


def _pairs(cm: np.ndarray, top: int = 5) -> list[list[int]]:
    """The most frequent (true, predicted, count) confusions by class index."""
    off = cm.copy()
    np.fill_diagonal(off, 0)
    idx = np.argsort(-off.ravel(), kind="stable")[:top]
    flat = off.ravel()
    return [[int(i // cm.shape[1]), int(i % cm.shape[1]), int(flat[i])] for i in idx if flat[i]]


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in d.items()}


# ----------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None = None) -> Options:
    """Command-line options; --tiny overrides sizes for a CI-speed run."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rruff", type=Path, default=DEFAULT_RRUFF, help="RRUFF zip or folder")
    p.add_argument("--cache", type=Path, default=Path("bench/cache"), help="built .npz subsets")
    p.add_argument("--out", type=Path, default=Path("bench/out/accuracy"))
    p.add_argument("--subsets", default="dataset_1,dataset_2")
    p.add_argument("--n-splits", type=int, default=30, help="random splits (paper: 30)")
    p.add_argument("--n-grouped", type=int, default=1, help="splits grouped by RRUFF sample")
    p.add_argument("--width-div", type=int, default=1, help="1 = paper sizes; CPU runs use 8")
    p.add_argument(
        "--dense-width-div", type=int, default=None, help="DRCNN dense widths (default width-div)"
    )
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--patience", type=int, default=30)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--aux-weight", type=float, default=0.5, help="recursive supervision weight")
    p.add_argument("--grad-clip", type=float, default=0.0, help="gradient norm clip (0 = off)")
    p.add_argument("--methods", default=DEFAULT_METHODS)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--grid-points", type=int, default=None, help="e.g. 1024 (same 30-1599 range)")
    p.add_argument("--max-classes", type=int, default=None, help="keep the k largest classes")
    p.add_argument("--no-openset", action="store_true", help="skip the open-set experiment")
    p.add_argument("--openset-share", type=float, default=0.2, help="share of classes held out")
    p.add_argument(
        "--openset-method",
        default="drcnn",
        choices=[*sorted(NETWORKS), "library"],
        help="the network to train, or 'library': the library searches alone",
    )
    p.add_argument(
        "--openset-holdouts",
        type=int,
        default=None,
        help="class hold-outs of the open-set experiment (default 5 for 'library', 1 for a "
        "network, which trains once per hold-out)",
    )
    p.add_argument("--time-full-epoch", type=int, default=0, metavar="BATCHES")
    p.add_argument("--seed", type=int, default=0, help="first split seed")
    p.add_argument(
        "--init-seed-offset",
        type=int,
        default=0,
        metavar="K",
        help="seed each network's initialisation and batch order with its split's seed + K "
        "(another training of the same split, e.g. an ensemble member; tag it with --tag)",
    )
    p.add_argument(
        "--deadline",
        type=float,
        default=None,
        metavar="SECONDS",
        help="wall-time budget: no unit starts after it, a training reaching it stops there",
    )
    p.add_argument(
        "--train-reserve",
        type=float,
        default=45.0,
        metavar="SECONDS",
        help="with --deadline: trainings stop this long before it",
    )
    p.add_argument(
        "--min-train",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="with --deadline: no training starts with less time left",
    )
    p.add_argument(
        "--pretrain-epochs",
        type=int,
        default=30,
        help="pre-training epochs of the '_pre' networks on the minerals outside the subset",
    )
    p.add_argument(
        "--pretrain-lr",
        type=float,
        default=None,
        help="learning rate of that pre-training (default --lr, which the splits' training uses)",
    )
    p.add_argument("--tag", default="", help="suffix for method names, e.g. @lr1e-4")
    p.add_argument(
        "--keep-logits",
        action="store_true",
        help="write each network's validation and test logits (and their rows) to "
        "OUT/work/<subset>_<points>_<kind><seed>/<network>/logits.npz (bench/mix_rules.py)",
    )
    p.add_argument("--merge", type=Path, nargs="+", help="combine earlier --out dirs into --out")
    p.add_argument("--tiny", action="store_true", help="6 classes, width/16, 2 epochs, N=1")
    a = p.parse_args(argv)
    opts = Options(
        rruff=a.rruff,
        cache=a.cache,
        out=a.out,
        subsets=[s for s in a.subsets.split(",") if s],
        n_splits=a.n_splits,
        n_grouped=a.n_grouped,
        width_div=a.width_div,
        dense_width_div=a.dense_width_div,
        epochs=a.epochs,
        patience=a.patience,
        lr=a.lr,
        aux_weight=a.aux_weight,
        methods=[m for m in a.methods.split(",") if m],
        device=a.device,
        threads=a.threads,
        grid_points=a.grid_points,
        max_classes=a.max_classes,
        openset=not a.no_openset,
        openset_share=a.openset_share,
        openset_holdouts=a.openset_holdouts,
        openset_method=a.openset_method,
        time_full_epoch=a.time_full_epoch,
        tiny=a.tiny,
        seed=a.seed,
        init_seed_offset=a.init_seed_offset,
        pretrain_epochs=a.pretrain_epochs,
        pretrain_lr=a.pretrain_lr,
        tag=a.tag,
        deadline_at=None if a.deadline is None else time.time() + a.deadline,
        train_reserve=a.train_reserve,
        min_train=a.min_train,
        grad_clip=a.grad_clip,
        keep_logits=a.keep_logits,
        extra={"merge": [str(m) for m in a.merge or []]},
    )
    if a.tiny:
        opts = replace(
            opts,
            subsets=["dataset_1"],
            n_splits=1,
            n_grouped=1,
            width_div=16,
            epochs=2,
            patience=2,
            max_classes=6,
            time_full_epoch=0,
        )
    _check_methods(opts.methods)
    return opts


def _check_methods(methods: list[str]) -> None:
    for m in methods:
        base, _, derived = m.partition("+")
        mixes = ("lib", *LIBRARY_METHODS)
        suffixes = ("", "tta", *mixes, *(f"{x}{FIT_SUFFIX}" for x in mixes), *EMBED_METHODS)
        ok = m in LIBRARY_METHODS or (base in NETWORKS and derived in suffixes)
        if not ok:
            names = [*LIBRARY_METHODS, *NETWORKS, "<net>+<library method>[_fit]", "<net>+tta"]
            names += [f"<net>+{e}" for e in EMBED_METHODS]
            raise SystemExit(f"unknown method {m!r}; choose from {', '.join(names)}")


def _merge_openset(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One open-set entry per (subset, network): runs may use different networks. A network's
    hold-outs from several parts (run with different --seed) are pooled, one per seed, and
    summarised again; a library entry of a later part replaces an earlier one."""
    merged: dict[str, Any] = {}
    for part in parts:
        for subset, entry in part.items():
            method = entry.get("method", "drcnn")
            key = f"{subset} ({method})"
            if key in merged and method != "library":
                by_seed = {h["seed"]: h for h in [*merged[key]["holdouts"], *entry["holdouts"]]}
                entry = openset_summary(method, [by_seed[k] for k in sorted(by_seed)])
            merged[key] = entry
    return merged


def merge_results(dirs: list[Path], out: Path) -> dict[str, Any]:
    """One results.json/.md from several runs' out dirs (runs concatenated; the options of the
    first, the machine of all (`_merge_machines`); per-subset entries of later dirs win)."""
    parts = [json.loads((Path(d) / "results.json").read_text()) for d in dirs]
    merged = dict(parts[0])
    merged["machine"] = _merge_machines([p["machine"] for p in parts])
    merged["runs"] = _unique_runs([r for p in parts for r in p["runs"]])
    merged["merged_from"] = {str(d): p["options"] for d, p in zip(dirs, parts, strict=True)}
    merged["wall_seconds"] = max(p.get("wall_seconds", 0) for p in parts)  # parts may overlap
    merged["wall_seconds_parts"] = {
        str(d): p.get("wall_seconds") for d, p in zip(dirs, parts, strict=True)
    }
    for key in ("datasets", "figures", "full_size_epoch", "calibration"):
        merged[key] = {k: v for p in parts for k, v in p.get(key, {}).items()}
    merged["openset"] = _merge_openset([p["openset"] for p in parts])
    methods = [r["method"] for r in merged["runs"]]
    merged["options"] = {
        **merged["options"],
        "methods": list(dict.fromkeys(methods)),
        # the header's split counts: the most any part asked for (each table gives its own N)
        **{k: max(p["options"][k] for p in parts) for k in ("n_splits", "n_grouped")},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(merged, indent=1) + "\n")
    (out / "results.md").write_text(write_markdown(merged))
    return merged


def _merge_machines(machines: list[dict[str, Any]]) -> dict[str, Any]:
    """The parts' machine entries as one: a field on which they differ (the commit each part
    ran at, the GPU of a lease beside a CPU run) lists the distinct values, in order."""
    merged: dict[str, Any] = {}
    for key in dict.fromkeys(k for m in machines for k in m):
        values = list(dict.fromkeys(str(m.get(key)) for m in machines))
        merged[key] = machines[0].get(key) if len(values) == 1 else " / ".join(values)
    return merged


def _unique_runs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One run per (subset, split kind, seed, method): parallel jobs each include the library
    search on their splits for the paired comparison, and counting those twice would shrink the
    spread. The first one wins (a library search is deterministic)."""
    seen: set[tuple[str, str, int, str]] = set()
    out = []
    for r in runs:
        key = (r["subset"], r["split"], r["seed"], r["method"])
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    opts = parse_args(argv)
    if opts.extra.get("merge"):
        merge_results([Path(d) for d in opts.extra["merge"]], opts.out)
        print(f"merged into {opts.out / 'results.json'}")
        return 0
    torch.set_num_threads(opts.threads)
    torch.backends.cudnn.benchmark = True  # fixed input shapes: pick the fastest conv kernels
    results = Bench(opts).run()
    print(f"wrote {opts.out / 'results.json'} in {results['wall_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
