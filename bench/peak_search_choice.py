"""How PeakSearch's settings were chosen: top-1 of the adapted search plus `weight` times the
band-position cosine (`spectra.library.peak_features` with one setting changed at a time, or
a few together), against the adapted search alone, on dataset_2 random seeds 0-9 and grouped
0-2 (the seeds the adapted search was chosen on). Needs the 1,024-point .npz cache that
`bench_accuracy.py --grid-points 1024` builds. The chosen settings became the PEAK_* constants
of `spectra.library`; bench_accuracy.py then measured them on 30 + 5 splits and on seeds never
used here (docs/accuracy.md, "Beyond the paper: band positions").

    python bench/peak_search_choice.py --out bench/out/peak_search_choice.json
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

from spectra.library import AdaptedSearch, peak_features
from training.datasets import Dataset
from training.splits import Split, make_split

CACHE = Path("bench/cache/excellent_unoriented_dataset_2_L1024_1024.npz")
WEIGHTS = (0.15, 0.25, 0.35)
CANDIDATES: list[dict[str, Any]] = [  # changes from peak_features' defaults
    {},
    {"smoothing": 2.0},
    {"smoothing": 3.0},
    {"prominence": 0.02},
    {"prominence": 0.04},
    {"prominence": 0.005},
    {"width": 1.0},
    {"width": 1.5},
    {"width": 2.5},
    {"window": 8},
    {"window": 30},
    {"smoothing": 1.5, "window": 20},
    {"smoothing": 2.0, "prominence": 0.02, "width": 1.5},
]


def top1(scores: np.ndarray, y: np.ndarray) -> float:
    return float((scores.argmax(1) == y).mean())


def score_candidate(
    ds: Dataset, splits: list[tuple[str, int, Split]], adapted: list[Any], setting: dict[str, Any]
) -> dict[str, Any]:
    """Per split kind: the band-position search alone and, per weight, the mean gain over the
    adapted search and the splits it wins."""
    feats = peak_features(ds.x, **setting)
    out: dict[str, Any] = {"setting": setting}
    n = len(ds.classes)
    for (kind, _, split), (search, sim) in zip(splits, adapted, strict=True):
        y = ds.y[split.test]
        peak = feats[split.test] @ feats[split.train].T
        row = out.setdefault(kind, {"peaks_alone": [], **{str(w): [] for w in WEIGHTS}})
        base = top1(search.best_per_class(sim, n), y)
        row["peaks_alone"].append(top1(search.best_per_class(peak, n), y))
        for w in WEIGHTS:
            mixed = search.best_per_class((1 - w) * sim + w * peak, n)
            row[str(w)].append(top1(mixed, y) - base)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cache", type=Path, default=CACHE)
    p.add_argument("--n-random", type=int, default=10)
    p.add_argument("--n-grouped", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("bench/out/peak_search_choice.json"))
    a = p.parse_args(argv)
    start = time.time()
    ds = Dataset.load(a.cache)
    kinds = [("random", s) for s in range(a.n_random)] + [
        ("grouped", s) for s in range(a.n_grouped)
    ]
    splits = [(k, s, make_split(k, ds.y, ds.groups, s)) for k, s in kinds]
    adapted = []
    for _, _, split in splits:
        search = AdaptedSearch(ds.x[split.train], ds.y[split.train])
        adapted.append((search, search.similarity(ds.x[split.test])))
    base = {
        kind: float(np.mean([
            top1(search.best_per_class(sim, len(ds.classes)), ds.y[split.test])
            for (k, _, split), (search, sim) in zip(splits, adapted, strict=True) if k == kind
        ]))
        for kind in ("random", "grouped")
    }  # fmt: skip
    rows = []
    for setting in CANDIDATES:
        row = score_candidate(ds, splits, adapted, setting)
        rows.append(row)
        summary = {
            f"{kind} {w}": f"{np.mean(gain) * 100:+.2f} ({sum(d > 0 for d in gain)} won)"
            for kind in ("random", "grouped")
            for w in map(str, WEIGHTS)
            for gain in [row[kind][w]]
        }
        print(setting, summary, flush=True)
    result = {"adapted": base, "candidates": rows, "seconds": round(time.time() - start, 1)}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
