"""`python -m finetune.run_job --job-store DIR --model-store DIR --job-id ID`: run ONE job.

What the local worker spawns for each job (with `--claimed`), and what a Kubernetes Job runs
(without it: the job is claimed here). Steps: load the job's preprocessed data, fine-tune the
base version (`training.finetune`), export the result to the artifact contract as the next
integer version (allocated under a lock; never overwriting one), switch `ACTIVE` if the job
asked for it and validation accuracy was measured, then mark the job succeeded.

Under `torchrun` (WORLD_SIZE > 1) the process group is initialised (NCCL on GPUs, gloo on
CPU); every rank trains its shard of each epoch (DistributedDataParallel, in `training.train`);
rank 0 claims the job, reports progress, decides cancellation for all ranks, exports and
registers. Cancel: the job's flag is read after every epoch (training stops cleanly) and by a
monitor thread, which ends the process after half of `--cancel-grace-s` if an epoch is too long.
torch and `training` are imported lazily: `--help` and the API never pay for them.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from finetune.ingest import TrainingData
from finetune.proc import die_with_parent
from finetune.publish import version_lock, write_active
from finetune.records import JobRecord, worker_id
from finetune.store import JOURNAL_MODES, JobStore

HEARTBEAT_S = 2.0


def finite(**fields: Any) -> dict[str, Any]:
    """A progress document: `fields` with NaN and infinities as null (JSON has neither)."""
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in fields.items()
    }


class Cancelled(Exception):
    """The job's cancel flag stopped training."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(
        prog="python -m finetune.run_job", description=__doc__.split("\n")[0]
    )
    p.add_argument("--job-store", type=Path, required=True)
    p.add_argument("--model-store", type=Path, required=True)
    p.add_argument("--job-id", required=True)
    p.add_argument("--claimed", action="store_true", help="a worker has claimed the job already")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda (under torchrun: per rank)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: half the cores)")
    p.add_argument("--retention-s", type=float, default=0.0, help="keep the data this long")
    p.add_argument("--cancel-grace-s", type=float, default=5.0)
    p.add_argument(
        "--store-journal",
        choices=JOURNAL_MODES,
        default=os.environ.get("RAMAN_FINETUNE_STORE_JOURNAL", "wal"),
    )
    p.add_argument("--parent-pid", type=int, default=None, help="exit when this process exits")
    return p.parse_args(argv)


class Dist:
    """This process's place in a torchrun launch (world 1 without torchrun)."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device: Any = None

    @property
    def main(self) -> bool:
        """Rank 0: the one that talks to the stores."""
        return self.rank == 0

    def init(self) -> None:
        """Join the process group when launched by torchrun with several processes."""
        import torch
        from torch import distributed

        cuda = torch.cuda.is_available()
        self.device = torch.device("cuda", self.local_rank) if cuda else torch.device("cpu")
        if self.world > 1:
            if cuda:
                torch.cuda.set_device(self.device)
            distributed.init_process_group("nccl" if cuda else "gloo")

    def agree(self, flag: bool) -> bool:
        """Rank 0's `flag`, on every rank."""
        if self.world == 1:
            return flag
        import torch
        from torch import distributed

        t = torch.tensor([1 if flag else 0], device=self.device)
        distributed.broadcast(t, src=0)
        return bool(t.item())

    def close(self, wait: bool) -> None:
        """Leave the process group; with `wait` (the job ended normally) once every rank has."""
        if self.world > 1:
            from torch import distributed

            if distributed.is_initialized():
                # A rank that tears its gloo connections down while another is still finishing
                # a collective aborts that rank ("terminate called without an active
                # exception"), about one run in six on 2 CPU cores. Not after a failure, where
                # the other ranks may never reach the barrier.
                if wait:
                    distributed.barrier()
                distributed.destroy_process_group()


class Monitor(threading.Thread):
    """Heartbeats (rank 0) and the cancel watchdog for epochs too long to wait for."""

    def __init__(self, store: JobStore, job_id: str, dist: Dist, grace_s: float) -> None:
        super().__init__(daemon=True, name="job-monitor")
        self.store, self.job_id, self.dist, self.grace_s = store, job_id, dist, grace_s
        self.done = threading.Event()
        self.armed = True  # off once exporting: a half-written version is worse than no cancel

    def run(self) -> None:
        beat, cancel_at = 0.0, None
        while not self.done.wait(0.25):
            now = time.monotonic()
            if self.dist.main and now - beat >= HEARTBEAT_S:
                self.store.heartbeat(self.job_id)
                beat = now
            if cancel_at is None and self.store.cancel_requested(self.job_id):
                cancel_at = now
            late = cancel_at is not None and now - cancel_at > self.grace_s
            if late and self.armed and not self.done.is_set():
                if self.dist.main:
                    self.store.finish(self.job_id, "cancelled")
                os._exit(0)  # mid-epoch: nothing worth saving, and every rank stops the same way


class JobRun:
    """One job on this rank."""

    def __init__(
        self, store: JobStore, job: JobRecord, args: argparse.Namespace, dist: Dist,
        monitor: Monitor,
    ) -> None:  # fmt: skip
        self.store, self.job, self.args, self.dist = store, job, args, dist
        self.monitor = monitor
        self.spec = job.spec
        self.epochs = int(job.spec.hyperparameters.epochs or 1)
        self.has_val = False
        self.best = -1.0

    def log(self, message: str) -> None:
        """A line in the job's log (rank 0 only)."""
        if self.dist.main:
            self.store.log(self.job.id, message)

    def progress(self, **fields: Any) -> None:
        """Replace the job's progress (rank 0 only); NaN becomes null."""
        if self.dist.main:
            self.store.set_progress(self.job.id, finite(**fields))

    def on_epoch(self, record: dict[str, float]) -> bool:
        """After every epoch: report, and keep going unless rank 0 saw a cancel."""
        if self.has_val:
            self.best = max(self.best, record["val_acc"])
        self.progress(
            stage="training", epoch=int(record["epoch"]), epochs=self.epochs,
            train_loss=record["train_loss"], train_accuracy=record["train_acc"],
            val_loss=record["val_loss"] if self.has_val else None,
            val_accuracy=record["val_acc"] if self.has_val else None,
            best_val_accuracy=self.best if self.has_val else None,
        )  # fmt: skip
        val = (
            f", val loss {record['val_loss']:.4f} acc {record['val_acc']:.3f}"
            if self.has_val
            else ""
        )
        self.log(f"epoch {int(record['epoch'])}/{self.epochs}: train loss "
                 f"{record['train_loss']:.4f} acc {record['train_acc']:.3f}{val}")  # fmt: skip
        # only rank 0 reads the store; `fit` gives its answer to every rank
        return not (self.dist.main and self.store.cancel_requested(self.job.id))

    def run(self) -> None:
        """Train, then (rank 0) export, register and activate."""
        import torch

        from training.finetune import FinetuneConfig, finetune, split_few_shot

        torch.set_num_threads(self.args.threads or max(1, (os.cpu_count() or 2) // 2))
        data = TrainingData.load(self.store.data_dir(self.job.id))
        base_dir = self.args.model_store / self.spec.base_model / self.spec.base_version
        if not (base_dir / "weights.pt").is_file():
            raise FileNotFoundError(f"{base_dir}/weights.pt is missing: the base cannot be tuned")
        hp = self.spec.hyperparameters
        cfg = FinetuneConfig(
            epochs=self.epochs, patience=hp.patience or self.epochs, lr=hp.learning_rate,
            batch_size=hp.batch_size, freeze=hp.freeze, val_fraction=self.spec.val_fraction,
            seed=hp.seed, device=str(self.dist.device) if self.dist.world > 1 else self.args.device,
        )  # fmt: skip
        self.has_val = len(split_few_shot(data.y, cfg.val_fraction, cfg.seed).val) > 0
        if not self.has_val:
            cfg.patience = cfg.epochs  # nothing to stop early on: train every epoch, keep the last
        self.log(f"data: {len(data.y)} spectra, {len(data.classes)} classes; base {base_dir}")
        self.progress(stage="training", epoch=0, epochs=self.epochs)
        work = self.store.work_dir(self.job.id)
        model, result, split = finetune(
            base_dir, data.x, data.y, data.classes, cfg, work, on_epoch=self.on_epoch
        )
        if result.stopped == "callback":
            raise Cancelled
        if not self.has_val:
            last = torch.load(work / "last.pt", map_location="cpu", weights_only=False)
            model.load_state_dict(last["model"])
        if self.dist.main:
            self.publish(model, base_dir, data, split, result)

    def publish(
        self, model: Any, base_dir: Path, data: TrainingData, split: Any, result: Any
    ) -> None:
        """Export as the next version, then activate it if asked and justified."""
        from training.export import next_version
        from training.finetune import export_finetuned

        name, store = self.spec.output_model, self.args.model_store
        self.monitor.armed = False
        val = result.best_val_acc if self.has_val else None
        exporting = finite(
            stage="exporting", epoch=result.epochs_run, epochs=self.epochs, best_val_accuracy=val
        )
        if not self.store.begin_export(self.job.id, exporting):
            raise Cancelled  # asked during the last epoch: nothing is registered yet
        with version_lock(store, name):  # allocation and export are one step for all workers
            version = next_version(store, name)
            export_finetuned(
                model, base_dir, data.x, data.y, data.classes, split, result, store, name,
                version, data={"source": f"fine-tune job {self.job.id}", "job_id": self.job.id},
                max_false_accept=self.spec.max_false_accept,
            )  # fmt: skip
        val_acc = float(result.best_val_acc) if self.has_val else None
        activated, note = self.should_activate(val_acc)
        result_doc = {"model": name, "version": version, "activated": activated,
                      "val_accuracy": val_acc, "note": note}  # fmt: skip
        self.store.set_result(self.job.id, result_doc)
        self.log(f"registered {name} version {version}" + (f" ({note})" if note else ""))
        if activated:
            write_active(store, name, version)  # before `succeeded`: the API reloads on that
            self.log(f"activated {name} version {version}")
        self.progress(stage="done", epoch=result.epochs_run, epochs=self.epochs,
                      best_val_accuracy=val_acc)  # fmt: skip

    def should_activate(self, val_acc: float | None) -> tuple[bool, str | None]:
        """Activate only when asked, with a measured validation accuracy over the bar."""
        if not self.spec.activate:
            return False, None
        if val_acc is None:
            return False, "not activated: no validation spectra, so no validation accuracy"
        bar = self.spec.min_val_accuracy
        if bar is not None and val_acc < bar:
            return False, f"not activated: validation accuracy {val_acc:.3f} is below {bar:.3f}"
        return True, None


def claim(store: JobStore, args: argparse.Namespace, dist: Dist) -> JobRecord | None:
    """Rank 0 claims (or, with --claimed, checks) the job; every rank learns the outcome."""
    job = None
    if dist.main:
        if args.claimed:
            job = store.get(args.job_id)
            job = job if job is not None and job.state == "running" else None
        else:
            job = store.claim(args.job_id, worker_id())
    if not dist.agree(job is not None):
        return None
    return job or store.get(args.job_id)


def execute(store: JobStore, job: JobRecord, args: argparse.Namespace, dist: Dist) -> int:
    """Run the job and give it its final state; returns the exit code."""
    monitor = Monitor(store, job.id, dist, args.cancel_grace_s / 2)
    monitor.start()
    run = JobRun(store, job, args, dist, monitor)
    code = 0
    try:
        run.run()
        if dist.main:
            store.finish(job.id, "succeeded")
    except Cancelled:
        if dist.main:
            store.finish(job.id, "cancelled")
    except Exception as exc:
        code = 1
        run.log("".join(traceback.format_exception(exc))[-4000:])
        if dist.main:
            store.finish(job.id, "failed", f"{type(exc).__name__}: {exc}"[:500])
    finally:
        monitor.done.set()
    if dist.main:
        shutil.rmtree(store.work_dir(job.id), ignore_errors=True)
        store.purge_data(args.retention_s)
    return code


def _on_sigterm(store: JobStore, job_id: str, dist: Dist) -> Callable[[int, Any], None]:
    """SIGTERM (pod deleted or evicted): record why the job ended, then exit at once."""

    def handler(signum: int, frame: Any) -> None:
        if dist.main:
            cancelled = store.cancel_requested(job_id)
            reason = None if cancelled else "the job's process was terminated (SIGTERM)"
            store.finish(job_id, "cancelled" if cancelled else "failed", reason)
        os._exit(128 + signum)

    return handler


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; exit 0 when the job ended (whatever its state), 1 when it failed, 2 when
    it could not be claimed."""
    args = parse_args(argv)
    if args.parent_pid is not None:
        die_with_parent(args.parent_pid)
    store = JobStore(args.job_store, args.store_journal)
    dist = Dist()
    dist.init()
    ended = False
    try:
        job = claim(store, args, dist)
        if job is None:
            print(f"job {args.job_id} is not claimable (unknown, or not queued)", file=sys.stderr)
            return 2
        if not args.claimed:  # no worker to settle the job: a Kubernetes Job, say
            signal.signal(
                signal.SIGTERM, _on_sigterm(JobStore(store.root, store.journal), job.id, dist)
            )
            if dist.main:
                store.log(job.id, f"run_job on {worker_id()} (world size {dist.world})")
        code = execute(store, job, args, dist)
        ended = True
        return code
    finally:
        dist.close(wait=ended)


if __name__ == "__main__":
    sys.exit(main())
