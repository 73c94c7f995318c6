"""Training data for a fine-tune job: checked, labelled, preprocessed onto the base model's grid.

Everything is checked before a job is queued, so a job never fails on its data. Two sources:
- JSON: spectra with a `label` each, or a `labels` list parallel to `spectra`;
- an archive of instrument files (any format `spectra.readers` reads), labelled by
  `manifest.csv` (columns `file,label`; paths relative to the manifest), else by one folder per
  label (`<label>/<file>`, under at most one common top folder), else by the files' own labels
  (RRUFF `##NAMES=`).
Preprocessing is the serving path's (`spectra.preprocess.Preprocessor`): no train/serve skew.
Raises `IngestError` with every offending file or spectrum named.
"""

from __future__ import annotations

import csv
import io
import posixpath
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from finetune.archive import ArchiveError, ArchiveLimits, Member, read_archive
from finetune.schemas import MAX_LABEL, LabelledSpectrum
from spectra.errors import SpectrumError
from spectra.grid import Grid
from spectra.preprocess import Preprocessor
from spectra.readers.detect import read_bytes
from spectra.readers.text import decode

DATA_FILE = "data.npz"
MANIFEST = "manifest.csv"
MAX_NAMED = 50
"""Most offending files or spectra listed in one error."""
FILE_COLUMNS = ("file", "filename", "path")
LABEL_COLUMNS = ("label", "class", "substance", "name")


class IngestError(ValueError):
    """Training data refused: 422, or 413 when `too_large`; `items` name what is wrong."""

    def __init__(
        self, message: str, too_large: bool = False, items: list[dict[str, str]] | None = None
    ) -> None:
        super().__init__(message)
        self.too_large = too_large
        self.items = (items or [])[:MAX_NAMED]


@dataclass(frozen=True)
class IngestLimits:
    """Bounds on one job's data."""

    max_spectra: int = 20_000
    max_points: int = 20_000
    min_per_class: int = 2
    archive: ArchiveLimits = field(default_factory=ArchiveLimits)


@dataclass
class TrainingData:
    """Preprocessed spectra: x float32 [N, L] on the grid, y int64 [N] into sorted `classes`."""

    x: np.ndarray
    y: np.ndarray
    classes: list[str]
    sources: list[str]
    kind: str  # "json" or "archive"
    low_coverage: int = 0

    def summary(self) -> dict[str, Any]:
        """What the job record shows about its data."""
        per_class = np.bincount(self.y, minlength=len(self.classes))
        return {
            "source": self.kind,
            "spectra": len(self.y),
            "classes": len(self.classes),
            "points": int(self.x.shape[1]),
            "per_class": {c: int(n) for c, n in zip(self.classes, per_class, strict=True)},
            "low_coverage_spectra": self.low_coverage,
        }

    def save(self, directory: Path) -> Path:
        """Write `data.npz` into `directory` (created)."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / DATA_FILE
        np.savez(path, x=self.x, y=self.y, classes=np.array(self.classes),
                 sources=np.array(self.sources), kind=np.array(self.kind))  # fmt: skip
        return path

    @classmethod
    def load(cls, directory: Path) -> TrainingData:
        """Inverse of `save`."""
        with np.load(Path(directory) / DATA_FILE, allow_pickle=False) as z:
            return cls(z["x"], z["y"], [str(c) for c in z["classes"]],
                       [str(s) for s in z["sources"]], str(z["kind"]))  # fmt: skip


# --- JSON ---


def from_json(
    spectra: list[LabelledSpectrum], labels: list[str] | None, grid: Grid, val_fraction: float,
    limits: IngestLimits,
) -> TrainingData:  # fmt: skip
    """Check and prepare spectra posted as JSON."""
    if len(spectra) > limits.max_spectra:
        raise IngestError(f"{len(spectra)} spectra; at most {limits.max_spectra}", too_large=True)
    names = [s.id or str(i) for i, s in enumerate(spectra)]
    resolved = _json_labels(spectra, labels, names)
    pre, values, errors = Preprocessor(grid), [], []
    for name, s in zip(names, spectra, strict=True):
        if len(s.intensities) > limits.max_points:
            raise IngestError(
                f"spectrum {name!r} has {len(s.intensities)} points; at most {limits.max_points}",
                too_large=True,
            )
        try:
            if s.wavenumbers is None:
                values.append(pre.prepare_on_grid(s.intensities, name))
            else:
                values.append(pre.prepare(s.wavenumbers, s.intensities, name))
        except SpectrumError as exc:
            errors.append({"spectrum": name, "error": str(exc)})
    if errors:
        raise IngestError(f"{len(errors)} spectrum(s) cannot be used", items=errors)
    low = sum(p.coverage < 0.8 for p in values)
    return assemble([p.values for p in values], resolved, names, "json", val_fraction, limits, low)


def _json_labels(
    spectra: list[LabelledSpectrum], labels: list[str] | None, names: list[str]
) -> list[str]:
    if labels is not None and len(labels) != len(spectra):
        raise IngestError(f"{len(labels)} labels for {len(spectra)} spectra: they must match")
    if labels is None:
        missing = [
            {"spectrum": n, "error": "no label"}
            for n, s in zip(names, spectra, strict=True)
            if not s.label
        ]
        if missing:
            raise IngestError(
                f"{len(missing)} spectrum(s) have no label (give each a `label` or send `labels`)",
                items=missing,
            )
        return [clean_label(str(s.label), n) for n, s in zip(names, spectra, strict=True)]
    clash = [
        {"spectrum": n, "error": f"label {s.label!r} but labels[{i}] is {lab!r}"}
        for i, (n, s, lab) in enumerate(zip(names, spectra, labels, strict=True))
        if s.label is not None and s.label.strip() != lab.strip()
    ]
    if clash:
        raise IngestError("spectrum labels contradict the `labels` list", items=clash)
    return [clean_label(lab, n) for n, lab in zip(names, labels, strict=True)]


def clean_label(label: str, where: str) -> str:
    """A label without surrounding blanks; refuses empty or over-long ones, and control
    characters (a NUL is lost when labels are stored, so two labels would become one)."""
    text = label.strip()
    if not text or len(text) > MAX_LABEL:
        raise IngestError(f"{where}: a label must have 1-{MAX_LABEL} characters, got {label!r}")
    if any(unicodedata.category(c) == "Cc" for c in text):
        raise IngestError(f"{where}: a label must not hold control characters, got {label!r}")
    return text


# --- archives ---


def from_archive(
    blob: bytes, grid: Grid, val_fraction: float, limits: IngestLimits
) -> TrainingData:
    """Check, label and prepare the instrument files of an uploaded archive."""
    try:
        members = read_archive(blob, limits.archive)
    except ArchiveError as exc:
        raise IngestError(str(exc), too_large=exc.too_large) from None
    manifests = [m for m in members if posixpath.basename(m.name).lower() == MANIFEST]
    if len(manifests) > 1:
        raise IngestError(f"the archive holds {len(manifests)} {MANIFEST} files; give one")
    files = [m for m in members if m not in manifests]
    labelled = _by_manifest(manifests[0], files) if manifests else _by_folder(files)
    return _parse_files(labelled, grid, val_fraction, limits)


def _by_manifest(manifest: Member, files: list[Member]) -> list[tuple[Member, str | None]]:
    """Pair every file with its manifest label; every file listed, every listing present."""
    root = posixpath.dirname(manifest.name)
    by_name = {m.name: m for m in files}
    labels: dict[str, str] = {}
    for row_no, path, label in _manifest_rows(manifest):
        name = posixpath.normpath(posixpath.join(root, path.replace("\\", "/")))
        if name in labels:
            raise IngestError(f"{MANIFEST} line {row_no}: {path!r} is listed twice")
        labels[name] = clean_label(label, f"{MANIFEST} line {row_no}")
    missing = [{"file": n, "error": f"listed in {MANIFEST} but not in the archive"}
               for n in labels if n not in by_name]  # fmt: skip
    unlisted = [
        {"file": n, "error": f"not listed in {MANIFEST}"} for n in by_name if n not in labels
    ]
    if missing or unlisted:
        raise IngestError(
            f"{MANIFEST} and the archive disagree: {len(missing)} listed file(s) missing, "
            f"{len(unlisted)} file(s) not listed",
            items=missing + unlisted,
        )
    return [(by_name[n], labels[n]) for n in sorted(labels)]


def _manifest_rows(manifest: Member) -> list[tuple[int, str, str]]:
    try:
        text = decode(manifest.data, manifest.name)
    except SpectrumError as exc:
        raise IngestError(f"{MANIFEST} is not text: {exc}") from None
    rows = [(i, [c.strip() for c in r]) for i, r in enumerate(csv.reader(io.StringIO(text)), 1)]
    rows = [(i, r) for i, r in rows if any(r) and not r[0].startswith("#")]
    if not rows:
        raise IngestError(f"{MANIFEST} is empty")
    header = [c.lower() for c in rows[0][1]]
    file_col = next((header.index(c) for c in FILE_COLUMNS if c in header), None)
    label_col = next((header.index(c) for c in LABEL_COLUMNS if c in header), None)
    if file_col is not None and label_col is not None:
        rows = rows[1:]
    else:
        file_col, label_col = 0, 1
    out = []
    for i, row in rows:
        if len(row) <= max(file_col, label_col) or not row[file_col]:
            raise IngestError(f"{MANIFEST} line {i}: expected `file,label`, got {row!r}"[:300])
        out.append((i, row[file_col], row[label_col]))
    return out


def _by_folder(files: list[Member]) -> list[tuple[Member, str | None]]:
    """Label = first folder under the common top folder; root files keep their own labels."""
    parts = [m.name.split("/") for m in files]
    depth = 0
    while all(len(p) > depth + 1 for p in parts) and len({p[depth] for p in parts}) == 1:
        depth += 1  # strip a single common top folder ("lab-data/Quartz/a.txt")
    return [
        (m, p[depth] if len(p) > depth + 1 else None) for m, p in zip(files, parts, strict=True)
    ]


def _parse_files(
    labelled: list[tuple[Member, str | None]], grid: Grid, val_fraction: float,
    limits: IngestLimits,
) -> TrainingData:  # fmt: skip
    pre = Preprocessor(grid)
    values, labels, names, errors, low = [], [], [], [], 0
    for member, label in labelled:
        try:
            spectra = read_bytes(member.data, member.name)
            for k, s in enumerate(spectra):
                name = member.name if len(spectra) == 1 else f"{member.name}#{k + 1}"
                if len(s) > limits.max_points:
                    raise SpectrumError(f"{len(s)} points; at most {limits.max_points}", name)
                own = label or s.label
                if not own:
                    raise SpectrumError(
                        f"no label: list it in {MANIFEST} or put it in a folder named after "
                        "its label", member.name,
                    )  # fmt: skip
                prepared = pre.prepare(s.wavenumbers, s.intensities, name)
                values.append(prepared.values)
                labels.append(clean_label(own, name))
                names.append(name)
                low += prepared.coverage < 0.8
        except SpectrumError as exc:
            errors.append({"file": member.name, "error": str(exc)})
        if len(values) > limits.max_spectra:
            raise IngestError(f"more than {limits.max_spectra} spectra", too_large=True)
    if errors:
        failed = ", ".join(e["file"] for e in errors[:10])
        raise IngestError(
            f"{len(errors)} file(s) cannot be used: {failed} (first: {errors[0]['error']})",
            items=errors,
        )
    return assemble(values, labels, names, "archive", val_fraction, limits, low)


# --- both ---


def assemble(
    values: list[np.ndarray], labels: list[str], names: list[str], kind: str,
    val_fraction: float, limits: IngestLimits, low_coverage: int = 0,
) -> TrainingData:  # fmt: skip
    """Stack prepared spectra after checking the class counts."""
    check_classes(Counter(labels), val_fraction, limits.min_per_class)
    classes = sorted(set(labels))
    index = {c: i for i, c in enumerate(classes)}
    return TrainingData(
        np.stack(values).astype(np.float32),
        np.array([index[label] for label in labels], dtype=np.int64),
        classes, names, kind, int(low_coverage),
    )  # fmt: skip


def check_classes(counts: Counter[str], val_fraction: float, min_per_class: int) -> None:
    """At least two classes, and enough spectra in each for training plus validation."""
    if len(counts) < 2:
        found = ", ".join(repr(c) for c in counts) or "none"
        raise IngestError(f"fine-tuning needs at least two classes; the data hold {found}")
    need = max(min_per_class, 2 if val_fraction > 0 else 1)
    few = [{"label": c, "error": f"{n} spectra; at least {need} needed"}
           for c, n in sorted(counts.items()) if n < need]  # fmt: skip
    if few:
        why = "one for training and one for validation" if val_fraction > 0 else "the minimum"
        raise IngestError(f"{len(few)} class(es) have fewer than {need} spectra ({why})", items=few)
