"""How export should fit the card's network + library mix: accuracy and calibration of variants.

The served probabilities mix the network's temperature-scaled softmax with a softmax over the
query's library-search score for each class's best-matching reference spectrum
(`spectra.scoring.combined_probabilities`; `--search`: export's adapted search by default, the
derivative HQI for the committed results, made before versions ranked by the adapted search).
Export fits the mix on the validation part of a trained run by NLL
(`training.pipeline.choose_library_weight`). This script refits it in several ways on the same
run and reports validation NLL / ECE / top-1 (what the fit sees) and test top-1 / top-5 / NLL /
ECE (what users get), so that a change of the fitting is chosen on evidence:

- `to 0.75`: the network's temperature fitted alone, weights {0, .25, .5, .75}, the library
  temperature fitted per weight (how rruff-minerals/3 was first exported, commit 6be730a);
- `to 0.9`: the same with weight 0.9 allowed (what export does now: `LIBRARY_WEIGHTS`);
- `to 0.9 joint`: weight 0.9 allowed and both temperatures refitted in turn inside the mixture.

- `support-aware`: the `to 0.9` temperatures, but each class's library weight depends on how many
  reference spectra it has, w_c = sigmoid(a - b log n_c), (a, b) fitted by validation NLL on a
  grid that includes b = 0 (one weight for all): the network is weak on minerals seen once and
  strong on those seen often (docs/accuracy.md, "Why our dataset_2 is harder").

Then, with the mix export fits (`to 0.9`), the test part against the two libraries a version could
carry: the training part only (what the mix was fitted against) or the training and validation
parts (what export publishes, `training.pipeline.calibrate_and_publish`).

    python bench/mix_calibration.py --run runs/default --out bench/results/mix_calibration.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench_accuracy import machine_info  # noqa: E402

from spectra.card import Calibration  # noqa: E402
from spectra.scoring import combined_probabilities, softmax  # noqa: E402
from training.calibration import expected_calibration_error, fit_temperature  # noqa: E402
from training.pipeline import (  # noqa: E402
    LIBRARY_WEIGHTS,
    SEARCH,
    SIMILARITY,
    choose_library_weight,
    library_references,
    load_run,
    reference_similarities,
)
from training.train import predict_logits  # noqa: E402

VARIANTS: dict[str, dict[str, Any]] = {
    "to 0.75": {"weights": (0.0, 0.25, 0.5, 0.75), "joint": False},
    "to 0.9": {"weights": (0.0, 0.25, 0.5, 0.75, 0.9), "joint": False},
    "to 0.9 joint": {"weights": (0.0, 0.25, 0.5, 0.75, 0.9), "joint": True},
}


SUPPORT_A = np.linspace(-3.0, 5.0, 17)  # library weight sigmoid(a - b log n) over a grid
SUPPORT_B = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0)


def support_mix(
    logits: np.ndarray, sims: np.ndarray, calib: Calibration, library_weight: np.ndarray
) -> np.ndarray:
    """The served mix with a library weight per class ([C]), renormalised per row."""
    w = library_weight[None, :]
    p_net, p_lib = softmax(logits, calib.temperature), softmax(sims, calib.library_temperature)
    p = (1 - w) * p_net + w * p_lib
    return p / p.sum(axis=1, keepdims=True)


def support_weights(a: float, b: float, counts: np.ndarray) -> np.ndarray:
    """Library weight of each class, sigmoid(a - b log n_c), for its n_c references."""
    return 1 / (1 + np.exp(-(a - b * np.log(np.maximum(counts, 1)))))


def fit_support_weights(
    logits: np.ndarray, sims: np.ndarray, y: np.ndarray, calib: Calibration, counts: np.ndarray
) -> tuple[float, float]:
    """(a, b) of w_c = sigmoid(a - b log n_c) with the least validation NLL."""
    best = (np.inf, 0.0, 0.0)
    for a in SUPPORT_A:
        for b in SUPPORT_B:
            w = support_weights(float(a), b, counts)
            nll = scores(support_mix(logits, sims, calib, w), y)["nll"]
            best = min(best, (nll, float(a), float(b)))
    return best[1], best[2]


def support_row(
    parts: dict[str, tuple[np.ndarray, np.ndarray]],
    y: dict[str, np.ndarray],
    calib: Calibration,
    counts: np.ndarray,
) -> dict[str, Any]:
    """The support-aware variant: fitted on validation, scored on validation and test."""
    a, b = fit_support_weights(*parts["val"], y["val"], calib, counts)
    w = support_weights(a, b, counts)
    row: dict[str, Any] = {
        "variant": "support-aware",
        "weight": float(np.median(w[counts > 0])),
        "weight_a_b": [a, b],
        "temperature": calib.temperature,
        "library_temperature": calib.library_temperature,
    }
    for part, (logits, sims) in parts.items():
        row[part] = scores(support_mix(logits, sims, calib, w), y[part])
    return row


def scores(probs: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """top-1, top-5, NLL, ECE and mean top-1 probability."""
    top5 = np.argsort(-probs, axis=1)[:, :5]
    return {
        "top1": float((probs.argmax(1) == y).mean()),
        "top5": float((top5 == y[:, None]).any(1).mean()),
        "nll": float(-np.log(probs[np.arange(len(y)), y] + 1e-12).mean()),
        "ece": expected_calibration_error(probs, y),
        "confidence": float(probs.max(1).mean()),
    }


def main(argv: list[str] | None = None) -> int:
    """Fit every variant on validation, score it on validation and test, write JSON + table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--run", type=Path, default=REPO / "runs" / "default")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "mix_calibration.json")
    p.add_argument("--search", default=SEARCH, help="library search mixed in (default %(default)s)")
    a = p.parse_args(argv)
    start = time.time()
    _, ds, model, _, split = load_run(a.run)
    n = len(ds.classes)
    refs = library_references(ds, split.train)
    parts = {}
    for part in ("val", "test"):
        idx = getattr(split, part)
        x = ds.x[idx]
        parts[part] = (predict_logits(model, x), reference_similarities(x, refs, a.search, n))
    y = {"val": ds.y[split.val], "test": ds.y[split.test]}
    logits_v, sims_v = parts["val"]
    base = Calibration(fit_temperature(logits_v, y["val"]), 0.5, 0.0, SIMILARITY, search=a.search)
    rows = []
    for name, kw in VARIANTS.items():
        calib = choose_library_weight(logits_v, sims_v, y["val"], base, **kw)
        row: dict[str, Any] = {
            "variant": name,
            "weight": calib.library_weight,
            "temperature": calib.temperature,
            "library_temperature": calib.library_temperature,
        }
        for part, (logits, sims) in parts.items():
            row[part] = scores(combined_probabilities(logits, sims, calib), y[part])
        rows.append(row)
        print(name, json.dumps(row), flush=True)
    adopted = choose_library_weight(logits_v, sims_v, y["val"], base)
    counts = np.bincount(refs.classes, minlength=n)
    rows.append(support_row(parts, y, adopted, counts))
    print("support-aware", json.dumps(rows[-1]), flush=True)
    published = library_comparison(ds, split, adopted, parts["test"][0])
    result = {
        "run": os.path.relpath(a.run, REPO),
        "search": a.search,
        "machine": machine_info(),
        "split_sizes": split.sizes(),
        "library_weights_in_pipeline": list(LIBRARY_WEIGHTS),
        "rows": rows,
        "published_library": published,
        "seconds": round(time.time() - start, 1),
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    a.out.with_suffix(".md").write_text(markdown(result))
    return 0


def library_comparison(
    ds: Any, split: Any, calib: Calibration, logits_test: np.ndarray
) -> dict[str, dict[str, Any]]:
    """Test scores of the served mix and of its library search alone against the training
    part, and against the training + validation parts, as reference library."""
    n, x, y = len(ds.classes), ds.x[split.test], ds.y[split.test]
    out = {}
    for name, rows in (
        ("train", split.train),
        ("train+val", np.sort(np.concatenate([split.train, split.val]))),
    ):
        sims = reference_similarities(x, library_references(ds, rows), calib.ranking_search, n)
        out[name] = {
            "spectra": len(rows),
            "served": scores(combined_probabilities(logits_test, sims, calib), y),
            "search_top1": float((sims.argmax(1) == y).mean()),
        }
    return out


def markdown(result: dict[str, Any]) -> str:
    """The table of `result`."""
    head = (
        "| variant | weight | T | library T | val NLL | val ECE | val top-1 | test top-1 | "
        "test top-5 | test NLL | test ECE | test confidence |\n" + "|---" * 12 + "|\n"
    )
    body = "".join(
        f"| {r['variant']} | {r['weight']:g} | {r['temperature']:.3f} | "
        f"{r['library_temperature']:.4f} | {r['val']['nll']:.3f} | {r['val']['ece']:.3f} | "
        f"{r['val']['top1']:.4f} | {r['test']['top1']:.4f} | {r['test']['top5']:.4f} | "
        f"{r['test']['nll']:.3f} | {r['test']['ece']:.3f} | {r['test']['confidence']:.3f} |\n"
        for r in result["rows"]
    )
    lib = "".join(
        f"| {k} | {v['spectra']} | {v['served']['top1']:.4f} | {v['served']['top5']:.4f} | "
        f"{v['served']['ece']:.3f} | {v['search_top1']:.4f} |\n"
        for k, v in result["published_library"].items()
    )
    return (
        f"# Mix calibration ({result['run']}, split {result['split_sizes']})\n\n"
        + head
        + body
        + "\n## Reference library on test (mix as export fits it)\n\n"
        + "| library | spectra | served top-1 | served top-5 | served ECE "
        + f"| {result['search']} search top-1 |\n"
        + "|---|---|---|---|---|---|\n"
        + lib
        + f"\n{result['seconds']} s on {result['machine']['cpu']} ({result['machine']['cores']} "
        f"cores), commit {result['machine']['git_commit']}\n"
    )


if __name__ == "__main__":
    raise SystemExit(main())
