"""torchrun entry for `test_fit_ddp`: `fit` on the CPU ranks (gloo) with an epoch callback that
asks to stop on rank 0 only (as a cancel seen by the rank that talks to the job store would);
each rank writes how its training ended to OUT/rank<r>.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import distributed as dist

from training.model import DRCNN, DRCNNConfig
from training.train import Arrays, TrainConfig, fit

LENGTH, STOP_AFTER = 256, 2


def main(out: Path) -> None:
    """Train a tiny network for up to 5 epochs; rank 0's callback says stop after STOP_AFTER."""
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    x, y = rng.random((40, LENGTH), dtype=np.float32), np.arange(40) % 2
    torch.manual_seed(0)
    model = DRCNN(DRCNNConfig(input_length=LENGTH, n_classes=2, depth=2, width_div=16))
    cfg = TrainConfig(
        epochs=5, patience=5, batch_size=8, lr=1e-3, device="cpu", progress=False,
        checkpoint_every_epoch=False,
    )  # fmt: skip
    result = fit(
        model,
        Arrays(x[:32], y[:32], x[32:], y[32:]),
        cfg,
        out / f"run{rank}",
        on_epoch=lambda record: not (rank == 0 and record["epoch"] >= STOP_AFTER),
    )
    ended = {"epochs_run": result.epochs_run, "stopped": result.stopped}
    (out / f"rank{rank}.json").write_text(json.dumps(ended))
    dist.barrier()  # as finetune.run_job does: no rank leaves while another is mid-collective
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
