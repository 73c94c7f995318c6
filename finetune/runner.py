"""How queued jobs get run, seen from the API process (no torch here).

The job store is the queue. A `JobRunner` only makes sure something will pick a job up
(`submit`) and stop it promptly (`cancel`, after the store's flag is set):
- `LocalProcessRunner` (embedded default, `RAMAN_FINETUNE_WORKER=process`): one
  `python -m finetune.worker` child of the API, started on the first job, restarted if it dies,
  stopped with the API. It dies with the API (PR_SET_PDEATHSIG), so a killed API never leaves
  a second trainer behind on the device.
- `ExternalRunner` (`external`): workers run elsewhere (`raman-worker`, a Deployment per GPU
  node) and poll the store themselves.
- `KubectlRunner` (`kubernetes`): each job becomes a Kubernetes Job rendered from a template
  (deploy/finetune/job.yaml) that runs `torchrun ... -m finetune.run_job --job-id ...`.
`JobSupervisor` is the API's loop over the store: it keeps the local worker alive, fails jobs
whose process has died, removes old data and turns state changes into events (metrics, a model
reload after an activation).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import string
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from finetune.proc import describe_exit, terminate
from finetune.records import JobRecord
from finetune.schemas import TERMINAL
from finetune.store import JobStore

log = logging.getLogger(__name__)
PACKAGE_ROOT = Path(__file__).resolve().parents[1]
RESTART_BACKOFF_S = 2.0
MAX_BACKOFF_S = 60.0


class JobRunner(Protocol):
    """The narrow seam between the API and whatever trains."""

    def submit(self, job_id: str) -> None:
        """A job was queued in the store: make sure something will run it."""

    def cancel(self, job_id: str) -> None:
        """The store's cancel flag of a running job was set: make it stop promptly."""


@dataclass(frozen=True)
class WorkerOptions:
    """Command-line options of `python -m finetune.worker` (see its `--help`)."""

    job_store: Path
    model_store: Path
    device: str = "auto"
    threads: int = 0
    nice: int = 10
    poll_s: float = 1.0
    heartbeat_timeout_s: float = 60.0
    retention_s: float = 0.0
    cancel_grace_s: float = 5.0
    store_journal: str = "wal"

    def argv(self) -> list[str]:
        """The worker's arguments."""
        return [
            "--job-store", str(self.job_store), "--model-store", str(self.model_store),
            "--device", self.device, "--threads", str(self.threads), "--nice", str(self.nice),
            "--poll-s", str(self.poll_s), "--heartbeat-timeout-s", str(self.heartbeat_timeout_s),
            "--retention-s", str(self.retention_s), "--cancel-grace-s", str(self.cancel_grace_s),
            "--store-journal", self.store_journal,
        ]  # fmt: skip


def child_env() -> dict[str, str]:
    """The environment for worker processes: ours, with this checkout importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH")) if p)
    return env


class ExternalRunner:
    """Workers run elsewhere and poll the store: nothing to do here."""

    def submit(self, job_id: str) -> None:
        """The job waits in the store for an external worker."""

    def cancel(self, job_id: str) -> None:
        """The external worker polls the cancel flag."""


class LocalProcessRunner:
    """One supervised worker process, child of the API (the embedded default)."""

    def __init__(self, options: WorkerOptions, store: JobStore) -> None:
        self.options = options
        self.store = store
        self.proc: subprocess.Popen[bytes] | None = None
        self._last_start = -MAX_BACKOFF_S
        self.restarts = 0
        self.crashes = 0  # consecutive short-lived runs

    def submit(self, job_id: str) -> None:
        """Start the worker if it is not running (it claims the job from the store)."""
        self.ensure_started()

    def cancel(self, job_id: str) -> None:
        """The worker polls the cancel flag and stops the job within `cancel_grace_s`."""

    def ensure_started(self) -> None:
        """Spawn the worker unless it runs; restarts are spaced by `RESTART_BACKOFF_S`."""
        if self.proc is not None and self.proc.poll() is None:
            return
        # A worker that keeps crashing (broken install, full disk) is retried ever more slowly.
        backoff = min(MAX_BACKOFF_S, RESTART_BACKOFF_S * 2 ** min(self.crashes, 5))
        if time.monotonic() - self._last_start < backoff:
            return
        cmd = [sys.executable, "-m", "finetune.worker", *self.options.argv(),
               "--parent-pid", str(os.getpid())]  # fmt: skip
        self.proc = subprocess.Popen(cmd, env=child_env())
        self._last_start = time.monotonic()
        log.info("fine-tune worker started (pid %d)", self.proc.pid)

    def check(self) -> None:
        """Reap a dead worker (so its pid reads as gone) and restart it while work remains."""
        if self.proc is None or self.proc.poll() is None:
            return
        code = self.proc.returncode
        log.error("fine-tune worker (pid %d) exited with %s", self.proc.pid, describe_exit(code))
        self.proc = None
        self.restarts += 1
        lived = time.monotonic() - self._last_start
        self.crashes = self.crashes + 1 if lived < MAX_BACKOFF_S else 0
        counts = self.store.counts()
        if counts.get("queued") or counts.get("running"):
            self.ensure_started()

    def close(self, grace_s: float = 10.0) -> None:
        """SIGTERM the worker (it requeues its job), then SIGKILL after `grace_s`."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        terminate(proc, grace_s)

    @property
    def pid(self) -> int | None:
        """The worker's pid while it runs."""
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None


class KubectlRunner:
    """Each job becomes a Kubernetes Job: the template is rendered and piped to kubectl."""

    def __init__(self, template: Path, command: Sequence[str] = ("kubectl", "create", "-f", "-")):
        self.template = Path(template)
        self.command = list(command)

    def render(self, job_id: str) -> str:
        """The manifest for one job (`$JOB_ID` and `$JOB_NAME` substituted)."""
        text = string.Template(self.template.read_text())
        return text.safe_substitute(JOB_ID=job_id, JOB_NAME=f"raman-finetune-{job_id[:20]}")

    def submit(self, job_id: str) -> None:
        """Create the Kubernetes Job; raises RuntimeError with kubectl's message on failure."""
        done = subprocess.run(
            self.command, input=self.render(job_id).encode(), capture_output=True, timeout=60
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(self.command)}: {done.stderr.decode()[-500:]}")

    def cancel(self, job_id: str) -> None:
        """The Job's pods poll the cancel flag and exit 0, which completes the Job."""


@dataclass(frozen=True)
class JobEvent:
    """A job entered a new state (`old` None: first seen in a live state)."""

    job: JobRecord
    old: str | None


class JobWatcher:
    """Polls the store: fails dead jobs, reports state changes since the last poll."""

    def __init__(self, store: JobStore, heartbeat_timeout_s: float) -> None:
        self.store = store
        self.timeout_s = heartbeat_timeout_s
        self.host = socket.gethostname()
        self.seq = 0
        self.live: dict[str, str] = {}  # state of queued/running jobs as last seen
        self.primed = False
        self.history_seq: int | None = None  # see `mark_start`

    def mark_start(self) -> None:
        """Remember where the store stands before the service loads its models: a job that
        ends while they load (seconds) is then reported by the first poll, not taken for
        history, so the version it activated is served (blocking: run it in a thread)."""
        self.history_seq = self.store.last_seq()

    def poll(self) -> list[JobEvent]:
        """One round (blocking: run it in a thread)."""
        for job_id in self.store.reap(self.timeout_s, self.host):
            log.error("fine-tune job %s failed: its worker died", job_id)
        events = []
        for job in self.store.changed_since(self.seq):
            self.seq = max(self.seq, job.seq)
            old = self.live.pop(job.id, None)
            if not job.terminal:
                self.live[job.id] = job.state
            if old != job.state and (self.primed or not job.terminal or self._new(job.seq)):
                events.append(JobEvent(job, old))
        self.primed = True  # jobs that ended before this process started are history
        return events

    def _new(self, seq: int) -> bool:
        return self.history_seq is not None and seq > self.history_seq


class JobSupervisor:
    """Every `poll_s`: keep a local worker alive, fail dead jobs, remove data past retention,
    and hand each state change to `on_event` (runs until its task is cancelled)."""

    def __init__(
        self, store: JobStore, runner: JobRunner, heartbeat_timeout_s: float, retention_s: float,
        poll_s: float, on_event: Callable[[JobEvent], Awaitable[None]],
    ) -> None:  # fmt: skip
        self.store, self.runner, self.on_event = store, runner, on_event
        self.retention_s, self.poll_s = retention_s, poll_s
        self.watcher = JobWatcher(store, heartbeat_timeout_s)

    async def run(self) -> None:
        """The loop; one failed round (disk full, database locked) never ends it."""
        while True:
            try:
                await self.step()
            except Exception:
                log.exception("fine-tune supervisor")
            await asyncio.sleep(self.poll_s)

    async def step(self) -> None:
        """One round."""
        local = self.runner if isinstance(self.runner, LocalProcessRunner) else None
        if local is not None:
            local.check()  # first: a dead worker's pid must read as gone to the reaper
        for event in await asyncio.to_thread(self._poll):
            if local is not None and event.job.state == "queued":
                local.ensure_started()
            try:  # the round's other events must not be lost: `seq` has moved past them
                await self.on_event(event)
            except Exception:
                log.exception("fine-tune job %s: handling its change to %s", event.job.id,
                              event.job.state)  # fmt: skip

    def _poll(self) -> list[JobEvent]:
        self.store.purge_data(self.retention_s)
        return self.watcher.poll()


def count_transition(changed: Callable[[str | None, str | None], None], event: JobEvent) -> None:
    """Feed a counter of states entered and a gauge of live states through `changed(old, new)`
    (`service.metrics.Metrics.finetune_job_changed`), filling in the states a job passed
    through between two polls; ended jobs leave the gauge."""
    old, new = event.old, event.job.state
    if old is None and new != "queued":
        changed(None, "queued")
        old = "queued"
    if old == "queued" and new in TERMINAL and event.job.started_at is not None:
        changed("queued", "running")
        old = "running"
    changed(old, new)
    if new in TERMINAL:
        changed(new, None)
