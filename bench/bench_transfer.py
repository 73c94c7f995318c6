"""Transfer-learning benchmark (issue 7): the paper's protocol (section 2.3, Table 3) on our data.

The paper pre-trains DRCNN on a large library, reloads every layer but the last, and retrains on
a target set of 72 organics with three spectra each: two to train on, one to test (top-1 98.1 %).
Here the base is pre-trained on RRUFF minerals with at least `--source-min` spectra, then
fine-tuned on each target (`training.finetune`: the same code path as fine-tune jobs):

- ``rruff``: minerals disjoint from the source (classes with `--target-min` to `--source-min`-1
  spectra): two spectra per class to fine-tune on, a third to test on; the test spectrum comes
  from another RRUFF sample than the two training ones wherever the class has one (most samples
  were measured at 2-3 laser wavelengths: a same-sample test spectrum is a near-copy).
- ``biolib``: the ramanbiolib biomolecules with at least two spectra: one held out per class for
  the test, the rest (1-3) to fine-tune on. Their 450-1800 cm-1 grid is resampled onto the base
  grid by `spectra.preprocess.Preprocessor` (zero-filled below 450: coverage about 73 %).

Methods, on identical splits: ``transfer`` (every reloaded layer retrained: the paper),
``transfer_head`` (only the new output layer trained), ``scratch`` (the same network, random
initialisation, same spectra and epochs), ``library`` (cosine nearest-neighbour search over the
fine-tune spectra, `spectra.library.LibrarySearch`). With two spectra per class there is no
validation part: every network trains `--ft-epochs` epochs and its last weights are tested.
Top-1/top-3 and weighted F1, mean ± std over `--seeds` draws of classes and splits; JSON and
Markdown in `--out`, with the machine (CPU model and cores, GPU).

    nice -n 10 python bench/bench_transfer.py --out bench/out/transfer_cpu   # reduced: 2-core CPU
    python bench/bench_transfer.py --paper --out bench/out/transfer_gpu      # paper sizes: GPU

The defaults are the reduced run (widths / 16, 512-point grid, 20 pre-train epochs, 100 target
classes, one seed): about 26 CPU-minutes, i.e. ~15 min on an idle 2-core machine.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spectra.grid import Grid
from spectra.library import LibrarySearch
from spectra.preprocess import Preprocessor
from training.datasets import PRESETS, Dataset, build_dataset
from training.export import save_weights
from training.finetune import FinetuneConfig, finetune
from training.metrics import aggregate, classification_report
from training.model import DRCNN, DRCNNConfig, count_parameters
from training.splits import stratified_split
from training.train import Arrays, TrainConfig, fit, load_checkpoint, predict_logits

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
RRUFF = SHARED / "rruff_excellent_unoriented_2019" / "excellent_unoriented.zip"
BIOLIB = SHARED / "ramanbiolib" / "raman_spectra_db.csv"
METHODS = ("transfer", "transfer_head", "scratch", "library")
KS = (1, 3)


@dataclass
class Options:
    """Resolved command-line options."""

    out: Path
    rruff: Path = RRUFF
    biolib: Path = BIOLIB
    cache: Path = Path(__file__).resolve().parent / "cache"
    targets: tuple[str, ...] = ("rruff", "biolib")
    grid_points: int = 512
    width_div: int = 16
    depth: int = 9
    source_min: int = 10
    target_min: int = 3
    target_classes: int = 100
    pretrain_epochs: int = 20
    pretrain_lr: float = 1e-3
    patience: int = 8
    ft_epochs: int = 60
    ft_lr: float = 1e-3
    batch_size: int = 32
    seeds: int = 1
    device: str = "auto"
    threads: int = 2


# --- data -----------------------------------------------------------------------------------------


def load_rruff(opts: Options) -> Dataset:
    """RRUFF classes with >= 2 spectra (the paper's Dataset_2 rule) on the chosen grid (cached)."""
    rule = PRESETS["dataset_2"]
    if opts.grid_points != rule.grid.points:
        grid = Grid(rule.grid.start, rule.grid.stop, opts.grid_points)
        rule = replace(rule, name=f"dataset_2_L{opts.grid_points}", grid=grid)
    path = opts.cache / f"{opts.rruff.stem}_{rule.name}_{rule.grid.points}.npz"
    if path.exists():
        return Dataset.load(path)
    ds, _ = build_dataset(opts.rruff, rule)
    opts.cache.mkdir(parents=True, exist_ok=True)
    ds.save(path)
    return ds


def load_biolib(path: Path, grid: Grid) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """ramanbiolib classes with >= 2 spectra, resampled onto `grid`: x, y, classes, coverage."""
    csv.field_size_limit(10**8)
    with open(path, newline="") as fh:
        rows = [(r["component"], json.loads(r["wavenumbers"]), json.loads(r["intensity"]))
                for r in csv.DictReader(fh)]  # fmt: skip
    counts: dict[str, int] = {}
    for name, _, _ in rows:
        counts[name] = counts.get(name, 0) + 1
    kept = [r for r in rows if counts[r[0]] >= 2]
    classes = sorted({r[0] for r in kept})
    pre = Preprocessor(grid)
    prepared = [pre.prepare(w, i, name) for name, w, i in kept]
    x = np.stack([p.values for p in prepared]).astype(np.float32)
    y = np.array([classes.index(r[0]) for r in kept], dtype=np.int64)
    return x, y, classes, np.array([p.coverage for p in prepared], dtype=np.float32)


def subset(x: np.ndarray, y: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the classes in `keep`, labels re-indexed 0..len(keep)-1."""
    remap = np.full(int(y.max()) + 1, -1, dtype=np.int64)
    remap[keep] = np.arange(len(keep))
    rows = np.flatnonzero(remap[y] >= 0)
    return x[rows], remap[y[rows]]


def few_shot_split(
    y: np.ndarray, groups: np.ndarray, n_train: int | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, int]:
    """Per class one test spectrum and `n_train` (None: all others) training spectra; the test
    spectrum's sample differs from the training ones where the class allows. Returns train and
    test indices and the number of test spectra that share a sample with their training ones."""
    train, test, shared = [], [], 0
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        t = members[0]
        for cand in members:  # prefer a test spectrum whose sample leaves enough for training
            others = [m for m in members if groups[m] != groups[cand]]
            if len(others) >= (n_train or 1):
                t = cand
                break
        rest = [m for m in members if m != t]
        rest.sort(key=lambda m: groups[m] == groups[t])  # other samples first
        chosen = rest[:n_train] if n_train else rest
        shared += any(groups[m] == groups[t] for m in chosen)
        test.append(t)
        train.extend(chosen)
    return np.array(train), np.array(test), shared


# --- models ---------------------------------------------------------------------------------------


def network(opts: Options, length: int, n_classes: int) -> DRCNN:
    """The benchmark's DRCNN: the paper's layout, widths divided by `--width-div`."""
    cfg = DRCNNConfig(input_length=length, n_classes=n_classes, depth=opts.depth,
                      width_div=opts.width_div)  # fmt: skip
    return DRCNN(cfg)


def pretrain(ds: Dataset, opts: Options) -> tuple[Path, dict[str, Any]]:
    """Train the base on the source classes (85:15 stratified) and save it like an exported
    version (`weights.pt`); reused when the same configuration was trained before."""
    counts = np.bincount(ds.y)
    source = np.flatnonzero(counts >= opts.source_min)
    x, y = subset(ds.x, ds.y, source)
    key = {"grid": ds.grid.to_dict(), "classes": len(source), "spectra": len(y),
           "width_div": opts.width_div, "depth": opts.depth, "epochs": opts.pretrain_epochs,
           "lr": opts.pretrain_lr, "patience": opts.patience}  # fmt: skip
    base = opts.out / "base"
    if (base / "key.json").exists() and json.loads((base / "key.json").read_text()) == key:
        return base, json.loads((base / "stats.json").read_text())
    split = stratified_split(y, 0, ratios=(0.85, 0.0, 0.15))
    model = network(opts, ds.grid.points, len(source))
    cfg = TrainConfig(epochs=opts.pretrain_epochs, patience=opts.patience, lr=opts.pretrain_lr,
                      batch_size=opts.batch_size, device=opts.device, progress=False)  # fmt: skip
    started = time.perf_counter()
    result = fit(model, Arrays(x[split.train], y[split.train], x[split.test], y[split.test]), cfg,
                 opts.out / "pretrain-run")  # fmt: skip
    best, _ = load_checkpoint(result.best_path)
    base.mkdir(parents=True, exist_ok=True)
    save_weights(best, base / "weights.pt")
    stats = {"classes": len(source), "spectra": len(y), "val_spectra": int(split.test.size),
             "val_top1": result.best_val_acc, "best_epoch": result.best_epoch,
             "epochs_run": result.epochs_run, "seconds": round(time.perf_counter() - started, 1),
             "parameters": count_parameters(best)}  # fmt: skip
    (base / "stats.json").write_text(json.dumps(stats, indent=2))
    (base / "key.json").write_text(json.dumps(key))
    return base, stats


def last_weights(model: torch.nn.Module, work: Path) -> torch.nn.Module:
    """Without validation the "best" checkpoint is epoch 1: test the last epoch instead."""
    model.load_state_dict(
        torch.load(work / "last.pt", map_location="cpu", weights_only=False)["model"]
    )
    return model.cpu().eval()


def scores_for(
    method: str, base: Path, xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, n: int,
    opts: Options, seed: int, work: Path,
) -> np.ndarray:  # fmt: skip
    """Class scores of the test spectra [len(xte), n] for one method."""
    if method == "library":
        return LibrarySearch(xtr, ytr).class_scores(xte, n)
    if method == "scratch":
        torch.manual_seed(seed)
        net = network(opts, xtr.shape[1], n)
        cfg = TrainConfig(epochs=opts.ft_epochs, patience=opts.ft_epochs, lr=opts.ft_lr,
                          batch_size=16, seed=seed, device=opts.device, progress=False)  # fmt: skip
        fit(net, Arrays(xtr, ytr, xtr[:0], ytr[:0]), cfg, work)
        return predict_logits(last_weights(net, work), xte)
    freeze = "all_but_last" if method == "transfer_head" else "none"
    cfg_ft = FinetuneConfig(epochs=opts.ft_epochs, patience=opts.ft_epochs, lr=opts.ft_lr,
                            batch_size=16, freeze=freeze, val_fraction=0.0, seed=seed,
                            device=opts.device)  # fmt: skip
    model, _, _ = finetune(base, xtr, ytr, [str(i) for i in range(n)], cfg_ft, work)
    return predict_logits(last_weights(model, work), xte)


# --- orchestration --------------------------------------------------------------------------------


def rruff_target(ds: Dataset, opts: Options, rng: np.random.Generator) -> dict[str, Any]:
    counts = np.bincount(ds.y)
    eligible = np.flatnonzero((counts >= opts.target_min) & (counts < opts.source_min))
    if opts.target_classes and opts.target_classes < eligible.size:
        eligible = np.sort(rng.choice(eligible, opts.target_classes, replace=False))
    rows = np.flatnonzero(np.isin(ds.y, eligible))
    x, y = subset(ds.x, ds.y, eligible)
    train, test, shared = few_shot_split(y, ds.groups[rows], 2, rng)
    return {"x": x, "y": y, "train": train, "test": test, "shared": shared,
            "classes": int(eligible.size)}  # fmt: skip


def biolib_target(grid: Grid, opts: Options, rng: np.random.Generator) -> dict[str, Any]:
    x, y, classes, coverage = load_biolib(opts.biolib, grid)
    train, test, _ = few_shot_split(y, np.arange(len(y)).astype(str), None, rng)
    return {"x": x, "y": y, "train": train, "test": test, "shared": 0,
            "classes": len(classes), "mean_coverage": round(float(coverage.mean()), 3)}  # fmt: skip


def run_target(
    name: str, t: dict[str, Any], base: Path, opts: Options, seed: int
) -> dict[str, Any]:
    xtr, ytr, xte, yte = (
        t["x"][t["train"]],
        t["y"][t["train"]],
        t["x"][t["test"]],
        t["y"][t["test"]],
    )
    out: dict[str, Any] = {"classes": t["classes"], "finetune_spectra": len(ytr),
                           "test_spectra": len(yte), "test_shares_sample": t["shared"]}  # fmt: skip
    if "mean_coverage" in t:
        out["mean_coverage"] = t["mean_coverage"]
    for method in METHODS:
        started = time.perf_counter()
        work = opts.out / "work" / f"{name}-{method}-{seed}"
        scores = scores_for(method, base, xtr, ytr, xte, t["classes"], opts, seed, work)
        report = classification_report(scores, yte, t["classes"], ks=KS)
        out[method] = report | {"seconds": round(time.perf_counter() - started, 1)}
        print(f"  {name} seed {seed} {method}: top1 {report['top1']:.3f} top3 {report['top3']:.3f}",
              flush=True)  # fmt: skip
    return out


def machine() -> dict[str, Any]:
    """CPU model and cores, GPU, software versions."""
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor() or "unknown")  # fmt: skip
    return {"cpu": cpu, "cores": os.cpu_count(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads()}  # fmt: skip


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per target: counts of the first run, per method mean ± std over the seeds."""
    out: dict[str, Any] = {}
    for target in runs[0]:
        first = runs[0][target]
        out[target] = {k: v for k, v in first.items() if k not in METHODS}
        for method in METHODS:
            out[target][method] = aggregate([r[target][method] for r in runs])
    return out


def markdown(result: dict[str, Any]) -> str:
    m, o, p = result["machine"], result["options"], result["pretrain"]
    lines = [
        "# Transfer learning (paper section 2.3 / Table 3 protocol)", "",
        f"Machine: {m['cpu']}, {m['cores']} cores, GPU {m['gpu'] or 'none'}; torch {m['torch']} "
        f"({m['torch_threads']} threads). Wall time {result['seconds']:.0f} s.", "",
        f"Base: DRCNN width/{o['width_div']}, depth {o['depth']}, {p['parameters']:,} parameters, "
        f"grid {o['grid_points']} points; pre-trained on {p['classes']} RRUFF minerals "
        f"({p['spectra']} spectra, >= {o['source_min']} per class), validation top-1 "
        f"{p['val_top1']:.3f} (epoch {p['best_epoch']} of {p['epochs_run']}).", "",
        f"Fine-tune: {o['ft_epochs']} epochs, lr {o['ft_lr']:g}, last epoch tested; "
        f"{o['seeds']} seed(s), mean ± std.", "",
        "| target | classes | fine-tune / test spectra | method | top-1 | top-3 | F1 |",
        "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for target, t in result["targets"].items():
        for method in METHODS:
            r = t[method]
            lines.append(
                f"| {target} | {t['classes']} | {t['finetune_spectra']} / {t['test_spectra']} | "
                f"{method} | {_pm(r['top1'])} | {_pm(r['top3'])} | {_pm(r['f1'])} |"
            )
    notes = [f"- rruff: {t['test_shares_sample']} test spectra share a RRUFF sample with their "
             "training spectra (the class has a single sample)." for n, t in
             result["targets"].items() if n == "rruff"]  # fmt: skip
    notes += [f"- biolib: mean grid coverage {t['mean_coverage']:.0%} (450-1800 cm-1 data on the "
              "base grid; the rest is zero-filled)." for n, t in result["targets"].items()
              if n == "biolib"]  # fmt: skip
    return "\n".join([*lines, "", *notes, ""])


def _pm(stat: dict[str, float]) -> str:
    return f"{stat['mean']:.3f} ± {stat['std']:.3f}"


def run(opts: Options) -> dict[str, Any]:
    """Pre-train once, then every target and method for every seed; write JSON and Markdown."""
    started = time.perf_counter()
    torch.set_num_threads(opts.threads)
    opts.out.mkdir(parents=True, exist_ok=True)
    ds = load_rruff(opts)
    base, stats = pretrain(ds, opts)
    print(f"base: {stats}", flush=True)
    runs = []
    for seed in range(opts.seeds):
        rng = np.random.default_rng(seed)
        per_target = {}
        for name in opts.targets:
            t = (
                rruff_target(ds, opts, rng)
                if name == "rruff"
                else biolib_target(ds.grid, opts, rng)
            )
            per_target[name] = run_target(name, t, base, opts, seed)
        runs.append(per_target)
    opts_doc = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()}
    result = {"machine": machine(), "options": opts_doc, "pretrain": stats,
              "targets": summarise(runs), "runs": runs,
              "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
    (opts.out / "transfer.json").write_text(json.dumps(result, indent=2) + "\n")
    (opts.out / "transfer.md").write_text(markdown(result))
    return result


def parse_args(argv: list[str] | None = None) -> Options:
    """Command-line options; `--paper` selects the paper's sizes (for a GPU)."""
    d = Options(out=Path("bench/out/transfer"))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--paper", action="store_true",
                   help="the paper's sizes, for a GPU: full widths, 1024 points, 200 pre-train "
                        "epochs (patience 30, lr 1e-4), all target classes, 5 seeds")  # fmt: skip
    for name in ("rruff", "biolib", "cache"):
        p.add_argument(f"--{name}", type=Path, default=getattr(d, name))
    p.add_argument("--targets", default=",".join(d.targets))
    for name in (
        "grid_points",
        "width_div",
        "depth",
        "source_min",
        "target_min",
        "target_classes",
        "pretrain_epochs",
        "patience",
        "ft_epochs",
        "batch_size",
        "seeds",
        "threads",
    ):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(d, name))
    for name in ("pretrain_lr", "ft_lr"):
        p.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(d, name))
    p.add_argument("--device", default=d.device)  # fmt: skip
    a = p.parse_args(argv)
    if a.paper:
        a.width_div, a.grid_points, a.pretrain_epochs, a.patience = 1, 1024, 200, 30
        a.seeds, a.target_classes, a.pretrain_lr = 5, 0, 1e-4
    values = {k: v for k, v in vars(a).items() if k != "paper"}
    values["targets"] = tuple(t for t in a.targets.split(",") if t)
    return Options(**values)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    missing = [str(p) for p in (opts.rruff, opts.biolib) if not p.exists()]
    if missing:
        print(f"data not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    print(markdown(run(opts)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
