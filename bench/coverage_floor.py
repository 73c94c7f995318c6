"""How the served model answers spectra that cover only part of its grid: the coverage floor.

RRUFF's spectra cover 49-100 % of the 30-1599 cm-1 grid, so a network and a library trained on
them have never seen a fragment of a few tens of cm-1, and the zero-filled grid such a fragment
becomes looks like a clean spectrum with one or two bands. This scores a served version (the
service's own `Predictor`: probabilities, similarity and the card's no-match rule) on its own
test spectra (never among its references) cut to windows of a given share of the grid (a random
window inside each spectrum's measured range, zero outside, min-max normalised inside: what the
service's preprocessing makes of such a measurement), and on random-noise fragments that hold
no mineral at all. Per share: top-1, how often the card's rule says `match`, and how often a
`match` is wrong. The floor `spectra.scoring.MIN_MATCH_COVERAGE` is the smallest share at which
matches are wrong at most one time in ten on half of the test spectra (`choose`); the other half
(`confirm`) checks it.

    python bench/coverage_floor.py --out docs/coverage_floor.json   # ~2 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_accuracy import DEFAULT_RRUFF, load_subset, machine_info, subset_rule

from service.metrics import Metrics
from service.model import load_model
from service.predictor import BatchingConfig, Predictor
from service.runtime import RuntimeConfig
from spectra.preprocess import Prepared, minmax
from spectra.scoring import match_margin
from training.datasets import Dataset
from training.splits import make_split

SHARES = (1.0, 0.6, 0.5, 0.4, 0.3, 0.25, 0.2, 0.15, 0.1, 0.05, 0.02)
"""Shares of the grid a window covers (1.0: the spectrum as measured)."""
BATCH = 64


def window(values: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray | None:
    """`values` cut to a random window of `share` of the grid inside its measured part, zero
    elsewhere, min-max normalised; None when the measured part is shorter than the window."""
    if share >= 1.0:
        return values
    measured = np.flatnonzero(values > 0)
    first, last = int(measured[0]), int(measured[-1])
    n = max(2, round(share * values.size))
    if last - first + 1 < n:
        return None
    start = int(rng.integers(first, last - n + 2))
    out = np.zeros_like(values)
    out[start : start + n] = minmax(values[start : start + n])
    return out


def noise(points: int, share: float, rng: np.random.Generator) -> np.ndarray:
    """A window of uniform noise (no mineral) of `share` of the grid, zero elsewhere."""
    n = max(2, round(share * points))
    start = int(rng.integers(0, points - n + 1))
    out = np.zeros(points)
    out[start : start + n] = minmax(rng.random(n))
    return out


async def answer(predictor: Predictor, vectors: list[np.ndarray]) -> list[dict[str, Any]]:
    """The service's answers (top-1) for model-ready vectors (the coverage given is the share of
    non-zero points; `card_match` does not read it)."""
    prepared = [Prepared(v.astype(np.float32), float((v > 0).mean())) for v in vectors]
    out: list[dict[str, Any]] = []
    for i in range(0, len(prepared), BATCH):
        out += await predictor.identify(prepared[i : i + BATCH], top_k=1)
    return out


def card_match(predictor: Predictor, a: dict[str, Any]) -> bool:
    """The card's rule alone (probability and similarity thresholds, no coverage floor)."""
    top = a["predictions"][0]
    calib = predictor.model.card.calibration
    return bool(match_margin(top["probability"], top["similarity"], calib) >= 0)


async def score(
    predictor: Predictor, vectors: list[np.ndarray], labels: list[int]
) -> dict[str, Any]:
    """Top-1, the rule's match rate and the share of matches that are wrong."""
    classes = predictor.model.card.classes
    answers = await answer(predictor, vectors)
    right = np.array(
        [classes[y] == a["predictions"][0]["label"] for a, y in zip(answers, labels, strict=True)]
    )
    matched = np.array([card_match(predictor, a) for a in answers])
    n_match = int(matched.sum())
    return {
        "spectra": len(vectors),
        "top1": float(right.mean()) if len(vectors) else None,
        "match_rate": float(matched.mean()) if len(vectors) else None,
        "wrong_match_share": float((matched & ~right).sum() / n_match) if n_match else None,
        "wrong_matches": int((matched & ~right).sum()),
    }


def part_rows(ds: Dataset, card: Any) -> dict[str, np.ndarray]:
    """The version's test rows (its references hold the training and validation parts, so only
    test spectra are unseen), in two halves: one to choose the floor on, one to confirm it."""
    if list(ds.classes) != list(card.classes):
        raise SystemExit("the cached data set's classes are not the card's: another RRUFF copy")
    split = make_split(str(card.data["split"]), ds.y, ds.groups, int(card.data["split_seed"]))
    test = np.sort(split.test)
    return {"choose": test[0::2], "confirm": test[1::2]}


async def measure(predictor: Predictor, ds: Dataset, seed: int, noise_n: int) -> dict[str, Any]:
    """Every share on both halves, and the noise fragments."""
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {}
    for part, rows in part_rows(ds, predictor.model.card).items():
        out[part] = {}
        for share in SHARES:
            cut = [(window(ds.x[r].astype(np.float64), share, rng), int(ds.y[r])) for r in rows]
            kept = [(v, y) for v, y in cut if v is not None]
            out[part][str(share)] = await score(
                predictor, [v for v, _ in kept], [y for _, y in kept]
            )
            print(part, share, out[part][str(share)], flush=True)
    points = predictor.model.length
    out["noise"] = {}
    for share in SHARES[1:]:
        answers = await answer(predictor, [noise(points, share, rng) for _ in range(noise_n)])
        out["noise"][str(share)] = {
            "fragments": noise_n,
            "match_rate": float(np.mean([card_match(predictor, a) for a in answers])),
        }
        print("noise", share, out["noise"][str(share)], flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", type=Path, default=Path("models"))
    p.add_argument("--name", default="rruff-minerals")
    p.add_argument("--version", default="5")
    p.add_argument("--rruff", type=Path, default=DEFAULT_RRUFF)
    p.add_argument("--cache", type=Path, default=Path("bench/cache"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise", type=int, default=500, help="noise fragments per share")
    p.add_argument("--out", type=Path, default=Path("bench/out/coverage_floor.json"))
    args = p.parse_args(argv)
    started = time.perf_counter()
    cfg = RuntimeConfig(providers=("CPUExecutionProvider",), warmup_batches=1)
    model = load_model(args.store / args.name / args.version, args.name, args.version, cfg)
    predictor = Predictor(model, BatchingConfig(max_batch_size=BATCH), Metrics())
    ds = load_subset(
        args.rruff, subset_rule(str(model.card.data["rule"]["name"]), model.length), args.cache
    )
    result = {
        "model": f"{args.name}/{args.version}",
        "shares": list(SHARES),
        "seed": args.seed,
        "results": asyncio.run(measure(predictor, ds, args.seed, args.noise)),
        "machine": machine_info(),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out} in {result['wall_seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
