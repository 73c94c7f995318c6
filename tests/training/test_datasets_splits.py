"""The paper's RRUFF subsets (`training.datasets`) and the splits (`training.splits`), on small
synthetic RRUFF folders and zips written by the tests."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spectra.grid import Grid
from training.datasets import (
    PRESETS,
    BuildReport,
    Dataset,
    SubsetRule,
    build_dataset,
    counts,
    drop_unusable,
    is_raw,
    read_rruff,
    top_up,
)
from training.splits import RATIOS, grouped_split, make_split, stratified_split

GRID = Grid(100.0, 1200.0, 128)

# class -> number of usable Processed spectra written (plus the traps listed in `rruff_folder`).
WRITTEN = {
    "Quartz": 12,
    "Calcite": 10,
    "Diamond": 9,
    "Epidote": 21,
    "Beryl": 1,
    "Grossular": 3,
    "Andradite": 3,
}
LASERS = (514, 532, 785)


def rule(preset: str) -> SubsetRule:
    return dataclasses.replace(PRESETS[preset], grid=GRID)


@pytest.fixture(scope="module")
def rruff_folder(
    tmp_path_factory: pytest.TempPathFactory,
    rruff_writer: Callable[..., Path],
    rruff_zipper: Callable[[Path, Path], Path],
) -> Path:
    """Synthetic RRUFF files with every trap the build must handle:

    - one Calcite spectrum measured outside the grid (2000-3000 cm-1): Calcite drops to 9;
    - one RAW Quartz file (dropped; Quartz keeps 12);
    - one more Grossular and Andradite file with bit-identical intensities (both dropped);
    - one file that does not parse.
    """
    folder = tmp_path_factory.mktemp("synthetic") / "rruff"
    serial = 0
    for name, n in WRITTEN.items():
        for i in range(n):
            serial += 1
            sample = f"R{serial // 3 + 100 * len(name):06d}" if name != "Epidote" else f"R9{i % 4}"
            x = np.linspace(2000.0, 3000.0, 300) if (name == "Calcite" and i == 0) else None
            rruff_writer(folder, name, sample, laser=LASERS[i % 3], serial=serial, x=x)
    rruff_writer(folder, "Quartz", "R000777", laser=785, serial=999, kind="RAW")
    shared = np.random.default_rng(5).uniform(0, 1, 551)
    rruff_writer(folder, "Grossular", "R070001", serial=1001, y=shared)
    rruff_writer(folder, "Andradite", "R070002", serial=1002, y=shared)
    (folder / "Broken__R1__Raman__532__0__unoriented__Raman_Data_Processed__1.txt").write_text(
        "##NAMES=Broken\n100, 1\n101, x\n"
    )
    rruff_zipper(folder, folder.parent / "rruff.zip")
    return folder


@pytest.fixture(scope="module", params=["folder", "zip"])
def rruff_source(request: pytest.FixtureRequest, rruff_folder: Path) -> Path:
    return rruff_folder if request.param == "folder" else rruff_folder.parent / "rruff.zip"


def class_counts(ds: Dataset) -> dict[str, int]:
    return {ds.classes[k]: int(v) for k, v in Counter(ds.y.tolist()).items()}


# --- reading and dropping -------------------------------------------------------------------------


def test_read_rruff_folder_and_zip_agree(rruff_folder: Path) -> None:
    r_dir, r_zip = BuildReport(), BuildReport()
    from_dir = read_rruff(rruff_folder, r_dir)
    from_zip = read_rruff(rruff_folder.parent / "rruff.zip", r_zip)
    assert len(from_dir) == len(from_zip) == sum(WRITTEN.values()) + 3
    assert r_dir.files_read == r_zip.files_read == len(from_dir)
    assert len(r_dir.unreadable) == len(r_zip.unreadable) == 1
    assert "line 3" in r_dir.unreadable[0] and "line 3" in r_zip.unreadable[0]
    assert sorted(s.source.split(":")[-1] for s in from_zip) == sorted(s.source for s in from_dir)


def test_drop_unusable_counts_raw_and_ambiguous(rruff_folder: Path) -> None:
    report = BuildReport()
    kept = drop_unusable(read_rruff(rruff_folder), report)
    assert report.raw_dropped == 1 and report.ambiguous_dropped == 2
    assert not any(is_raw(s.source) for s in kept)
    assert Counter(s.label for s in kept) == Counter(WRITTEN)


def test_identical_arrays_under_one_name_are_kept() -> None:
    from spectra.types import Spectrum

    y = np.arange(10.0)
    spectra = [Spectrum(np.arange(10.0), y.copy(), f"{i}.txt", "Quartz") for i in range(2)]
    report = BuildReport()
    assert len(drop_unusable(spectra, report)) == 2
    assert report.ambiguous_dropped == 0


@pytest.mark.parametrize(
    ("source", "raw"),
    [
        ("Brucite__R050455__Raman__780__0__unoriented__Raman_Data_RAW__30864.txt", True),
        ("x.zip:Brucite__R050455__Raman__780__0__unoriented__Raman_Data_RAW__30864.txt", True),
        ("Quartz__R040031__Raman__514__0__unoriented__Raman_Data_Processed__9312.txt", False),
        (
            "raw_data.zip:Quartz__R040031__Raman__514__0__unoriented__Raman_Data_Processed__1.txt",
            False,
        ),
        ("Crawfordite.txt", False),
        ("raw_rruff.zip:quartz_1.txt", False),
        ("Crawfordite__1.txt", False),
    ],
)
def test_is_raw_reads_only_the_data_kind_field(source: str, raw: bool) -> None:
    assert is_raw(source) is raw


def test_files_with_raw_in_a_plain_name_are_kept(write_rruff: Callable[..., Path]) -> None:
    for i, name in enumerate(["Crawfordite_1.txt", "Crawfordite_2.txt", "straw.txt"]):
        write_rruff("Crawfordite", f"R0{i}", serial=i, filename=name)
    ds, report = build_dataset(write_rruff("Quartz", "R9", serial=9).parent, rule("dataset_2"))
    assert report.raw_dropped == 0
    assert ds.classes == ["Crawfordite"] and len(ds) == 3


def test_no_qualifying_class_is_a_clear_error(write_rruff: Callable[..., Path]) -> None:
    folder = write_rruff("Quartz", "R1", serial=1).parent
    with pytest.raises(ValueError, match=r"no class satisfies dataset_1 \(10\.\.any .* 1 files"):
        build_dataset(folder, rule("dataset_1"))


# --- presets --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("dataset_1", {"Quartz": 12, "Epidote": 21}),
        (
            "dataset_2",
            {
                "Quartz": 12,
                "Calcite": 9,
                "Diamond": 9,
                "Epidote": 21,
                "Grossular": 3,
                "Andradite": 3,
            },
        ),
        ("dataset_3", {"Quartz": 12, "Calcite": 9, "Diamond": 9, "Grossular": 3, "Andradite": 3}),
    ],
)
def test_build_dataset_applies_the_class_rules(
    rruff_source: Path, preset: str, expected: dict[str, int]
) -> None:
    ds, report = build_dataset(rruff_source, rule(preset))
    assert class_counts(ds) == expected
    assert ds.classes == sorted(expected)
    assert ds.x.shape == (sum(expected.values()), GRID.points) and ds.x.dtype == np.float32
    assert ds.y.dtype == np.int64 and ds.grid == GRID
    assert ds.x.min() >= 0.0 and ds.x.max() <= 1.0
    assert report.raw_dropped == 1 and report.ambiguous_dropped == 2
    assert len(report.unreadable) == 1
    d = report.to_dict()
    assert d["unreadable"]["count"] == 1
    # Calcite's 10 files pass every rule before preprocessing; its off-grid one is then dropped
    assert d["off_grid_dropped"]["count"] == 1
    assert ds.info["rule"]["min_per_class"] == PRESETS[preset].min_per_class
    assert ds.info["report"]["raw_dropped"] == 1


def test_off_grid_spectrum_pushes_a_class_below_the_minimum(rruff_folder: Path) -> None:
    # Calcite: 10 files pass the >= 10 rule, one is off the grid, so the class is dropped.
    ds, _ = build_dataset(rruff_folder, rule("dataset_1"))
    assert "Calcite" not in ds.classes
    at_ten = SubsetRule("nine", 9, None, GRID)
    ds9, report9 = build_dataset(rruff_folder, at_ten)
    assert class_counts(ds9)["Calcite"] == 9
    assert "does not overlap the model grid" in report9.off_grid_dropped[0]


def test_groups_sources_and_coverage(rruff_folder: Path) -> None:
    ds, _ = build_dataset(rruff_folder.parent / "rruff.zip", rule("dataset_1"))
    epidote = ds.y == ds.classes.index("Epidote")
    assert sorted(set(ds.groups[epidote].tolist())) == ["R90", "R91", "R92", "R93"]
    assert all(s.endswith(".txt") and ":" not in s for s in ds.sources)
    assert ds.coverage.dtype == np.float32 and np.all(ds.coverage == 1.0)


def test_counts_histogram(rruff_folder: Path) -> None:
    ds, _ = build_dataset(rruff_folder, rule("dataset_2"))
    c = counts(ds)
    assert c == ds.info["counts"]
    assert (c["classes"], c["spectra"]) == (6, 57)
    assert c["histogram"] == {"3": 2, "9": 2, "12": 1, "21": 1}
    assert list(c["histogram"]) == ["3", "9", "12", "21"]  # numeric order, not string order
    assert c["spectra_per_class"] == {"min": 3, "median": 9.0, "mean": 9.5, "max": 21}
    assert c["samples"] == len(set(ds.groups.tolist()))
    assert c["mean_coverage"] == 1.0


def test_dataset_save_load_round_trip(rruff_folder: Path, tmp_path: Path) -> None:
    ds, _ = build_dataset(rruff_folder, rule("dataset_2"))
    ds.info["source"] = "synthetic.zip"
    path = tmp_path / "ds.npz"
    ds.save(path)
    back = Dataset.load(path)
    for name in ("x", "y", "groups", "sources", "coverage"):
        np.testing.assert_array_equal(getattr(back, name), getattr(ds, name))
    assert back.x.dtype == np.float32 and back.y.dtype == np.int64
    assert back.classes == ds.classes and isinstance(back.classes[0], str)
    assert back.grid == ds.grid and back.info == ds.info and len(back) == len(ds)


# --- stratified split -----------------------------------------------------------------------------


def assert_partition(split: object, n: int) -> None:
    parts = [split.train, split.val, split.test]  # type: ignore[attr-defined]
    joined = np.concatenate(parts)
    assert joined.size == n and np.array_equal(np.sort(joined), np.arange(n))
    assert all(p.dtype == np.int64 for p in parts)


def test_stratified_split_proportions_on_a_large_set() -> None:
    y = np.repeat(np.arange(60), 50)  # 3000 spectra
    split = stratified_split(y, seed=0)
    assert_partition(split, y.size)
    sizes = split.sizes()
    for part, ratio in zip(("train", "val", "test"), RATIOS, strict=True):
        assert sizes[part] / y.size == pytest.approx(ratio, abs=0.01)
    # per class of 50: test = int(15 + u) = 15, val = int(0.2 * 35 + u) = 7
    for c in range(60):
        assert np.sum(y[split.test] == c) == 15 and np.sum(y[split.val] == c) == 7


def test_stratified_split_proportions_follow_for_tiny_classes() -> None:
    y = np.repeat(np.arange(2000), 2)  # classes of 2: one spectrum in test w.p. 0.6
    split = stratified_split(y, seed=3)
    assert split.test.size / y.size == pytest.approx(0.30, abs=0.02)
    # without a test member, one goes to validation w.p. 0.4: 0.4 * 0.4 / 2 of the spectra
    assert split.val.size / y.size == pytest.approx(0.08, abs=0.02)
    assert np.array_equal(np.unique(y[split.train]), np.arange(2000))


def test_stratified_split_is_deterministic_per_seed() -> None:
    y = np.random.default_rng(0).integers(0, 20, 500)
    a, b, c = stratified_split(y, 7), stratified_split(y, 7), stratified_split(y, 8)
    for part in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(a, part), getattr(b, part))
    assert not np.array_equal(a.test, c.test)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 12), min_size=1, max_size=150), st.integers(0, 2**31))
def test_stratified_split_properties(labels: list[int], seed: int) -> None:
    y = np.asarray(labels)
    split = stratified_split(y, seed)
    assert_partition(split, y.size)
    assert set(np.unique(y[split.train]).tolist()) == set(labels)  # every class trains


# --- grouped split --------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 6), st.integers(0, 25)), min_size=1, max_size=150),
    st.integers(0, 2**31),
)
def test_grouped_split_never_puts_a_group_on_two_sides(
    pairs: list[tuple[int, int]], seed: int
) -> None:
    # groups may be filed under several classes, as RRUFF samples listed under two names are
    y = np.array([c for c, _ in pairs])
    groups = np.array([f"R{g}" for _, g in pairs])
    split = grouped_split(y, groups, seed)
    assert_partition(split, y.size)
    sides = [set(groups[p].tolist()) for p in (split.train, split.val, split.test)]
    assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 6), st.integers(0, 5)), min_size=1, max_size=150),
    st.integers(0, 2**31),
)
def test_grouped_split_keeps_every_class_and_single_group_classes_in_train(
    pairs: list[tuple[int, int]], seed: int
) -> None:
    # groups nested in classes (the usual case): group = (class, sample)
    y = np.array([c for c, _ in pairs])
    groups = np.array([f"{c}-{g}" for c, g in pairs])
    split = grouped_split(y, groups, seed)
    assert_partition(split, y.size)
    assert set(np.unique(y[split.train]).tolist()) == set(y.tolist())
    for c in np.unique(y):
        if np.unique(groups[y == c]).size == 1:
            assert np.all(np.isin(np.flatnonzero(y == c), split.train))


def test_grouped_split_proportions_by_sample() -> None:
    y = np.repeat(np.arange(40), 30)
    groups = np.array([f"{c}-{i // 3}" for c, i in zip(y, np.tile(np.arange(30), 40), strict=True)])
    split = grouped_split(y, groups, seed=1)
    # 10 samples per class: 3 test, int(0.2*7 + u) in {1, 2} val
    assert split.test.size == 40 * 9
    assert 40 * 3 <= split.val.size <= 40 * 6


def test_make_split_dispatch() -> None:
    y = np.repeat(np.arange(4), 10)
    groups = np.array([str(i // 2) for i in range(40)])
    np.testing.assert_array_equal(
        make_split("random", y, groups, 1).test, stratified_split(y, 1).test
    )
    np.testing.assert_array_equal(
        make_split("grouped", y, groups, 1).test, grouped_split(y, groups, 1).test
    )
    with pytest.raises(ValueError, match="unknown split kind 'kfold'"):
        make_split("kfold", y, groups, 1)


# --- top-up ---------------------------------------------------------------------------------------


def test_top_up_reaches_the_target_per_class_from_the_given_indices_only() -> None:
    y = np.array([0] * 3 + [1] * 25 + [2] * 1 + [3] * 10)
    train = np.delete(np.arange(32), 2)  # class 0: indices 0 and 1 only (2 is, say, in test)
    out = top_up(train, y, target=20, rng=np.random.default_rng(0))
    per_class = Counter(y[out].tolist())
    assert per_class == {0: 20, 1: 25, 2: 20, 3: 20}
    assert set(out[y[out] == 0].tolist()) == {0, 1}  # never index 2 (not in the training part)
    assert set(out[y[out] == 2].tolist()) == {28}
    np.testing.assert_array_equal(out[: train.size], train)  # the originals come first, once each
    assert set(out.tolist()) <= set(train.tolist())


def test_top_up_is_reproducible_and_leaves_big_classes() -> None:
    y = np.repeat(np.arange(3), 30)
    idx = np.arange(90)
    np.testing.assert_array_equal(top_up(idx, y, 20, np.random.default_rng(1)), idx)
    a = top_up(idx[:45], y, 40, np.random.default_rng(2))
    b = top_up(idx[:45], y, 40, np.random.default_rng(2))
    np.testing.assert_array_equal(a, b)
