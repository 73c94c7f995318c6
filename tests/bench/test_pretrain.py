"""`drcnn_rs_pre` of the accuracy benchmark: pre-training on the minerals outside the subset.

What must hold for its figures to be honest: no class or RRUFF sample of the subset is among the
pre-training spectra, the pre-trained network is trained once and shared through the cache, and
a split's network starts from every pre-trained weight but the output layer's.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import bench_accuracy as ba

from training.datasets import Dataset

LENGTH = 128


@pytest.fixture
def subset_and_source(
    tmp_path: Path,
    make_peak_dataset: Callable[..., tuple[np.ndarray, np.ndarray]],
    make_toy_dataset: Callable[[np.ndarray, np.ndarray, int], Dataset],
) -> tuple[Dataset, Dataset, ba.Options]:
    """A 4-class subset (m0-m3) and an 8-class source (m0-m7) cached where `outside_spectra`
    looks for dataset_2; the source's first m5 spectrum is of a sample the subset holds."""
    x, y = make_peak_dataset(8, 4, LENGTH, seed=2)
    source = make_toy_dataset(x, y, 8)
    subset = ba.restrict_classes(source, np.arange(4))
    shared = int(np.flatnonzero(source.y == 5)[0])
    source.groups[shared] = subset.groups[0]
    opts = ba.parse_args(
        ["--rruff", str(tmp_path / "rruff.zip"), "--cache", str(tmp_path / "cache"),
         "--out", str(tmp_path / "out"), "--grid-points", str(LENGTH), "--width-div", "16",
         "--epochs", "2", "--lr", "1e-3", "--pretrain-epochs", "2", "--methods", "drcnn_rs_pre"]
    )  # fmt: skip
    rule = ba.subset_rule(ba.PRETRAIN_SOURCE, LENGTH)
    opts.cache.mkdir(parents=True)
    source.save(opts.cache / f"rruff_{rule.name}_{LENGTH}.npz")
    return subset, source, opts


def test_outside_spectra_share_no_class_or_sample_with_the_subset(
    subset_and_source: tuple[Dataset, Dataset, ba.Options],
) -> None:
    subset, source, opts = subset_and_source
    out = ba.outside_spectra(subset, opts)
    assert out.classes == ["m4", "m5", "m6", "m7"]
    assert not set(out.groups) & set(subset.groups)
    assert len(out) == int((source.y >= 4).sum()) - 1  # the shared sample's spectrum is gone
    np.testing.assert_array_equal(np.bincount(out.y), [4, 3, 4, 4])


def test_pretraining_runs_once_and_is_shared_through_the_cache(
    subset_and_source: tuple[Dataset, Dataset, ba.Options], monkeypatch: pytest.MonkeyPatch
) -> None:
    subset, _, opts = subset_and_source
    state, stats = ba.pretrained_state("drcnn_rs_pre", subset, opts)
    assert stats["classes"] == 4 and stats["spectra"] == 15 and stats["epochs_run"] == 2
    assert state["out.weight"].shape[0] == 4  # the source's classes
    assert len(list(opts.cache.glob("pretrained_drcnn_rs_pre_*.pt"))) == 1

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached pre-training was trained again")

    monkeypatch.setattr(ba, "fit", no_training)
    again, stats_again = ba.pretrained_state("drcnn_rs_pre", subset, opts)
    assert stats_again == stats
    for k, v in state.items():
        torch.testing.assert_close(again[k], v)


def test_a_split_network_starts_from_every_pretrained_weight_but_the_output_layer(
    subset_and_source: tuple[Dataset, Dataset, ba.Options],
) -> None:
    subset, _, opts = subset_and_source
    state, _ = ba.pretrained_state("drcnn_rs_pre", subset, opts)
    net = ba.build_network("drcnn_rs_pre", subset, opts)
    fresh_out = net.state_dict()["out.weight"].clone()
    ba.load_features(net, state)
    loaded = net.state_dict()
    for k, v in state.items():
        if not k.startswith("out."):
            torch.testing.assert_close(loaded[k], v)
    torch.testing.assert_close(loaded["out.weight"], fresh_out)  # its own classes' layer
    other = ba.build_network("drcnn_rs", subset, opts)
    with pytest.raises(ValueError, match="do not fit"):
        ba.load_features(other, {**state, "no.such.weight": torch.zeros(1)})


def test_adapted_pre_fits_its_whitening_on_the_outside_spectra_too(
    subset_and_source: tuple[Dataset, Dataset, ba.Options],
) -> None:
    subset, _, opts = subset_and_source
    split = ba.stratified_split(subset.y, 0, ratios=(0.5, 0.0, 0.5))
    outside = ba.outside_spectra(subset, opts)
    got = ba.library_scores(subset, split, "adapted_pre", split.test, outside)
    lib = ba.AdaptedSearch(
        subset.x[split.train], subset.y[split.train], scatter_extra=(outside.x, outside.y)
    )
    np.testing.assert_allclose(got, lib.class_scores(subset.x[split.test], 4), atol=1e-6)
    plain = ba.library_scores(subset, split, "adapted", split.test)
    assert not np.allclose(got, plain)
    with pytest.raises(ValueError, match="outside the subset"):
        ba.library_scores(subset, split, "adapted_pre", split.test)


def test_the_splits_may_train_at_another_rate_on_the_same_pretraining(
    subset_and_source: tuple[Dataset, Dataset, ba.Options], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--lr sets the splits' training; with --pretrain-lr at the old rate the cached
    pre-training is reused, without it a pre-training at the new rate is a new one."""
    subset, _, opts = subset_and_source
    ba.pretrained_state("drcnn_rs_pre", subset, opts)  # at --lr 1e-3
    slower = replace(opts, lr=1e-4, pretrain_lr=1e-3)

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("trained again")

    with monkeypatch.context() as m:
        m.setattr(ba, "fit", no_training)
        ba.pretrained_state("drcnn_rs_pre", subset, slower)
    ba.pretrained_state("drcnn_rs_pre", subset, replace(opts, lr=1e-4))
    assert len(list(opts.cache.glob("pretrained_drcnn_rs_pre_*.pt"))) == 2
