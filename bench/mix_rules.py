"""Ways to mix a trained network with a library search, compared on a benchmark's saved logits.

`bench_accuracy.py --keep-logits` writes each trained network's validation and test logits;
this script rebuilds each split, searches the library (the split's training part) with each of
`--libraries`, and scores on test, every rule fitted on validation only:

- `network`, `<library>`: each alone;
- `linear 0.5`: the benchmark's `<net>+<library>` (fixed weight 0.5, both temperatures fitted);
- `linear fitted`: the benchmark's `<net>+<library>_fit`, what `raman-train export` serves (the
  weight of `training.pipeline.LIBRARY_WEIGHTS` with the lowest validation NLL);
- `log-linear fitted`: a product of experts, softmax((1 - a) log p_net + a log p_lib) with the
  same temperatures and `a` in 0, 0.05, ..., 1 chosen by validation NLL: a class must be
  plausible to both, where the linear mix lets either one carry it alone.

    python bench/mix_rules.py bench/out/cpu_d2_rs_s{0,1,2}_fit bench/out/cpu_d2_rs_g0_fit \\
        --out bench/out/mix_rules.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_accuracy import (
    library_scores,
    machine_info,
    mix_calibration,
    mix_record,
    subset_dataset,
)

from spectra.card import Calibration
from spectra.scoring import combined_probabilities, softmax
from training.datasets import Dataset
from training.metrics import classification_report
from training.splits import Split, make_split

LOG_WEIGHTS = np.round(np.linspace(0.0, 1.0, 21), 2)
Parts = dict[str, np.ndarray]  # "val" / "test" -> [n, C] array


def linear(logits: Parts, lib: Parts, y_val: np.ndarray, fit_weight: bool) -> tuple[Any, ...]:
    """Test log-probabilities of the benchmark's linear mix (`mix_calibration`) and its record."""
    calib = mix_calibration(logits["val"], lib["val"], y_val, fit_weight)
    probs = combined_probabilities(logits["test"], lib["test"], calib)
    return np.log(probs + 1e-12), mix_record(calib)


def log_linear(logits: Parts, lib: Parts, y_val: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """Test log-probabilities of the product-of-experts mix fitted on validation (the linear
    mix's temperatures, `a` of LOG_WEIGHTS by validation NLL), and its fitted parameters."""
    calib = mix_calibration(logits["val"], lib["val"], y_val)
    log_p = {part: _log_softmaxes(logits[part], lib[part], calib) for part in ("val", "test")}

    def mixed(part: str, a: float) -> np.ndarray:
        log_net, log_lib = log_p[part]
        return np.log(softmax((1 - a) * log_net + a * log_lib, 1.0) + 1e-12)

    def val_nll(a: float) -> float:
        return float(-mixed("val", a)[np.arange(len(y_val)), y_val].mean())

    a = float(min(LOG_WEIGHTS, key=val_nll))
    return mixed("test", a), {**mix_record(calib), "library_weight": a}


def _log_softmaxes(
    logits: np.ndarray, lib: np.ndarray, calib: Calibration
) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.log(softmax(logits, calib.temperature) + 1e-12),
        np.log(softmax(lib, calib.library_temperature) + 1e-12),
    )


def library_parts(ds: Dataset, split: Split, libraries: list[str]) -> dict[str, Parts]:
    """Each library search's class scores for the split's validation and test spectra (the
    library is its training part), searched once for every rule and network that mixes it."""
    n_val, out = len(split.val), {}
    for name in libraries:
        scores = library_scores(ds, split, name, np.concatenate([split.val, split.test]))
        out[name] = {"val": scores[:n_val], "test": scores[n_val:]}
    return out


def rules(ds: Dataset, split: Split, logits: Parts, libs: dict[str, Parts]) -> list[dict[str, Any]]:
    """Every rule's test metrics for a network's `logits` and the libraries' scores `libs`."""
    y_val, y_test, n = ds.y[split.val], ds.y[split.test], len(ds.classes)
    rows: list[tuple[str, np.ndarray, dict[str, Any]]] = [("network", logits["test"], {})]
    for name, lib in libs.items():
        rows.append((name, lib["test"], {}))
        rows.append((f"linear 0.5 {name}", *linear(logits, lib, y_val, False)))
        rows.append((f"linear fitted {name}", *linear(logits, lib, y_val, True)))
        rows.append((f"log-linear fitted {name}", *log_linear(logits, lib, y_val)))
    return [
        {"rule": rule, "metrics": classification_report(s, y_test, n), **extra}
        for rule, s, extra in rows
    ]


def split_of(opts: dict[str, Any], subset: str, kind: str, seed: int) -> tuple[Dataset, Split]:
    """Split `kind` `seed` of `subset` as the benchmark run whose options are `opts` built it."""
    ds = subset_dataset(
        Path(opts["rruff"]), Path(opts["cache"]), subset, opts["grid_points"], opts["max_classes"]
    )
    return ds, make_split(kind, ds.y, ds.groups, seed)


def load_logits(path: Path, ds: Dataset, split: Split) -> Parts:
    """A saved training's validation and test logits, checked to be `split`'s rows over the
    classes of `ds` (a training of another split or data set is refused, not scored)."""
    saved, parts = np.load(path), {}
    for part in ("val", "test"):
        if not np.array_equal(saved[f"{part}_rows"], getattr(split, part)):
            raise SystemExit(f"{path}: its {part} rows are not this split's")
        parts[part] = saved[f"{part}_logits"]
        if parts[part].shape[1] != len(ds.classes):
            raise SystemExit(f"{path}: its logits are not over the {len(ds.classes)} classes")
    return parts


def saved_logits(out_dir: Path) -> list[tuple[str, str, int, str, Path]]:
    """(subset, split kind, seed, network, logits.npz) of each training a benchmark kept."""
    found = []
    for path in sorted(out_dir.glob("work/*/*/logits.npz")):
        subset_points_split, network = path.parent.parent.name, path.parent.name
        subset, _, kind_seed = subset_points_split.rpartition("_")
        subset = subset.rpartition("_")[0]  # drop the grid's point count
        kind = kind_seed.rstrip("0123456789")
        found.append((subset, kind, int(kind_seed[len(kind) :]), network, path))
    return found


def main(argv: list[str] | None = None) -> int:
    """Score every rule on every saved training of the given benchmark output folders."""
    a = parse_args(argv, __doc__, Path("bench/out/mix_rules.json"))
    start, runs = time.time(), []
    for d in a.dirs:
        opts = json.loads((d / "results.json").read_text())["options"]
        for subset, kind, seed, network, path in saved_logits(d):
            ds, split = split_of(opts, subset, kind, seed)
            logits = load_logits(path, ds, split)
            scored = rules(ds, split, logits, library_parts(ds, split, a.libraries.split(",")))
            runs.append({"subset": subset, "split": kind, "seed": seed, "network": network})
            runs[-1]["rules"] = scored
            print(kind, seed, {r["rule"]: round(r["metrics"]["top1"], 4) for r in scored})
    write_results(a.out, runs, time.time() - start, markdown(runs))
    return 0


def parse_args(argv: list[str] | None, doc: str | None, out: Path) -> argparse.Namespace:
    """The command line of the scripts that score saved logits: benchmark output folders,
    `--libraries` to search and mix, `--out` (default `out`)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("dirs", type=Path, nargs="+", help="bench_accuracy.py --keep-logits --out dirs")
    p.add_argument("--libraries", default="derivative,adapted")
    p.add_argument("--out", type=Path, default=out)
    return p.parse_args(argv)


def write_results(out: Path, runs: list[dict[str, Any]], seconds: float, report: str) -> None:
    """`runs` with the machine and wall time as JSON at `out`, `report` beside it (.md)."""
    result = {"runs": runs, "machine": machine_info(), "seconds": round(seconds, 1)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(report)


def markdown(runs: list[dict[str, Any]]) -> str:
    """Per split kind: each rule's top-1 per split, mean top-1 / top-5, and its per-split
    difference from the library search it mixes (points; wins / ties / losses)."""
    out = []
    for kind in sorted({r["split"] for r in runs}):
        part = [r for r in runs if r["split"] == kind]
        seeds = " / ".join(str(r["seed"]) for r in part)
        out += [
            f"## {kind} splits {seeds} ({part[0]['subset']}, {part[0]['network']})\n",
            "| rule | top-1 per split | mean top-1 | mean top-5 | vs its library search |",
            "|---|---|---|---|---|",
        ]
        for i, rule in enumerate(r["rule"] for r in part[0]["rules"]):
            top1 = np.array([r["rules"][i]["metrics"]["top1"] for r in part])
            top5 = np.mean([r["rules"][i]["metrics"]["top5"] for r in part])
            lib = rule.rpartition(" ")[2]
            versus = ""
            if " " in rule:  # a mix: compare with its library alone on the same splits
                base = np.array([_top1(r, lib) for r in part])
                d = np.round(100 * (top1 - base), 6)  # equal counts tie exactly
                versus = f"{d.mean():+.2f} ({(d > 0).sum()} / {(d == 0).sum()} / {(d < 0).sum()})"
            per_split = " / ".join(f"{t:.4f}" for t in top1)
            out.append(f"| {rule} | {per_split} | {top1.mean():.4f} | {top5:.4f} | {versus} |")
        out.append("")
    return "\n".join(out)


def _top1(run: dict[str, Any], rule: str) -> float:
    return float(next(r["metrics"]["top1"] for r in run["rules"] if r["rule"] == rule))


if __name__ == "__main__":
    raise SystemExit(main())
