"""Train/validation/test splits.

`stratified_split` is the paper's protocol (section 2.3): per class, 30 % test, and 20 % of the
rest for validation (56:14:30), every class keeping at least one spectrum in training. Per-class
counts are rounded stochastically so that the totals follow the ratios even when most classes
hold 2-3 spectra (a class of 2 then lands in test with probability 0.6).

`grouped_split` never puts two spectra of the same RRUFF sample (R-number) on two sides: most
samples were measured at 2-3 laser wavelengths, so a random split tests on near-copies of
training spectra. Classes with a single sample cannot be tested this way; they stay in training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RATIOS = (0.56, 0.14, 0.30)


@dataclass(frozen=True)
class Split:
    """Indices into a data set."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def sizes(self) -> dict[str, int]:
        """Counts per part."""
        return {
            "train": int(self.train.size),
            "val": int(self.val.size),
            "test": int(self.test.size),
        }


def _part_sizes(
    n: int, rng: np.random.Generator, ratios: tuple[float, float, float]
) -> tuple[int, int]:
    """(n_test, n_val) for a class (or its list of samples) of size n.

    Counts are rounded stochastically (expected shares follow the ratios, as sklearn's stratified
    split does overall) and at least one member always stays in training.
    """
    if n < 2:
        return 0, 0
    n_test = min(int(ratios[2] * n + rng.random()), n - 1)
    val_share = ratios[1] / (ratios[0] + ratios[1])
    n_val = min(int(val_share * (n - n_test) + rng.random()), n - n_test - 1)
    return n_test, n_val


def stratified_split(
    y: np.ndarray, seed: int, ratios: tuple[float, float, float] = RATIOS
) -> Split:
    """Random split stratified by class (the paper's protocol)."""
    rng = np.random.default_rng(seed)
    parts: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        n_test, n_val = _part_sizes(members.size, rng, ratios)
        parts[2].append(members[:n_test])
        parts[1].append(members[n_test : n_test + n_val])
        parts[0].append(members[n_test + n_val :])
    return Split(*(np.sort(np.concatenate(p)).astype(np.int64) for p in parts))


def grouped_split(
    y: np.ndarray, groups: np.ndarray, seed: int, ratios: tuple[float, float, float] = RATIOS
) -> Split:
    """Split whole samples: per class, its samples (groups) are divided by the same ratios.

    A sample filed under two classes is assigned once, by the first class that reaches it, so no
    group ever lands on two sides.
    """
    rng = np.random.default_rng(seed)
    side: dict[str, int] = {}  # group -> 0 train, 1 val, 2 test
    for c in rng.permutation(np.unique(y)):
        free = [g for g in np.unique(groups[y == c]) if g not in side]
        free = list(rng.permutation(free)) if free else []
        n_test, n_val = _part_sizes(len(free), rng, ratios)
        for i, g in enumerate(free):
            side[str(g)] = 2 if i < n_test else 1 if i < n_test + n_val else 0
    assign = np.array([side[str(g)] for g in groups])
    return Split(*(np.flatnonzero(assign == k).astype(np.int64) for k in range(3)))


def make_split(kind: str, y: np.ndarray, groups: np.ndarray, seed: int) -> Split:
    """`kind` is "random" (stratified, the paper's) or "grouped" (by RRUFF sample)."""
    if kind == "random":
        return stratified_split(y, seed)
    if kind == "grouped":
        return grouped_split(y, groups, seed)
    raise ValueError(f"unknown split kind {kind!r} (random or grouped)")
