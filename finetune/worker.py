"""`python -m finetune.worker` (console script `raman-worker`): the fine-tune worker loop.

Polls the job store, claims the oldest queued job atomically and runs it in a child process
(`python -m finetune.run_job --claimed`), one job at a time: run one worker per device. The
child is a separate process so that a cancel can always end it (SIGKILL after
`--cancel-grace-s` if the child has not stopped by itself), and so that a crash in training
never takes the loop down. While the child runs, the loop beats the job's heartbeat.

Faults: a job whose worker died (pid gone on this host, or no heartbeat for
`--heartbeat-timeout-s`) is failed with the reason, by any worker or API that notices. On
SIGTERM/SIGINT the loop stops its child and puts the job back in the queue. Data and checkpoint
folders of ended jobs are removed after `--retention-s`.
Defaults come from the service's `RAMAN_*` variables, so one environment serves both.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from finetune.proc import OutputTail, describe_exit, die_with_parent, terminate
from finetune.records import JobRecord, worker_id
from finetune.runner import child_env
from finetune.store import JOURNAL_MODES, PUBLISH_STAGES, JobStore

log = logging.getLogger("finetune.worker")
HEARTBEAT_S = 2.0
TICK_S = 0.2


def _env(name: str, default: str) -> str:
    return os.environ.get("RAMAN_" + name, default)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options (defaults from `RAMAN_*` environment variables)."""
    p = argparse.ArgumentParser(prog="raman-worker", description=__doc__.splitlines()[0])
    p.add_argument("--job-store", type=Path, default=Path(_env("JOB_STORE", "var/jobs")))
    p.add_argument("--model-store", type=Path, default=Path(_env("MODEL_STORE", "models")))
    p.add_argument(
        "--device",
        default=_env("FINETUNE_DEVICE", "auto"),
        help="torch device for training: auto, cpu, cuda, cuda:1 ...",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=int(_env("FINETUNE_WORKER_THREADS", "0")),
        help="torch CPU threads (0: half the cores, leaving the rest to inference)",
    )
    p.add_argument(
        "--nice",
        type=int,
        default=int(_env("FINETUNE_WORKER_NICE", "10")),
        help="raise this process's niceness so inference keeps priority",
    )
    p.add_argument("--poll-s", type=float, default=float(_env("FINETUNE_POLL_S", "1.0")))
    p.add_argument(
        "--heartbeat-timeout-s",
        type=float,
        default=float(_env("FINETUNE_HEARTBEAT_TIMEOUT_S", "60")),
    )
    p.add_argument(
        "--retention-s", type=float, default=float(_env("FINETUNE_DATA_RETENTION_S", "0"))
    )
    p.add_argument(
        "--cancel-grace-s", type=float, default=float(_env("FINETUNE_CANCEL_GRACE_S", "5"))
    )
    p.add_argument(
        "--store-journal",
        choices=JOURNAL_MODES,
        default=_env("FINETUNE_STORE_JOURNAL", "wal"),
        help="SQLite journal of the job store (delete: store on a multi-node volume)",
    )
    p.add_argument("--once", action="store_true", help="run at most one job, then exit")
    p.add_argument("--parent-pid", type=int, default=None, help="exit when this process exits")
    return p.parse_args(argv)  # fmt: skip


class Worker:
    """The loop; `run` returns when stopped by a signal (or after one job with `--once`)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.store = JobStore(args.job_store, args.store_journal)
        self.stopping = False
        self.host = socket.gethostname()

    def stop(self, signum: int, frame: FrameType | None = None) -> None:
        """Signal handler: finish the current step, requeue the job, exit."""
        log.info("worker stopping (%s)", signal.Signals(signum).name)
        self.stopping = True

    def run(self) -> int:
        """Claim and run jobs until stopped."""
        self.store.init()
        while not self.stopping:
            try:
                self.housekeeping()
                job = self.store.claim_next(worker_id())
            except sqlite3.Error as exc:  # locked for long, disk full: try again later
                log.error("job store: %s", exc)
                job = None
            if job is not None:
                self.run_one(job)
            if self.args.once and (job is not None or not self.store.counts().get("queued")):
                break
            if job is None:
                self._sleep(self.args.poll_s)
        return 0

    def housekeeping(self) -> None:
        """Fail jobs whose worker died; remove data of jobs that ended long enough ago."""
        for job_id in self.store.reap(self.args.heartbeat_timeout_s, self.host):
            log.error("job %s failed: its worker died", job_id)
        self.store.purge_data(self.args.retention_s)

    def run_one(self, job: JobRecord) -> None:
        """Run the job in a child process and settle its state when the child ends."""
        log.info("job %s: running", job.id)
        proc = subprocess.Popen(self._command(job.id), env=child_env(), stderr=subprocess.PIPE)
        assert proc.stderr is not None
        output = OutputTail(proc.stderr)
        cancel_seen: float | None = None
        last_beat = time.monotonic()
        while proc.poll() is None:
            time.sleep(TICK_S)
            now = time.monotonic()
            if now - last_beat >= HEARTBEAT_S:
                self.store.heartbeat(job.id)
                last_beat = now
            if cancel_seen is None and self.store.cancel_requested(job.id):
                cancel_seen = now
            late = cancel_seen is not None and now - cancel_seen > self.args.cancel_grace_s
            # a job writing its version finishes either way: killed after the version is in
            # place but before `succeeded`, it would be queued again and register a second one
            if (self.stopping or late) and not self._publishing(job.id):
                terminate(proc, self.args.cancel_grace_s)
        self.settle(job.id, proc.returncode, output.text())

    def _publishing(self, job_id: str) -> bool:
        """Whether the job is exporting its version (a cancel no longer stops it then)."""
        job = self.store.get(job_id)
        return job is not None and job.progress.get("stage") in PUBLISH_STAGES

    def settle(self, job_id: str, code: int | None, output: str = "") -> None:
        """Give a job its final state if the child did not (it crashed, was killed, ...); a
        failure's log gets the end of what the child printed."""
        job = self.store.get(job_id)
        if job is None or job.terminal:
            return
        if job.cancel_requested:
            self.store.finish(job_id, "cancelled")
        elif self.stopping:
            self.store.requeue(job_id, "the worker was stopped; the job will run again")
        else:
            if output:
                self.store.log(job_id, f"the training process's last output:\n{output}")
            self.store.finish(
                job_id, "failed", f"training process exited with {describe_exit(code)}"
            )

    def _command(self, job_id: str) -> list[str]:
        a = self.args
        return [
            sys.executable, "-m", "finetune.run_job", "--job-store", str(a.job_store),
            "--model-store", str(a.model_store), "--job-id", job_id, "--claimed",
            "--parent-pid", str(os.getpid()), "--device", a.device, "--threads", str(a.threads),
            "--retention-s", str(a.retention_s), "--cancel-grace-s", str(a.cancel_grace_s),
            "--store-journal", a.store_journal,
        ]  # fmt: skip

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < end:
            time.sleep(min(TICK_S, seconds))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `raman-worker` / `python -m finetune.worker`."""
    args = parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.parent_pid is not None:
        die_with_parent(args.parent_pid)
    if args.nice:
        os.nice(args.nice)  # inherited by the training child: inference keeps the CPU first
    worker = Worker(args)
    signal.signal(signal.SIGTERM, worker.stop)
    signal.signal(signal.SIGINT, worker.stop)
    return worker.run()


if __name__ == "__main__":
    sys.exit(main())
