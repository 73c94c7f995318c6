"""Plain-text tables and result rendering for the command line (no dependencies)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import zip_longest

from raman_client.types import Job, ModelInfo, Result


@dataclass(frozen=True)
class Note:
    """A line of free text starting under column `column` (it does not widen the columns)."""

    text: str
    column: int


Row = Sequence[str] | Note


def table(headers: Sequence[str], rows: Sequence[Row], right: set[int] | None = None) -> str:
    """Columns padded to their widest cell; columns in `right` are right-aligned; rows may be
    shorter than the header."""
    right = right or set()
    cells = [r for r in rows if not isinstance(r, Note)]
    columns = zip_longest(headers, *cells, fillvalue="")
    widths = [max(len(str(c)) for c in col) for col in columns]

    def line(row: Row) -> str:
        if isinstance(row, Note):
            return " " * sum(w + 2 for w in widths[: row.column]) + row.text
        parts = [str(c).rjust(w) if i in right else str(c).ljust(w)
                 for i, (c, w) in enumerate(zip(row, widths, strict=False))]  # fmt: skip
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def results_table(results: Sequence[Result]) -> str:
    """One block per spectrum: its ranked hits, then its warnings or its file's error."""
    rows: list[Row] = []
    for r in results:
        name = r.id if r.file in (None, r.id) else f"{r.file} ({r.id})"
        if r.error is not None:
            rows.extend([[name, "error"], Note(f"{r.error.title}: {r.error.detail}", 2)])
            continue
        verdict = "yes" if r.match else "NO MATCH"
        for i, p in enumerate(r.predictions):
            first = i == 0
            rows.append([name if first else "", verdict if first else "", str(p.rank), p.label,
                         f"{p.probability:.3f}", f"{p.similarity:.3f}"])  # fmt: skip
        rows.extend(Note(f"! {w}", 2) for w in r.warnings)
    return table(["spectrum", "match", "rank", "label", "prob", "similarity"], rows, {2, 4, 5})


def models_table(models: Sequence[ModelInfo]) -> str:
    """Name, active version, other versions, classes, grid, provider."""
    rows = []
    for m in models:
        grid = f"{m.grid.start:g}-{m.grid.stop:g} cm-1 ({m.grid.points})" if m.grid else "-"
        versions = ",".join(v.version for v in m.versions)
        name = f"{m.name} (default)" if m.default else m.name
        rows.append([name, m.active_version or "-", versions, str(m.classes or "-"), grid,
                     m.provider or "not loaded"])  # fmt: skip
    return table(["model", "active", "versions", "classes", "grid", "provider"], rows, {3})


def jobs_table(jobs: Sequence[Job]) -> str:
    """Id, state, progress, base and resulting model versions, error."""
    rows = []
    for j in jobs:
        base = f"{j.base_model or '?'}:{j.base_version or 'active'}"
        result = f"{j.result_model}:{j.result_version}" if j.result_version else "-"
        rows.append([j.id, j.state, progress_text(j.progress), base, result, j.error or j.stage])
    return table(["job", "state", "progress", "base", "result", "message"], rows, {2})


def progress_text(fraction: float | None) -> str:
    """`42%`, or `-` when unknown."""
    return "-" if fraction is None else f"{100 * fraction:.0f}%"
