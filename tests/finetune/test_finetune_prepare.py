"""`finetune.prepare_model`: the base network with a fresh output layer of the base's kind."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from training.export import save_weights
from training.finetune import prepare_model
from training.model import DRCNN, CosineClassifier, DRCNNConfig


@pytest.mark.parametrize(("head", "layer"), [("linear", nn.Linear), ("cosine", CosineClassifier)])
@pytest.mark.parametrize("freeze", ["none", "features", "all_but_last"])
def test_the_new_output_layer_keeps_the_base_head_and_freezes_as_asked(
    tmp_path: Path, head: str, layer: type, freeze: str
) -> None:
    base = DRCNN(DRCNNConfig(input_length=128, n_classes=3, depth=2, width_div=16, head=head))
    save_weights(base, tmp_path / "weights.pt")
    model = prepare_model(tmp_path, 7, freeze)
    assert isinstance(model, DRCNN) and isinstance(model.out, layer)
    assert model.cfg.head == head and model.cfg.n_classes == 7
    assert model(torch.rand(2, 1, 128)).shape == (2, 7)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    out = {n for n, _ in model.named_parameters() if n.startswith("out.")}
    assert out <= trainable  # the new layer always learns
    if freeze == "all_but_last":
        assert trainable == out
    elif freeze == "features":
        assert not any(n.startswith(("embed1.", "recursive.", "rec.")) for n in trainable)
        assert {"dense1.weight", "dense2.weight"} <= trainable
    else:
        assert trainable == {n for n, _ in model.named_parameters()}
