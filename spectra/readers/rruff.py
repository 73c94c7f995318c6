"""The RRUFF `.txt` format and the RRUFF zips that rruff.info serves.

A file is `##KEY=value` header lines (NAMES, RRUFFID, LOCALITY, ...), then `wavenumber, intensity`
rows, optionally ended by `##END=`. Zips are read member by member with `zipfile`, in place.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spectra.errors import ParseError, SpectrumError
from spectra.readers.text import decode, parse_pair
from spectra.types import Spectrum

MAGIC = "##NAMES="


def looks_like_rruff(text: str) -> bool:
    """True when the text starts (after blank lines) with RRUFF's `##NAMES=` header."""
    return text.lstrip().upper().startswith(MAGIC)


def parse_rruff(data: bytes | str, source: str = "<rruff>") -> Spectrum:
    """Parse one RRUFF file; the label is the `##NAMES=` value."""
    text = decode(data, source) if isinstance(data, bytes) else data
    meta: dict[str, str] = {}
    rows: list[tuple[int, str]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("##"):
            key, _, value = stripped[2:].partition("=")
            if key.strip().upper() == "END":
                break
            meta[key.strip().upper()] = value.strip()
            continue
        rows.append((lineno, stripped))
    label = meta.get("NAMES", "").strip()
    if not label:
        raise ParseError("no ##NAMES= header: not a RRUFF file, or its label is missing", source)
    if not rows:
        raise ParseError("no data rows after the header", source)
    arr = _rows_to_array(rows, source)
    return Spectrum(arr[:, 0], arr[:, 1], source, label, meta)


def _rows_to_array(rows: list[tuple[int, str]], source: str) -> np.ndarray:
    """Fast path: one vectorised float conversion; on failure, re-parse row by row to name the
    offending line."""
    # A "|" between rows checks that every row holds exactly two fields: a bare token count
    # would pair a row of three values with a row of one and misread both silently.
    tokens = " | ".join(r for _, r in rows).replace(",", " ").split()
    if len(tokens) == 3 * len(rows) - 1 and set(tokens[2::3]) <= {"|"}:
        try:
            return np.array(tokens[0::3] + tokens[1::3], dtype=np.float64).reshape(2, -1).T.copy()
        except ValueError:
            pass
    return np.asarray([parse_pair(r, source, n) for n, r in rows], dtype=np.float64)


@dataclass
class ZipReport:
    """What `iter_rruff_zip` skipped, so a data-set build can say so instead of crashing."""

    read: int = 0
    skipped: list[str] = field(default_factory=list)


def iter_rruff_zip(
    path: str | Path, report: ZipReport | None = None, strict: bool = False
) -> Iterator[Spectrum]:
    """Yield every RRUFF spectrum inside a zip, in member-name order, without extracting it.

    Members that are not `.txt` are ignored. A malformed member raises when `strict`; otherwise it
    is recorded in `report.skipped` (with the reason) and the iteration goes on.
    """
    report = report if report is not None else ZipReport()
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ParseError(f"cannot open zip: {exc}", str(path)) from None
    with archive:
        for info in sorted(archive.infolist(), key=lambda i: i.filename):
            if info.is_dir() or not info.filename.lower().endswith(".txt"):
                continue
            source = f"{Path(path).name}:{info.filename}"
            try:
                spectrum = parse_rruff(archive.read(info), source)
            except (SpectrumError, zipfile.BadZipFile) as exc:
                if strict:
                    raise
                report.skipped.append(str(exc))
                continue
            report.read += 1
            yield spectrum
