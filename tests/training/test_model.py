"""The networks (`training.model`): DRCNN at the paper's sizes (Table 1), reduced variants that
train on a CPU, recursive supervision, Liu et al.'s CNN and the rebuild from a checkpoint dict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from spectra.library import derivative_features
from training.model import (
    DRCNN,
    CosineClassifier,
    DRCNNConfig,
    LiuCNN,
    LiuCNNConfig,
    arch_of,
    build_model,
    count_parameters,
)

PAPER_PARAMETERS = 69_876_681  # Table 1 network at L = 1024, 192 classes


def small(**overrides: object) -> DRCNNConfig:
    cfg = {"input_length": 256, "n_classes": 5, "depth": 3, "width_div": 16, **overrides}
    return DRCNNConfig(**cfg)  # type: ignore[arg-type]


def test_paper_sized_drcnn_parameter_count_and_shape() -> None:
    with torch.device("meta"):  # shapes only: no 280 MB of weights allocated
        model = DRCNN(DRCNNConfig())
        out = model.eval()(torch.empty(2, 1, 1024))
    assert count_parameters(model) == PAPER_PARAMETERS
    assert model.dense1.weight.shape == (1024, 1024 * 1024 // 16)  # the 67 M of the first dense
    assert tuple(out.shape) == (2, 192)


def test_paper_defaults() -> None:
    cfg = DRCNNConfig()
    assert (cfg.input_length, cfg.n_classes, cfg.depth, cfg.dropout) == (1024, 192, 9, 0.5)
    assert (cfg.embed_channels, cfg.y_channels, cfg.z_channels, cfg.rec_channels) == (
        (64, 128),
        256,
        512,
        1024,
    )
    assert cfg.dense_units == (1024, 512) and not cfg.recursive_supervision


@pytest.mark.parametrize("length", [1570, 1024])
def test_reduced_width_output_shape(length: int) -> None:
    torch.manual_seed(0)
    model = DRCNN(DRCNNConfig(input_length=length, n_classes=7, width_div=8, depth=3))
    assert model.embed2.out_channels == 16 and model.dense1.out_features == 128
    assert model.dense1.in_features == 128 * (length // 16)
    logits = model.eval()(torch.rand(3, 1, length))
    assert logits.shape == (3, 7) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


def test_width_never_scales_below_one() -> None:
    cfg = DRCNNConfig(width_div=4096)
    assert cfg.scaled(64) == 1 and cfg.scaled(1024) == 1
    model = DRCNN(small(width_div=4096))
    assert model.eval()(torch.rand(2, 1, 256)).shape == (2, 5)


def test_the_recursive_conv_is_one_shared_module() -> None:
    model = DRCNN(small(depth=9))
    keys = list(model.state_dict())
    assert [k for k in keys if k.startswith("recursive")] == ["recursive.weight", "recursive.bias"]
    # depth changes only the level weights: 9 recursions cost 6 more parameters than 3
    assert count_parameters(model) - count_parameters(DRCNN(small(depth=3))) == 6


def test_level_weights_start_at_one_over_depth() -> None:
    model = DRCNN(small(depth=5))
    assert model.level_weights.requires_grad
    torch.testing.assert_close(model.level_weights.detach(), torch.full((5,), 0.2))


def test_fused_output_is_a_normalised_weighted_mean() -> None:
    # eq. 16 divides by the sum of the weights: scaling them all changes nothing
    torch.manual_seed(1)
    model = DRCNN(small()).eval()
    x = torch.rand(4, 1, 256)
    with torch.no_grad():
        before = model(x)
        model.level_weights.mul_(7.0)
        after = model(x)
    torch.testing.assert_close(before, after, rtol=1e-5, atol=1e-5)


def test_fast_forward_matches_forward_all() -> None:
    torch.manual_seed(2)
    model = DRCNN(small()).eval()
    with torch.no_grad():
        model.level_weights.copy_(torch.tensor([0.5, 1.5, 3.0]))
        x = torch.rand(4, 1, 256)
        fast = model(x)
        full, aux = model.forward_all(x)
    assert aux == []
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-5)


def test_recursive_supervision_returns_one_logit_tensor_per_recursion() -> None:
    torch.manual_seed(3)
    model = DRCNN(small(depth=4, recursive_supervision=True)).eval()
    x = torch.rand(2, 1, 256)
    with torch.no_grad():
        final, aux = model.forward_all(x)
        plain = model(x)
    assert len(aux) == 4 and all(a.shape == (2, 5) for a in aux)
    assert final.shape == (2, 5)
    torch.testing.assert_close(plain, final)
    assert not torch.allclose(aux[0], aux[-1])  # each recursion sees a different level
    with torch.no_grad():
        via_forward, aux2 = model(x, return_aux=True)  # the path DDP training takes
    torch.testing.assert_close(via_forward, final)
    assert len(aux2) == 4


def test_keras_initialisation() -> None:
    model = DRCNN(small())
    for layer in (model.embed1, model.recursive, model.rec, model.dense1, model.out):
        assert torch.count_nonzero(layer.bias) == 0
        fan_in = layer.weight[0].numel()
        fan_out = layer.weight.shape[0] * layer.weight[0, 0].numel()
        bound = (6 / (fan_in + fan_out)) ** 0.5  # Glorot uniform
        assert layer.weight.abs().max() <= bound + 1e-6
        if layer is model.dense1:  # 65k draws reach the bound (PyTorch's default stays < 0.45x)
            assert layer.weight.abs().max() > 0.95 * bound


def test_gradients_reach_the_shared_conv_and_level_weights() -> None:
    torch.manual_seed(4)
    model = DRCNN(small()).train()
    loss = torch.nn.functional.cross_entropy(
        model(torch.rand(4, 1, 256)), torch.tensor([0, 1, 2, 3])
    )
    loss.backward()
    assert model.recursive.weight.grad is not None and model.recursive.weight.grad.abs().sum() > 0
    assert model.level_weights.grad is not None and model.level_weights.grad.abs().sum() > 0


def test_liu_cnn_output_shape_and_width() -> None:
    torch.manual_seed(5)
    model = LiuCNN(LiuCNNConfig(input_length=1024, n_classes=11, width_div=4)).eval()
    assert model.dense.out_features == 512
    assert model.dense.in_features == 16 * (1024 // 8)
    out = model(torch.rand(3, 1, 1024))
    assert out.shape == (3, 11) and torch.isfinite(out).all()
    odd = LiuCNN(LiuCNNConfig(input_length=1570, n_classes=4, width_div=8)).eval()
    assert odd(torch.rand(2, 1, 1570)).shape == (2, 4)


@pytest.mark.parametrize(
    "cfg",
    [
        small(recursive_supervision=True, dropout=0.3),
        LiuCNNConfig(input_length=300, n_classes=3, width_div=8),
    ],
)
def test_build_model_round_trip_through_json(cfg: DRCNNConfig | LiuCNNConfig) -> None:
    torch.manual_seed(6)
    original = DRCNN(cfg) if isinstance(cfg, DRCNNConfig) else LiuCNN(cfg)
    arch = json.loads(json.dumps(cfg.to_dict()))  # tuples come back as lists, as from a card
    assert arch["arch"] == ("drcnn" if isinstance(cfg, DRCNNConfig) else "liu2017")
    rebuilt = build_model(arch)
    assert type(rebuilt) is type(original)
    assert rebuilt.cfg == cfg
    rebuilt.load_state_dict(original.state_dict())
    x = torch.rand(2, 1, cfg.input_length)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), original.eval()(x))


def test_derivative_front_matches_the_library_features_and_round_trips() -> None:
    cfg = DRCNNConfig(input_length=128, n_classes=3, width_div=16, input_transform="derivative")
    model = DRCNN(cfg).eval()
    x = np.random.default_rng(0).uniform(-0.05, 1.0, (4, 128)).astype(np.float32)
    want = derivative_features(x)
    want /= np.abs(want).max(axis=1, keepdims=True)
    got = model.front(torch.from_numpy(x)[:, None]).numpy()[:, 0]
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert not list(model.front.parameters())  # fixed, never trained
    again = build_model(json.loads(json.dumps(arch_of(model))))
    again.load_state_dict(model.state_dict())
    assert isinstance(again, DRCNN) and again.cfg.input_transform == "derivative"
    with pytest.raises(ValueError, match="unknown input_transform"):
        DRCNN(DRCNNConfig(input_length=128, n_classes=3, width_div=16, input_transform="fft"))


def test_a_derivative_front_exports_to_onnx_with_parity(tmp_path: Path) -> None:
    from training.export import check_graph, check_parity, export_onnx

    cfg = DRCNNConfig(
        input_length=128, n_classes=3, depth=2, width_div=16, input_transform="derivative"
    )
    model = DRCNN(cfg).eval()
    path = tmp_path / "model.onnx"
    export_onnx(model, 128, path)
    check_graph(path, 128, 3)
    x = np.random.default_rng(1).uniform(0, 1, (5, 128)).astype(np.float32)
    assert check_parity(model, path, x) < 1e-4


def test_the_cosine_head_is_a_scaled_cosine_blind_to_feature_and_weight_norms() -> None:
    head = CosineClassifier(6, 4)
    h = torch.randn(3, 6)
    with torch.no_grad():
        head.weight[2] *= 50.0  # a class whose weights training inflated gains nothing from it
        got = head(h)
        w = head.weight
        want = torch.exp(head.log_scale) * (h @ w.T) / (h.norm(dim=1, keepdim=True) * w.norm(dim=1))
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(head(7.0 * h), got)  # only the direction of the features counts
        assert torch.all(got.abs() <= torch.exp(head.log_scale) + 1e-5)
        assert torch.all(torch.isfinite(head(torch.zeros(2, 6))))  # a dead feature vector
    assert head.log_scale.exp().item() == pytest.approx(2**0.5 * np.log(3))  # AdaCos' scale
    assert head.log_scale.requires_grad


def test_a_cosine_head_drcnn_learns_round_trips_and_exports_with_parity(tmp_path: Path) -> None:
    from training.export import check_graph, check_parity, export_onnx, load_weights, save_weights

    torch.manual_seed(0)
    model = DRCNN(small(head="cosine", recursive_supervision=True, depth=2, dropout=0.0))
    assert isinstance(model.out, CosineClassifier)
    x, y = torch.rand(10, 1, 256), torch.arange(10) % 5
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(40):  # it can fit ten spectra, through the recursions' heads too
        opt.zero_grad()
        logits, aux = model(x, return_aux=True)
        loss = sum(torch.nn.functional.cross_entropy(z, y) for z in [logits, *aux])
        assert isinstance(loss, torch.Tensor)
        loss.backward()
        opt.step()
    with torch.no_grad():  # (train mode: BatchNorm's slow running statistics are not the point)
        assert torch.equal(model(x).argmax(1), y)
    save_weights(model, tmp_path / "weights.pt")
    again = load_weights(tmp_path / "weights.pt")
    assert isinstance(again, DRCNN) and again.cfg.head == "cosine"
    path = tmp_path / "model.onnx"
    export_onnx(model.eval(), 256, path)
    check_graph(path, 256, 5)
    assert check_parity(model, path, np.random.default_rng(2).uniform(0, 1, (4, 256))) < 1e-4
    with pytest.raises(ValueError, match="head must be one of"):
        DRCNN(small(head="arcface"))
