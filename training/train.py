"""The training loop of section 2.3, readable top to bottom.

Cross-entropy, Adam(lr 1e-4, betas 0.9/0.999), batch 32, at most 200 epochs, early stopping when
validation accuracy has not improved for 30 epochs, best checkpoint kept. CUDA when present (bf16
autocast), CPU otherwise. Every checkpoint holds the resolved config and the code version; `last.pt`
also holds optimizer and RNG state (and the weight average, with `swa_start`) so that a run resumes
where it stopped. Under `torchrun` the loop is DistributedDataParallel-correct: each rank trains on
its shard, rank 0 validates, saves and decides every stop (patience, time limit, callback).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import distributed as dist
from torch import nn
from torch.nn import functional as F
from torch.optim.swa_utils import AveragedModel

from spectra.version import code_version
from training.augment import AugmentConfig, augment, mixup
from training.model import DRCNN, CosineClassifier, arch_of

LR_SCHEDULES = ("constant", "cosine")
COSINE_FLOOR = 0.01  # the cosine schedule's last epoch trains at 1 % of `lr`


@dataclass
class TrainConfig:
    """Optimisation settings; defaults are the paper's."""

    epochs: int = 200
    patience: int = 30
    batch_size: int = 32
    lr: float = 1e-4
    lr_schedule: str = "constant"  # LR_SCHEDULES: "cosine" anneals lr to 1 % over `epochs`
    betas: tuple[float, float] = (0.9, 0.999)
    # decoupled (AdamW, Loshchilov & Hutter 2019): each step shrinks the convolution and dense
    # weights by the factor 1 - lr * weight_decay (see make_optimizer)
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    aux_weight: float = 0.0  # recursive supervision: (1-a)*final + a*mean(per-recursion losses)
    grad_clip: float = 0.0  # > 0: clip the gradient's global L2 norm to this before each step
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # bf16 autocast on CUDA; ignored on CPU
    eval_batch_size: int = 256
    progress: bool = True
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    mixup: float = 0.0  # > 0: mix each batch's spectra and labels, weight ~ Beta(mixup, mixup)
    # > 0: stochastic weight averaging (Izmailov et al. 2018) from this epoch on: the equal-weight
    # average of the weights after each epoch >= swa_start is what is validated and kept as best
    swa_start: int = 0
    # False: no per-epoch checkpoint files; the best weights stay in memory and best.pt is written
    # once at the end (benchmarks: at paper size last.pt with Adam state is ~1.3 GB per epoch).
    checkpoint_every_epoch: bool = True
    max_seconds: float | None = None  # wall-clock budget; stops after the epoch that exceeds it

    def __post_init__(self) -> None:
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, not {self.lr_schedule!r}")
        if not self.mixup >= 0:  # also NaN
            raise ValueError(f"mixup is a Beta parameter >= 0 (0 = off), not {self.mixup!r}")
        if self.swa_start < 0:
            raise ValueError(f"swa_start is an epoch >= 1 (0 = off), not {self.swa_start!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of `to_dict`."""
        d = dict(d)
        d["augment"] = AugmentConfig(**d.get("augment", {}))
        d["betas"] = tuple(d.get("betas", (0.9, 0.999)))
        return cls(**d)


@dataclass
class Arrays:
    """Training and validation arrays (x float32 [N, L], y int64 [N])."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


@dataclass
class Result:
    """Outcome of `fit`."""

    best_val_acc: float
    best_epoch: int
    epochs_run: int
    history: list[dict[str, float]]
    best_path: Path
    stopped: str  # "early_stopping", "max_epochs", "time_limit" or "callback"
    seconds: float


def lr_at(cfg: TrainConfig, epoch: int) -> float:
    """Learning rate of `epoch` (1-based). A function of the epoch alone, so a resumed run goes
    on where it stopped without scheduler state: "constant" is the paper's; "cosine" falls from
    `lr` at epoch 1 to COSINE_FLOOR * `lr` at epoch `epochs` (half a cosine period)."""
    if cfg.lr_schedule == "constant":
        return cfg.lr
    progress = (epoch - 1) / max(cfg.epochs - 1, 1)
    return cfg.lr * (COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 * (1 + math.cos(math.pi * progress)))


EpochCallback = Callable[[dict[str, float]], bool]
"""Called after every epoch with its record; returning False stops training (used for cancel).
Under DistributedDataParallel it is called on every rank, and rank 0's answer stops them all.
The record's "seconds" is the time since this `fit` call started, on the clock of
`Result.seconds`, so a log's last epoch line and the run's summary agree."""


def epoch_logger(label: str, epochs: int) -> EpochCallback:
    """A callback that writes one flushed line per finished epoch to stderr (rank 0 only), so that
    a training of hours can be followed in its log; it never stops the training. The time shown
    is the record's own (training time, the data set's loading not included)."""

    def report(record: dict[str, float]) -> bool:
        if _is_main():
            print(
                f"[{label}] epoch {record['epoch']:.0f}/{epochs}: train loss "
                f"{record['train_loss']:.4f}, val acc {record['val_acc']:.4f}, "
                + (f"averaged {record['swa_val_acc']:.4f}, " if "swa_val_acc" in record else "")
                + f"{record['seconds']:.0f} s",
                file=sys.stderr,
                flush=True,
            )
        return True

    return report


def resolve_device(name: str) -> torch.device:
    """ "auto" -> the local CUDA device when present, else CPU."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        rank = dist.get_rank() if dist.is_initialized() else 0
        return torch.device("cuda", rank % torch.cuda.device_count())
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA) and numpy's legacy global RNG."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def fit(
    model: nn.Module,
    data: Arrays,
    cfg: TrainConfig,
    out_dir: Path,
    resume: bool = False,
    on_epoch: EpochCallback | None = None,
    extra: dict[str, Any] | None = None,
) -> Result:
    """Train `model` on `data`, keeping `best.pt` and `last.pt` in `out_dir`.

    With `cfg.swa_start`, the candidates for `best.pt` are each epoch's weights before that epoch
    and the running weight average from it on; `model` itself ends at the last epoch's weights.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    model.to(device)
    opt = make_optimizer(model, cfg)
    # copied before DDP may swap in SyncBatchNorm: the average's BatchNorm is recomputed locally
    swa = AveragedModel(model) if cfg.swa_start > 0 else None
    state = _State(extra=extra or {})
    if resume and (out_dir / "last.pt").exists():
        state = _load_last(out_dir / "last.pt", model, opt, device, swa)
    net = _wrap_ddp(model, device)
    xt, yt = torch.from_numpy(data.x_train).unsqueeze(1), torch.from_numpy(data.y_train)
    gen = torch.Generator().manual_seed(cfg.seed)
    if state.gen_state is not None:
        gen.set_state(state.gen_state)
    best = _Best(out_dir / "best.pt", cfg)
    start = time.perf_counter()
    stopped = "max_epochs"
    for epoch in range(state.epoch + 1, cfg.epochs + 1):
        lr = lr_at(cfg, epoch)
        for group in opt.param_groups:
            group["lr"] = lr
        train_loss, train_acc, grad_mean, grad_max = _train_epoch(
            net, model, opt, xt, yt, cfg, device, gen, epoch
        )
        recalibrate_batchnorm(model, data.x_train, cfg.eval_batch_size, device)
        val_loss, val_acc = _validate(model, data, cfg, device)
        averaged = _average(swa, epoch, cfg, model, data, device)
        record = {
            "epoch": epoch,
            "train_loss": train_loss,
            "train_acc": train_acc,
            "grad_norm_mean": grad_mean,
            "grad_norm_max": grad_max,
            "val_loss": val_loss,
            "val_acc": val_acc,
            **averaged,
            "lr": lr,
            "seconds": time.perf_counter() - start,
            **_head_record(model),
        }
        state.history.append(record)
        state.epoch = epoch
        # with weight averaging under way, the average is the candidate for best, not the weights
        judged = swa.module if averaged and swa is not None else model
        acc, loss = record.get("swa_val_acc", val_acc), record.get("swa_val_loss", val_loss)
        if _improved(state, acc, loss, has_val=len(data.y_val) > 0):
            state.best_val_acc, state.best_val_loss, state.best_epoch = acc, loss, epoch
            best.keep(judged, state, gen)
        if cfg.checkpoint_every_epoch:
            _save(out_dir / "last.pt", model, opt, state, cfg, gen, swa)
        # every finished epoch is reported, the last one before early stopping included; every
        # rank calls the callback and rank 0's answer decides, as for the other stops
        if on_epoch is not None and _should_stop(on_epoch(record) is False, device):
            stopped = "callback"
            break
        if _should_stop(epoch - state.best_epoch >= cfg.patience, device):
            stopped = "early_stopping"
            break
        if cfg.max_seconds is not None and _should_stop(
            time.perf_counter() - start >= cfg.max_seconds, device
        ):
            stopped = "time_limit"
            break
    best.flush(state)
    return Result(
        state.best_val_acc,
        state.best_epoch,
        state.epoch,
        state.history,
        out_dir / "best.pt",
        stopped,
        time.perf_counter() - start,
    )


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with `cfg.weight_decay` on the convolution and dense weights only. Biases and
    BatchNorm scales and shifts (the 1-D parameters) are not decayed, as is usual: they are few,
    set offsets and scales rather than capacity, and a shrinking BatchNorm scale only fights
    the normalisation.

    AdamW at weight decay 0 is Adam, bit for bit. Adam's own `weight_decay` would be an L2 term
    divided by each weight's gradient history, decaying the rarely-updated weights least.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=cfg.betas)


def _average(
    swa: AveragedModel | None,
    epoch: int,
    cfg: TrainConfig,
    model: nn.Module,
    data: Arrays,
    device: torch.device,
) -> dict[str, float]:
    """Fold this epoch's weights into the running average (from `cfg.swa_start` on), give the
    average BatchNorm statistics of its own (averaged weights never saw the averaged
    statistics), and validate it: the record's "swa_val_loss" and "swa_val_acc"; {} otherwise."""
    if swa is None or epoch < cfg.swa_start:
        return {}
    swa.update_parameters(model)
    recalibrate_batchnorm(swa.module, data.x_train, cfg.eval_batch_size, device)
    loss, acc = _validate(swa.module, data, cfg, device)
    return {"swa_val_loss": loss, "swa_val_acc": acc}


@dataclass
class _State:
    epoch: int = 0
    best_val_acc: float = -1.0
    best_epoch: int = 0
    best_val_loss: float = math.inf
    history: list[dict[str, float]] = field(default_factory=list)
    gen_state: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class _Best:
    """The best epoch's weights: saved at once (checkpointing runs) or kept in memory and
    written by `flush` (runs without per-epoch checkpoints)."""

    def __init__(self, path: Path, cfg: TrainConfig) -> None:
        self.path, self.cfg = path, cfg
        self.model: nn.Module | None = None
        self.weights: dict[str, torch.Tensor] | None = None
        self.gen: torch.Generator | None = None

    def keep(self, model: nn.Module, state: _State, gen: torch.Generator) -> None:
        """Record the current weights as the best ones."""
        if self.cfg.checkpoint_every_epoch:
            _save(self.path, model, None, state, self.cfg, gen)
            return
        self.model, self.gen = model, gen
        self.weights = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def flush(self, state: _State) -> None:
        """Write best.pt from memory (no-op when it was saved as training went)."""
        if self.weights is None or self.model is None or self.gen is None:
            return
        current = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(self.weights)
        _save(self.path, self.model, None, state, self.cfg, self.gen)
        self.model.load_state_dict(current)  # the caller's model stays at the last epoch


def _improved(state: _State, val_acc: float, val_loss: float, has_val: bool) -> bool:
    """Higher validation accuracy wins, ties go to the lower validation loss (tiny validation
    sets tie often); without validation spectra the latest epoch is the best one."""
    if not has_val:
        return True
    if val_acc != state.best_val_acc:
        return val_acc > state.best_val_acc
    return val_loss < state.best_val_loss


def _is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def _wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    if not dist.is_initialized():
        return model
    if device.type == "cuda":  # SyncBatchNorm runs on GPUs only; gloo/CPU keeps local BN
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def _shard(perm: torch.Tensor) -> torch.Tensor:
    """Each rank's part of the (identically seeded) epoch permutation."""
    if not dist.is_initialized():
        return perm
    world, rank = dist.get_world_size(), dist.get_rank()
    usable = perm.numel() - perm.numel() % world  # equal shards keep the collectives in step
    return perm[rank:usable:world]


Mix = tuple[torch.Tensor, float] | None
"""A mixup batch's partner labels (y[partner]) and own weight (`training.augment.mixup`); None
without mixup."""


def _loss(
    net: nn.Module, model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, mix: Mix
) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(model, DRCNN) and model.cfg.recursive_supervision and cfg.aux_weight > 0:
        logits, aux = net(x, return_aux=True)
        main = _cross_entropy(logits, y, cfg, mix)
        side = torch.stack([_cross_entropy(a, y, cfg, mix) for a in aux])
        return (1 - cfg.aux_weight) * main + cfg.aux_weight * side.mean(), logits
    logits = net(x)
    return _cross_entropy(logits, y, cfg, mix), logits


def _cross_entropy(
    logits: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, mix: Mix
) -> torch.Tensor:
    """Cross-entropy against y, or against the mixup target lam * y + (1 - lam) * y_partner
    (the loss is linear in the target, so two terms equal one soft-label term)."""
    own = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
    if mix is None:
        return own
    y_partner, lam = mix
    other = F.cross_entropy(logits, y_partner, label_smoothing=cfg.label_smoothing)
    return lam * own + (1 - lam) * other


def _head_record(model: nn.Module) -> dict[str, float]:
    """A cosine output layer's learned scale (its softmax's sharpness), for the history."""
    head = getattr(model, "out", None)
    if not isinstance(head, CosineClassifier):
        return {}
    return {"head_scale": float(head.log_scale.detach().exp())}


def _train_epoch(
    net: nn.Module,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    xt: torch.Tensor,
    yt: torch.Tensor,
    cfg: TrainConfig,
    device: torch.device,
    gen: torch.Generator,
    epoch: int,
) -> tuple[float, float, float, float]:
    """One pass over the shuffled training spectra: mean loss, accuracy, and the mean and largest
    gradient norm before clipping (what a diverging run shows first)."""
    net.train()
    order = _shard(torch.randperm(len(yt), generator=gen))
    total, correct, seen, norms = 0.0, 0, 0, []
    params = [p for p in model.parameters() if p.requires_grad]
    batches = range(0, len(order), cfg.batch_size)
    bar = _progress(batches, cfg, epoch)
    for i in bar:
        idx = order[i : i + cfg.batch_size]
        if idx.numel() < 2:  # BatchNorm needs two samples in training mode
            continue
        x, y, mix = augment(xt[idx], cfg.augment, gen), yt[idx], None
        if cfg.mixup > 0:  # the partners' labels once per batch, not per (recursion) output
            x, partner, lam = mixup(x, cfg.mixup, gen)
            mix = (y[partner].to(device, non_blocking=True), lam)
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        with torch.autocast(
            device.type, dtype=torch.bfloat16, enabled=cfg.amp and device.type == "cuda"
        ):
            loss, logits = _loss(net, model, x, y, cfg, mix)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
        norms.append(float(norm))
        opt.step()
        total += float(loss.detach()) * len(idx)
        correct += int((logits.argmax(1) == y).sum())
        seen += len(idx)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{total / seen:.3f}", acc=f"{correct / seen:.3f}")
    mean, top = (float(np.mean(norms)), max(norms)) if norms else (0.0, 0.0)
    return total / max(seen, 1), correct / max(seen, 1), mean, top


def _progress(batches: range, cfg: TrainConfig, epoch: int) -> Any:
    if not (cfg.progress and _is_main()):
        return batches
    from tqdm.auto import tqdm

    return tqdm(batches, desc=f"epoch {epoch}/{cfg.epochs}", leave=False, unit="batch")


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module, x: np.ndarray, batch_size: int, device: torch.device
) -> None:
    """Recompute BatchNorm's running statistics on `x` with the current weights.

    The exponential average that training keeps (Keras' momentum 0.01) lags far behind the
    weights when they move fast, and it sees dropout-scaled activations that inference never
    does; evaluation-mode predictions then swing from epoch to epoch. An exact pass over the
    training spectra with dropout off (as inference runs) fixes both; it does not change training.
    """
    bns = [  # frozen layers (fine-tuning) keep the statistics they came with
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        and (m.weight is None or m.weight.requires_grad)
    ]
    if not bns or len(x) == 0:
        return
    model.eval()
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the pass
        m.train()
    for i in range(0, len(x), batch_size):
        chunk = x[i : i + batch_size]
        if len(chunk) > 1:
            model(torch.from_numpy(chunk).unsqueeze(1).to(device))
    for m, momentum in zip(bns, saved, strict=True):
        m.momentum = momentum
        m.eval()


@torch.no_grad()
def predict_logits(
    model: nn.Module, x: np.ndarray, batch_size: int = 256, device: torch.device | None = None
) -> np.ndarray:
    """Logits for spectra x [N, L] under eval() and no_grad."""
    return _batched(model, model, x, batch_size, device)


@torch.no_grad()
def predict_embeddings(
    model: nn.Module, x: np.ndarray, batch_size: int = 256, device: torch.device | None = None
) -> np.ndarray:
    """The network's last hidden layer ([N, units]) for spectra x [N, L] under eval()."""
    embed: Any = getattr(model, "embedding")  # noqa: B009 - nn.Module's __getattr__ hides it
    return _batched(model, embed, x, batch_size, device)


def _batched(
    model: nn.Module,
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: np.ndarray,
    batch_size: int,
    device: torch.device | None,
) -> np.ndarray:
    device = device or next(model.parameters()).device
    model.eval()
    out = [
        fn(torch.from_numpy(x[i : i + batch_size]).unsqueeze(1).to(device)).float().cpu()
        for i in range(0, len(x), batch_size)
    ]
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)


def _validate(
    model: nn.Module, data: Arrays, cfg: TrainConfig, device: torch.device
) -> tuple[float, float]:
    if not _is_main() or len(data.y_val) == 0:
        return math.nan, 0.0
    logits = torch.from_numpy(predict_logits(model, data.x_val, cfg.eval_batch_size, device))
    y = torch.from_numpy(data.y_val)
    return float(F.cross_entropy(logits, y)), float((logits.argmax(1) == y).float().mean())


def _should_stop(stop: bool, device: torch.device) -> bool:
    """Rank 0 decides; every rank follows (a rank that stops alone would hang the others)."""
    if not dist.is_initialized():
        return stop
    flag = torch.tensor([1 if stop else 0], device=device)
    dist.broadcast(flag, src=0)
    return bool(flag.item())


def _save(
    path: Path,
    model: nn.Module,
    opt: torch.optim.Optimizer | None,
    state: _State,
    cfg: TrainConfig,
    gen: torch.Generator,
    swa: AveragedModel | None = None,
) -> None:
    if not _is_main():
        return
    ckpt = {
        "model": model.state_dict(),
        "arch": arch_of(model),
        "train_config": cfg.to_dict(),
        "code_version": code_version(),
        "epoch": state.epoch,
        "best_val_acc": state.best_val_acc,
        "best_val_loss": state.best_val_loss,
        "best_epoch": state.best_epoch,
        "history": state.history,
        "extra": state.extra,
    }
    if opt is not None:
        ckpt["optimizer"] = opt.state_dict()
        ckpt["generator"] = gen.get_state()
    if swa is not None:  # the running average and its count, so a resumed run goes on with it
        ckpt["swa"] = swa.state_dict()
    tmp = path.with_suffix(".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(path)  # atomic: a kill mid-save never leaves a half-written checkpoint


def _load_last(
    path: Path,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    device: torch.device,
    swa: AveragedModel | None = None,
) -> _State:
    ckpt = torch.load(path, map_location=device, weights_only=False)
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    if swa is not None and "swa" in ckpt:
        swa.load_state_dict(ckpt["swa"])
    return _State(
        epoch=ckpt["epoch"],
        best_val_acc=ckpt["best_val_acc"],
        best_epoch=ckpt["best_epoch"],
        best_val_loss=ckpt.get("best_val_loss", math.inf),
        history=ckpt["history"],
        gen_state=ckpt.get("generator"),
        extra=ckpt.get("extra", {}),
    )


def load_checkpoint(path: Path, device: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network stored in a checkpoint and return it with the checkpoint dict."""
    from training.model import build_model

    ckpt = torch.load(path, map_location=device, weights_only=False)
    model = build_model(ckpt["arch"])
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt
