"""`<net>+embed` and `<net>+embed_derivative` of the accuracy benchmark: a library search in a
network's last hidden layer, checked against the same search computed by hand."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from bench_accuracy import embedding_scores

from spectra.library import LibrarySearch, unit_rows
from training.datasets import Dataset
from training.model import DRCNN, DRCNNConfig, LiuCNN, LiuCNNConfig
from training.splits import Split
from training.train import predict_embeddings

N_CLASSES = 6


@pytest.fixture(scope="module")
def data(
    make_peak_dataset: Callable[..., tuple[np.ndarray, np.ndarray]],
    make_toy_dataset: Callable[[np.ndarray, np.ndarray, int], Dataset],
) -> tuple[Dataset, Split]:
    x, y = make_peak_dataset(N_CLASSES - 1, 4, 128, seed=5)  # the last class has no spectra
    n = len(y)
    ds = make_toy_dataset(x, y, N_CLASSES)
    order = np.random.default_rng(0).permutation(n)
    return ds, Split(order[: n // 2], order[n // 2 : n // 2], order[n // 2 :])


def _network(kind: str) -> DRCNN | LiuCNN:
    torch.manual_seed(7)
    if kind == "liu":
        return LiuCNN(LiuCNNConfig(input_length=128, n_classes=N_CLASSES, width_div=16)).eval()
    cfg = DRCNNConfig(input_length=128, n_classes=N_CLASSES, depth=3, width_div=16)
    return DRCNN(cfg).eval()


@pytest.mark.parametrize("kind", ["drcnn", "liu"])
def test_embedding_is_what_the_output_layer_classifies(kind: str) -> None:
    model = _network(kind)
    x = torch.rand(3, 1, 128)
    with torch.no_grad():
        emb = model.embedding(x)
        torch.testing.assert_close(model.out(emb), model(x), rtol=1e-5, atol=1e-5)
    assert emb.shape == (3, model.out.in_features)
    out = predict_embeddings(model, x.squeeze(1).numpy(), batch_size=2)
    np.testing.assert_allclose(out, emb.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("metric", ["embed", "embed_derivative"])
def test_embedding_scores_are_the_best_match_per_class(
    data: tuple[Dataset, Split], metric: str
) -> None:
    ds, split = data
    model = _network("drcnn")
    scores = embedding_scores(model, ds, split, split.test, metric)
    assert scores.shape == (len(split.test), N_CLASSES)
    np.testing.assert_array_equal(scores[:, -1], -1.0)  # no training spectrum: the floor
    lib_emb = unit_rows(predict_embeddings(model, ds.x[split.train]))
    sim = unit_rows(predict_embeddings(model, ds.x[split.test])) @ lib_emb.T
    if metric == "embed_derivative":
        deriv = LibrarySearch(ds.x[split.train], ds.y[split.train], "derivative")
        sim = (sim + deriv.similarity(ds.x[split.test])) / 2
    for c in range(N_CLASSES - 1):
        expected = sim[:, ds.y[split.train] == c].max(axis=1)
        np.testing.assert_allclose(scores[:, c], expected, rtol=1e-5, atol=1e-6)


def test_a_library_spectrum_finds_itself(data: tuple[Dataset, Split]) -> None:
    ds, split = data
    scores = embedding_scores(_network("drcnn"), ds, split, split.train, "embed_derivative")
    own = scores[np.arange(len(split.train)), ds.y[split.train]]
    np.testing.assert_allclose(own, 1.0, atol=1e-5)
    assert (scores.argmax(1) == ds.y[split.train]).all()
