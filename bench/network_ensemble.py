"""Ensembles of networks trained on the same split, scored on the benchmark's saved logits.

`bench_accuracy.py --keep-logits` writes each trained network's validation and test logits;
trainings of the same split in several output folders (other methods, or the same method with
another `--init-seed-offset`) are the members of that split's ensemble. Each member's logits
are divided by its own temperature, fitted on validation, and the members' probabilities
averaged; the log of that average stands for the ensemble's logits, so that it is calibrated,
mixed with a library search and reported by the same rules as one network
(`mix_rules.rules`: alone, each library alone, linear 0.5 / fitted, log-linear fitted). Every
member is scored by the same rules beside it, against the same library scores. With three or
more members every smaller ensemble of two or more is scored too, so that the report can show
each rule's top-1 against the ensemble's size.

    python bench/network_ensemble.py bench/out/cpu_d2_rs_cos_e60_s0 \\
        bench/out/cpu_d2_rs_e60_i1000_s0 --out bench/out/ensemble.json
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mix_rules import (
    Parts,
    library_parts,
    load_logits,
    parse_args,
    rules,
    saved_logits,
    split_of,
    write_results,
)

from spectra.scoring import softmax
from training.calibration import expected_calibration_error, fit_temperature, nll
from training.datasets import Dataset
from training.metrics import top1_by_support
from training.splits import Split

ENSEMBLE = "ensemble"
SplitKey = tuple[str, str, int]  # subset, split kind, seed
SAME_DATA = ("rruff", "max_classes")  # run options the members of one ensemble must share


def ensemble(members: list[Parts], y_val: np.ndarray) -> Parts:
    """Log of the mean of the members' probabilities, each at its own temperature fitted on
    validation (so that an over-confident member does not outvote the others)."""
    temps = [fit_temperature(m["val"], y_val) for m in members]

    def mean_probs(part: str) -> np.ndarray:
        return np.mean([softmax(m[part], t) for m, t in zip(members, temps, strict=True)], 0)

    return {part: np.log(mean_probs(part) + 1e-12) for part in ("val", "test")}


def network_record(ds: Dataset, split: Split, logits: Parts, libs: dict[str, Parts]) -> Any:
    """One network's (or the ensemble's) rules, its top-1 by training support and calibration."""
    y_test = ds.y[split.test]
    counts = np.bincount(ds.y[split.train], minlength=len(ds.classes))
    return {
        "rules": rules(ds, split, logits, libs),
        "top1_by_support": top1_by_support(logits["test"], y_test, counts),
        "calibration": calibration(logits, ds.y[split.val], y_test),
    }


def calibration(logits: Parts, y_val: np.ndarray, y_test: np.ndarray) -> dict[str, float]:
    """Test ECE and NLL before and after the temperature fitted on validation, the test's mean
    top-1 probability after it (against its accuracy), and, to tell a validation set unlike the
    test set from a one-temperature model that cannot fit both, the temperature the test's own
    NLL would choose (an oracle: diagnosis only, never used to score)."""
    t = fit_temperature(logits["val"], y_val)
    test = logits["test"]
    after = softmax(test, t)
    return {
        "temperature": t,
        "ece_before": expected_calibration_error(softmax(test), y_test),
        "ece_after": expected_calibration_error(after, y_test),
        "nll_before": nll(test, y_test),
        "nll_after": nll(test, y_test, t),
        "confidence_after": float(after.max(axis=1).mean()),
        "accuracy": float(np.mean(test.argmax(axis=1) == y_test)),
        "temperature_test": fit_temperature(test, y_test),
    }


def split_record(
    ds: Dataset, split: Split, members: dict[str, Parts], libs: dict[str, Parts]
) -> dict[str, Any]:
    """Every member and their ensemble on one split, against the same library scores."""
    both = {**members, ENSEMBLE: ensemble(list(members.values()), ds.y[split.val])}
    return {name: network_record(ds, split, logits, libs) for name, logits in both.items()}


def smaller_ensembles(
    ds: Dataset, split: Split, members: dict[str, Parts], libs: dict[str, Parts]
) -> list[dict[str, Any]]:
    """Each ensemble of 2 to m - 1 of the m members (none for m < 3), with each rule's test
    top-1, against the same library scores. There are 2^m - m - 2 of them, each scored like a
    network (~20 s on dataset_2 on 2 cores): fine for the handful of members a CPU trains."""
    out = []
    for k in range(2, len(members)):
        for names in itertools.combinations(members, k):
            logits = ensemble([members[n] for n in names], ds.y[split.val])
            top1 = {r["rule"]: r["metrics"]["top1"] for r in rules(ds, split, logits, libs)}
            out.append({"members": list(names), "top1": top1})
    return out


def find_members(dirs: list[Path]) -> dict[SplitKey, dict[str, tuple[dict[str, Any], Path]]]:
    """Per split, each saved training's label (network + the run's --tag) -> (options, path)."""
    found: dict[SplitKey, dict[str, tuple[dict[str, Any], Path]]] = defaultdict(dict)
    for d in dirs:
        opts = json.loads((d / "results.json").read_text())["options"]
        for subset, kind, seed, network, path in saved_logits(d):
            label = network + opts.get("tag", "")
            if label in found[subset, kind, seed]:
                raise SystemExit(f"{path}: a second {label} on {kind} {seed}: give it a --tag")
            found[subset, kind, seed][label] = (opts, path)
    return found


def load_members(
    key: SplitKey, members: dict[str, tuple[dict[str, Any], Path]]
) -> tuple[Dataset, Split, dict[str, Parts]]:
    """The split's data set (as the first member's run built it; the library searches run on
    its grid) and each member's logits, checked to be that split's rows and classes."""
    subset, kind, seed = key
    opts = next(iter(members.values()))[0]
    for label, (other, _) in members.items():  # the members may differ in grid, not in data
        if any(other[k] != opts[k] for k in SAME_DATA):
            raise SystemExit(f"{label} on {kind} {seed}: another {', '.join(SAME_DATA)}")
    ds, split = split_of(opts, subset, kind, seed)
    parts = {label: load_logits(path, ds, split) for label, (_, path) in members.items()}
    return ds, split, parts


def main(argv: list[str] | None = None) -> int:
    """Score each split's members and their ensemble; splits with one training are skipped."""
    a = parse_args(argv, __doc__, Path("bench/out/network_ensemble.json"))
    start, runs = time.time(), []
    for key, members in sorted(find_members(a.dirs).items()):
        if len(members) < 2:
            print(f"{key}: one training only ({', '.join(members)}), skipped")
            continue
        ds, split, parts = load_members(key, members)
        libs = library_parts(ds, split, a.libraries.split(","))
        networks = split_record(ds, split, parts, libs)
        smaller = smaller_ensembles(ds, split, parts, libs)
        run = {"subset": key[0], "split": key[1], "seed": key[2], "networks": networks}
        runs.append({**run, "smaller_ensembles": smaller})
        print(key, {n: round(r["rules"][0]["metrics"]["top1"], 4) for n, r in networks.items()})
    if not runs:
        raise SystemExit("no split has two or more trainings in the given folders")
    write_results(a.out, runs, time.time() - start, markdown(runs))
    return 0


def markdown(runs: list[dict[str, Any]]) -> str:
    """Per split kind and rule: each network's top-1 per split and mean, top-1 on minerals seen
    once (pooled), and for the ensemble its difference from the members' mean (points) and on
    how many splits it beats the better member."""
    out = []
    for kind in sorted({r["split"] for r in runs}):
        part = [r for r in runs if r["split"] == kind]
        names = list(part[0]["networks"])
        out += [
            f"## {kind} splits {' / '.join(str(r['seed']) for r in part)} ({part[0]['subset']})\n",
            "| rule | network | top-1 per split | mean top-1 | mean top-5 | seen once "
            "| ensemble vs members' mean (above the better one) |",
            "|---|---|---|---|---|---|---|",
        ]
        for i, rule in enumerate(x["rule"] for x in part[0]["networks"][ENSEMBLE]["rules"]):
            if library_alone(rule):  # the same search for every network: listed once
                out.append(_row(part, names, names[0], i, rule, label="—"))
                continue
            out += [_row(part, names, name, i, rule) for name in names]
        out += ["", *size_table(part), *calibration_table(part)]
    return "\n".join(out)


def library_alone(rule: str) -> bool:
    """Whether `rule` is a library search alone ("adapted"), which no network changes, rather
    than the network ("network") or a mix ("linear fitted adapted")."""
    return rule != "network" and " " not in rule


def size_table(part: list[dict[str, Any]]) -> list[str]:
    """Each network rule's top-1 against the ensemble's size, pooled over the splits of `part`:
    the mean (lowest-highest) over every ensemble of that size, size 1 being the members alone;
    nothing when no split has three or more members."""
    if not any(r.get("smaller_ensembles") for r in part):
        return []
    by_size: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in part:
        nets = run["networks"]
        n_members = len(nets) - 1  # every network but the ensemble of them all
        for name, net in nets.items():
            size = n_members if name == ENSEMBLE else 1
            for r in net["rules"]:
                by_size[size][r["rule"]].append(r["metrics"]["top1"])
        for smaller in run.get("smaller_ensembles", []):
            for rule, top1 in smaller["top1"].items():
                by_size[len(smaller["members"])][rule].append(top1)
    sizes = sorted(by_size)
    network_rules = [r for r in by_size[1] if not library_alone(r)]
    out = [
        "Top-1 against the ensemble's size (mean, lowest-highest, over every ensemble of that "
        "size; size 1: the members alone)\n",
        "| rule | " + " | ".join(f"{k} network{'s' * (k > 1)}" for k in sizes) + " |",
        "|---|" + "---|" * len(sizes),
    ]
    for rule in network_rules:
        cells = [by_size[k][rule] for k in sizes]
        out.append(
            f"| {rule} | "
            + " | ".join(f"{np.mean(c):.4f} ({min(c):.4f}-{max(c):.4f})" for c in cells)
            + " |"
        )
    return [*out, ""]


def calibration_table(part: list[dict[str, Any]]) -> list[str]:
    """Each network's calibration on each split of `part`: test ECE and NLL before -> after the
    validation-fitted temperature, its mean confidence against its accuracy after, and the
    temperature the test's own NLL would have chosen."""
    out = [
        "Calibration on test (temperature fitted on validation; the test's own NLL-optimal "
        "temperature for comparison)\n",
        "| split | network | temperature (test's own) | ECE before -> after | NLL before -> after "
        "| mean confidence after / accuracy |",
        "|---|---|---|---|---|---|",
    ]
    for run in part:
        for name, net in run["networks"].items():
            c = net["calibration"]
            out.append(
                f"| {run['seed']} | {name} | {c['temperature']:.2f} ({c['temperature_test']:.2f}) "
                f"| {c['ece_before']:.3f} -> {c['ece_after']:.3f} "
                f"| {c['nll_before']:.3f} -> {c['nll_after']:.3f} "
                f"| {c['confidence_after']:.3f} / {c['accuracy']:.3f} |"
            )
    return [*out, ""]


def _row(
    part: list[dict[str, Any]], names: list[str], name: str, i: int, rule: str, label: str = ""
) -> str:
    """Rule `i` of network `name` on every split of `part`, shown as `label` (default: name)."""

    def top1(run: dict[str, Any], net: str) -> float:
        return float(run["networks"][net]["rules"][i]["metrics"]["top1"])

    t = np.array([top1(r, name) for r in part])
    top5 = np.mean([r["networks"][name]["rules"][i]["metrics"]["top5"] for r in part])
    once = np.sum([r["networks"][name]["top1_by_support"].get("1", [0, 0]) for r in part], 0)
    seen_once = f"{once[0] / once[1]:.3f}" if rule == "network" and once[1] else ""
    versus = ""
    if name == ENSEMBLE:
        members = np.array([[top1(r, m) for m in names if m != ENSEMBLE] for r in part])
        d = 100 * (t - members.mean(1))
        versus = f"{d.mean():+.2f} ({int((t > members.max(1)).sum())} of {len(t)})"
    per_split = " / ".join(f"{x:.4f}" for x in t)
    cells = (rule, label or name, per_split, f"{t.mean():.4f}", f"{top5:.4f}", seen_once, versus)
    return "| " + " | ".join(cells) + " |"


if __name__ == "__main__":
    raise SystemExit(main())
