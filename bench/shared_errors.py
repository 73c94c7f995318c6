"""Which test spectra a trained network and a library search get wrong, on a benchmark's saved
logits: how many errors they share, the best any rule choosing between their two answers could
do ("either right"), and the mineral pairs confused most, pooled over the splits.

`bench_accuracy.py --keep-logits` writes each network's test logits; each split is rebuilt and
searched with `--library` (its training part is the library), so both answer the same spectra.

    python bench/shared_errors.py bench/out/cpu_d1_rs_e60 bench/out/cpu_d1_rs_e60_s34 \\
        --network drcnn_rs --out bench/out/shared_errors_d1.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_accuracy import library_scores
from mix_rules import load_logits, saved_logits, split_of, write_results

TOP_PAIRS = 15
COUNTS = (
    "test",
    "network_wrong",
    "library_wrong",
    "both_wrong",
    "both_wrong_same_answer",
    "network_wrong_sample_in_library",
)
RATES = ("network_top1", "network_top3", "library_top1", "either_right")


def split_errors(
    y: np.ndarray, net_scores: np.ndarray, lib_scores: np.ndarray, seen_sample: np.ndarray
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Counts of one split's test spectra by who answers them right, and both predictions;
    `seen_sample`: whether another spectrum of each one's RRUFF sample (another laser) is in
    the library."""
    net, lib = net_scores.argmax(1), lib_scores.argmax(1)
    net_wrong, lib_wrong = net != y, lib != y
    top3 = np.argsort(-net_scores, axis=1)[:, :3]
    counts = {
        "test": int(y.size),
        "network_wrong": int(net_wrong.sum()),
        "library_wrong": int(lib_wrong.sum()),
        "both_wrong": int((net_wrong & lib_wrong).sum()),
        "both_wrong_same_answer": int((net_wrong & lib_wrong & (net == lib)).sum()),
        "network_wrong_sample_in_library": int((net_wrong & seen_sample).sum()),
        "either_right": float(np.mean(~(net_wrong & lib_wrong))),
        "network_top1": float(np.mean(~net_wrong)),
        "library_top1": float(np.mean(~lib_wrong)),
        "network_top3": float(np.mean((top3 == y[:, None]).any(1))),
    }
    return counts, net, lib


def pairs(confusions: Counter[tuple[str, str]]) -> list[dict[str, Any]]:
    """The most frequent (true, answered) mineral pairs, an unordered pair counted once."""
    merged: Counter[tuple[str, str]] = Counter()
    for (a, b), n in confusions.items():
        merged[(min(a, b), max(a, b))] += n
    return [{"minerals": list(k), "errors": n} for k, n in merged.most_common(TOP_PAIRS)]


def run(dirs: list[Path], network: str, library: str) -> dict[str, Any]:
    """Every saved training of `network` in `dirs`, against `library` on the same split; the
    confused pairs per split kind and answerer."""
    per_split: list[dict[str, Any]] = []
    confused: dict[str, dict[str, Counter[tuple[str, str]]]] = {}
    for d in dirs:
        opts = json.loads((d / "results.json").read_text())["options"]
        for subset, kind, seed, name, path in saved_logits(d):
            if name != network:
                continue
            ds, split = split_of(opts, subset, kind, seed)
            logits = load_logits(path, ds, split)["test"]
            y = ds.y[split.test]
            lib_scores = library_scores(ds, split, library, split.test)
            seen = np.isin(ds.groups[split.test], ds.groups[split.train])
            counts, net, lib = split_errors(y, logits, lib_scores, seen)
            per_split.append({"subset": subset, "split": kind, "seed": seed, **counts})
            by_kind = confused.setdefault(kind, {"network": Counter(), "library": Counter()})
            for who, pred in (("network", net), ("library", lib)):
                wrong = [
                    (ds.classes[t], ds.classes[q]) for t, q in zip(y, pred, strict=True) if t != q
                ]
                by_kind[who].update(wrong)
            print(kind, seed, {k: counts[k] for k in COUNTS})
    return {
        "network": network,
        "library": library,
        "splits": per_split,
        "pairs": {k: {who: pairs(c) for who, c in v.items()} for k, v in confused.items()},
    }


def markdown(result: dict[str, Any]) -> str:
    """Per split kind: the error counts summed over its splits, the rates averaged, and the
    confused pairs."""
    net, lib = result["network"], result["library"]
    head = (
        f"| splits | test spectra | {net} wrong (its sample in the library) | {lib} wrong "
        f"| both wrong (same answer) | {net} top-1 / top-3 | {lib} top-1 | either right |"
    )
    out = [f"# Shared errors: {net} and the {lib} search\n", head, "|---" * 8 + "|"]
    for kind in sorted({s["split"] for s in result["splits"]}):
        part = [s for s in result["splits"] if s["split"] == kind]
        tot = {k: sum(s[k] for s in part) for k in COUNTS}
        rate = {k: f"{np.mean([s[k] for s in part]):.4f}" for k in RATES}
        seeds = ", ".join(str(s["seed"]) for s in part)
        cells = [
            f"{kind} {seeds}",
            str(tot["test"]),
            f"{tot['network_wrong']} ({tot['network_wrong_sample_in_library']})",
            str(tot["library_wrong"]),
            f"{tot['both_wrong']} ({tot['both_wrong_same_answer']})",
            f"{rate['network_top1']} / {rate['network_top3']}",
            rate["library_top1"],
            rate["either_right"],
        ]
        out.append("| " + " | ".join(cells) + " |")
    for kind, by_who in sorted(result["pairs"].items()):
        for who, top in by_who.items():
            out += [f"\n## Most confused pairs ({result[who]}), {kind} splits\n"]
            out += ["| minerals | errors |", "|---|---|"]
            out += [f"| {' / '.join(p['minerals'])} | {p['errors']} |" for p in top]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Score the saved trainings of the given benchmark output folders."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("dirs", type=Path, nargs="+", help="bench_accuracy.py --keep-logits --out dirs")
    p.add_argument("--network", default="drcnn_rs", help="the saved network to score")
    p.add_argument("--library", default="adapted", help="the library search beside it")
    p.add_argument("--out", type=Path, default=Path("bench/out/shared_errors.json"))
    a = p.parse_args(argv)
    start = time.time()
    result = run(a.dirs, a.network, a.library)
    write_results(a.out, [result], time.time() - start, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
