"""DRCNN (Zhou et al., RSC Adv. 2022, Table 1 and equations 6-25) and Liu et al.'s 2017 CNN.

The module holds only networks and their config dataclasses; training lives in `train.py`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from spectra.library import DERIVATIVE_WINDOW, savgol_coefficients

HEADS = ("linear", "cosine")


@dataclass
class DRCNNConfig:
    """Sizes of a DRCNN. The defaults are the paper's (Table 1); `width_div` shrinks every
    width (conv channels and dense units) for CPU-sized variants; `dense_width_div` lets the
    dense layers shrink less than the convolutions (a narrow penultimate layer with dropout 0.5
    cannot separate 1,000+ classes)."""

    input_length: int = 1024
    n_classes: int = 192
    depth: int = 9
    embed_channels: tuple[int, int] = (64, 128)
    y_channels: int = 256
    z_channels: int = 512
    rec_channels: int = 1024
    dense_units: tuple[int, int] = (1024, 512)
    dropout: float = 0.5
    kernel_size: int = 3
    recursive_supervision: bool = False
    width_div: int = 1
    dense_width_div: int | None = None  # None: same as width_div
    input_transform: str = "none"  # "derivative": a fixed DerivativeFront before the embedding
    head: str = "linear"  # HEADS; "cosine": a CosineClassifier output layer (ours, not the paper)

    def scaled(self, n: int) -> int:
        """A conv width divided by `width_div`, never below 1."""
        return max(1, n // self.width_div)

    def scaled_dense(self, n: int) -> int:
        """A dense width divided by `dense_width_div` (default `width_div`)."""
        return max(1, n // (self.dense_width_div or self.width_div))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored in checkpoints and model cards)."""
        return {"arch": "drcnn", **asdict(self)}


class DRCNN(nn.Module):
    """Deeply-recursive CNN: embedding -> D shared recursions with shared supervision convs ->
    level-weighted reconstruction -> dense exportation.

    `forward` returns logits (softmax belongs to the loss and to calibration). With
    `recursive_supervision`, `forward_all` also returns one logit tensor per recursion: each
    recursion's supervision output Z_i goes through the same reconstruction and exportation
    (as Kim et al. 2016 supervise every recursion with a shared reconstruction net).
    """

    def __init__(self, cfg: DRCNNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        k, pad = cfg.kernel_size, cfg.kernel_size // 2
        e1, e2 = cfg.scaled(cfg.embed_channels[0]), cfg.scaled(cfg.embed_channels[1])
        cy, cz, cr = (
            cfg.scaled(cfg.y_channels),
            cfg.scaled(cfg.z_channels),
            cfg.scaled(cfg.rec_channels),
        )
        d1, d2 = cfg.scaled_dense(cfg.dense_units[0]), cfg.scaled_dense(cfg.dense_units[1])
        self.embed1 = nn.Conv1d(1, e1, k, padding=pad)  # eq. 7, W_-1
        self.embed2 = nn.Conv1d(e1, e2, k, padding=pad)  # eq. 8, W_0
        self.recursive = nn.Conv1d(e2, e2, k, padding=pad)  # eq. 11, the ONE shared W, b
        self.sup_y = nn.Conv1d(e2, cy, k, padding=pad)  # eq. 12, W_Y shared across i
        self.sup_z = nn.Conv1d(cy, cz, k, padding=pad)  # eq. 13, W_Z shared across i
        self.level_weights = nn.Parameter(torch.full((cfg.depth,), 1.0 / cfg.depth))  # W_D
        self.rec = nn.Conv1d(cz, cr, k, padding=pad)  # eq. 17, W_rec
        flat = cr * _pooled_length(cfg.input_length, 4)
        self.dense1 = nn.Linear(flat, d1)  # eq. 20
        self.bn1 = nn.BatchNorm1d(d1, eps=1e-3, momentum=0.01)  # Keras defaults
        self.dense2 = nn.Linear(d1, d2)  # eq. 22
        self.bn2 = nn.BatchNorm1d(d2, eps=1e-3, momentum=0.01)
        if cfg.input_transform not in ("none", "derivative"):
            raise ValueError(f"unknown input_transform {cfg.input_transform!r}")
        self.out = output_layer(cfg.head, d2, cfg.n_classes)  # eq. 24 (softmax applied outside)
        self.drop = nn.Dropout(cfg.dropout)
        self.front: nn.Module = (
            DerivativeFront() if cfg.input_transform == "derivative" else nn.Identity()
        )
        keras_init(self)

    def supervision(self, level: torch.Tensor) -> torch.Tensor:
        """Z_i from L_i (Table 1: pool, Y conv, pool, Z conv, pool)."""
        y = self.sup_y(F.max_pool1d(level, 2)).relu()
        return F.max_pool1d(self.sup_z(F.max_pool1d(y, 2)).relu(), 2)

    def head(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstruction conv + exportation: Z-shaped features to logits."""
        return self.out(self._penultimate(z))

    def _penultimate(self, z: torch.Tensor) -> torch.Tensor:
        h = F.max_pool1d(self.rec(z).relu(), 2).flatten(1)  # eq. 17-18
        h = self.drop(self.bn1(self.dense1(h)).relu())  # eq. 20-21
        return self.drop(self.bn2(self.dense2(h)).relu())  # eq. 22-23

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        """The last hidden layer's activations (what the output layer classifies) for
        [batch, 1, L] spectra: a learned feature space to search a library in."""
        return self._penultimate(self._fused(x))

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Final logits and, with recursive supervision, per-recursion logits (else [])."""
        level = self.embed2(self.embed1(self.front(x)).relu()).relu()
        zs = []
        for _ in range(self.cfg.depth):  # unrolled at export: no Loop node in ONNX
            level = self.recursive(level).relu()
            zs.append(self.supervision(level))
        w = self.level_weights
        fused = sum(w[i] * z for i, z in enumerate(zs)) / w.sum()  # eq. 16
        aux = [self.head(z) for z in zs] if self.cfg.recursive_supervision else []
        return self.head(fused), aux

    def forward(self, x: torch.Tensor, return_aux: bool = False) -> Any:
        """Logits for a batch of spectra shaped [batch, 1, L]; with `return_aux`, the
        `forward_all` pair (going through forward keeps DistributedDataParallel's hooks)."""
        if return_aux:
            return self.forward_all(x)
        return (
            self.forward_all(x)[0] if self.cfg.recursive_supervision else self.head(self._fused(x))
        )

    def _fused(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. 16's weighted sum of the recursions' Z_i, without keeping every Z_i."""
        level = self.embed2(self.embed1(self.front(x)).relu()).relu()
        fused = None
        for i in range(self.cfg.depth):
            level = self.recursive(level).relu()
            part = self.level_weights[i] * self.supervision(level)
            fused = part if fused is None else fused + part
        assert fused is not None
        return fused / self.level_weights.sum()


@dataclass
class LiuCNNConfig:
    """Liu et al. 2017 (Analyst 142, 4067): LeNet-style 1-D CNN. Three blocks of
    conv -> BatchNorm -> LeakyReLU -> max-pool (16/32/64 filters, kernels 21/11/5), then a dense
    layer of 2048 units with tanh and dropout 0.5, then softmax over classes."""

    input_length: int = 1024
    n_classes: int = 192
    filters: tuple[int, int, int] = (16, 32, 64)
    kernels: tuple[int, int, int] = (21, 11, 5)
    dense_units: int = 2048
    dropout: float = 0.5
    width_div: int = 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"arch": "liu2017", **asdict(self)}


class LiuCNN(nn.Module):
    """Re-implementation of Liu et al. 2017's CNN from the paper's description."""

    def __init__(self, cfg: LiuCNNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        c_in = 1
        for f, k in zip(cfg.filters, cfg.kernels, strict=True):
            f = max(1, f // cfg.width_div)
            layers += [
                nn.Conv1d(c_in, f, k, padding=k // 2),
                nn.BatchNorm1d(f),
                nn.LeakyReLU(),
                nn.MaxPool1d(2),
            ]
            c_in = f
        self.features = nn.Sequential(*layers)
        units = max(1, cfg.dense_units // cfg.width_div)
        self.dense = nn.Linear(c_in * _pooled_length(cfg.input_length, 3), units)
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(units, cfg.n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for [batch, 1, L] spectra."""
        return self.out(self.embedding(x))

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        """The dense layer's activations (what the output layer classifies)."""
        return self.drop(torch.tanh(self.dense(self.features(x).flatten(1))))


class DerivativeFront(nn.Module):
    """`spectra.library.derivative_features` as a fixed (untrained) layer, so that a network can
    see what the derivative library search sees and still export as one ONNX graph: square root,
    Savitzky-Golay first derivative (edge values repeated), each spectrum scaled to max |d| = 1."""

    def __init__(self, window: int = DERIVATIVE_WINDOW) -> None:
        super().__init__()
        kernel = torch.tensor(np.array(savgol_coefficients(window, 2, 1)), dtype=torch.float32)
        self.register_buffer("kernel", kernel.view(1, 1, -1))  # conv1d correlates: no flip
        self.edge = window // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, 1, L] spectra -> [batch, 1, L] scaled derivative features."""
        x = F.pad(torch.sqrt(x.clamp(min=0.0)), (self.edge, self.edge), mode="replicate")
        d = F.conv1d(x, self.get_buffer("kernel"))
        return d / d.abs().amax(dim=-1, keepdim=True).clamp(min=1e-6)


class CosineClassifier(nn.Module):
    """Output layer whose logits are a learned scale times the cosine between the features and
    each class's weight vector (a normalised softmax, as in Chen et al.'s 2019 "Baseline++").

    A linear layer's logit grows with its class's weight norm, which training inflates for
    classes with many spectra; with one or two training spectra per mineral (a third of
    dataset_2) that bias works against the rare ones. Normalising both sides removes it; the
    scale (initialised at AdaCos' sqrt(2)·ln(C − 1)) lets the softmax still become confident.
    """

    def __init__(self, in_features: int, n_classes: int) -> None:
        super().__init__()
        self.in_features = in_features
        self.weight = nn.Parameter(torch.empty(n_classes, in_features))
        nn.init.xavier_uniform_(self.weight)
        scale = math.sqrt(2.0) * math.log(max(n_classes - 1, 2))
        self.log_scale = nn.Parameter(torch.tensor(math.log(scale)))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """[batch, in_features] features -> [batch, n_classes] logits."""
        cos = F.linear(F.normalize(h, dim=1, eps=1e-6), F.normalize(self.weight, dim=1))
        return self.log_scale.exp() * cos


def output_layer(head: str, in_features: int, n_classes: int) -> nn.Module:
    """A DRCNN's last layer: the paper's dense layer (`linear`) or a `CosineClassifier`."""
    if head == "linear":
        return nn.Linear(in_features, n_classes)
    if head == "cosine":
        return CosineClassifier(in_features, n_classes)
    raise ValueError(f"head must be one of {HEADS}, not {head!r}")


def keras_init(module: nn.Module) -> None:
    """Initialise as Keras does by default (the paper's implementation): Glorot-uniform weights
    and zero biases for conv and dense layers.

    PyTorch's default (Kaiming-uniform with a=sqrt(5) and uniform biases) shrinks the signal by
    ~0.4 per layer; after the D recursions the features are then nearly constant across spectra
    and BatchNorm's eval-mode statistics blow up. Glorot keeps the recursions alive.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv1d | nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _pooled_length(length: int, n_pools: int) -> int:
    for _ in range(n_pools):
        length //= 2
    return length


def build_model(arch: dict[str, Any]) -> nn.Module:
    """Rebuild a network from the `to_dict()` form stored in checkpoints."""
    params: dict[str, Any] = {
        k: (tuple(v) if isinstance(v, list) else v) for k, v in arch.items() if k != "arch"
    }
    if arch.get("arch") == "liu2017":
        return LiuCNN(LiuCNNConfig(**params))
    return DRCNN(DRCNNConfig(**params))


def arch_of(model: nn.Module) -> dict[str, Any]:
    """The `to_dict()` form of a network's config (what `build_model` takes back)."""
    cfg: Any = getattr(model, "cfg")  # noqa: B009 - nn.Module's __getattr__ hides the type
    return dict(cfg.to_dict())


def count_parameters(model: nn.Module) -> int:
    """Trainable parameter count (what the paper's Table 1 totals)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
