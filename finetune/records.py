"""A job as read from the store, its public view, and how to tell that its process is dead."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from dataclasses import dataclass
from typing import Any

from finetune.schemas import TERMINAL, JobSpec, iso


@dataclass(frozen=True)
class JobRecord:
    """One row of the jobs table, decoded."""

    id: str
    state: str
    seq: int
    spec: JobSpec
    data: dict[str, Any]
    progress: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    cancel_requested: bool
    worker: str | None
    attempts: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    heartbeat_at: float | None
    data_removed_at: float | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> JobRecord:
        """Decode the JSON columns of a row."""
        d = dict(row)
        d["spec"] = JobSpec.model_validate_json(d["spec"])
        d["data"], d["progress"] = json.loads(d["data"]), json.loads(d["progress"])
        d["result"] = json.loads(d["result"]) if d["result"] else None
        d["cancel_requested"] = bool(d["cancel_requested"])
        return cls(**d)

    @property
    def terminal(self) -> bool:
        """Whether the job has ended (succeeded, failed or cancelled)."""
        return self.state in TERMINAL

    def public(self, prefix: str) -> dict[str, Any]:
        """The API's view of the job (`finetune.schemas.JobPublic`); links under `prefix`."""
        spec, base = self.spec, f"{prefix}/{self.id}"
        return {
            "id": self.id, "state": self.state,
            "base": {"name": spec.base_model, "version": spec.base_version},
            "output_model": spec.output_model, "activate": spec.activate,
            "val_fraction": spec.val_fraction, "hyperparameters": spec.hyperparameters.model_dump(),
            "data": self.data, "progress": self.progress, "result": self.result,
            "error": self.error, "cancel_requested": self.cancel_requested, "worker": self.worker,
            "attempts": self.attempts, "created_at": iso(self.created_at),
            "started_at": iso(self.started_at), "finished_at": iso(self.finished_at),
            "heartbeat_at": iso(self.heartbeat_at),
            "links": {"self": base, "log": f"{base}/log", "cancel": f"{base}/cancel"},
        }  # fmt: skip


def worker_id() -> str:
    """`host:pid` of this process, as written into the `worker` column."""
    return f"{socket.gethostname()}:{os.getpid()}"


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (zombies count as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def death_reason(job: JobRecord, now: float, timeout_s: float, host: str | None) -> str | None:
    """Why a running job's process must be dead, or None if it may be alive."""
    if job.worker and host is not None:
        worker_host, _, pid = job.worker.rpartition(":")
        if worker_host == host and pid.isdigit() and not pid_alive(int(pid)):
            return f"worker died: process {job.worker} is gone"
    beat = job.heartbeat_at or job.started_at or job.created_at
    if now - beat > timeout_s:
        return f"worker died: no heartbeat for {now - beat:.0f} s (limit {timeout_s:g} s)"
    return None
