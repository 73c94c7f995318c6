"""Nearest-neighbour library search: what KnowItAll, CrystalSleuth and Open Specy do.

Spectra on a common grid are compared by cosine similarity (the hit-quality index, HQI, of
spectral-library software), by Pearson correlation (cosine of mean-centred vectors), or by the
cosine of derivative features (`derivative_features`: the first derivative of the square-root
spectrum, which on RRUFF beats both by 1-6 points, see docs/accuracy.md). The service uses it for
each hit's similarity to the closest of its class's reference spectra; the benchmark uses it as
the baseline every network has to beat. `AdaptedSearch` is the derivative search with a metric
fitted to its own library (within-class whitening and a penalty on "hub" references);
`PeakSearch` adds to its score the cosine of the two spectra's band positions alone
(`peak_features`), which changes little between the lasers one sample was measured with.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

METRICS = ("cosine", "correlation", "derivative")
SEARCHES = (*METRICS, "adapted", "adapted_peaks")  # what `make_search` builds
DERIVATIVE_WINDOW = 15  # points (~15 cm-1 on the 1 cm-1 grid); chosen on dataset_2 seeds 0-9
# AdaptedSearch's settings, chosen on dataset_2 random seeds 0-9 and grouped 0-2 and confirmed on
# seeds 100-129 / 100-104 (bench/library_transforms.py, docs/accuracy.md)
WHITENING_SHRINKAGE = 30.0  # times the mean eigenvalue of the within-class covariance
HUB_NEIGHBOURS = 20
HUB_WEIGHT = 0.25
HUB_CHUNK = 2048  # library rows per block when scoring hubness (bounds memory for big libraries)
# PeakSearch's settings (grid points, fractions of the min-max spectrum), chosen on dataset_2
# random seeds 0-9 and grouped 0-2 and confirmed on seeds 100-129 / 100-104 (docs/accuracy.md)
PEAK_SMOOTHING = 1.0  # Gaussian sigma before finding local maxima
PEAK_WINDOW = 15  # a band's prominence: its height above the higher of the minima this far out
PEAK_PROMINENCE = 0.01  # bands less prominent than this are noise
PEAK_WIDTH = 2.0  # Gaussian sigma each band is drawn with: the position tolerance
PEAK_WEIGHT = 0.25  # the band-position cosine's share of PeakSearch's score


@lru_cache(maxsize=16)
def savgol_coefficients(window: int, order: int, deriv: int = 0) -> np.ndarray:
    """Savitzky-Golay filter weights (read-only, cached): the `deriv`-th derivative (per grid
    step) at the centre of a least-squares polynomial of degree `order` over `window` points."""
    if window % 2 == 0 or window <= order:
        raise ValueError("window must be odd and longer than the polynomial order")
    half = window // 2
    vander = np.vander(np.arange(-half, half + 1, dtype=np.float64), order + 1, increasing=True)
    weights = np.linalg.pinv(vander)[deriv] * float(np.prod(np.arange(1, deriv + 1)))
    weights.setflags(write=False)
    return weights


def savgol_filter(x: np.ndarray, window: int, order: int, deriv: int = 0) -> np.ndarray:
    """Savitzky-Golay filter along each row of `x` [n, L] (edge values repeated at the ends)."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float32))
    # the weights apply to the points in order: a convolution with them reversed
    kernel = savgol_coefficients(window, order, deriv)[::-1].astype(np.float32)
    return convolve_rows(x, kernel, pad="edge")


def convolve_rows(
    x: np.ndarray, kernel: np.ndarray, pad: Literal["constant", "edge"] = "constant"
) -> np.ndarray:
    """Each row of `x` [n, L] convolved with the odd-length `kernel`, as
    `np.convolve(row, kernel, mode="same")`, the ends padded with zeros (`pad="constant"`) or
    with the edge values (`"edge"`). One weighted sum of shifted copies per kernel weight: on a
    batch 2-3x faster than a convolution per row, on one spectrum as fast."""
    half = len(kernel) // 2
    padded = np.pad(x, ((0, 0), (half, half)), mode=pad)
    out = np.zeros_like(x)
    for i, weight in enumerate(kernel[::-1]):
        out += weight * padded[:, i : i + x.shape[1]]
    return out


def derivative_features(x: np.ndarray, window: int = DERIVATIVE_WINDOW) -> np.ndarray:
    """First derivative (Savitzky-Golay, quadratic) of the square root of each spectrum row.

    The square root lets weak bands count beside the strongest one (min-max spectra are
    dominated by it); the smoothed derivative keeps band positions and shapes and drops any
    residual background. Negative intensities (noise below a subtracted baseline) count as 0.
    """
    x = np.sqrt(np.clip(np.atleast_2d(np.asarray(x, dtype=np.float32)), 0.0, None))
    return savgol_filter(x, window, 2, 1)


def gaussian_kernel(sigma: float) -> np.ndarray:
    """Unit-sum Gaussian weights over +-4 sigma (grid points)."""
    half = int(4 * sigma) + 1
    k = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


def window_min(x: np.ndarray, k: int) -> np.ndarray:
    """[n, L - k + 1]: the minimum of each `k` consecutive values along the rows, by doubling
    spans (about log2 k passes over the rows instead of k)."""
    out, span = x, 1
    while 2 * span <= k:
        out, span = np.minimum(out[:, :-span], out[:, span:]), 2 * span
    if span < k:  # two overlapping spans cover k
        out = np.minimum(out[:, : out.shape[1] - (k - span)], out[:, k - span :])
    return out


def peak_features(
    x: np.ndarray,
    smoothing: float = PEAK_SMOOTHING,
    window: int = PEAK_WINDOW,
    prominence: float = PEAK_PROMINENCE,
    width: float = PEAK_WIDTH,
) -> np.ndarray:
    """Unit rows marking each spectrum's band positions, not their heights: a Gaussian of
    `width` points and height 1 at every local maximum of the smoothed spectrum that rises
    `prominence` above the higher of its two side minima within `window` points.

    One sample measured at two lasers keeps its band positions while their heights change by
    a factor of ~1.7 (docs/accuracy.md, "A smooth gain augmentation"), and neighbouring
    members of a solid-solution series differ mostly in positions; so the cosine of these
    rows separates what intensity-based scores confuse."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float32))
    smooth = convolve_rows(x, gaussian_kernel(smoothing))
    m = smooth.shape[1]
    padded = np.pad(smooth, ((0, 0), (window, window)), mode="edge")
    side = window_min(padded, window)  # side[:, j]: min of padded[:, j : j + window]
    left, right = side[:, :m], side[:, window + 1 : window + 1 + m]
    top = (smooth >= padded[:, window - 1 : window - 1 + m]) & (
        smooth > padded[:, window + 1 : window + 1 + m]
    )
    top[:, [0, -1]] = False  # an edge is not a band
    rise = smooth - np.maximum(np.maximum(left, right), 0.0)
    bump = gaussian_kernel(width)
    marks = (top & (rise > prominence)).astype(np.float32)
    return unit_rows(convolve_rows(marks, bump / bump.max()))


def unit_rows(x: np.ndarray, centre: bool = False) -> np.ndarray:
    """Rows scaled to unit L2 norm (optionally mean-centred first); zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    if centre:
        x = x - x.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def similarity_features(x: np.ndarray, metric: str) -> np.ndarray:
    """Unit-norm rows whose dot products are the `metric` similarities (one of `METRICS`)."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float32))
    if metric == "derivative":
        return unit_rows(derivative_features(x))
    return unit_rows(x, centre=metric == "correlation")


@dataclass
class LibrarySearch:
    """A library of labelled spectra on one grid, searched by one of `METRICS`.

    `labels` are class indices; a class may have any number of entries (the service's model
    versions carry labelled spectra of each class, older ones one mean spectrum per class).
    """

    spectra: np.ndarray
    labels: np.ndarray
    metric: str = "cosine"

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"unknown metric {self.metric!r}")
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.labels.shape != (len(self.spectra),):
            raise ValueError("one label per library spectrum is needed")
        self._unit = similarity_features(self.spectra, self.metric)
        # entries sorted by class, so that a class's best match is one reduceat over its run
        self._order = np.argsort(self.labels, kind="stable")
        self._classes, self._starts = np.unique(self.labels[self._order], return_index=True)

    @property
    def lowest_score(self) -> float:
        """No similarity is below this (a stand-in score for a class without entries)."""
        return -1.0

    def similarity(self, queries: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """[n_queries, n_library] similarity matrix (with `rows`, of those library rows only),
        within [-1, 1] (float32 rounding of unit rows can put an identical spectrum's dot product
        a hair above 1; answers show it)."""
        unit = self._unit if rows is None else self._unit[rows]
        sim = similarity_features(queries, self.metric) @ unit.T
        return np.clip(sim, -1.0, 1.0, out=sim)

    def class_scores(self, queries: np.ndarray, n_classes: int) -> np.ndarray:
        """Best similarity per class ([n_queries, n_classes]); -inf where a class has no entry."""
        return self.best_per_class(self.similarity(queries), n_classes)

    def scores_of(self, queries: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """`class_scores` at the [n_queries, k] class indices `classes` only ([n_queries, k];
        -inf where a class has no entry): only those classes' rows are compared, so a query's
        top-k hits cost k classes' rows instead of the whole library."""
        classes = np.asarray(classes, dtype=np.int64)
        out = np.full(classes.shape, -np.inf, dtype=np.float32)
        wanted = np.unique(classes)
        pos = np.minimum(np.searchsorted(self._classes, wanted), max(len(self._classes) - 1, 0))
        held = self._classes[pos] == wanted if len(self._classes) else np.zeros(0, dtype=bool)
        if not held.any():
            return out
        # the wanted classes' runs of `_order`, laid end to end
        ends = np.append(self._starts[1:], len(self._order))
        lo, lengths = self._starts[pos[held]], ends[pos[held]] - self._starts[pos[held]]
        run_starts = np.cumsum(lengths) - lengths
        runs = np.arange(lengths.sum()) + np.repeat(lo - run_starts, lengths)
        best = np.maximum.reduceat(self.similarity(queries, self._order[runs]), run_starts, axis=1)
        column = np.full(len(wanted), -1)
        column[held] = np.arange(held.sum())
        col = column[np.searchsorted(wanted, classes)]
        got = np.take_along_axis(best, np.maximum(col, 0), axis=1)
        return np.where(col >= 0, got, out)

    def best_per_class(self, sim: np.ndarray, n_classes: int) -> np.ndarray:
        """Reduce a [n_queries, n_library] similarity matrix over this library's entries to
        each class's best ([n_queries, n_classes]; -inf where a class has no entry)."""
        scores = np.full((sim.shape[0], n_classes), -np.inf, dtype=np.float32)
        if len(self._classes):
            best = np.maximum.reduceat(sim[:, self._order], self._starts, axis=1)
            scores[:, self._classes] = best
        return scores


@dataclass
class AdaptedSearch(LibrarySearch):
    """A library search whose metric is fitted to its own library (no test data involved).

    Two classical corrections of nearest-neighbour search, on the derivative features:

    - within-class whitening (WCCN, Hatch et al. 2006): features are multiplied by
      (S_w + s I)^-1/2, where S_w is the covariance of library spectra about their class mean,
      so that the directions along which spectra of one mineral differ (laser wavelength, band
      intensity ratios of oriented crystals) count less than those that tell minerals apart; the
      shrinkage s (`shrinkage` times S_w's mean eigenvalue) keeps it near the plain search where
      the library says little (most of dataset_2's classes have one or two spectra);
    - a hubness penalty (as CSLS, Conneau et al. 2018): each reference's similarity is lowered by
      `hub_weight` times its mean similarity to its `hub_neighbours` closest references of other
      classes, so that featureless or broad-band spectra, close to everything, stop winning
      queries of minerals they are not.

    Scores are no longer HQIs in [-1, 1]: they rank, they are not shown to users.

    `scatter_extra` (spectra, labels): labelled spectra that are not searched (other minerals)
    whose within-class scatter joins the library's in fitting the whitening.
    """

    metric: str = "derivative"
    shrinkage: float = WHITENING_SHRINKAGE
    hub_neighbours: int = HUB_NEIGHBOURS
    hub_weight: float = HUB_WEIGHT
    scatter_extra: tuple[np.ndarray, np.ndarray] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        features, labels = self._unit, self.labels
        if self.scatter_extra is not None:
            x, y = self.scatter_extra
            features = np.vstack([features, similarity_features(x, self.metric)])
            # their classes kept apart from the library's, whatever their indices
            offset = int(self.labels.max(initial=-1)) + 1
            labels = np.concatenate([labels, np.asarray(y, dtype=np.int64) + offset])
        self._whitening = within_class_whitening(features, labels, self.shrinkage)
        self._unit = unit_rows(self._unit @ self._whitening)
        self._hubness = hubness(self._unit, self.labels, self.hub_neighbours)

    @property
    def lowest_score(self) -> float:
        """No score is below this (a stand-in score for a class without entries)."""
        return -1.0 - self.hub_weight * float(self._hubness.max(initial=0.0))

    def similarity(self, queries: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """[n_queries, n_library] adapted scores (with `rows`, for those library rows only):
        cosine of the whitened features minus each reference's hubness penalty."""
        unit, hub = (
            (self._unit, self._hubness) if rows is None else (self._unit[rows], self._hubness[rows])
        )
        return self._whitened(queries) @ unit.T - self.hub_weight * hub

    def _whitened(self, queries: np.ndarray) -> np.ndarray:
        """Unit rows of the queries' whitened features (what the references' rows are)."""
        return unit_rows(similarity_features(queries, self.metric) @ self._whitening)


@dataclass
class PeakSearch(AdaptedSearch):
    """The adapted search plus the band-position cosine (`peak_features`): each reference's
    score is (1 - `peak_weight`) times its adapted score plus `peak_weight` times the cosine of
    the query's and its band positions. On dataset_2 it adds about a point over the adapted
    search (+1.0 on 30 random splits, 30 of 30; +0.9 on 5 grouped ones, 5 of 5; seeds never
    used to choose it), on dataset_1 it is level (docs/accuracy.md)."""

    peak_weight: float = PEAK_WEIGHT

    def __post_init__(self) -> None:
        super().__post_init__()
        # both parts side by side, so that a query's score is one product with the library:
        # [(1 - w) q_adapted, w q_peaks] . [r_adapted, r_peaks] - (1 - w) * hub penalty;
        # the adapted rows stay readable as `_unit` (a view, not a second copy)
        d = self._unit.shape[1]
        self._joint = np.hstack([self._unit, peak_features(self.spectra)])
        self._unit = self._joint[:, :d]
        self._joint_hub = (1 - self.peak_weight) * self.hub_weight * self._hubness

    @property
    def lowest_score(self) -> float:
        """No score is below this (band-position cosines are >= 0)."""
        return (1 - self.peak_weight) * super().lowest_score

    def similarity(self, queries: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """[n_queries, n_library] scores (with `rows`, for those library rows only)."""
        joint, hub = (
            (self._joint, self._joint_hub)
            if rows is None
            else (self._joint[rows], self._joint_hub[rows])
        )
        w = self.peak_weight
        q = np.hstack([(1 - w) * self._whitened(queries), w * peak_features(queries)])
        return q @ joint.T - hub


def within_class_whitening(
    features: np.ndarray, labels: np.ndarray, shrinkage: float
) -> np.ndarray:
    """[d, d] symmetric (S_w + shrinkage * mean eigenvalue * I)^-1/2, S_w the covariance of
    `features` about their class means over classes with two or more rows; the identity when
    no class has two or `shrinkage` is infinite."""
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    x = np.asarray(features, dtype=np.float64)
    means = class_references(x, inverse, len(counts))
    deviations = (x - means[inverse])[counts[inverse] > 1]
    if not len(deviations) or not np.isfinite(shrinkage):  # infinite shrinkage: no whitening
        return np.eye(x.shape[1], dtype=np.float32)
    eigval, eigvec = np.linalg.eigh(deviations.T @ deviations / len(deviations))
    eigval = np.clip(eigval, 0.0, None)
    floor = shrinkage * eigval.mean()
    if floor <= 0:  # all deviations zero (duplicate spectra): nothing to whiten
        return np.eye(x.shape[1], dtype=np.float32)
    return ((eigvec / np.sqrt(eigval + floor)) @ eigvec.T).astype(np.float32)


def hubness(unit: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Each row's mean cosine with its `k` most similar rows of other classes (fewer where the
    library has fewer; 0 where it has none)."""
    labels = np.asarray(labels)
    out = np.zeros(len(unit), dtype=np.float32)
    k = min(k, len(unit))
    if k <= 0:
        return out
    for start in range(0, len(unit), HUB_CHUNK):
        rows = slice(start, start + HUB_CHUNK)
        sim = unit[rows] @ unit.T
        sim[labels[rows, None] == labels[None, :]] = -np.inf
        top = -np.partition(-sim, k - 1, axis=1)[:, :k]
        # a row of a big class may have fewer than k others: average over its finite ones
        finite = np.isfinite(top)
        out[rows] = np.where(finite, top, 0.0).sum(1) / np.maximum(finite.sum(1), 1)
    return out


def make_search(spectra: np.ndarray, labels: np.ndarray, method: str) -> LibrarySearch:
    """The library search `method` (one of `SEARCHES`) over labelled `spectra`."""
    if method == "adapted":
        return AdaptedSearch(spectra, labels)
    if method == "adapted_peaks":
        return PeakSearch(spectra, labels)
    return LibrarySearch(spectra, labels, metric=method)


def pairwise_similarity(queries: np.ndarray, references: np.ndarray) -> np.ndarray:
    """Cosine similarity of each query row with the matching reference row."""
    return np.sum(unit_rows(queries) * unit_rows(references), axis=1)


def class_references(x: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """Mean spectrum of each class over the given (training) spectra; [C, L]."""
    sums = np.zeros((n_classes, x.shape[1]), dtype=np.float64)
    np.add.at(sums, y, x)
    n = np.bincount(y, minlength=n_classes)[:, None]
    return (sums / np.maximum(n, 1)).astype(np.float32)
