"""Markdown and figures of the accuracy benchmark (`bench_accuracy.py`).

`write_markdown` turns the results dict into `results.md`: the data-set counts, one table per
subset and split kind laid out like the paper's Table 2 (with the paper's values beside ours),
calibration, open-set rejection and timing. `split_figures` draws the confusion matrix,
reliability diagram, accuracy-coverage curve and confused pairs of one split.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from spectra.scoring import softmax
from training.calibration import accuracy_coverage
from training.metrics import (
    SUPPORT_BINS,
    aggregate,
    confused_pairs,
    confusion_matrix,
    markdown_table,
)
from training.plots import plot_accuracy_coverage, plot_confusion, plot_pair, plot_reliability

# The paper's Table 2 (Zhou et al. 2022), RRUFF subsets; N = 30 random splits.
PAPER_TABLE_2: dict[str, dict[str, dict[str, float]]] = {
    "dataset_1": {
        "DRCNN": {
            "precision": 0.9813,
            "recall": 0.9798,
            "f1": 0.9794,
            "top1": 0.9798,
            "top3": 0.9981,
            "top5": 0.9981,
        },
        "Liu et al.": {
            "precision": 0.9660,
            "recall": 0.9601,
            "f1": 0.9587,
            "top1": 0.9601,
            "top3": 0.9927,
            "top5": 0.9944,
        },
    },
    "dataset_2": {
        "DRCNN": {
            "precision": 0.9298,
            "recall": 0.8842,
            "f1": 0.8579,
            "top1": 0.8818,
            "top3": 0.9347,
            "top5": 0.9347,
        },
        "Liu et al.": {
            "precision": 0.8846,
            "recall": 0.8309,
            "f1": 0.7950,
            "top1": 0.8309,
            "top3": 0.9096,
            "top5": 0.9199,
        },
    },
    "dataset_3": {
        "DRCNN": {
            "precision": 0.9271,
            "recall": 0.8419,
            "f1": 0.8055,
            "top1": 0.8419,
            "top3": 0.9115,
            "top5": 0.9251,
        },
    },
}


def summary(results: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """subset -> split kind -> method -> `aggregate` of the test metrics over splits."""
    runs: dict[tuple[str, str, str], list[dict[str, float]]] = defaultdict(list)
    for r in results["runs"]:
        runs[(r["subset"], r["split"], r["method"])].append(r["metrics"])
    out: dict[str, dict[str, dict[str, Any]]] = defaultdict(lambda: defaultdict(dict))
    for (subset, kind, method), metrics in runs.items():
        out[subset][kind][method] = aggregate(metrics)
    return {s: dict(k) for s, k in out.items()}


def write_markdown(results: dict[str, Any]) -> str:
    """The whole `results.md`."""
    opts, machine = results["options"], results["machine"]
    parts = [
        "# Accuracy benchmark results\n",
        f"- machine: {machine['cpu']} ({machine['cores']} cores), GPU: {machine['gpu'] or 'none'};"
        f" torch {machine['torch']}, {machine['torch_threads']} thread(s); commit "
        f"{machine['git_commit']}",
        f"- started {results['started']}, wall time so far {results.get('wall_seconds', 0):.0f} s",
        f"- random splits N = {opts['n_splits']} (first seed {opts['seed']}),"
        f" grouped splits {opts['n_grouped']}; width_div {opts['width_div']}; epochs <= "
        f"{opts['epochs']}, patience {opts['patience']}, lr {opts['lr']}",
        f"- methods: {', '.join(opts['methods'])}\n",
        _datasets_md(results["datasets"]),
    ]
    for subset, kinds in summary(results).items():
        for kind, columns in kinds.items():
            ref = PAPER_TABLE_2.get(subset, {}) if kind == "random" else {}
            n = max((c.get("top1", {}).get("n", 0) for c in columns.values()), default=0)
            parts.append(f"## {subset}, {kind} splits (up to {n} split(s))\n")
            parts.append(markdown_table(columns, reference=ref))
            parts.append(_time_limited_md(results, subset, kind))
    # against the library searches, and each network variant against the paper's DRCNN and
    # against it with recursive supervision (the "one change at a time" comparisons of
    # docs/accuracy.md); a baseline the run lacks gives no table
    parts += [_paired_md(results, b) for b in PAIRED_BASELINES]
    parts.append(_support_md(results))
    parts += [_calibration_md(results), _training_md(results), _openset_md(results)]
    parts.append(_timing_md(results.get("full_size_epoch", {})))
    return "\n".join(p for p in parts if p) + "\n"


def _time_limited_md(results: dict[str, Any], subset: str, kind: str) -> str:
    """A line naming the trainings of this table that --deadline cut short (if any)."""
    cut = [
        f"{r['method']} (seed {r['seed']}, {r['train']['epochs_run']} epochs)"
        for r in results["runs"]
        if r["subset"] == subset
        and r["split"] == kind
        and r.get("train", {}).get("stopped") == "time_limit"
    ]
    return f"Stopped by the time limit, not by early stopping: {', '.join(cut)}.\n" if cut else ""


PAIRED_BASELINES = {  # method -> its title in "Against ... on the same splits"
    "cosine": "cosine library search",
    "adapted": "the adapted library search",
    "drcnn": "the paper's DRCNN",
    "drcnn_rs": "DRCNN with recursive supervision",
}


def paired(
    results: dict[str, Any], baseline: str = "cosine", metric: str = "top1"
) -> list[dict[str, Any]]:
    """Each method against `baseline` on exactly the splits (subset, kind, seed) both ran on:
    mean of both, mean and std of the per-split difference, and wins/ties/losses."""
    score: dict[tuple[str, str, str], dict[int, float]] = defaultdict(dict)
    for r in results["runs"]:
        score[(r["subset"], r["split"], r["method"])][r["seed"]] = r["metrics"][metric]
    rows = []
    for (subset, kind, method), by_seed in score.items():
        base = score.get((subset, kind, baseline), {})
        seeds = sorted(set(by_seed) & set(base))
        if method == baseline or not seeds:
            continue
        diff = np.array([by_seed[s] - base[s] for s in seeds])
        rows.append(
            {
                "subset": subset,
                "split": kind,
                "method": method,
                "n": len(seeds),
                "method_mean": float(np.mean([by_seed[s] for s in seeds])),
                "baseline_mean": float(np.mean([base[s] for s in seeds])),
                "diff_mean": float(diff.mean()),
                "diff_std": float(diff.std(ddof=1)) if diff.size > 1 else 0.0,
                "wins": int((diff > 0).sum()),
                "ties": int((diff == 0).sum()),
                "losses": int((diff < 0).sum()),
            }
        )
    return rows


def _paired_md(results: dict[str, Any], baseline: str) -> str:
    rows = paired(results, baseline)
    if not rows:
        return ""
    title = PAIRED_BASELINES[baseline]
    lines = [
        f"## Against {title} on the same splits (top-1)\n",
        f"| subset | split | method | N | its top-1 | {baseline} top-1 | difference | W/T/L |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['subset']} | {r['split']} | {r['method']} | {r['n']} | "
            f"{r['method_mean']:.4f} | {r['baseline_mean']:.4f} | "
            f"{r['diff_mean']:+.4f} ± {r['diff_std']:.4f} | "
            f"{r['wins']} / {r['ties']} / {r['losses']} |"
        )
    return "\n".join(lines) + "\n"


def pooled_by_support(results: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, list[int]]]:
    """(subset, split kind, method) -> bin -> [right, total] over all its runs (runs written
    before the breakdown existed are skipped)."""
    pooled: dict[tuple[str, str, str], dict[str, list[int]]] = {}
    for r in results["runs"]:
        bins = pooled.setdefault((r["subset"], r["split"], r["method"]), {})
        for label, (right, total) in r.get("top1_by_support", {}).items():
            acc = bins.setdefault(label, [0, 0])
            acc[0], acc[1] = acc[0] + right, acc[1] + total
    return {k: v for k, v in pooled.items() if v}


def _support_md(results: dict[str, Any]) -> str:
    """Top-1 by how many training spectra the test spectrum's class had, pooled over splits."""
    pooled = pooled_by_support(results)
    if not pooled:
        return ""
    labels = [label for label, _, _ in SUPPORT_BINS]
    lines = [
        "## Top-1 by training spectra of the true class\n",
        "Pooled over splits: top-1 (test spectra).\n",
        "| subset | split | method | " + " | ".join(labels) + " |",
        "|---|---|---|" + "---|" * len(labels),
    ]
    for (subset, kind, method), bins in pooled.items():
        cells = [
            f"{bins[b][0] / bins[b][1]:.3f} ({bins[b][1]})" if b in bins else "—" for b in labels
        ]
        lines.append(f"| {subset} | {kind} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _datasets_md(datasets: dict[str, Any]) -> str:
    rows = [
        "| subset | classes | spectra | samples | spectra/class | grid |",
        "|---|---|---|---|---|---|",
    ]
    for name, c in datasets.items():
        g = c["grid"]
        per = c["spectra_per_class"]
        rows.append(
            f"| {name} | {c['classes']} | {c['spectra']} | {c['samples']} | "
            f"{per['min']}..{per['max']} | {g['start']:g}-{g['stop']:g} cm-1, {g['points']} pts |"
        )
    return "## Data sets\n\n" + "\n".join(rows) + "\n"


def _calibration_md(results: dict[str, Any]) -> str:
    acc: dict[tuple[str, str, str], list[dict[str, float]]] = defaultdict(list)
    for r in results["runs"]:
        if "calibration" in r:
            c = r["calibration"]
            acc[(r["subset"], r["split"], r["method"])].append(
                {k: c[k] for k in ("temperature", "ece_before", "ece_after")}
            )
    if not acc:
        return ""
    rows = [
        "## Calibration (temperature fitted on validation; ECE on test, 15 bins)\n",
        "| subset | split | method | T | ECE before | ECE after |",
        "|---|---|---|---|---|---|",
    ]
    for (subset, kind, method), vals in acc.items():
        a = aggregate(vals)
        rows.append(
            f"| {subset} | {kind} | {method} | {a['temperature']['mean']:.3f} | "
            f"{a['ece_before']['mean']:.4f} | {a['ece_after']['mean']:.4f} |"
        )
    return "\n".join(rows) + "\n"


def _training_md(results: dict[str, Any]) -> str:
    rows = [
        "## Training runs\n",
        "| subset | split | seed | method | params | best epoch | epochs run | stopped | s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        t = r.get("train")
        if t:
            rows.append(
                f"| {r['subset']} | {r['split']} | {r['seed']} | {r['method']} | "
                f"{t['parameters']:,} | {t['best_epoch']} | {t['epochs_run']} | {t['stopped']} | "
                f"{t['train_seconds']:.0f} |"
            )
    return "\n".join(rows) + "\n" if len(rows) > 3 else ""


def _openset_md(results: dict[str, Any]) -> str:
    entries = results.get("openset", {})
    nets = {k: v for k, v in entries.items() if v.get("method") != "library"}
    libs = {k: v for k, v in entries.items() if v.get("method") == "library"}
    return "\n".join(p for p in (_openset_network_md(nets), _openset_library_md(libs)) if p)


# the service's top-1 probability, similarity to the top class's closest reference and rule
# margin; the network's own probability; the best HQI of two searches over the same references
OPENSET_SCORES = (
    "probability",
    "similarity",
    "combined",
    "network_probability",
    "library_hqi",
    "library_derivative",
)


def _openset_network_md(entries: dict[str, Any]) -> str:
    if not entries:
        return ""
    heads = [
        "subset",
        "network",
        "known / unknown classes",
        "test known / unknown",
        "known top-1",
        "AUROC prob.",
        "AUROC sim.",
        "AUROC rule (combined)",
        "AUROC network prob.",
        "AUROC library HQI",
        "AUROC derivative HQI",
        "rule: known accepted",
        "rule: unknown accepted",
    ]
    rows = [
        "## Open-set rejection (classes held out of training entirely)\n",
        "| " + " | ".join(heads) + " |",
        "|" + "---|" * len(heads),
    ]
    for name, entry in entries.items():
        runs = entry.get("holdouts", [entry])  # results before hold-outs: one run, unnested
        for o in runs:
            a, op = o["auroc"], o["rule_operating_point"]
            cells = [
                f"{name}, hold-out {o.get('seed', 0)}",
                o.get("method", "drcnn"),
                f"{o['classes_known']} / {o['classes_unknown']}",
                f"{o['test_known']} / {o['test_unknown']}",
                f"{o['known_top1']:.4f}",
                *(f"{a[k]:.4f}" if k in a else "—" for k in OPENSET_SCORES),
                f"{op['known_accepted']:.3f}",
                f"{op['unknown_accepted']:.3f}",
            ]
            rows.append("| " + " | ".join(cells) + " |")
        if len(runs) > 1:
            rows.append(_openset_mean_row(name, entry, len(heads)))
    return "\n".join([*rows, _impostor_md(entries)]) + "\n"


def _impostor_md(entries: dict[str, Any]) -> str:
    """The validation-chosen rule against stricter ones (min_similarity raised to what a share
    of impostors would pass), mean over hold-outs."""
    rows = [
        "\nOperating points of the no-match rule (mean over hold-outs):\n",
        "| subset | rule | known accepted | unknown accepted | accuracy of accepted known |",
        "|---|---|---|---|---|",
    ]
    for name, entry in entries.items():
        summary = entry.get("summary", {})
        rules = {"card (validation-chosen)": "rule"} | {
            f"impostor share {share}": f"impostor_{share}"
            for share in entry.get("holdouts", [{}])[0].get("impostor_rules", {})
        }
        for label, prefix in rules.items():
            cells = [
                f"{summary[k]['mean']:.3f}" if k in summary else "—"
                for k in (
                    f"{prefix}_known_accepted",
                    f"{prefix}_unknown_accepted",
                    f"{prefix}_accuracy_of_accepted_known",
                )
            ]
            rows.append(f"| {name} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(rows) if len(rows) > 3 else ""


def _openset_mean_row(name: str, entry: dict[str, Any], columns: int) -> str:
    """Mean ± std over the hold-outs, in the per-hold-out table's columns."""
    summary = entry["summary"]

    def cell(key: str, digits: int = 4) -> str:
        m = summary.get(key)
        return f"{m['mean']:.{digits}f} ± {m['std']:.{digits}f}" if m else "—"

    cells = [
        f"**{name}, mean of {summary['known_top1']['n']}**",
        entry.get("method", "drcnn"),
        "",
        "",
        cell("known_top1"),
        *(cell(f"auroc_{k}") for k in OPENSET_SCORES),
        cell("rule_known_accepted", 3),
        cell("rule_unknown_accepted", 3),
    ]
    assert len(cells) == columns
    return "| " + " | ".join(cells) + " |"


def _openset_library_md(entries: dict[str, Any]) -> str:
    if not entries:
        return ""
    rows = [
        "## Open-set rejection by the library searches alone (best HQI as the score)\n",
        "| subset | hold-outs | unknown classes | search | known top-1 | AUROC known vs unknown |",
        "|---|---|---|---|---|---|",
    ]
    for name, o in entries.items():
        for metric, m in o["metrics"].items():
            rows.append(
                f"| {name} | {len(o['seeds'])} | {o['classes_unknown']} | {metric} | "
                f"{m['known_top1']['mean']:.4f} ± {m['known_top1']['std']:.4f} | "
                f"{m['auroc']['mean']:.4f} ± {m['auroc']['std']:.4f} |"
            )
    return "\n".join(rows) + "\n"


def _timing_md(timing: dict[str, Any]) -> str:
    if not timing:
        return ""
    rows = ["## Full-size DRCNN (width_div 1), one training epoch on this CPU (extrapolated)\n"]
    for name, t in timing.items():
        rows.append(
            f"- {name}: {t['parameters']:,} parameters, L = {t['input_length']}; "
            f"{t['seconds_per_batch']:.1f} s per batch of 32 (median of {t['batches_measured']}, "
            f"{t['threads']} thread(s)) x {t['batches_per_epoch']} batches = "
            f"**{t['epoch_seconds_extrapolated'] / 60:.1f} min per epoch** (extrapolated)"
        )
    return "\n".join(rows) + "\n"


# ----------------------------------------------------------------------------- figures


def split_figures(
    name: str, ds: Any, split: Any, scores: np.ndarray, tr: Any, fig_dir: Path
) -> dict[str, str]:
    """Confusion matrix, reliability, accuracy-coverage and confused-pair figures of one
    split's network (returns figure key -> file name)."""
    from training.calibration import (
        expected_calibration_error,
        fit_temperature,
        reliability_bins,
    )
    from training.pipeline import (
        calibrate,
        card_search_scores,
        library_references,
        served_scores,
    )

    figs: dict[str, str] = {}
    y_te, n = ds.y[split.test], len(ds.classes)
    cm = confusion_matrix(y_te, scores.argmax(1), n)
    path = plot_confusion(cm, ds.classes, fig_dir / f"{name}_confusion.png")
    figs[f"{name}_confusion"] = path.name
    t = fit_temperature(tr.val_logits, ds.y[split.val])
    before, after = softmax(tr.test_logits), softmax(tr.test_logits, t)
    path = plot_reliability(
        reliability_bins(before, y_te),
        reliability_bins(after, y_te),
        fig_dir / f"{name}_reliability.png",
        expected_calibration_error(before, y_te),
        expected_calibration_error(after, y_te),
    )
    figs[f"{name}_reliability"] = path.name
    # what a version exported from this network would answer (its library: the training part)
    refs = library_references(ds, split.train)
    calib, _ = calibrate(tr.model, ds, split, refs)
    lib = card_search_scores(ds.x[split.test], refs, calib, n)  # the card's searches
    served = served_scores(tr.test_logits, lib, calib)
    sims = lib.similarity
    right = served.pred == y_te
    curves = {
        "network: calibrated probability": accuracy_coverage(after.max(1), after.argmax(1) == y_te),
        "served (network + library): probability": accuracy_coverage(served.probability, right),
        "served: similarity to closest reference": accuracy_coverage(served.similarity, right),
        "served: no-match rule margin": accuracy_coverage(served.margin, right),
        f"{calib.similarity} search: its own HQI": accuracy_coverage(
            sims.max(1), sims.argmax(1) == y_te
        ),
    }
    path = plot_accuracy_coverage(curves, fig_dir / f"{name}_coverage.png")
    figs[f"{name}_coverage"] = path.name
    figs.update(pair_figures(name, ds, split, scores.argmax(1), fig_dir))
    return figs


def pair_figures(
    name: str, ds: Any, split: Any, pred: np.ndarray, fig_dir: Path, top: int = 3
) -> dict[str, str]:
    """For the most confused pairs, a misclassified test spectrum overlaid on the mean training
    spectrum of the class it was taken for (like the paper's Fig. 7)."""
    figs = {}
    axis = ds.grid.axis
    y_te = ds.y[split.test]
    cm = confusion_matrix(y_te, pred, len(ds.classes))
    for i, (true, predicted, count) in enumerate(confused_pairs(cm, ds.classes, top)):
        a, b = ds.classes.index(true), ds.classes.index(predicted)
        x_a = ds.x[split.test][(y_te == a) & (pred == b)][0]
        x_b = ds.x[split.train][ds.y[split.train] == b].mean(axis=0)
        path = plot_pair(
            axis,
            x_a,
            f"{true} (test spectrum)",
            x_b,
            f"{predicted} (training mean)",
            fig_dir / f"{name}_pair_{i + 1}.png",
            f"{true} taken for {predicted} ({count}x in this split)",
        )
        figs[f"{name}_pair_{i + 1}"] = path.name
    return figs
