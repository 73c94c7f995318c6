"""`torchrun ... tests/finetune/ddp_cpu_entry.py <run_job args>`: `finetune.run_job` on CPU ranks.

`training.train` converts BatchNorm to SyncBatchNorm under DDP, which torch only runs on GPUs;
this entry swaps in plain DDP so that the multi-process path of `run_job` (process group,
rank-0 claim and export, cancel agreement) can be tested on a CPU-only machine.
"""

from __future__ import annotations

import sys

import torch
from torch import distributed as dist
from torch import nn

import training.train
from finetune.run_job import main


def _plain_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    if not dist.is_initialized():
        return model
    return nn.parallel.DistributedDataParallel(model)


training.train._wrap_ddp = _plain_ddp
torch.set_num_threads(1)

if __name__ == "__main__":
    sys.exit(main())
