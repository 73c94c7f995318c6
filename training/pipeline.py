"""The whole path as functions the CLI (and benchmarks, and fine-tune jobs) call:
data set -> split -> train -> evaluate -> calibrate -> export.

A run directory holds `run.json` (data set path, split kind and seed, model and train configs),
`best.pt`/`last.pt`, `metrics.json`, `metrics.md` and `confusion.png`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from spectra.card import Calibration
from spectra.library import make_search
from spectra.references import MAX_PER_CLASS, References, reference_rows
from spectra.scoring import (
    LibraryScores,
    ServedSearch,
    combined_probabilities,
    match_margin,
    softmax,
)
from training.calibration import (
    choose_rejection,
    expected_calibration_error,
    fit_temperature,
    impostor_similarity_threshold,
    minimise_over_log_scale,
)
from training.datasets import Dataset, top_up
from training.export import ExportInputs, export_version, next_version
from training.metrics import classification_report, confusion_matrix
from training.model import DRCNN, DRCNNConfig, LiuCNN, LiuCNNConfig
from training.splits import Split, make_split
from training.train import (
    Arrays,
    EpochCallback,
    Result,
    TrainConfig,
    fit,
    load_checkpoint,
    predict_logits,
)

SIMILARITY = "derivative"  # the card's similarity metric: the HQI shown and thresholded
SEARCH = "adapted_peaks"  # the card's ranking search, mixed with the network (the best, docs)
# candidate mixes; the network always keeps a share (0.9 added for v3: bench/mix_calibration.py)
LIBRARY_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 0.9)
LIB_T_BOUNDS = (1e-4, 10.0)  # similarities differ by hundredths: their temperature is small
NET_T_BOUNDS = (0.05, 20.0)
JOINT_TEMPERATURES = False  # refit the network's temperature in the mix (bench/mix_calibration)
JOINT_ROUNDS = 3  # coordinate descent on the two temperatures
MIN_FIT_SPECTRA = 10  # fewer validation spectra keep a prior calibration (see `calibrate`)

RRUFF_CITATION = (
    "Lafuente B, Downs R T, Yang H, Stone N (2015) The power of databases: the RRUFF project. "
    "In: Highlights in Mineralogical Crystallography, T Armbruster and R M Danisi, eds. "
    "Berlin, Germany, W. De Gruyter, pp 1-30"
)


@dataclass
class RunSpec:
    """Everything that defines one training run (saved as run.json)."""

    data: str
    split: str = "random"
    split_seed: int = 0
    arch: str = "drcnn"
    model: dict[str, Any] | None = None
    train: dict[str, Any] | None = None
    top_up_to: int | None = None

    def save(self, run_dir: Path) -> None:
        """Write run.json."""
        (run_dir / "run.json").write_text(json.dumps(self.__dict__, indent=2) + "\n")

    @classmethod
    def load(cls, run_dir: Path) -> RunSpec:
        """Read run.json."""
        return cls(**json.loads((Path(run_dir) / "run.json").read_text()))


def build_network(spec: RunSpec, ds: Dataset) -> nn.Module:
    """The network named by `spec`, sized for the data set's grid and classes."""
    opts = dict(spec.model or {})
    opts.update(input_length=ds.grid.points, n_classes=len(ds.classes))
    opts = {k: tuple(v) if isinstance(v, list) else v for k, v in opts.items()}
    if spec.arch == "liu2017":
        return LiuCNN(LiuCNNConfig(**opts))
    return DRCNN(DRCNNConfig(**opts))


def split_arrays(ds: Dataset, spec: RunSpec, seed: int) -> tuple[Split, Arrays]:
    """The run's split and its train/val arrays (training part topped up where asked)."""
    split = make_split(spec.split, ds.y, ds.groups, spec.split_seed)
    train_idx = split.train
    if spec.top_up_to:
        train_idx = top_up(train_idx, ds.y, spec.top_up_to, np.random.default_rng(seed))
    arrays = Arrays(ds.x[train_idx], ds.y[train_idx], ds.x[split.val], ds.y[split.val])
    return split, arrays


def train_run(
    spec: RunSpec, run_dir: Path, resume: bool = False, on_epoch: EpochCallback | None = None
) -> Result:
    """Train one run and evaluate its best checkpoint on the test part."""
    run_dir.mkdir(parents=True, exist_ok=True)
    spec.save(run_dir)
    ds = Dataset.load(Path(spec.data))
    cfg = TrainConfig.from_dict(spec.train or {})
    _, arrays = split_arrays(ds, spec, cfg.seed)
    net = build_network(spec, ds)
    result = fit(
        net, arrays, cfg, run_dir, resume=resume, on_epoch=on_epoch, extra={"run": spec.__dict__}
    )
    evaluate_run(run_dir, ds)
    return result


def load_run(
    run_dir: Path, ds: Dataset | None = None
) -> tuple[RunSpec, Dataset, nn.Module, dict[str, Any], Split]:
    """A finished run's spec, data set, best network, checkpoint and (recomputed) split."""
    spec = RunSpec.load(run_dir)
    ds = ds or Dataset.load(Path(spec.data))
    model, ckpt = load_checkpoint(run_dir / "best.pt")
    split, _ = split_arrays(ds, spec, ckpt["train_config"]["seed"])
    return spec, ds, model, ckpt, split


def evaluate_run(run_dir: Path, ds: Dataset | None = None) -> dict[str, Any]:
    """Test metrics of the best checkpoint, plus the library search on the same split;
    writes metrics.json, metrics.md and confusion.png."""
    from training.plots import plot_confusion

    _, ds, model, ckpt, split = load_run(run_dir, ds)
    ev = evaluate_split(model, ds, split)
    ev["training"] = {k: ckpt[k] for k in ("best_val_acc", "best_epoch", "epoch", "code_version")}
    (run_dir / "metrics.json").write_text(json.dumps(ev, indent=2) + "\n")
    (run_dir / "metrics.md").write_text(_markdown(ev))
    plot_confusion(np.asarray(ev.pop("confusion")), ds.classes, run_dir / "confusion.png")
    return ev


SEARCH_REPORTS = {
    "cosine": "library_search",
    "derivative": "derivative_search",
    "adapted": "adapted_search",
    "adapted_peaks": "adapted_peaks_search",
}
"""Searches `evaluate_split` reports (a card may name others too), by their key in its result."""


def evaluate_split(
    model: nn.Module,
    ds: Dataset,
    split: Split,
    served: tuple[References, Calibration] | None = None,
) -> dict[str, Any]:
    """Metrics of `model` and of the cosine, derivative and adapted library searches on one
    split's test part; with `served` = (references, calibration), also of what the service
    returns: the card's combined probabilities, and the searches run over those references (the
    spectra the version carries) instead of the training part."""
    n = len(ds.classes)
    x_te, y_te = ds.x[split.test], ds.y[split.test]
    logits = predict_logits(model, x_te)
    pred = logits.argmax(1) if len(y_te) else np.zeros(0, dtype=np.int64)
    library = served[0] if served else References(ds.x[split.train], ds.y[split.train])
    searches = {
        *SEARCH_REPORTS,
        *((served[1].similarity, served[1].ranking_search) if served else ()),
    }
    libs = {m: reference_similarities(x_te, library, m, n) for m in searches}
    out = {
        "split": split.sizes(),
        "model": classification_report(logits, y_te, n),
        **{key: classification_report(libs[m], y_te, n) for m, key in SEARCH_REPORTS.items()},
        "confusion": confusion_matrix(y_te, pred, n).tolist(),
    }
    if served is not None:
        calib = served[1]
        scores = LibraryScores(libs[calib.similarity], libs[calib.ranking_search])
        out["served"] = classification_report(
            np.log(served_scores(logits, scores, calib).probs + 1e-12), y_te, n
        )
    return out


@dataclass(frozen=True)
class ServedScores:
    """What a version answers for each of n spectra: the [n, C] probabilities, the top class,
    its probability, the query's similarity to that class's closest reference, and the margin
    of the card's "confident match" rule (>= 0: `match`)."""

    probs: np.ndarray
    pred: np.ndarray
    probability: np.ndarray
    similarity: np.ndarray
    margin: np.ndarray


def served_scores(
    logits: np.ndarray, scores: LibraryScores, calibration: Calibration
) -> ServedScores:
    """The service's answer, without the service, for spectra with the network's `logits` and
    their library `scores` (`card_search_scores` with the card's searches over the references a
    version carries): benchmarks score its probabilities and its no-match rule with this."""
    probs = combined_probabilities(logits, scores.ranking, calibration)
    pred = probs.argmax(1)
    rows = np.arange(len(pred))
    top_p, top_s = probs[rows, pred], scores.similarity[rows, pred]
    return ServedScores(probs, pred, top_p, top_s, match_margin(top_p, top_s, calibration))


def card_search_scores(
    x: np.ndarray, references: References, calibration: Calibration, n_classes: int
) -> LibraryScores:
    """What the service's searches (the card's similarity metric and ranking search) answer for
    spectra `x` over `references`."""
    search = ServedSearch.build(references.spectra, references.classes, calibration)
    return search.class_scores(x, n_classes)


def reference_similarities(
    x: np.ndarray, references: References, search: str, n_classes: int
) -> np.ndarray:
    """[n, C] score of the library search `search` (a `spectra.library.SEARCHES` name) for each
    spectrum's best match among each class's reference spectra (what the service computes)."""
    return make_search(references.spectra, references.classes, search).class_scores(x, n_classes)


def library_references(ds: Dataset, rows: np.ndarray) -> References:
    """Spectra `rows` of `ds` as a reference library (at most `spectra.references.MAX_PER_CLASS`
    per class)."""
    rows = np.asarray(rows)[reference_rows(ds.y[rows])]
    return References(ds.x[rows], ds.y[rows].astype(np.int64))


def calibrate_and_publish(
    model: nn.Module,
    ds: Dataset,
    split: Split,
    max_false_accept: float | None = None,
    prior: Calibration | None = None,
) -> tuple[Calibration, dict[str, Any], References]:
    """The card's calibration and the references a version carries. The mix and the thresholds
    are fitted on the validation part against a library of the training part only (so that
    validation spectra are not their own best match); the published library then holds the
    training *and* validation spectra: every labelled spectrum not held out for test is a
    reference a query can match (bench/mix_calibration.py measures what that does).
    `max_false_accept`, `prior`: see `calibrate`."""
    train_refs = library_references(ds, split.train)
    calibration, stats = calibrate(model, ds, split, train_refs, max_false_accept, prior)
    published = library_references(ds, np.sort(np.concatenate([split.train, split.val])))
    return calibration, stats, published


def _markdown(ev: dict[str, Any]) -> str:
    rows = ["| metric | model | library search |", "|---|---|---|"]
    for k in ("precision", "recall", "f1", "top1", "top3", "top5"):
        rows.append(f"| {k} | {ev['model'][k]:.4f} | {ev['library_search'][k]:.4f} |")
    return "\n".join(rows) + f"\n\nsplit sizes: {ev['split']}\n"


def calibrate(
    model: nn.Module,
    ds: Dataset,
    split: Split,
    references: References,
    max_false_accept: float | None = None,
    prior: Calibration | None = None,
) -> tuple[Calibration, dict[str, Any]]:
    """Everything in the card's `Calibration`, fitted on the validation part: the network's
    temperature; the weight (of LIBRARY_WEIGHTS) and temperature of a softmax over the SEARCH
    scores for each class's best-matching reference spectrum mixed into it, jointly minimising
    the mixture's NLL (a proper score: the returned probabilities stay calibrated); then the
    rejection thresholds on the mixed probabilities and the SIMILARITY HQI. With
    `max_false_accept` (e.g. 0.1) min_similarity is raised, if needed, to what that share of
    minerals missing from the library would pass, estimated from validation spectra matched
    against the other classes only (`training.calibration.impostor_similarity_threshold`;
    docs/accuracy.md measures it on held-out minerals): fewer unknown minerals reported as a
    match, more known ones refused.

    A validation part with fewer than MIN_FIT_SPECTRA spectra, or one the fitted mix answers
    entirely right, cannot support the fit: with no error the likelihood keeps rising as the
    temperatures fall, which end at their bounds and make every answer certain (a fine-tune on
    18 spectra did that). Then the version keeps `prior` (a fine-tune passes its base version's
    calibration; the plain softmax otherwise) and the stats say `fitted: false`."""
    x_val, y_val = ds.x[split.val], ds.y[split.val]
    fresh = Calibration(similarity=SIMILARITY, search=SEARCH)
    fallback = prior or fresh
    if len(y_val) == 0:
        return fallback, {"fitted": False, "validation_spectra": 0}
    logits = predict_logits(model, x_val)
    n_classes = len(ds.classes)
    scores = card_search_scores(x_val, references, fresh, n_classes)
    calib = _fit_mix(logits, scores, y_val) if len(y_val) >= MIN_FIT_SPECTRA else None
    fitted = calib is not None
    if calib is None:
        calib = fallback
        if (calib.similarity, calib.ranking_search) != (SIMILARITY, SEARCH):  # an older card's
            scores = card_search_scores(x_val, references, calib, n_classes)
    probs = combined_probabilities(logits, scores.ranking, calib)
    stats: dict[str, Any] = {"fitted": fitted, "validation_spectra": len(y_val)}
    if max_false_accept is not None:
        floor = impostor_similarity_threshold(scores.similarity, y_val, max_false_accept)
        stats |= {"max_false_accept": max_false_accept, "impostor_min_similarity": floor}
        calib = replace(calib, min_similarity=max(calib.min_similarity, floor))
    stats |= {
        "ece_before": expected_calibration_error(softmax(logits), y_val),
        "ece_after": expected_calibration_error(probs, y_val),
        "val_top1_network": float((logits.argmax(1) == y_val).mean()),
        "val_top1_served": float((probs.argmax(1) == y_val).mean()),
    }
    return calib, stats


def _fit_mix(logits: np.ndarray, scores: LibraryScores, y: np.ndarray) -> Calibration | None:
    """The network's temperature, the mix and the rejection thresholds fitted on validation
    (see `calibrate`); None when the fitted mix answers every spectrum right (nothing bounds
    the temperatures then)."""
    base = Calibration(fit_temperature(logits, y), 0.5, 0.0, SIMILARITY, search=SEARCH)
    calib = choose_library_weight(logits, scores.ranking, y, base)
    probs = combined_probabilities(logits, scores.ranking, calib)
    pred = probs.argmax(1)
    if (pred == y).all():
        return None
    min_p, min_s = choose_rejection(probs, scores.similarity[np.arange(len(y)), pred], y)
    return replace(calib, min_probability=float(min_p), min_similarity=float(min_s))


def choose_library_weight(
    logits: np.ndarray,
    ranking: np.ndarray,
    y: np.ndarray,
    base: Calibration,
    weights: tuple[float, ...] = LIBRARY_WEIGHTS,
    joint: bool = JOINT_TEMPERATURES,
) -> Calibration:
    """`base` with the library weight of `weights`, and for it the library temperature (with
    `joint`, the network's temperature too, the two refitted in turn inside the mixture), that
    give the lowest validation NLL (ties to the lower weight)."""

    def nll(calib: Calibration) -> float:
        probs = combined_probabilities(logits, ranking, calib)
        return float(-np.log(probs[np.arange(len(y)), y] + 1e-12).mean())

    def refit(calib: Calibration, setter: _Setter, bounds: tuple[float, float]) -> Calibration:
        return setter(calib, minimise_over_log_scale(lambda t: nll(setter(calib, t)), bounds))

    scored = []
    for w in weights:
        calib = replace(base, library_weight=w)
        for _ in range(JOINT_ROUNDS if joint else 1) if w > 0 else ():
            calib = refit(calib, _library_temperature, LIB_T_BOUNDS)
            if joint:
                calib = refit(calib, _network_temperature, NET_T_BOUNDS)
        scored.append((nll(calib), w, calib))
    return min(scored, key=lambda s: s[:2])[2]


_Setter = Callable[[Calibration, float], Calibration]


def _library_temperature(calib: Calibration, t: float) -> Calibration:
    return replace(calib, library_temperature=t)


def _network_temperature(calib: Calibration, t: float) -> Calibration:
    return replace(calib, temperature=t)


def references_note(refs: References) -> str:
    """What the card says of the references a version carries."""
    return (
        f"{len(refs.classes)} spectra of the training and validation parts (at most "
        f"{MAX_PER_CLASS} per class): a class's similarity is the query's best match among them"
    )


@dataclass(frozen=True)
class Provenance:
    """Where a network came from, as its card records it."""

    source: str  # the RRUFF file's name
    split: str
    split_seed: int
    architecture: dict[str, Any]  # with the training config under "train_config"
    training: dict[str, Any]  # best_val_acc, best_epoch (and the base a recalibration started from)


def export_run(
    run_dir: Path,
    store: Path,
    name: str,
    version: str | None = None,
    max_false_accept: float | None = None,
) -> Path:
    """Calibrate on validation, measure on test, and publish a model version
    (`max_false_accept`: see `calibrate`)."""
    spec, ds, model, ckpt, split = load_run(run_dir)
    origin = Provenance(
        source=Path(ds.info.get("source", spec.data)).name,
        split=spec.split,
        split_seed=spec.split_seed,
        architecture={**ckpt["arch"], "train_config": ckpt["train_config"]},
        training={k: ckpt[k] for k in ("best_val_acc", "best_epoch")},
    )
    return publish(model, ds, split, origin, store, name, version, max_false_accept)


def publish(
    model: nn.Module,
    ds: Dataset,
    split: Split,
    origin: Provenance,
    store: Path,
    name: str,
    version: str | None = None,
    max_false_accept: float | None = None,
) -> Path:
    """Calibrate a trained network on its split's validation part, measure it on the test part
    and publish it as a model version (`max_false_accept`: see `calibrate`)."""
    calibration, cal_stats, refs = calibrate_and_publish(model, ds, split, max_false_accept)
    ev = evaluate_split(model, ds, split, served=(refs, calibration))
    ev.pop("confusion")
    inputs = ExportInputs(
        name=name,
        version=version or next_version(store, name),
        classes=ds.classes,
        grid=ds.grid,
        references=refs,
        calibration=calibration,
        metrics={
            "test": ev["model"],
            "served_test": ev["served"],
            **{f"{key}_test": ev[key] for key in SEARCH_REPORTS.values()},
            "split": ev["split"],
            "calibration": cal_stats,
            **origin.training,
        },
        data={
            "source": origin.source,
            "citation": RRUFF_CITATION,
            "counts": ds.info.get("counts", {}),
            "rule": ds.info.get("rule", {}),
            "split": origin.split,
            "split_seed": origin.split_seed,
            "references": references_note(refs),
        },
        architecture=origin.architecture,
        parity_inputs=ds.x[split.test][:64] if len(split.test) else ds.x[:64],
    )
    return export_version(model, inputs, store)
