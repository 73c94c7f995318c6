"""Fine-tune jobs (`/v1/finetune-jobs`): start from an archive or labelled spectra, follow,
cancel, read the log. Mixed into `RamanClient`; creating and cancelling need an API key."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from raman_client.errors import JobFailed
from raman_client.files import PathLike
from raman_client.transport import Transport
from raman_client.types import Job, JobLog

JOBS = "/v1/finetune-jobs"


class JobsMixin:
    """Fine-tune job calls; the host class provides `transport`."""

    transport: Transport

    def finetune(
        self,
        archive: PathLike | None = None,
        *,
        spectra: Sequence[dict[str, Any]] | None = None,
        labels: Sequence[str] | None = None,
        base_model: str | None = None,
        base_version: str | None = None,
        output_model: str | None = None,
        activate: bool | None = None,
        val_fraction: float | None = None,
        min_val_accuracy: float | None = None,
        hyperparameters: dict[str, Any] | None = None,
        **hyper: Any,
    ) -> Job:
        """Start a fine-tune job (answered 202) and return it.

        The data is either an `archive` (.zip / .tar(.gz) of instrument files, labelled by a
        `manifest.csv`, by one folder per label, or by the files' own names), or `spectra`
        (`[{"label": ..., "wavenumbers": [...], "intensities": [...]}]`, or unlabelled with a
        parallel `labels` list). Hyper-parameters go in `hyperparameters` or as keywords
        (`epochs=`, `patience=`, `learning_rate=`, `batch_size=`, `freeze=`, `seed=`).
        Options left as None take the server's defaults."""
        if (archive is None) == (spectra is None):
            raise ValueError("give exactly one of `archive` or `spectra`")
        options = _drop_none(
            base_model=base_model, base_version=base_version, output_model=output_model,
            activate=activate, val_fraction=val_fraction, min_val_accuracy=min_val_accuracy,
        )  # fmt: skip
        hyper_all = _drop_none(**(hyperparameters or {}), **hyper)
        if hyper_all:
            options["hyperparameters"] = hyper_all
        if spectra is not None:
            body = {"spectra": list(spectra), **options, **_drop_none(labels=labels)}
            return Job.from_dict(self.transport.request("POST", JOBS, json=body, idempotent=False))
        path = Path(archive)  # type: ignore[arg-type]
        upload = {"archive": (path.name, path.read_bytes(), "application/octet-stream")}
        form = {"spec": json.dumps(options)}
        answer = self.transport.request("POST", JOBS, files=upload, data=form, idempotent=False)
        return Job.from_dict(answer)

    def jobs(self) -> list[Job]:
        """Every job the server knows, as it lists them."""
        body = self.transport.request("GET", JOBS)
        items = body.get("jobs", []) if isinstance(body, dict) else body
        return [Job.from_dict(j) for j in items]

    def job(self, job_id: str) -> Job:
        """One job's current state and progress."""
        return Job.from_dict(self.transport.request("GET", f"{JOBS}/{quote(job_id, safe='')}"))

    def cancel(self, job_id: str) -> Job:
        """Ask the server to cancel a job; returns its state after the request."""
        path = f"{JOBS}/{quote(job_id, safe='')}/cancel"
        return Job.from_dict(self.transport.request("POST", path))

    def job_log(self, job_id: str, after: int = 0) -> JobLog:
        """The job's log lines after line number `after` (0: from the start)."""
        path = f"{JOBS}/{quote(job_id, safe='')}/log"
        return JobLog.from_dict(self.transport.request("GET", path, params={"after": after}))

    def wait(
        self,
        job_id: str,
        poll: float = 2.0,
        timeout: float | None = None,
        on_update: Callable[[Job], None] | None = None,
        raise_on_failure: bool = False,
    ) -> Job:
        """Poll until the job reaches a terminal state; `TimeoutError` after `timeout` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if on_update is not None:
                on_update(job)
            if job.done:
                if raise_on_failure and not job.succeeded:
                    raise JobFailed(job)
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} still {job.state} after {timeout} s")
            time.sleep(poll)


def _drop_none(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}
