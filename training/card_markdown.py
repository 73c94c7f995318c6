"""A human-readable model card (`README.md`) written beside `model.json` at export.

Every figure in it is read from the card, which the export computed: nothing is typed by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spectra.card import ModelCard

METRIC_ROWS = ("precision", "recall", "f1", "top1", "top3", "top5")
REPRODUCE_OPENING = "## Reproduce\n\n```bash\n"  # written by `render`, read by `reproduce_block`


def render(card: ModelCard, command: str | None = None) -> str:
    """Markdown for one model version."""
    m = card.metrics
    counts = card.data.get("counts", {})
    lines = [
        f"# Model card: {card.name} v{card.version}",
        "",
        f"DRCNN (Zhou et al., RSC Adv. 2022) identifying {len(card.classes)} classes from Raman "
        f"spectra on a {card.grid.points}-point grid, {card.grid.start:g}-{card.grid.stop:g} cm-1.",
        "",
        f"- created: {card.created_at}; code version: `{card.code_version}`",
        f"- architecture: `{_arch(card.architecture)}`",
        f"- calibration: {_calibration(card)}",
        f"- data: {card.data.get('source', '?')}; split `{card.data.get('split', '?')}` "
        f"(seed {card.data.get('split_seed', '?')}); {counts.get('classes', '?')} classes / "
        f"{counts.get('spectra', '?')} spectra",
    ]
    if card.data.get("references"):
        lines.append(f"- references: {card.data['references']}")
    lines.append("")
    lines += _metrics_table(m)
    if command:
        lines += ["", REPRODUCE_OPENING.rstrip("\n"), command, "```"]
    if card.data.get("citation"):
        lines += ["", "## Data citation", "", card.data["citation"]]
    return "\n".join(lines) + "\n"


def _arch(arch: dict[str, Any]) -> str:
    keys = (
        "arch",
        "input_length",
        "n_classes",
        "depth",
        "width_div",
        "dense_width_div",
        "rec_channels",
        "recursive_supervision",
        "input_transform",
        "head",
    )
    return ", ".join(f"{k}={arch[k]}" for k in keys if k in arch)


def _metrics_table(m: dict[str, Any]) -> list[str]:
    test = m.get("test")
    if not test:
        return [f"Validation metrics: {m.get('validation', {})}"]
    headings = [  # (heading, metrics key); cards exported before a column existed lack it
        ("served (what the service returns)", "served_test"),
        ("network alone", "test"),
        ("cosine library search", "library_search_test"),
        ("derivative library search", "derivative_search_test"),
        ("adapted library search", "adapted_search_test"),
        ("adapted + band-position search", "adapted_peaks_search_test"),
    ]
    columns: list[tuple[str, dict[str, Any]]] = [(h, m[k]) for h, k in headings if m.get(k)]
    rows = [
        "## Test metrics (held-out part of the split; the searches use the reference spectra "
        "the version carries)",
        "",
        "| metric | " + " | ".join(h for h, _ in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for k in METRIC_ROWS:
        cells = " | ".join(f"{c.get(k, float('nan')):.4f}" for _, c in columns)
        rows.append(f"| {k} | {cells} |")
    rows += [
        "",
        f"Test spectra: {test.get('n')}; split sizes: {m.get('split')}; "
        f"ECE before/after calibration (validation): {_ece(m)}",
    ]
    return rows


def _calibration(card: ModelCard) -> str:
    c = card.calibration
    mix = (
        f"; mixed with weight {c.library_weight:g} with a softmax over {c.ranking_search} "
        f"search scores of each class's best-matching reference spectrum "
        f"(temperature {c.library_temperature:.4g})"
        if c.library_weight
        else ""
    )
    return f"temperature {c.temperature:.3f}{mix}; {c.rule}"


def _ece(m: dict[str, Any]) -> str:
    cal = m.get("calibration") or {}
    if not cal:
        return "n/a"
    ece = f"{cal.get('ece_before', float('nan')):.4f} / {cal.get('ece_after', float('nan')):.4f}"
    if cal.get("fitted", True):
        return ece
    n = cal.get("validation_spectra", 0)
    if not n:
        return "n/a (no validation spectra: the prior calibration is kept)"
    return f"{ece} (not fitted on {n} validation spectra, too few or none wrong: prior kept)"


def reproduce_block(version_dir: Path) -> str | None:
    """The command in the "Reproduce" section of a version's README.md (as `render` writes
    it), or None where there is no README or no such section."""
    path = Path(version_dir) / "README.md"
    if not path.is_file():
        return None
    _, found, rest = path.read_text().partition("\n" + REPRODUCE_OPENING)
    command, closed, _ = rest.partition("\n```")
    return command if found and closed and command.strip() else None


def write(version_dir: Path, command: str | None = None) -> Path:
    """Render the card of `version_dir` into its README.md."""
    path = Path(version_dir) / "README.md"
    path.write_text(render(ModelCard.load(Path(version_dir)), command))
    return path
