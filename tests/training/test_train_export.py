"""The training loop (`training.train`) and the export to the artifact contract
(`training.export`), on a tiny DRCNN and synthetic peak spectra (CPU, seconds)."""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from spectra.card import ONNX_FILE, REFERENCES_FILE, Calibration, ModelCard, sha256_file
from spectra.grid import Grid
from spectra.library import class_references
from spectra.preprocess import Preprocessor
from spectra.references import References, read_references
from spectra.version import code_version
from training.export import (
    FORBIDDEN_OPS,
    PARITY_TOLERANCE,
    WEIGHTS_FILE,
    ExportError,
    ExportInputs,
    check_graph,
    export_version,
    load_weights,
    next_version,
)
from training.model import DRCNN, DRCNNConfig
from training.train import (
    COSINE_FLOOR,
    Arrays,
    TrainConfig,
    epoch_logger,
    fit,
    load_checkpoint,
    lr_at,
    make_optimizer,
    predict_logits,
)

LENGTH, N_CLASSES, EPOCHS = 256, 4, 10
GRID = Grid(100.0, 1200.0, LENGTH)
CLASSES = ["Andradite", "Beryl", "Calcite", "Diamond"]


def tiny_model(seed: int = 0) -> DRCNN:
    torch.manual_seed(seed)
    model = DRCNN(DRCNNConfig(input_length=LENGTH, n_classes=N_CLASSES, depth=3, width_div=16))
    # Keras' BatchNorm momentum (0.01 per batch) needs hundreds of batches before the running
    # statistics used in eval() settle; this fit has 50. PyTorch's 0.1 settles within it.
    for bn in (model.bn1, model.bn2):
        bn.momentum = 0.1
    return model


def without_clock(history: list[dict[str, float]]) -> list[dict[str, float]]:
    """A history without its wall-clock column, which differs between identical runs."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Any:
    """Tiny networks run faster on one thread, and leave the machine's other cores alone."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def train_config(**overrides: Any) -> TrainConfig:
    opts: dict[str, Any] = {
        "epochs": EPOCHS,
        "patience": EPOCHS,
        "batch_size": 16,
        "lr": 1e-3,
        "device": "cpu",
        "progress": False,
        "seed": 0,
    }
    opts.update(overrides)
    return TrainConfig(**opts)


@pytest.fixture(scope="module")
def arrays(make_peak_dataset: Callable[..., tuple[np.ndarray, np.ndarray]]) -> Arrays:
    x, y = make_peak_dataset(N_CLASSES, 30, LENGTH, seed=11)
    order = np.random.default_rng(0).permutation(len(y))
    train, val = order[:80], order[80:]
    return Arrays(x[train], y[train], x[val], y[val])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, arrays: Arrays) -> dict[str, Any]:
    """One short fit shared by the tests below (they copy the run directory before changing it)."""
    run_dir = tmp_path_factory.mktemp("run")
    model = tiny_model()
    cfg = train_config()
    result = fit(model, arrays, cfg, run_dir, extra={"note": "test"})
    return {"model": model, "cfg": cfg, "result": result, "run_dir": run_dir}


# --- fit ------------------------------------------------------------------------------------------


def test_fit_learns_the_synthetic_classes(trained: dict[str, Any]) -> None:
    result = trained["result"]
    history = result.history
    assert result.epochs_run == EPOCHS and result.stopped == "max_epochs"
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))
    assert history[-1]["train_loss"] < 0.7 * history[0]["train_loss"]
    assert result.best_val_acc >= 0.75  # chance is 0.25
    assert result.best_val_acc == max(h["val_acc"] for h in history)
    assert history[result.best_epoch - 1]["val_acc"] == result.best_val_acc
    assert result.best_path == trained["run_dir"] / "best.pt"
    assert not list(trained["run_dir"].glob("*.tmp"))


def test_checkpoints_hold_config_arch_and_code_version(trained: dict[str, Any]) -> None:
    run_dir, cfg = trained["run_dir"], trained["cfg"]
    best = torch.load(run_dir / "best.pt", weights_only=False)
    last = torch.load(run_dir / "last.pt", weights_only=False)
    for ckpt in (best, last):
        assert ckpt["train_config"] == cfg.to_dict()
        assert ckpt["arch"] == trained["model"].cfg.to_dict() and ckpt["arch"]["arch"] == "drcnn"
        assert ckpt["code_version"] == code_version() and ckpt["code_version"]
        assert ckpt["extra"] == {"note": "test"}
    assert best["epoch"] == trained["result"].best_epoch
    assert last["epoch"] == EPOCHS and len(last["history"]) == EPOCHS
    assert "optimizer" in last and "generator" in last
    assert "optimizer" not in best
    json.dumps(best["train_config"])  # JSON-ready, as the card needs


def test_load_checkpoint_rebuilds_the_best_network(trained: dict[str, Any], arrays: Arrays) -> None:
    model, ckpt = load_checkpoint(trained["run_dir"] / "best.pt")
    assert not model.training
    assert isinstance(model, DRCNN) and model.cfg == trained["model"].cfg
    acc = float((predict_logits(model, arrays.x_val).argmax(1) == arrays.y_val).mean())
    assert acc == pytest.approx(ckpt["best_val_acc"])


def test_predict_logits_does_not_depend_on_batch_size(
    trained: dict[str, Any], arrays: Arrays
) -> None:
    model = trained["model"]
    a = predict_logits(model, arrays.x_val, batch_size=7)
    b = predict_logits(model, arrays.x_val, batch_size=256)
    assert a.shape == (len(arrays.y_val), N_CLASSES) and a.dtype == np.float32
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert not model.training


def test_resume_continues_from_last(
    trained: dict[str, Any], arrays: Arrays, tmp_path: Path
) -> None:
    run_dir = tmp_path / "resumed"
    shutil.copytree(trained["run_dir"], run_dir)
    cfg = train_config(epochs=EPOCHS + 3, patience=100)
    result = fit(tiny_model(seed=99), arrays, cfg, run_dir, resume=True)
    assert result.epochs_run == EPOCHS + 3
    assert [h["epoch"] for h in result.history] == list(range(1, EPOCHS + 4))
    assert result.history[:EPOCHS] == trained["result"].history
    assert result.best_val_acc >= trained["result"].best_val_acc
    assert torch.load(run_dir / "last.pt", weights_only=False)["epoch"] == EPOCHS + 3


def test_resume_of_a_finished_run_trains_no_more(
    trained: dict[str, Any], arrays: Arrays, tmp_path: Path
) -> None:
    run_dir = tmp_path / "again"
    shutil.copytree(trained["run_dir"], run_dir)
    result = fit(tiny_model(seed=5), arrays, train_config(), run_dir, resume=True)
    assert result.epochs_run == EPOCHS and len(result.history) == EPOCHS


def test_callback_returning_false_stops(arrays: Arrays, tmp_path: Path) -> None:
    seen: list[dict[str, float]] = []

    def on_epoch(record: dict[str, float]) -> bool:
        seen.append(record)
        return record["epoch"] < 2

    result = fit(tiny_model(), arrays, train_config(), tmp_path, on_epoch=on_epoch)
    assert result.stopped == "callback" and result.epochs_run == 2
    assert [r["epoch"] for r in seen] == [1, 2]
    train = {"train_loss", "train_acc", "grad_norm_mean", "grad_norm_max"}
    assert set(seen[0]) == {"epoch", "lr", "seconds", "val_loss", "val_acc"} | train
    assert (tmp_path / "last.pt").exists()


def test_epoch_records_carry_the_time_since_fit_started(arrays: Arrays, tmp_path: Path) -> None:
    """Each epoch's "seconds" is on `Result.seconds`' clock: it grows epoch by epoch and the last
    one is at most the whole call's (which adds the last checkpoint's writing)."""
    result = fit(tiny_model(), arrays, train_config(epochs=3), tmp_path)
    seconds = [r["seconds"] for r in result.history]
    assert 0 < seconds[0] < seconds[1] < seconds[2] <= result.seconds


def test_callback_returning_none_does_not_stop(arrays: Arrays, tmp_path: Path) -> None:
    result = fit(tiny_model(), arrays, train_config(epochs=2), tmp_path, on_epoch=lambda r: None)  # type: ignore[arg-type,return-value]
    assert result.stopped == "max_epochs" and result.epochs_run == 2


def test_early_stopping_when_validation_never_improves(arrays: Arrays, tmp_path: Path) -> None:
    model = tiny_model()
    for m in (model.bn1, model.bn2):
        m.momentum = 0.0  # running statistics frozen: with lr 0 the network never changes
    seen: list[float] = []
    result = fit(
        model,
        arrays,
        train_config(lr=0.0, patience=2),
        tmp_path,
        on_epoch=lambda r: seen.append(r["epoch"]) is None,
    )
    assert result.stopped == "early_stopping"
    assert (result.best_epoch, result.epochs_run) == (1, 3)
    assert seen == [1, 2, 3]  # the epoch that triggered the stop is reported too


def test_without_per_epoch_checkpoints_best_weights_are_written_once_at_the_end(
    trained: dict[str, Any], arrays: Arrays, tmp_path: Path
) -> None:
    """Same seed, same data: the in-memory best equals what checkpointing saved."""
    result = fit(tiny_model(), arrays, train_config(checkpoint_every_epoch=False), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]
    assert without_clock(result.history) == without_clock(trained["result"].history)
    model, ckpt = load_checkpoint(tmp_path / "best.pt")
    assert ckpt["best_epoch"] == result.best_epoch == trained["result"].best_epoch
    acc = float((predict_logits(model, arrays.x_val).argmax(1) == arrays.y_val).mean())
    assert acc == pytest.approx(result.best_val_acc)
    reference, _ = load_checkpoint(trained["run_dir"] / "best.pt")
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value)


def test_time_limit_stops_after_the_epoch_that_reaches_it(arrays: Arrays, tmp_path: Path) -> None:
    result = fit(tiny_model(), arrays, train_config(max_seconds=0.0), tmp_path)
    assert (result.stopped, result.epochs_run) == ("time_limit", 1)
    assert (tmp_path / "best.pt").exists()


def test_epoch_logger_writes_one_line_per_epoch_and_never_stops_training(
    capsys: pytest.CaptureFixture[str],
) -> None:
    report = epoch_logger("dataset_2_1024_random1/drcnn_rs", 60)
    record = {"epoch": 3, "train_loss": 1.23456, "val_acc": 0.5, "lr": 1e-3, "seconds": 12.4}
    assert report(record) is True and report({**record, "epoch": 4, "seconds": 17.6}) is True
    captured = capsys.readouterr()
    assert captured.out == ""  # stdout keeps a command's results
    lines = captured.err.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "[dataset_2_1024_random1/drcnn_rs] epoch 3/60",
        "[dataset_2_1024_random1/drcnn_rs] epoch 4/60",
    ]
    assert "train loss 1.2346, val acc 0.5000" in lines[0]
    # the record's training time, not a clock of the logger's own
    assert lines[0].endswith(", 12 s") and lines[1].endswith(", 18 s")
    report({**record, "swa_val_acc": 0.61234})  # once weight averaging has begun
    assert capsys.readouterr().err.endswith("val acc 0.5000, averaged 0.6123, 12 s\n")


def test_epoch_logger_is_quiet_on_ranks_other_than_0(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under torchrun every rank runs the callback; one line per epoch, not one per rank."""
    import training.train

    monkeypatch.setattr(training.train, "_is_main", lambda: False)
    record = {"epoch": 1, "train_loss": 1.0, "val_acc": 0.5, "seconds": 1.0}
    assert epoch_logger("run", 2)(record) is True
    assert capsys.readouterr().err == ""


def test_train_config_round_trip() -> None:
    cfg = train_config(betas=(0.8, 0.99))
    cfg.augment.shift = 2.0
    back = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and back.betas == (0.8, 0.99) and back.augment.shift == 2.0


def test_cosine_schedule_anneals_from_lr_to_its_floor() -> None:
    cfg = train_config(lr=1e-3, epochs=5, lr_schedule="cosine")
    lrs = [lr_at(cfg, e) for e in range(1, 6)]
    assert lrs[0] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(COSINE_FLOOR * 1e-3)
    assert lrs[2] == pytest.approx(1e-3 * (1 + COSINE_FLOOR) / 2)  # half-way: the mean
    assert all(a > b for a, b in itertools.pairwise(lrs))
    assert {lr_at(train_config(lr=1e-3), e) for e in range(1, 6)} == {1e-3}  # the paper's
    with pytest.raises(ValueError, match="lr_schedule"):
        train_config(lr_schedule="step")


def test_a_cosine_run_stopped_and_resumed_trains_each_epoch_at_the_schedules_rate(
    arrays: Arrays, tmp_path: Path
) -> None:
    cfg = train_config(epochs=4, lr_schedule="cosine")
    first = fit(tiny_model(), arrays, cfg, tmp_path, on_epoch=lambda r: r["epoch"] < 2)
    assert (first.stopped, first.epochs_run) == ("callback", 2)
    saved = torch.load(tmp_path / "last.pt", weights_only=False)["optimizer"]["param_groups"]
    assert saved[0]["lr"] == pytest.approx(lr_at(cfg, 2))  # the optimizer really used it
    result = fit(tiny_model(seed=7), arrays, cfg, tmp_path, resume=True)
    assert [h["lr"] for h in result.history] == [lr_at(cfg, e) for e in range(1, 5)]
    saved = torch.load(tmp_path / "last.pt", weights_only=False)["optimizer"]["param_groups"]
    assert saved[0]["lr"] == pytest.approx(COSINE_FLOOR * cfg.lr)


def _step_grad_norms(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the global gradient norm the optimizer sees at every step.

    The spy goes on the class `fit` builds, not on a base class: torch wraps each optimizer
    class's `step` in a profiling hook when its first instance is made, after which the class
    holds its own `step` and a patched base class is never called."""
    norms: list[float] = []
    cls = type(make_optimizer(tiny_model(), train_config()))
    step = cls.step

    def spy(self: torch.optim.Optimizer, *a: Any, **k: Any) -> Any:
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
        return step(self, *a, **k)

    monkeypatch.setattr(cls, "step", spy)
    return norms


def test_gradient_clipping_bounds_every_step_and_history_keeps_the_raw_norm(
    arrays: Arrays, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    norms = _step_grad_norms(monkeypatch)
    free = fit(tiny_model(), arrays, train_config(epochs=1), tmp_path / "free")
    raw = max(norms)
    assert free.history[0]["grad_norm_max"] == pytest.approx(raw, rel=1e-4)
    clip = raw / 4  # below the largest raw norm, so some steps must be clipped
    norms.clear()
    clipped = fit(tiny_model(), arrays, train_config(epochs=1, grad_clip=clip), tmp_path / "c")
    assert max(norms) <= clip * (1 + 1e-4)
    assert clipped.history[0]["grad_norm_max"] > clip  # the norm before clipping


def test_weight_decay_shrinks_only_the_weight_matrices_and_kernels() -> None:
    """One AdamW step from zero gradients: decay is the only thing that moves a weight, so each
    matrix or kernel shrinks by exactly lr * weight_decay and biases and BatchNorm stay put."""
    model = tiny_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = make_optimizer(model, train_config(lr=0.1, weight_decay=0.5))
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for name, p in model.named_parameters():
        factor = 1 - 0.1 * 0.5 if p.ndim > 1 else 1.0
        assert torch.allclose(p.detach(), before[name] * factor), name
    assert any(p.ndim > 1 for p in model.parameters())
    assert any(p.ndim == 1 for p in model.parameters())


def test_without_weight_decay_the_optimizer_is_adam_bit_for_bit(arrays: Arrays) -> None:
    """Runs with weight_decay 0 train exactly as they did before AdamW replaced Adam."""
    x = torch.from_numpy(arrays.x_train[:16]).unsqueeze(1)
    y = torch.from_numpy(arrays.y_train[:16])
    adam_net, ours_net = tiny_model(), tiny_model()
    pairs = [
        (adam_net, torch.optim.Adam(adam_net.parameters(), lr=1e-3)),
        (ours_net, make_optimizer(ours_net, train_config(lr=1e-3))),
    ]
    for net, opt in pairs:
        torch.manual_seed(1)  # the same dropout masks for both
        for _ in range(3):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    for a, b in zip(adam_net.parameters(), ours_net.parameters(), strict=True):
        assert torch.equal(a, b)


def test_mixup_trains_on_the_mixture_of_both_labels(
    arrays: Arrays, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With mixup each step's loss is lam * CE(own label) + (1 - lam) * CE(partner's label) on
    the mixed spectra; without it, plain CE on the spectra as they are."""
    from training import train

    seen: list[tuple[torch.Tensor, Any]] = []
    loss = train._cross_entropy

    def spy(logits: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, mix: Any) -> torch.Tensor:
        seen.append((y, mix))
        value = loss(logits, y, cfg, mix)
        if mix is not None:
            y_partner, lam = mix
            assert sorted(y_partner.tolist()) == sorted(y.tolist())  # the batch's own labels
            soft = lam * torch.nn.functional.one_hot(y, N_CLASSES) + (1 - lam) * (
                torch.nn.functional.one_hot(y_partner, N_CLASSES)
            )
            assert torch.allclose(value, torch.nn.functional.cross_entropy(logits, soft.float()))
        return value

    monkeypatch.setattr(train, "_cross_entropy", spy)
    fit(tiny_model(), arrays, train_config(epochs=1), tmp_path / "plain")
    assert seen and all(mix is None for _, mix in seen)
    seen.clear()
    mixed = fit(tiny_model(), arrays, train_config(epochs=2, mixup=0.4), tmp_path / "mix")
    assert seen and all(mix is not None for _, mix in seen)
    assert len({mix[1] for _, mix in seen}) > 1  # a new weight per batch
    assert any(not torch.equal(mix[0], y) for y, mix in seen)  # partners of other classes
    assert mixed.history[-1]["val_acc"] > 0.5  # still learns the four classes
    with pytest.raises(ValueError, match="mixup"):
        train_config(mixup=-0.4)


def _fit_keeping_each_epochs_weights(
    model: DRCNN, data: Arrays, cfg: TrainConfig, out: Path, **kwargs: Any
) -> tuple[Any, dict[int, dict[str, torch.Tensor]]]:
    """`fit`, plus a copy of the trained weights (not an average) after every epoch."""
    weights: dict[int, dict[str, torch.Tensor]] = {}
    stop = kwargs.pop("stop_after", None)

    def keep(record: dict[str, float]) -> bool:
        weights[int(record["epoch"])] = {k: v.clone() for k, v in model.state_dict().items()}
        return stop is None or record["epoch"] < stop

    return fit(model, data, cfg, out, on_epoch=keep, **kwargs), weights


def _assert_is_the_average(
    path: Path, weights: list[dict[str, torch.Tensor]], x_train: np.ndarray
) -> None:
    """best.pt holds the mean of `weights`' parameters and BatchNorm statistics measured on the
    training spectra with those averaged weights."""
    from training.train import recalibrate_batchnorm

    saved, _ = load_checkpoint(path)
    expected = tiny_model()
    params = {name for name, _ in expected.named_parameters()}
    mean = {k: torch.stack([w[k] for w in weights]).mean(0) for k in params}
    expected.load_state_dict({**weights[-1], **mean})
    recalibrate_batchnorm(expected, x_train, 256, torch.device("cpu"))
    for key, value in expected.state_dict().items():
        torch.testing.assert_close(saved.state_dict()[key], value, msg=key)


@pytest.fixture
def no_val(arrays: Arrays) -> Arrays:
    """The training spectra without validation ones: every epoch's candidate becomes the best."""
    return Arrays(arrays.x_train, arrays.y_train, arrays.x_val[:0], arrays.y_val[:0])


def test_weight_averaging_keeps_the_mean_of_the_weights_from_its_first_epoch_on(
    arrays: Arrays, no_val: Arrays, tmp_path: Path
) -> None:
    """Without validation spectra the latest candidate is the best: the average of epochs 2-3
    (the epoch-1 weights are not in it), while the model itself ends at epoch 3's weights."""
    model = tiny_model()
    result, weights = _fit_keeping_each_epochs_weights(
        model, no_val, train_config(epochs=3, swa_start=2), tmp_path
    )
    assert ["swa_val_acc" in r for r in result.history] == [False, True, True]
    _assert_is_the_average(tmp_path / "best.pt", [weights[2], weights[3]], arrays.x_train)
    for key, value in model.state_dict().items():
        assert torch.equal(value, weights[3][key])


def test_weight_averaging_is_validated_and_competes_with_the_earlier_epochs(
    arrays: Arrays, tmp_path: Path
) -> None:
    cfg = train_config(epochs=6, swa_start=4, checkpoint_every_epoch=False)
    result = fit(tiny_model(), arrays, cfg, tmp_path)
    candidates = [r.get("swa_val_acc", r["val_acc"]) for r in result.history]
    assert result.best_val_acc == max(candidates)
    assert candidates[result.best_epoch - 1] == result.best_val_acc
    model, _ = load_checkpoint(tmp_path / "best.pt")
    acc = float((predict_logits(model, arrays.x_val).argmax(1) == arrays.y_val).mean())
    assert acc == pytest.approx(result.best_val_acc)
    with pytest.raises(ValueError, match="swa_start"):
        train_config(swa_start=-1)


def test_a_resumed_run_goes_on_with_its_weight_average(
    arrays: Arrays, no_val: Arrays, tmp_path: Path
) -> None:
    cfg = train_config(epochs=4, swa_start=2)
    first, before = _fit_keeping_each_epochs_weights(
        tiny_model(), no_val, cfg, tmp_path, stop_after=3
    )
    assert (first.stopped, first.epochs_run) == ("callback", 3)
    _, after = _fit_keeping_each_epochs_weights(
        tiny_model(seed=7), no_val, cfg, tmp_path, resume=True
    )
    assert sorted(after) == [4]
    _assert_is_the_average(tmp_path / "best.pt", [before[2], before[3], after[4]], arrays.x_train)


def test_history_records_a_cosine_heads_learned_scale(arrays: Arrays, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = DRCNN(
        DRCNNConfig(input_length=LENGTH, n_classes=N_CLASSES, depth=3, width_div=16, head="cosine")
    )
    result = fit(model, arrays, train_config(epochs=2), tmp_path)
    scales = [h["head_scale"] for h in result.history]
    assert scales[-1] == pytest.approx(float(model.out.log_scale.detach().exp()))
    assert scales[0] != scales[1]  # learned: it moves from epoch to epoch
    linear = fit(tiny_model(), arrays, train_config(epochs=1), tmp_path / "linear")
    assert "head_scale" not in linear.history[0]  # the paper's dense layer has no scale


# --- export ---------------------------------------------------------------------------------------


def export_inputs(
    model_cfg: DRCNNConfig, arrays: Arrays, version: str = "1", classes: list[str] | None = None
) -> ExportInputs:
    classes = classes or CLASSES
    return ExportInputs(
        name="test-minerals",
        version=version,
        classes=classes,
        grid=GRID,
        references=References(arrays.x_train, arrays.y_train.astype(np.int64)),
        calibration=Calibration(1.3, 0.5, 0.2),
        metrics={"test": {"top1": 0.9}},
        data={"source": "synthetic"},
        architecture=model_cfg.to_dict(),
        parity_inputs=arrays.x_val,
    )


@pytest.fixture(scope="module")
def exported(
    tmp_path_factory: pytest.TempPathFactory, trained: dict[str, Any], arrays: Arrays
) -> dict[str, Any]:
    store = tmp_path_factory.mktemp("store")
    model, _ = load_checkpoint(trained["run_dir"] / "best.pt")
    target = export_version(model, export_inputs(model.cfg, arrays), store)
    return {"store": store, "target": target, "model": model}


def test_export_writes_the_three_files(exported: dict[str, Any]) -> None:
    target: Path = exported["target"]
    assert target == exported["store"] / "test-minerals" / "1"
    names = sorted(p.name for p in target.iterdir())
    assert names == ["model.json", "model.onnx", "references.npz", WEIGHTS_FILE]
    assert [p.name for p in target.parent.iterdir()] == ["1"]  # no staging directory left behind


def test_export_refuses_to_overwrite_a_version(exported: dict[str, Any], arrays: Arrays) -> None:
    target: Path = exported["target"]
    before = sha256_file(target / ONNX_FILE)
    with pytest.raises(ExportError, match="exists: model versions are immutable"):
        export_version(
            exported["model"], export_inputs(exported["model"].cfg, arrays), exported["store"]
        )
    assert sha256_file(target / ONNX_FILE) == before


def test_graph_is_unrolled_with_a_dynamic_batch(exported: dict[str, Any]) -> None:
    graph = onnx.load(str(exported["target"] / ONNX_FILE)).graph
    assert not {n.op_type for n in graph.node} & FORBIDDEN_OPS
    (inp,), (out,) = graph.input, graph.output
    assert (inp.name, out.name) == ("spectra", "logits")
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].dim_value
    assert [d.dim_value for d in dims[1:]] == [1, LENGTH]


@pytest.mark.parametrize("batch", [1, 5])
def test_onnxruntime_matches_torch(exported: dict[str, Any], arrays: Arrays, batch: int) -> None:
    sess = ort.InferenceSession(
        str(exported["target"] / ONNX_FILE), providers=["CPUExecutionProvider"]
    )
    x = arrays.x_val[:batch, None, :]
    (got,) = sess.run(["logits"], {"spectra": x})
    with torch.no_grad():
        want = exported["model"].eval()(torch.from_numpy(x)).numpy()
    assert got.shape == (batch, N_CLASSES)
    assert np.abs(got - want).max() / np.abs(want).max() < PARITY_TOLERANCE


def test_card_matches_graph_and_file(exported: dict[str, Any]) -> None:
    target: Path = exported["target"]
    card = ModelCard.load(target)
    assert (card.name, card.version, card.classes) == ("test-minerals", "1", CLASSES)
    assert card.grid == GRID
    assert card.onnx_sha256 == sha256_file(target / ONNX_FILE)
    assert card.code_version == code_version()
    assert card.calibration == Calibration(1.3, 0.5, 0.2)
    assert card.preprocessing == Preprocessor(GRID).describe()
    assert card.architecture == json.loads(json.dumps(exported["model"].cfg.to_dict()))
    assert 0.0 <= card.metrics["export_parity_max_rel_error"] < PARITY_TOLERANCE
    assert card.metrics["test"] == {"top1": 0.9} and card.created_at
    check_graph(target / ONNX_FILE, card.grid.points, len(card.classes))  # does not raise


def test_weights_file_rebuilds_the_network(exported: dict[str, Any], arrays: Arrays) -> None:
    model = load_weights(exported["target"] / WEIGHTS_FILE)
    assert isinstance(model, DRCNN) and not model.training
    assert model.cfg == exported["model"].cfg
    x = torch.from_numpy(arrays.x_val[:, None, :])
    with torch.no_grad():
        got, want = model(x), exported["model"].eval()(x)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)  # float16 weights
    assert torch.equal(got.argmax(1), want.argmax(1))


def test_references_file(exported: dict[str, Any], arrays: Arrays) -> None:
    with np.load(exported["target"] / REFERENCES_FILE) as z:
        refs, labels, axis = z["references"], z["labels"], z["axis"]
    # every training spectrum, labelled with its class name (the service's reference library)
    assert refs.shape == arrays.x_train.shape and refs.dtype == np.float16
    assert labels.tolist() == [CLASSES[i] for i in arrays.y_train]
    np.testing.assert_allclose(axis, GRID.axis, rtol=1e-6)
    np.testing.assert_allclose(refs, arrays.x_train, atol=1e-3)
    back = read_references(exported["target"] / REFERENCES_FILE, CLASSES, LENGTH)
    np.testing.assert_allclose(
        back.class_means(N_CLASSES),
        class_references(arrays.x_train, arrays.y_train, N_CLASSES),
        atol=1e-3,
    )


def test_export_refuses_a_class_without_reference(exported: dict[str, Any], arrays: Arrays) -> None:
    store: Path = exported["store"]
    inputs = export_inputs(exported["model"].cfg, arrays, version="no-refs")
    keep = arrays.y_train != 2
    inputs.references = References(arrays.x_train[keep], arrays.y_train[keep].astype(np.int64))
    with pytest.raises(ExportError, match=r"1 class.* no reference spectrum"):
        export_version(exported["model"], inputs, store)
    assert not (store / "test-minerals" / "no-refs").exists()


def test_check_graph_rejects_wrong_length_and_classes(exported: dict[str, Any]) -> None:
    path = exported["target"] / ONNX_FILE
    with pytest.raises(ExportError, match=rf"input shape .*expected \[batch, 1, {LENGTH + 1}\]"):
        check_graph(path, LENGTH + 1, N_CLASSES)
    with pytest.raises(ExportError, match=r"output shape .*expected \[batch, 7\]"):
        check_graph(path, LENGTH, 7)


def test_failed_export_leaves_the_store_untouched(exported: dict[str, Any], arrays: Arrays) -> None:
    store: Path = exported["store"]
    five = [*CLASSES, "Epidote"]  # the graph has 4 outputs: the card would lie
    inputs = export_inputs(exported["model"].cfg, arrays, version="bad", classes=five)
    inputs.references = References(np.zeros((5, LENGTH), np.float32), np.arange(5))
    with pytest.raises(ExportError, match="output shape"):
        export_version(exported["model"], inputs, store)
    assert sorted(p.name for p in (store / "test-minerals").iterdir()) == ["1"]


def test_next_version(exported: dict[str, Any], tmp_path: Path) -> None:
    assert next_version(tmp_path, "none-yet") == "1"
    assert next_version(exported["store"], "test-minerals") == "2"
    (tmp_path / "m" / "7").mkdir(parents=True)
    (tmp_path / "m" / "latest").mkdir()
    (tmp_path / "m" / "12").write_text("a file, not a version")
    assert next_version(tmp_path, "m") == "8"


def test_class_references_are_class_means() -> None:
    x = np.array([[1.0, 0.0], [3.0, 2.0], [5.0, 5.0]], dtype=np.float32)
    refs = class_references(x, np.array([0, 0, 2]), 4)
    assert refs.dtype == np.float32 and refs.shape == (4, 2)
    np.testing.assert_allclose(refs, [[2.0, 1.0], [0.0, 0.0], [5.0, 5.0], [0.0, 0.0]])
