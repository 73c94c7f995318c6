"""Shapes of fine-tune jobs: what a client posts, what the store keeps, what the API answers.

`JobOptions` is everything but the data (the `spec` form field of a multipart upload);
`JobCreate` adds the spectra for a JSON request. `JobSpec` is the resolved, stored form (base
version fixed at submission, defaults filled in) that the worker reads back.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, model_validator

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
State = Literal["queued", "running", "succeeded", "failed", "cancelled"]
Freeze = Literal["none", "features", "all_but_last"]
"""Must equal `training.finetune.FREEZE_CHOICES` (a test checks; `service` cannot import it)."""

MAX_LABEL = 200
DEFAULT_PATIENCE = 15
"""Must equal `training.finetune.FinetuneConfig().patience` (a test checks)."""


class Strict(BaseModel):
    """Request bodies: unknown fields are errors; NaN/Inf are refused; nothing is coerced to
    another type (`"yes"` or `1` does not switch `activate` on, `"5"` is not an epoch count)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class Hyperparameters(Strict):
    """Training knobs; every one has a default a lab can start from."""

    epochs: int | None = Field(
        default=None, ge=1, description="Most epochs (default: RAMAN_FINETUNE_DEFAULT_EPOCHS)."
    )
    patience: int | None = Field(
        default=None,
        ge=1,
        description="Early stopping: epochs without validation gain (default 15).",
    )
    learning_rate: float = Field(default=1e-4, gt=0.0, le=1.0, description="Adam learning rate.")
    batch_size: int = Field(default=16, ge=2, le=1024)
    freeze: Freeze = Field(
        default="none",
        description="'none': retrain every reloaded layer (the paper); 'features': freeze the "
        "convolutions; 'all_but_last': train only the new output layer.",
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1)


class JobOptions(Strict):
    """A job without its data: base model, output, validation, activation, hyper-parameters."""

    base_model: str | None = Field(
        default=None, min_length=1, description="Model name (default: the default model)."
    )
    base_version: str | None = Field(
        default=None, min_length=1, description="Version (default: the active one)."
    )
    output_model: str | None = Field(
        default=None,
        min_length=1,
        description="Name the new version is registered under (default: base_model).",
    )
    val_fraction: float = Field(
        default=0.2, ge=0.0, le=0.5, description="Share of each class held out for validation."
    )
    activate: bool = Field(
        default=False, description="Switch the service to the new version if it reports validation."
    )
    min_val_accuracy: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Activate only at or above this validation accuracy.",
    )
    max_false_accept: float | None = Field(
        default=None,
        gt=0.0,
        lt=1.0,
        description="Stricter no-match rule: min_similarity raised to what about this share of "
        "substances missing from the library would pass (estimated on validation; default: "
        "the accuracy-chosen rule only).",
    )
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)


class LabelledSpectrum(Strict):
    """One training spectrum: on the base model's grid, or wavenumbers + intensities."""

    id: str | None = Field(default=None, max_length=256)
    label: str | None = Field(default=None, min_length=1, max_length=MAX_LABEL)
    wavenumbers: list[StrictFloat] | None = Field(default=None, min_length=1)
    intensities: list[StrictFloat] = Field(min_length=1)

    @model_validator(mode="after")
    def _same_length(self) -> LabelledSpectrum:
        if self.wavenumbers is not None and len(self.wavenumbers) != len(self.intensities):
            raise ValueError(
                f"{len(self.wavenumbers)} wavenumbers but {len(self.intensities)} intensities"
            )
        return self


class JobCreate(JobOptions):
    """A JSON job: labels on each spectrum, or a `labels` list parallel to `spectra`."""

    spectra: list[LabelledSpectrum] = Field(min_length=1)
    labels: list[str] | None = Field(default=None, description="One label per spectrum, in order.")


class JobSpec(BaseModel):
    """The stored, resolved form of a job (what the worker runs)."""

    base_model: str
    base_version: str
    output_model: str
    val_fraction: float
    activate: bool
    min_val_accuracy: float | None = None
    max_false_accept: float | None = None  # stored jobs from before it read as None
    hyperparameters: Hyperparameters


# --- answers (documented in OpenAPI; built as plain dicts by `job_public`) ---


class ModelVersionRef(BaseModel):
    name: str
    version: str


class JobResult(BaseModel):
    model: str
    version: str
    activated: bool
    val_accuracy: float | None = None
    note: str | None = Field(default=None, description="Why the version was not activated.")


class JobPublic(BaseModel):
    id: str
    state: State
    base: ModelVersionRef
    output_model: str
    activate: bool
    val_fraction: float
    hyperparameters: dict[str, Any]
    data: dict[str, Any] = Field(description="Spectra, classes and spectra per class.")
    progress: dict[str, Any] = Field(
        description="stage, epoch, epochs, train_loss, val_loss, val_accuracy, best_val_accuracy."
    )
    result: JobResult | None
    error: str | None = Field(default=None, description="Why the job failed.")
    cancel_requested: bool
    worker: str | None = Field(default=None, description="host:pid of the process running the job.")
    attempts: int
    created_at: str
    started_at: str | None
    finished_at: str | None
    heartbeat_at: str | None
    links: dict[str, str]


class JobList(BaseModel):
    jobs: list[JobPublic]
    counts: dict[str, int] = Field(description="Jobs per state in the whole store.")


class LogLine(BaseModel):
    line: int
    at: str
    message: str


class JobLog(BaseModel):
    id: str
    state: State
    lines: list[LogLine]
    next_after: int = Field(description="Pass as `after` to read only newer lines.")


def iso(ts: float | None) -> str | None:
    """Unix seconds as ISO 8601 UTC (None stays None)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
