"""Nearest-neighbour library search: what KnowItAll, CrystalSleuth and Open Specy do.

Spectra on a common grid are compared by cosine similarity (the hit-quality index, HQI, of
spectral-library software) or by Pearson correlation (cosine of mean-centred vectors). The
service uses it for each hit's similarity to its class reference; the benchmark uses it as the
baseline every network has to beat.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def unit_rows(x: np.ndarray, centre: bool = False) -> np.ndarray:
    """Rows scaled to unit L2 norm (optionally mean-centred first); zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    if centre:
        x = x - x.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


@dataclass
class LibrarySearch:
    """A library of labelled spectra on one grid, searched by cosine or correlation."""

    spectra: np.ndarray
    labels: np.ndarray
    metric: str = "cosine"

    def __post_init__(self) -> None:
        if self.metric not in ("cosine", "correlation"):
            raise ValueError(f"unknown metric {self.metric!r}")
        self._unit = unit_rows(self.spectra, centre=self.metric == "correlation")
        self.labels = np.asarray(self.labels)

    def similarity(self, queries: np.ndarray) -> np.ndarray:
        """[n_queries, n_library] similarity matrix."""
        q = unit_rows(np.atleast_2d(queries), centre=self.metric == "correlation")
        return q @ self._unit.T

    def class_scores(self, queries: np.ndarray, n_classes: int) -> np.ndarray:
        """Best similarity per class ([n_queries, n_classes]); -inf where a class has no entry."""
        sim = self.similarity(queries)
        scores = np.full((sim.shape[0], n_classes), -np.inf, dtype=np.float32)
        for c in np.unique(self.labels):
            scores[:, c] = sim[:, self.labels == c].max(axis=1)
        return scores


def pairwise_similarity(queries: np.ndarray, references: np.ndarray) -> np.ndarray:
    """Cosine similarity of each query row with the matching reference row."""
    return np.sum(unit_rows(queries) * unit_rows(references), axis=1)


def class_references(x: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """Mean spectrum of each class over the given (training) spectra; [C, L]."""
    sums = np.zeros((n_classes, x.shape[1]), dtype=np.float64)
    np.add.at(sums, y, x)
    n = np.bincount(y, minlength=n_classes)[:, None]
    return (sums / np.maximum(n, 1)).astype(np.float32)
