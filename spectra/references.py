"""`references.npz`: the labelled reference spectra a model version carries (writer and reader).

Arrays: `references` [R, L] (float16 on disk) on the model grid, `labels` [R] (class names of the
card) and `axis` [L]. Every class of the card has at least one row; a class may have many (export
writes the training and validation spectra of each class, at most `MAX_PER_CLASS`). The service
scores a query against a class by its best match among the class's rows (the nearest-neighbour hit
quality of library-search software) and shows the mean of the rows as the class's reference
spectrum.
Versions exported before this change hold exactly one row per class (its mean spectrum), in card
order: the same contract with R = C.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spectra.library import class_references

MAX_PER_CLASS = 32
"""Reference spectra kept per class (a seeded random subset of a larger class): the shipped RRUFF
model has at most 27 per class, and a fine-tune on thousands per class stays a small file."""


@dataclass(frozen=True)
class References:
    """Reference rows and the card class index of each row."""

    spectra: np.ndarray  # [R, L] float32
    classes: np.ndarray  # [R] int64, indices into the card's class list

    def class_means(self, n_classes: int) -> np.ndarray:
        """[n_classes, L] mean of each class's rows (a class without rows stays zero)."""
        return class_references(self.spectra, self.classes, n_classes)


def reference_rows(y: np.ndarray, per_class: int = MAX_PER_CLASS, seed: int = 0) -> np.ndarray:
    """Indices of at most `per_class` spectra of each class in `y` (all of a smaller class, a
    seeded random subset of a larger one), ascending."""
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    keep = [
        rows if len(rows) <= per_class else rng.choice(rows, per_class, replace=False)
        for rows in (np.flatnonzero(y == c) for c in np.unique(y))
    ]
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


def write_references(path: Path, refs: References, classes: list[str], axis: np.ndarray) -> None:
    """Write `refs` (checked against `classes` and the grid `axis`) as `path`."""
    check_references(refs, len(classes), len(axis))
    np.savez_compressed(
        path,
        references=refs.spectra.astype(np.float16),
        labels=np.asarray(classes)[refs.classes],
        axis=np.asarray(axis, dtype=np.float32),
    )


def read_references(path: Path, classes: list[str], points: int) -> References:
    """Read and validate `path` for a card with `classes` on a grid of `points` points; raises
    ValueError naming what is wrong."""
    name = Path(path).name
    try:
        with np.load(path, allow_pickle=False) as npz:
            spectra = np.asarray(npz["references"], dtype=np.float32)
            labels = [str(label) for label in npz["labels"]]
    except (KeyError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"{name} is unreadable or lacks an array: {exc}") from None
    if spectra.ndim != 2 or spectra.shape[1] != points or spectra.shape[0] != len(labels):
        raise ValueError(
            f"{name} references have shape {spectra.shape}, expected [{len(labels)} labels, "
            f"{points} grid points]"
        )
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({lab for lab in labels if lab not in index})
    if unknown:
        raise ValueError(f"{name} labels {unknown[:5]} are not classes of the card")
    refs = References(spectra, np.array([index[lab] for lab in labels], dtype=np.int64))
    check_references(refs, len(classes), points, name)
    return refs


def check_references(
    refs: References, n_classes: int, points: int, name: str = "references"
) -> None:
    """Raise ValueError unless every class has a row and every row is finite on the grid."""
    if refs.spectra.ndim != 2 or refs.spectra.shape[1] != points:
        raise ValueError(f"{name} have shape {refs.spectra.shape}, expected [rows, {points}]")
    if refs.classes.shape != (len(refs.spectra),):
        raise ValueError(f"{name}: one class per row is needed")
    if len(refs.classes) and (refs.classes.min() < 0 or refs.classes.max() >= n_classes):
        raise ValueError(f"{name}: a class index is outside 0..{n_classes - 1}")
    missing = n_classes - len(np.unique(refs.classes))
    if missing:
        raise ValueError(f"{name}: {missing} class(es) of the card have no reference spectrum")
    if not np.isfinite(refs.spectra).all():
        raise ValueError(f"{name} hold NaN or Inf")
