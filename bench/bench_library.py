"""Benchmark: the library searches a model version's answers cost, without the network or HTTP.

    python bench/bench_library.py --model-dir models/rruff-minerals/6 [--model-dir <other>] \
        [--repeats 200] [--out bench/results/bench_library.json]

    # the committed results compare v6 with v5 (same network and references, the mix with the
    # adapted search alone), which lives in git history:
    mkdir -p /tmp/v5store && git archive 296b386 models/rruff-minerals/5 | tar -x -C /tmp/v5store
    python bench/bench_library.py --model-dir /tmp/v5store/models/rruff-minerals/5 \
        --model-dir models/rruff-minerals/6

Per version, on one BLAS thread as the service runs them (`service/__init__.py`): the time to
build its `ServedSearch` from `references.npz` (what a model load adds: the adapted search fits its
whitening and hub penalties here), and per request of n spectra (n = 1, 8, 32, the version's own
reference spectra as queries) the time of the ranking search over the whole library (what the mix
takes) and of the HQI of the top 5 hits (`LibrarySearch.scores_of`: what each answer shows and the
no-match rule thresholds). Medians of `--repeats` runs, alternating between versions so that a
busy moment of a shared machine hits both. The HTTP benchmark (bench_service.py) measures whole
requests, but on a shared 2-core VM its run-to-run spread is larger than this difference.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # as the service: before numpy is imported

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_service import machine_info  # noqa: E402

from spectra.card import ModelCard  # noqa: E402
from spectra.references import read_references  # noqa: E402
from spectra.scoring import ServedSearch  # noqa: E402

BATCHES = (1, 8, 32)
TOP_K = 5


def version_label(model_dir: Path) -> str:
    """`<name>/<version>` from the directory's card."""
    card = ModelCard.load(model_dir)
    return f"{card.name}/{card.version}"


def load(model_dir: Path) -> tuple[ModelCard, np.ndarray, np.ndarray]:
    """The card and the reference spectra and class indices of one version."""
    card = ModelCard.load(model_dir)
    refs = read_references(model_dir / "references.npz", card.classes, card.grid.points)
    return card, refs.spectra, refs.classes


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds one call takes, and what it returned."""
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def measure(dirs: list[Path], repeats: int) -> dict[str, Any]:
    """Build and per-request times of each version's searches (ms, medians), interleaved."""
    loaded = {d: load(d) for d in dirs}
    builds: dict[Path, list[float]] = {d: [] for d in dirs}
    searches: dict[Path, ServedSearch] = {}
    for _ in range(3):  # a build takes up to a second: three each, the last one kept
        for d, (card, spectra, classes) in loaded.items():
            seconds, searches[d] = timed(
                partial(ServedSearch.build, spectra, classes, card.calibration)
            )
            builds[d].append(seconds)
    times: dict[tuple[Path, int, str], list[float]] = {}
    for _ in range(repeats):
        for d, (card, spectra, _) in loaded.items():
            search, n_classes = searches[d], len(card.classes)
            for n in BATCHES:
                queries = spectra[:n]
                ranking = search.ranking.class_scores(queries, n_classes)
                top = np.argsort(-ranking, axis=1)[:, :TOP_K]
                calls = {
                    "ranking_ms": partial(search.ranking.class_scores, queries, n_classes),
                    "top_hqi_ms": partial(search.similarity.scores_of, queries, top),
                }
                for part, call in calls.items():
                    times.setdefault((d, n, part), []).append(timed(call)[0])
    out: dict[str, Any] = {}
    for d, (card, spectra, _) in loaded.items():
        calib = card.calibration
        out[version_label(d)] = {
            "references": len(spectra),
            "points": card.grid.points,
            "ranking_search": calib.ranking_search,
            "similarity": calib.similarity,
            "build_ms": round(1e3 * float(np.median(builds[d])), 1),
            "per_request": {
                str(n): {
                    part: round(1e3 * float(np.median(times[(d, n, part)])), 3)
                    for part in ("ranking_ms", "top_hqi_ms")
                }
                for n in BATCHES
            },
        }
    return out


def markdown(result: dict[str, Any]) -> str:
    """The table of `result`."""
    m = result["machine"]
    head = (
        "| version | ranking search | references | build ms | "
        + " | ".join(f"n={n}: ranking / top-{TOP_K} HQI ms" for n in BATCHES)
        + " |\n|---|---|---|---|"
        + "---|" * len(BATCHES)
        + "\n"
    )
    rows = "".join(
        f"| {name} | {v['ranking_search']} | {v['references']} | {v['build_ms']} | "
        + " | ".join(
            f"{v['per_request'][str(n)]['ranking_ms']:.2f} / "
            f"{v['per_request'][str(n)]['top_hqi_ms']:.2f}"
            for n in BATCHES
        )
        + " |\n"
        for name, v in result["versions"].items()
    )
    return (
        "# Library search cost per version (one BLAS thread, medians)\n\n"
        + head
        + rows
        + f"\n{result['repeats']} repeats; {m['cpu']}, {m['cores']} cores, {m['platform']}; "
        f"commit {result['git_commit']}; {result['seconds']} s\n"
    )


def main(argv: list[str] | None = None) -> int:
    """Measure the versions given and write JSON + markdown."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model-dir", type=Path, action="append", required=True)
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "bench_library.json")
    a = p.parse_args(argv)
    start = time.time()
    result = {
        "machine": machine_info(),
        "git_commit": os.popen(f"git -C {REPO} rev-parse --short HEAD").read().strip(),
        "repeats": a.repeats,
        "versions": measure(a.model_dir, a.repeats),
    }
    result["seconds"] = round(time.time() - start, 1)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    a.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
