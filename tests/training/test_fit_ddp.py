"""`fit` under torchrun with two CPU processes (gloo): a stop that the epoch callback asks for on
rank 0 alone ends the training on every rank (a rank that went on alone would wait forever in
DistributedDataParallel's gradient all-reduce)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ENTRY = Path(__file__).with_name("ddp_fit_entry.py")
REPO_ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")


@pytest.mark.skipif(not Path(TORCHRUN).exists(), reason="torchrun is not installed")
def test_a_callback_stop_on_rank_0_stops_every_rank(tmp_path: Path) -> None:
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    )
    command = [TORCHRUN, "--standalone", "--nproc-per-node", "2", str(ENTRY), str(tmp_path)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]
    ended = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ended == [{"epochs_run": 2, "stopped": "callback"}] * 2
    assert (tmp_path / "run0" / "best.pt").exists()
    assert not (tmp_path / "run1" / "best.pt").exists()  # rank 0 alone writes checkpoints
