"""`references.npz` (spectra.references): the rows a version carries, written and read back, and
every way a file can be wrong; and LibrarySearch's per-class best match against brute force."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spectra.library import LibrarySearch, class_references
from spectra.references import (
    References,
    read_references,
    reference_rows,
    write_references,
)

CLASSES = ["Quartz", "Calcite", "Gypsum (selenite)"]
L = 32
AXIS = np.linspace(100.0, 1000.0, L)


def refs_of(labels: list[int], seed: int = 0) -> References:
    rng = np.random.default_rng(seed)
    return References(rng.random((len(labels), L), dtype=np.float32), np.array(labels))


def test_round_trip_keeps_rows_labels_and_means(tmp_path: Path) -> None:
    refs = refs_of([2, 0, 0, 1, 2, 0])
    write_references(tmp_path / "r.npz", refs, CLASSES, AXIS)
    with np.load(tmp_path / "r.npz") as z:
        assert z["references"].dtype == np.float16
        assert z["labels"].tolist() == [CLASSES[i] for i in refs.classes]
    back = read_references(tmp_path / "r.npz", CLASSES, L)
    np.testing.assert_array_equal(back.classes, refs.classes)
    np.testing.assert_allclose(back.spectra, refs.spectra, atol=1e-3)
    means = back.class_means(3)
    np.testing.assert_allclose(means[0], refs.spectra[[1, 2, 5]].mean(0), atol=1e-3)


def test_one_mean_per_class_in_card_order_is_still_valid(tmp_path: Path) -> None:
    """The files of versions exported before reference libraries: R = C, card order."""
    means = np.eye(3, L, dtype=np.float32) + 0.1
    np.savez(tmp_path / "r.npz", references=means, labels=np.array(CLASSES))
    back = read_references(tmp_path / "r.npz", CLASSES, L)
    np.testing.assert_array_equal(back.classes, [0, 1, 2])
    np.testing.assert_allclose(back.class_means(3), means)


def _bad(tmp_path: Path, **arrays: object) -> Path:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    ("arrays", "reason"),
    [
        ({"references": np.ones((2, L))}, "lacks an array"),
        ({"references": np.ones((3, L + 1)), "labels": CLASSES}, "expected \\[3 labels, 32"),
        ({"references": np.ones((2, L)), "labels": CLASSES}, "expected \\[3 labels"),
        ({"references": np.ones(L), "labels": CLASSES[:1]}, "shape"),
        (
            {"references": np.ones((3, L)), "labels": [*CLASSES[:2], "Unobtainium"]},
            "Unobtainium",
        ),
        ({"references": np.ones((2, L)), "labels": CLASSES[:2]}, "1 class\\(es\\)"),
        ({"references": np.full((3, L), np.nan), "labels": CLASSES}, "NaN or Inf"),
    ],
)
def test_bad_files_are_refused_with_the_reason(
    tmp_path: Path, arrays: dict[str, object], reason: str
) -> None:
    with pytest.raises(ValueError, match=reason):
        read_references(_bad(tmp_path, **arrays), CLASSES, L)


def test_a_file_that_is_not_npz_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.npz"
    path.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="unreadable"):
        read_references(path, CLASSES, L)


def test_write_refuses_what_read_would_refuse(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no reference spectrum"):
        write_references(tmp_path / "r.npz", refs_of([0, 0, 1]), CLASSES, AXIS)
    with pytest.raises(ValueError, match="outside"):
        write_references(tmp_path / "r.npz", refs_of([0, 1, 2, 3]), CLASSES, AXIS)
    assert not (tmp_path / "r.npz").exists()


def test_reference_rows_caps_each_class_and_is_deterministic() -> None:
    y = np.array([0] * 50 + [1] * 3 + [2] * 32)
    rows = reference_rows(y, per_class=32, seed=1)
    assert np.all(np.diff(rows) > 0)
    counts = np.bincount(y[rows])
    assert counts.tolist() == [32, 3, 32]
    np.testing.assert_array_equal(rows, reference_rows(y, per_class=32, seed=1))
    assert not np.array_equal(rows, reference_rows(y, per_class=32, seed=2))
    assert reference_rows(np.zeros(0, dtype=int)).size == 0


@settings(max_examples=40, deadline=None)
@given(
    labels=st.lists(st.integers(0, 5), min_size=1, max_size=30),
    n_queries=st.integers(1, 4),
    metric=st.sampled_from(["cosine", "correlation", "derivative"]),
)
def test_class_scores_is_the_best_match_per_class(
    labels: list[int], n_queries: int, metric: str
) -> None:
    rng = np.random.default_rng(len(labels))
    library = rng.random((len(labels), 40), dtype=np.float32)
    queries = rng.random((n_queries, 40), dtype=np.float32)
    lib = LibrarySearch(library, np.array(labels), metric)
    got = lib.class_scores(queries, 6)
    sim = lib.similarity(queries)
    for c in range(6):
        members = [i for i, lab in enumerate(labels) if lab == c]
        want = sim[:, members].max(1) if members else np.full(n_queries, -np.inf)
        np.testing.assert_array_equal(got[:, c], want)


def test_class_means_are_class_references() -> None:
    refs = refs_of([1, 1, 0])
    np.testing.assert_array_equal(
        refs.class_means(3), class_references(refs.spectra, refs.classes, 3)
    )
