"""`/v1/finetune-jobs`: submit, list, inspect, cancel and read the log of fine-tune jobs.

HTTP only: the data checks live in `finetune.ingest`, the state in `finetune.store`, the running
in a `finetune.runner.JobRunner` (no torch in this process). `open_hub(app)` and
`running(app, hub)` are the lifespan part: they build the `FinetuneHub` (before the models load)
and run its `JobSupervisor` (after), which polls the job store every
`finetune_poll_s` to drive the metrics, fail jobs whose worker died, remove old data, keep the
local worker alive, and reload a model after a job activated a new version of it (the worker
writes the version and its `ACTIVE` marker; the API only swaps it in, without downtime).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import re
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from finetune.archive import ArchiveLimits
from finetune.ingest import IngestError, IngestLimits, TrainingData, from_archive, from_json
from finetune.records import JobRecord
from finetune.runner import (
    ExternalRunner,
    JobEvent,
    JobRunner,
    JobSupervisor,
    KubectlRunner,
    LocalProcessRunner,
    WorkerOptions,
    count_transition,
)  # fmt: skip
from finetune.schemas import (
    DEFAULT_PATIENCE,
    TERMINAL,
    JobCreate,
    JobList,
    JobLog,
    JobOptions,
    JobPublic,
    JobSpec,
    State,
    iso,
)  # fmt: skip
from finetune.store import PUBLISHING, JobStore
from service.deps import ApiKeyDep, ManagerDep, SettingsDep
from service.errors import (
    InvalidInput,
    LimitExceeded,
    NotFound,
    ProblemError,
    UnsupportedMediaType,
)  # fmt: skip
from service.manager import ModelManager
from service.registry import NAME_PATTERN, check_name
from service.routes.common import json_body, json_response, problems
from service.settings import Settings
from spectra.card import CardError, ModelCard
from spectra.grid import Grid
from spectra.readers.detect import MAX_FILE_BYTES

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/finetune-jobs", tags=["finetune"], dependencies=[ApiKeyDep])
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
SCHEMAS = (JobCreate,)
"""Request bodies read by hand (JSON or multipart): published in OpenAPI by `add_schemas`."""
WEIGHTS = "weights.pt"
TRAINING_INSTALLED = all(importlib.util.find_spec(m) is not None for m in ("torch", "onnx"))
"""Whether this Python can run `finetune.run_job` (looked up, never imported: no torch here)."""


class JobNotFound(NotFound):
    slug, title = "job-not-found", "Unknown fine-tune job"


class JobConflict(ProblemError):
    status, slug, title = 409, "job-conflict", "The job's state does not allow this"


class InvalidTrainingData(ProblemError):
    status, slug, title = 422, "invalid-training-data", "Training data refused"


class TrainingDataTooLarge(LimitExceeded):
    slug, title = "training-data-too-large", "Training data exceed a configured limit"


class NotFineTunable(ProblemError):
    status, slug, title = 422, "base-not-finetunable", "The base version cannot be fine-tuned"


class JobQueueFull(ProblemError):
    status, slug, title = 429, "job-queue-full", "Too many fine-tune jobs queued"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"Retry-After": "60"})


class SubmitFailed(ProblemError):
    status, slug, title = 503, "job-submit-failed", "The job could not be handed to a runner"


class FinetuneUnavailable(ProblemError):
    status, slug, title = 503, "finetune-unavailable", "Fine-tuning is not installed here"


# --- the hub: store, runner, watcher -------------------------------------------------------------


class FinetuneHub:
    """The fine-tune side of one app: job store, runner, limits and the supervisor loop."""

    def __init__(self, app: FastAPI, settings: Settings) -> None:
        self.app, self.settings = app, settings
        self.store = JobStore(settings.job_store, settings.finetune_store_journal)
        self.runner = make_runner(settings, self.store)
        self.supervisor = JobSupervisor(
            self.store, self.runner, settings.finetune_heartbeat_timeout_s,
            settings.finetune_data_retention_s, settings.finetune_poll_s, self.on_event,
        )  # fmt: skip
        unpacked = settings.finetune_max_uncompressed_bytes
        self.limits = IngestLimits(
            settings.finetune_max_spectra, settings.max_points_per_spectrum,
            settings.finetune_min_per_class,
            ArchiveLimits(settings.finetune_max_archive_members, min(unpacked, MAX_FILE_BYTES),
                          unpacked),
        )  # fmt: skip

    def require_training(self) -> None:
        """503 unless a job can train: the local worker runs this Python, which needs PyTorch
        (the API alone does not; `make serve` installs none). Other runners train elsewhere."""
        if isinstance(self.runner, LocalProcessRunner) and not TRAINING_INSTALLED:
            raise FinetuneUnavailable(
                "fine-tune jobs train with PyTorch in the service's own Python environment, "
                "which has none: install it (pip install torch '.[train]'), or run the jobs "
                "elsewhere (RAMAN_FINETUNE_WORKER=external with raman-worker, or kubernetes)"
            )

    def create(self, spec: JobSpec, data: TrainingData) -> JobRecord:
        """Write the data, then queue the job (blocking: call in a thread)."""
        job_id = uuid.uuid4().hex
        data.save(self.store.data_dir(job_id))
        if not self.store.create(job_id, spec, data.summary(), self.settings.finetune_max_queued):
            shutil.rmtree(self.store.data_dir(job_id), ignore_errors=True)
            raise JobQueueFull(f"{self.settings.finetune_max_queued} jobs are queued; retry later")
        job = self.store.get(job_id)
        assert job is not None
        return job

    async def on_event(self, event: JobEvent) -> None:
        """Metrics, and the swap to a version a job has just activated."""
        count_transition(self.app.state.metrics.finetune_job_changed, event)
        job = event.job
        if job.state == "succeeded" and job.result and job.result.get("activated"):
            await self.reload(job)

    async def reload(self, job: JobRecord) -> None:
        """Swap in the version the job activated; on failure the old one keeps serving."""
        manager: ModelManager | None = self.app.state.manager
        assert job.result is not None
        name, version = job.result["model"], job.result["version"]
        if manager is None:
            return
        try:
            await manager.reload(name)
            note = f"the service now serves {name} version {version}"
        except ProblemError as exc:
            note = f"the service could not load {name} version {version}: {exc.detail}"
            log.error("job %s: %s", job.id, note)
        await asyncio.to_thread(self.store.log, job.id, note)

    def close(self) -> None:
        """Stop the local worker (it requeues its running job)."""
        if isinstance(self.runner, LocalProcessRunner):
            self.runner.close(self.settings.finetune_cancel_grace_s + 5)


def make_runner(settings: Settings, store: JobStore) -> JobRunner:
    """The runner named by `finetune_worker`."""
    if settings.finetune_worker == "external":
        return ExternalRunner()
    if settings.finetune_worker == "kubernetes":
        return KubectlRunner(settings.finetune_k8s_template)
    options = WorkerOptions(
        settings.job_store, settings.model_store, settings.finetune_device,
        settings.finetune_worker_threads, settings.finetune_worker_nice, settings.finetune_poll_s,
        settings.finetune_heartbeat_timeout_s, settings.finetune_data_retention_s,
        settings.finetune_cancel_grace_s, settings.finetune_store_journal,
    )  # fmt: skip
    return LocalProcessRunner(options, store)


async def open_hub(app: FastAPI) -> FinetuneHub:
    """The hub, its watcher marked at the store's current state: call it before the models
    load, so that a job ending while they do is reported to `on_event` (see
    `JobWatcher.mark_start`)."""
    hub = FinetuneHub(app, app.state.settings)
    await asyncio.to_thread(hub.supervisor.watcher.mark_start)
    return hub


@asynccontextmanager
async def running(app: FastAPI, hub: FinetuneHub) -> AsyncIterator[None]:
    """Lifespan part, once the models are loaded: the hub's watcher runs; on exit the local
    worker is stopped."""
    app.state.finetune = hub
    task = asyncio.create_task(hub.supervisor.run(), name="finetune-supervisor")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.to_thread(hub.close)
        app.state.finetune = None


def _hub(request: Request) -> FinetuneHub:
    hub: FinetuneHub | None = getattr(request.app.state, "finetune", None)
    if hub is None:
        raise SubmitFailed("fine-tune jobs are not available while the service starts or stops")
    return hub


HubDep = Annotated[FinetuneHub, Depends(_hub)]
JobId = Annotated[str, Path(description="The job id (32 hex digits).")]


# --- routes --------------------------------------------------------------------------------------

REQUEST_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/JobCreate"}},
    "multipart/form-data": {"schema": {"type": "object", "required": ["archive"], "properties": {
        "archive": {"type": "string", "format": "binary",
                    "description": ".zip or .tar.gz of instrument files, with manifest.csv "
                                   "(file,label) or one folder per label"},
        "spec": {"type": "string", "description": "JSON of JobOptions (no spectra)"}}}},
}}}  # fmt: skip


@router.post(
    "", status_code=202, summary="Submit a fine-tune job", response_model=JobPublic,
    responses=problems(400, 401, 403, 404, 413, 415, 422, 429, 503), openapi_extra=REQUEST_BODY,
)  # fmt: skip
async def submit(
    request: Request, hub: HubDep, manager: ManagerDep, settings: SettingsDep
) -> Response:
    """Check the data (nothing is queued if anything is wrong), queue the job, answer 202."""
    hub.require_training()
    options, build = await read_submission(request, hub)
    spec, grid = resolve_spec(options, manager, settings)
    try:
        data = await asyncio.to_thread(build, grid, spec.val_fraction)
    except IngestError as exc:
        kind = TrainingDataTooLarge if exc.too_large else InvalidTrainingData
        raise kind(str(exc), errors=exc.items) from None
    job = await asyncio.to_thread(hub.create, spec, data)
    try:
        if isinstance(hub.runner, LocalProcessRunner):
            hub.runner.submit(job.id)  # fork from the loop's thread: the pdeathsig follows it
        else:
            await asyncio.to_thread(hub.runner.submit, job.id)  # kubectl may take seconds
    except Exception as exc:
        await asyncio.to_thread(hub.store.finish, job.id, "failed", f"submit failed: {exc}")
        raise SubmitFailed(f"the job could not be submitted: {exc}") from None
    response = json_response(job.public(router.prefix), status_code=202)
    response.headers["Location"] = f"{router.prefix}/{job.id}"
    return response


@router.get(
    "", summary="List fine-tune jobs", response_model=JobList, responses=problems(401, 403, 422)
)
async def list_jobs(
    hub: HubDep,
    state: Annotated[State | None, Query(description="Only jobs in this state.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Response:
    """Newest first, with the number of jobs in each state."""
    jobs = await asyncio.to_thread(hub.store.jobs, state, limit)
    counts = await asyncio.to_thread(hub.store.counts)
    return json_response({"jobs": [j.public(router.prefix) for j in jobs], "counts": counts})


@router.get("/{job_id}", summary="Inspect a job", response_model=JobPublic,
            responses=problems(401, 403, 404))  # fmt: skip
async def get_job(job_id: JobId, hub: HubDep) -> Response:
    """State, progress, timestamps, the resulting version or the reason of a failure."""
    return json_response((await find(hub, job_id)).public(router.prefix))


@router.post("/{job_id}/cancel", status_code=202, summary="Cancel a job",
             response_model=JobPublic, responses=problems(401, 403, 404, 409))  # fmt: skip
async def cancel(job_id: JobId, hub: HubDep) -> Response:
    """A queued job is cancelled at once; a running one stops within seconds (poll its state).
    409 once the job has ended, or once it has begun to register its version (it finishes)."""
    await find(hub, job_id)
    before = await asyncio.to_thread(hub.store.request_cancel, job_id)
    if before in TERMINAL:
        raise JobConflict(f"job {job_id} has already ended ({before})", state=before)
    if before == PUBLISHING:  # it will succeed: a half-written version would be worse
        detail = f"job {job_id} is registering its version: too late to cancel"
        raise JobConflict(detail, state="running")
    if before == "running":
        hub.runner.cancel(job_id)
    return json_response((await find(hub, job_id)).public(router.prefix), status_code=202)


@router.get("/{job_id}/log", summary="Read a job's log", response_model=JobLog,
            responses=problems(401, 403, 404, 422))  # fmt: skip
async def job_log(
    job_id: JobId, hub: HubDep,
    after: Annotated[int, Query(ge=0, description="Only lines numbered above this.")] = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
) -> Response:  # fmt: skip
    """Log lines of the job: claims, epochs, export, activation, errors with tracebacks."""
    job = await find(hub, job_id)
    lines = await asyncio.to_thread(hub.store.log_lines, job_id, after, limit)
    body = [{"line": n, "at": iso(at), "message": msg} for n, at, msg in lines]
    return json_response({"id": job_id, "state": job.state, "lines": body,
                          "next_after": lines[-1][0] if lines else after})  # fmt: skip


# --- helpers -------------------------------------------------------------------------------------

Builder = Callable[[Grid, float], TrainingData]


async def read_submission(request: Request, hub: FinetuneHub) -> tuple[JobOptions, Builder]:
    """The options and a data builder, from a JSON body or a multipart upload."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "multipart/form-data":
        return await read_multipart(request, hub)
    if media not in ("application/json", "") and not media.endswith("+json"):
        raise UnsupportedMediaType(f"send JSON or multipart/form-data, not {media}")
    body = await json_body(JobCreate)(request)
    return body, lambda grid, vf: from_json(body.spectra, body.labels, grid, vf, hub.limits)


async def read_multipart(request: Request, hub: FinetuneHub) -> tuple[JobOptions, Builder]:
    """`archive` (file) and `spec` (JSON text) fields."""
    form = await request.form(max_files=1, max_fields=4)
    archive, spec = form.get("archive"), form.get("spec") or "{}"
    if archive is None or isinstance(archive, str):
        raise InvalidInput("send the archive as the file field `archive`")
    limit = hub.settings.finetune_max_upload_bytes
    if archive.size is not None and archive.size > limit:
        raise TrainingDataTooLarge(f"the archive has {archive.size} bytes; at most {limit}")
    blob = await archive.read()
    if not isinstance(spec, str):
        raise InvalidInput("`spec` must be a text field holding JSON")
    try:
        options = JobOptions.model_validate_json(spec)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        raise RequestValidationError(
            [{**e, "loc": ("body", "spec", *e["loc"])} for e in errors]
        ) from None
    return options, lambda grid, vf: from_archive(blob, grid, vf, hub.limits)


def resolve_spec(
    options: JobOptions, manager: ModelManager, settings: Settings
) -> tuple[JobSpec, Grid]:
    """Fix the base version now (404 if unknown), check it can be tuned, fill in defaults."""
    name = manager.resolve_name(options.base_model)
    version = check_name(options.base_version, "version") if options.base_version else None
    version = version or manager.store.active_version(name)
    directory = manager.store.version_dir(name, version)
    if not (directory / WEIGHTS).is_file():
        raise NotFineTunable(f"{name} version {version} has no {WEIGHTS} (it was not exported by "
                             "the training package), so it cannot be fine-tuned")  # fmt: skip
    try:
        grid = ModelCard.load(directory).grid
    except CardError as exc:
        raise NotFineTunable(f"{name} version {version}: {exc}") from None
    hp = options.hyperparameters
    epochs = hp.epochs or settings.finetune_default_epochs
    if epochs > settings.finetune_max_epochs:
        raise InvalidInput(f"epochs {epochs} exceeds the limit of {settings.finetune_max_epochs}")
    hp = hp.model_copy(update={"epochs": epochs, "patience": hp.patience or DEFAULT_PATIENCE})
    output = options.output_model or name
    if not NAME_PATTERN.fullmatch(output):
        raise InvalidInput(f"output_model {output[:80]!r} is not a valid model name")
    spec = JobSpec(
        base_model=name, base_version=version, output_model=output,
        val_fraction=options.val_fraction, activate=options.activate,
        min_val_accuracy=options.min_val_accuracy, max_false_accept=options.max_false_accept,
        hyperparameters=hp,
    )  # fmt: skip
    return spec, grid


async def find(hub: FinetuneHub, job_id: str) -> JobRecord:
    """The job, or 404."""
    job = await asyncio.to_thread(hub.store.get, job_id) if JOB_ID.fullmatch(job_id) else None
    if job is None:
        raise JobNotFound(f"no fine-tune job {job_id[:64]!r}")
    return job
