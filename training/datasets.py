"""The paper's RRUFF subsets (section 2.1), built by the paper's rules from an RRUFF zip.

- Dataset_1: classes (##NAMES) with >= 10 spectra, grid 30-1599 cm-1 at 1 cm-1 (1570 points).
- Dataset_2: classes with >= 2 spectra, same grid.
- Dataset_3: classes with 2..20 spectra, grid 0-1700 cm-1 at 1024 points; each class is topped up
  to about 20 by copies. The paper copies before splitting, which puts identical spectra on both
  sides of the split; we top up the *training* part only (`top_up`), so tests stay honest.

Before any rule is applied, the build drops what would poison labels: `Raman_Data_RAW` files
(not baseline-corrected; RRUFF's processed file of the same sample is used instead) and every
spectrum whose intensity array is bit-identical to one filed under another mineral name (one
RRUFF sample listed under two names: the label is ambiguous, see PROVENANCE.md).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spectra.errors import SpectrumError
from spectra.grid import Grid
from spectra.preprocess import Prepared, Preprocessor
from spectra.readers.rruff import ZipReport, iter_rruff_zip, parse_rruff
from spectra.types import Spectrum


@dataclass(frozen=True)
class SubsetRule:
    """How to select and grid one subset."""

    name: str
    min_per_class: int
    max_per_class: int | None
    grid: Grid
    top_up_to: int | None = None


PRESETS: dict[str, SubsetRule] = {
    "dataset_1": SubsetRule("dataset_1", 10, None, Grid(30.0, 1599.0, 1570)),
    "dataset_2": SubsetRule("dataset_2", 2, None, Grid(30.0, 1599.0, 1570)),
    "dataset_3": SubsetRule("dataset_3", 2, 20, Grid(0.0, 1700.0, 1024), top_up_to=20),
}


@dataclass
class Dataset:
    """Preprocessed spectra of one subset, ready for splitting and training."""

    x: np.ndarray  # float32 [N, L], on `grid`, min-max normalised
    y: np.ndarray  # int64 [N], index into `classes`
    classes: list[str]
    groups: np.ndarray  # str [N], RRUFF sample id (R-number): the unit of the grouped split
    sources: np.ndarray  # str [N], file names
    coverage: np.ndarray  # float32 [N], fraction of the grid each spectrum measured
    grid: Grid
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def save(self, path: Path) -> None:
        """Write a compressed npz (with the build info as JSON)."""
        np.savez_compressed(
            path,
            x=self.x,
            y=self.y,
            classes=np.array(self.classes),
            groups=self.groups,
            sources=self.sources,
            coverage=self.coverage,
            grid=json.dumps(self.grid.to_dict()),
            info=json.dumps(self.info),
        )

    @classmethod
    def load(cls, path: Path) -> Dataset:
        """Inverse of `save`."""
        with np.load(path, allow_pickle=False) as z:
            return cls(
                z["x"],
                z["y"],
                [str(c) for c in z["classes"]],
                z["groups"],
                z["sources"],
                z["coverage"],
                Grid.from_dict(json.loads(str(z["grid"]))),
                json.loads(str(z["info"])),
            )


@dataclass
class BuildReport:
    """What happened to every file on the way into the data set."""

    files_read: int = 0
    unreadable: list[str] = field(default_factory=list)
    raw_dropped: int = 0
    ambiguous_dropped: int = 0
    off_grid_dropped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON form, with long lists cut to counts plus a few examples."""
        d = asdict(self)
        for key in ("unreadable", "off_grid_dropped"):
            d[key] = {"count": len(d[key]), "examples": d[key][:5]}
        return d


def read_rruff(path: Path, report: BuildReport | None = None) -> list[Spectrum]:
    """All spectra of an RRUFF zip, or of a folder of RRUFF `.txt` files."""
    report = report or BuildReport()
    path = Path(path)
    if path.is_dir():
        return _read_folder(path, report)
    zr = ZipReport()
    spectra = list(iter_rruff_zip(path, zr))
    report.files_read += zr.read
    report.unreadable += zr.skipped
    return spectra


def _read_folder(path: Path, report: BuildReport) -> list[Spectrum]:
    out = []
    for f in sorted(path.rglob("*.txt")):
        try:
            out.append(parse_rruff(f.read_bytes(), f.name))
            report.files_read += 1
        except SpectrumError as exc:
            report.unreadable.append(str(exc))
    return out


def is_raw(source: str) -> bool:
    """True for RRUFF's unprocessed files, named `..._Raman_Data_RAW__<n>.txt`. Only the
    data-kind field of the file name counts: "raw" elsewhere (a zip called raw.zip, a file
    called Crawfordite.txt) does not."""
    fields = source.rsplit(":", 1)[-1].upper().split("__")
    return len(fields) >= 2 and fields[-2].endswith("_RAW")


def drop_unusable(spectra: list[Spectrum], report: BuildReport) -> list[Spectrum]:
    """Drop RAW files and spectra filed under two names (see module docstring)."""
    processed = [s for s in spectra if not is_raw(s.source)]
    report.raw_dropped += len(spectra) - len(processed)
    names_by_hash: dict[str, set[str]] = defaultdict(set)
    hashes = [
        hashlib.sha1(np.ascontiguousarray(s.intensities).tobytes()).hexdigest() for s in processed
    ]
    for h, s in zip(hashes, processed, strict=True):
        names_by_hash[h].add(s.label or "")
    kept = [s for h, s in zip(hashes, processed, strict=True) if len(names_by_hash[h]) == 1]
    report.ambiguous_dropped += len(processed) - len(kept)
    return kept


def select(spectra: list[Spectrum], rule: SubsetRule) -> list[Spectrum]:
    """Keep the classes whose spectrum count satisfies the rule."""
    counts = Counter(s.label for s in spectra)
    hi = rule.max_per_class or 10**9
    keep = {c for c, n in counts.items() if rule.min_per_class <= n <= hi}
    return [s for s in spectra if s.label in keep]


def build_dataset(path: Path, rule: SubsetRule) -> tuple[Dataset, BuildReport]:
    """Read an RRUFF zip/folder and build one subset: drop unusable files, select classes,
    preprocess every spectrum onto the rule's grid."""
    report = BuildReport()
    spectra = select(drop_unusable(read_rruff(path, report), report), rule)
    prep = Preprocessor(rule.grid)
    prepared: dict[str, Prepared] = {}
    for s in spectra:
        try:
            prepared[s.source] = prep.prepare(s.wavenumbers, s.intensities, s.source)
        except SpectrumError as exc:
            report.off_grid_dropped.append(str(exc))
    # a class may fall below the minimum once off-grid spectra are gone: select again
    kept = select([s for s in spectra if s.source in prepared], rule)
    return assemble(kept, [prepared[s.source] for s in kept], rule, report), report


def assemble(
    spectra: list[Spectrum], prepared: list[Prepared], rule: SubsetRule, report: BuildReport
) -> Dataset:
    """Stack prepared spectra into a `Dataset` with sorted class names."""
    if not spectra:  # np.stack would fail with "need at least one array to stack"
        raise ValueError(
            f"no class satisfies {rule.name} ({rule.min_per_class}..{rule.max_per_class or 'any'} "
            f"spectra per class) after {report.files_read} files were read"
        )
    classes = sorted({s.label or "" for s in spectra})
    index = {c: i for i, c in enumerate(classes)}
    info = {"rule": {**asdict(rule), "grid": rule.grid.to_dict()}, "report": report.to_dict()}
    ds = Dataset(
        x=np.stack([p.values for p in prepared]).astype(np.float32),
        y=np.array([index[s.label or ""] for s in spectra], dtype=np.int64),
        classes=classes,
        groups=np.array([s.sample_id or s.source for s in spectra]),
        sources=np.array([s.source.split(":")[-1] for s in spectra]),
        coverage=np.array([p.coverage for p in prepared], dtype=np.float32),
        grid=rule.grid,
        info=info,
    )
    ds.info["counts"] = counts(ds)
    return ds


def counts(ds: Dataset) -> dict[str, Any]:
    """Classes, spectra, samples and the per-class histogram (spectra per class -> classes)."""
    per_class = np.bincount(ds.y, minlength=len(ds.classes))
    hist = Counter(int(n) for n in per_class)
    return {
        "classes": len(ds.classes),
        "spectra": len(ds),
        "samples": int(np.unique(ds.groups).size),
        "spectra_per_class": {
            "min": int(per_class.min()),
            "median": float(np.median(per_class)),
            "mean": round(float(per_class.mean()), 2),
            "max": int(per_class.max()),
        },
        "histogram": {str(k): hist[k] for k in sorted(hist)},
        "mean_coverage": round(float(ds.coverage.mean()), 4),
    }


def top_up(indices: np.ndarray, y: np.ndarray, target: int, rng: np.random.Generator) -> np.ndarray:
    """Repeat members of each class (in `indices`) until it has about `target` entries,
    as the paper's Dataset_3 does by "simple copies"."""
    out = [indices]
    for c in np.unique(y[indices]):
        members = indices[y[indices] == c]
        if members.size < target:
            out.append(rng.choice(members, target - members.size, replace=True))
    return np.concatenate(out)
