"""How the derivative library search was chosen: top-1 of nearest-neighbour cosine search after
each candidate transform of the (min-max) spectra, on dataset_2 random seeds 0-9 and grouped 0-2.
Later candidates (after the choice): other powers, two windows together, the derivative mixed
with the square-root spectrum, shift tolerance (a query's best match over shifts of up to
k grid points, for wavenumber calibration offsets between instruments), and a metric fitted to
the library (`spectra.library.AdaptedSearch`: within-class whitening, a hubness penalty, both).

The winner (square root, then a 15-point quadratic Savitzky-Golay first derivative) became
`spectra.library.derivative_features`; bench_accuracy.py then measured it on 30 + 5 splits and on
30 seeds never used here (docs/accuracy.md). The adapted search's settings were chosen the same
way (seeds 0-9 / 0-2) and confirmed on seeds 100-129 / 100-104 (`--only adapted`). Needs the
.npz cache that bench_accuracy.py builds.

    python bench/library_transforms.py --out bench/out/library_transforms.json
    # a candidate against the chosen search on 30 + 5 splits never used for choosing
    python bench/library_transforms.py --first-seed 100 --n-random 30 --n-grouped 5 \
        --only "15 pts" --out bench/out/library_transforms_heldout.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench_accuracy import shift_points

from spectra.library import AdaptedSearch, LibrarySearch, savgol_filter, unit_rows
from training.datasets import Dataset
from training.splits import make_split

CACHE = Path("bench/cache/excellent_unoriented_dataset_2_1570.npz")


def snip_baseline_removed(x: np.ndarray, iterations: int) -> np.ndarray:
    """Spectrum minus its SNIP baseline (log-log-sqrt transformed, as Ryan et al. 1988)."""
    v = np.log(np.log(np.sqrt(1000 * x + 1) + 1) + 1)
    for k in range(1, iterations + 1):
        left = np.pad(v, ((0, 0), (k, 0)), mode="edge")[:, :-k]
        right = np.pad(v, ((0, 0), (0, k)), mode="edge")[:, k:]
        v = np.minimum(v, (left + right) / 2)
    return 1000 * x - ((np.exp(np.exp(v) - 1) - 1) ** 2 - 1)


def pos(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, None)


def sqrt_derivative(x: np.ndarray, window: int, power: float = 0.5) -> np.ndarray:
    """Unit rows of the first derivative (quadratic Savitzky-Golay) of x**power."""
    return unit_rows(savgol_filter(pos(x) ** power, window, 2, 1))


def weighted(*parts: tuple[float, np.ndarray]) -> np.ndarray:
    """Unit-row features side by side, so that their cosine is the weighted mean of theirs."""
    return np.concatenate([np.sqrt(w) * unit_rows(f) for w, f in parts], axis=1)


TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none (cosine HQI)": lambda x: x,
    "sqrt": lambda x: np.sqrt(pos(x)),
    "x^0.35": lambda x: pos(x) ** 0.35,
    "x^0.25": lambda x: pos(x) ** 0.25,
    "log(1+100x)": lambda x: np.log1p(100 * pos(x)),
    "SNIP baseline removed (40 it.)": lambda x: snip_baseline_removed(x, 40),
    "1st derivative, 11 pts": lambda x: savgol_filter(x, 11, 2, 1),
    "1st derivative, 21 pts": lambda x: savgol_filter(x, 21, 2, 1),
    "2nd derivative, 21 pts, cubic": lambda x: -savgol_filter(x, 21, 3, 2),
    "sqrt + 1st derivative, 7 pts": lambda x: savgol_filter(np.sqrt(pos(x)), 7, 2, 1),
    "sqrt + 1st derivative, 11 pts": lambda x: savgol_filter(np.sqrt(pos(x)), 11, 2, 1),
    "sqrt + 1st derivative, 15 pts": lambda x: savgol_filter(np.sqrt(pos(x)), 15, 2, 1),
    "sqrt + 1st derivative, 21 pts": lambda x: savgol_filter(np.sqrt(pos(x)), 21, 2, 1),
    "sqrt + 1st derivative, 15 pts, cubic": lambda x: savgol_filter(np.sqrt(pos(x)), 15, 3, 1),
    # after the choice
    "x^0.4 + 1st derivative, 15 pts": lambda x: sqrt_derivative(x, 15, 0.4),
    "x^0.6 + 1st derivative, 15 pts": lambda x: sqrt_derivative(x, 15, 0.6),
    "sqrt + 1st derivative, 11 and 21 pts": lambda x: weighted(
        (0.5, sqrt_derivative(x, 11)), (0.5, sqrt_derivative(x, 21))
    ),
    "0.7 sqrt + 1st derivative, 15 pts; 0.3 sqrt": lambda x: weighted(
        (0.7, sqrt_derivative(x, 15)), (0.3, np.sqrt(pos(x)))
    ),
}
CHOSEN = "sqrt + 1st derivative, 15 pts"  # spectra.library.derivative_features
# name -> largest shift in grid points (~1 cm-1 each), on the chosen derivative features
SHIFTED = {f"sqrt + 1st derivative, 15 pts, best of shifts up to {k}": k for k in (1, 2, 4)}


# name -> AdaptedSearch settings on the chosen derivative features: whitening alone (no hub
# penalty), the penalty alone (infinite shrinkage: no whitening), then both
def _adapt(shrinkage: float, hub_weight: float, hub_neighbours: int = 20) -> dict[str, Any]:
    return {"shrinkage": shrinkage, "hub_weight": hub_weight, "hub_neighbours": hub_neighbours}


_PENALTIES = [(a, k) for k in (20, 50) for a in (0.15, 0.25, 0.35)]
ADAPTED: dict[str, dict[str, Any]] = {
    **{f"adapted: whitened, shrinkage {s:g}": _adapt(s, 0.0) for s in (3, 10, 30, 100)},
    **{
        f"adapted: hub penalty {a:g} over {k} neighbours": _adapt(float("inf"), a, k)
        for a, k in _PENALTIES
    },
    **{
        f"adapted: whitened 30, hub penalty {a:g} over {k} neighbours": _adapt(30.0, a, k)
        for a, k in _PENALTIES
    },
}


def top1(
    ds: Dataset,
    features: np.ndarray,
    kind: str,
    seeds: range,
    max_shift: int = 0,
    adapt: dict[str, Any] | None = None,
    with_validation: bool = False,
) -> list[float]:
    """Top-1 of cosine nearest-neighbour search on `features` on each split; with `max_shift`,
    each class scores its best match over query shifts of up to that many points; with `adapt`,
    the search is an AdaptedSearch with those settings, fitted to each split's library; with
    `with_validation` the library is the training and validation parts (as a served version's
    references), else the training part."""
    accs = []
    n = len(ds.classes)
    for seed in seeds:
        split = make_split(kind, ds.y, ds.groups, seed)
        refs = np.concatenate([split.train, split.val]) if with_validation else split.train
        lib = (
            LibrarySearch(features[refs], ds.y[refs])
            if adapt is None
            else AdaptedSearch(features[refs], ds.y[refs], "cosine", **adapt)
        )
        queries = features[split.test]
        shifts = range(-max_shift, max_shift + 1)
        scores = np.max([lib.class_scores(shift_points(queries, s), n) for s in shifts], axis=0)
        pred = scores.argmax(1)
        accs.append(float((pred == ds.y[split.test]).mean()))
    return accs


def main(argv: list[str] | None = None) -> int:
    """Print and write the table."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--cache", type=Path, default=CACHE)
    p.add_argument("--out", type=Path, default=Path("bench/out/library_transforms.json"))
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--n-random", type=int, default=10, help="random splits")
    p.add_argument("--n-grouped", type=int, default=3, help="splits grouped by sample")
    p.add_argument("--only", default="", help="candidates whose name contains this")
    p.add_argument(
        "--with-validation",
        action="store_true",
        help="library = training + validation parts (a served version's references)",
    )
    a = p.parse_args(argv)
    ds = Dataset.load(a.cache)
    seeds = {
        "random": range(a.first_seed, a.first_seed + a.n_random),
        "grouped": range(a.first_seed, a.first_seed + a.n_grouped),
    }
    chosen = TRANSFORMS[CHOSEN]
    # the chosen search first: every other row is compared with it split by split
    candidates: list[tuple[str, Callable[[np.ndarray], np.ndarray], int, dict | None]]
    candidates = [(CHOSEN, chosen, 0, None)]
    candidates += [(n, t, 0, None) for n, t in TRANSFORMS.items() if n != CHOSEN]
    candidates += [(n, chosen, k, None) for n, k in SHIFTED.items()]
    candidates += [(n, chosen, 0, adapt) for n, adapt in ADAPTED.items()]
    rows = []
    for name, transform, k, adapt in candidates:
        if a.only not in name and name != CHOSEN:
            continue
        features = transform(ds.x.astype(np.float64)).astype(np.float32)
        row = {
            "transform": name,
            **{
                kind: top1(ds, features, kind, s, k, adapt, a.with_validation)
                for kind, s in seeds.items()
            },
        }
        rows.append(row)
        print(f"{name:55s} {_summary(row, rows[0])}", flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    header = {
        "cache": str(a.cache),
        "seeds": {k: [s.start, s.stop - 1] for k, s in seeds.items()},
        "library": "train+val" if a.with_validation else "train",
    }
    a.out.write_text(json.dumps({**header, "rows": rows}, indent=1) + "\n")
    return 0


def _summary(row: dict[str, Any], base: dict[str, Any]) -> str:
    """Mean top-1 per split kind, and wins / ties / losses against `base` split by split."""
    parts = []
    for kind in ("random", "grouped"):
        a, b = np.asarray(row[kind]), np.asarray(base[kind])
        wtl = f"{(a > b).sum()}/{(a == b).sum()}/{(a < b).sum()}"
        parts.append(f"{kind} {a.mean():.4f} ({wtl})" if len(a) else f"{kind} -")
    return "  ".join(parts)


if __name__ == "__main__":
    raise SystemExit(main())
