"""Request and response shapes of the HTTP API (pydantic; limits declared with `Field`).

Requests are validated by these models. Responses on the hot path are built as plain dicts that
follow the `*Public` models below (the models document them in OpenAPI without a per-item
validation cost). Floats are strict (no strings, no booleans) and must be finite: Python's JSON
reader accepts `NaN`/`Infinity` literals, the API refuses them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, model_validator

Floats = list[StrictFloat]


class Strict(BaseModel):
    """Base for request bodies: unknown fields are errors (typos must not pass silently), and
    no value is coerced to another type (`"3"`, `true` or `2.0` are not a `top_k`)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


# --- /v1/identify ---


class SpectrumIn(Strict):
    """One spectrum: intensities on the model grid, or wavenumbers + intensities on any axis."""

    id: str | None = Field(None, max_length=256, description="Echoed in the result.")
    wavenumbers: Floats | None = Field(
        None, min_length=1, description="cm-1, any order and spacing; omit for on-grid input."
    )
    intensities: Floats = Field(min_length=1)

    @model_validator(mode="after")
    def _same_length(self) -> SpectrumIn:
        if self.wavenumbers is not None and len(self.wavenumbers) != len(self.intensities):
            raise ValueError(
                f"{len(self.wavenumbers)} wavenumbers but {len(self.intensities)} intensities"
            )
        return self


class IdentifyRequest(Strict):
    """Spectra to identify, and with which model."""

    spectra: list[SpectrumIn] = Field(min_length=1)
    top_k: int = Field(5, ge=1, description="Ranked labels per spectrum (at most max_top_k).")
    model: str | None = Field(
        None, min_length=1, description="Model name; the default model when omitted."
    )
    version: str | None = Field(
        None, min_length=1, description="Version; the active one when omitted."
    )
    include_spectrum: bool = Field(
        False, description="Also return each spectrum as the model saw it (on the model grid)."
    )


class PredictionPublic(BaseModel):
    rank: int
    label: str
    probability: float = Field(description="Calibrated softmax probability.")
    similarity: float = Field(
        description="Similarity (the card's metric: cosine, correlation or derivative HQI) to the "
        "label's best-matching reference spectrum."
    )


class TimingsPublic(BaseModel):
    queue_ms: float
    inference_ms: float = Field(
        description="Run time of the batch this spectrum rode in (network and library scoring)."
    )
    batch_size: int
    total_ms: float = Field(description="From the request's arrival to this answer.")


class SpectrumPublic(BaseModel):
    intensities: list[float] = Field(description="Model input: resampled, min-max normalised.")
    measured_range: list[float] = Field(description="First and last measured wavenumber (cm-1).")


class ResultPublic(BaseModel):
    id: str
    file: str | None = Field(None, description="Uploaded file name (/v1/identify/files).")
    match: bool = Field(description="Whether the card's no-match rule accepts the top hit.")
    predictions: list[PredictionPublic]
    warnings: list[str]
    coverage: float = Field(description="Fraction of the model grid the spectrum measured.")
    no_match_rule: str
    timings: TimingsPublic
    spectrum: SpectrumPublic | None = Field(None, description="Only with include_spectrum.")


class ModelRef(BaseModel):
    name: str
    version: str
    provider: str


class IdentifyResponse(BaseModel):
    model: ModelRef
    results: list[ResultPublic]


class FileErrorPublic(BaseModel):
    id: str
    file: str
    error: Problem


class FilesResponse(BaseModel):
    model: ModelRef
    results: list[ResultPublic | FileErrorPublic]


# --- errors ---


class Problem(BaseModel):
    """RFC 9457 problem details (`application/problem+json`)."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    instance: str
    error: str | None = Field(None, description="Same as detail; only on /v2 (protocol field).")


# --- /v1/models ---


class GridPublic(BaseModel):
    start: float
    stop: float
    points: int


class VersionPublic(BaseModel):
    version: str
    active: bool
    loaded: bool
    created_at: str | None = None
    classes: int | None = None
    grid: GridPublic | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    error: str | None = Field(None, description="Why the card could not be read.")


class ModelPublic(BaseModel):
    name: str
    active_version: str | None
    provider: str | None
    classes: int | None
    grid: GridPublic | None
    metrics: dict[str, Any] = Field(default_factory=dict)
    versions: list[VersionPublic]


class ModelsResponse(BaseModel):
    default_model: str
    ready: bool
    models: list[ModelPublic]


class VersionDetail(VersionPublic):
    name: str
    provider: str | None = None
    card: dict[str, Any] | None = Field(None, description="The full model card (model.json).")


class ReferencePublic(BaseModel):
    label: str
    model: ModelRef
    wavenumbers: list[float]
    intensities: list[float]


# --- Open Inference Protocol v2 ---


class V2Tensor(Strict):
    """A tensor in the protocol's JSON form: `data` flat in row-major order (or nested)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    name: str
    shape: list[int] = Field(min_length=1, max_length=8)
    datatype: str
    data: Floats | list[Floats] | list[list[Floats]]
    parameters: dict[str, Any] | None = None


class V2RequestedOutput(Strict):
    model_config = ConfigDict(extra="allow")

    name: str
    parameters: dict[str, Any] | None = None


class V2InferRequest(Strict):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[V2Tensor] = Field(min_length=1)
    outputs: list[V2RequestedOutput] | None = None


class V2OutputTensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[float]


class V2InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[V2OutputTensor]


class V2TensorMeta(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class V2ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[V2TensorMeta]
    outputs: list[V2TensorMeta]


class V2ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class V2Ready(BaseModel):
    ready: bool


class V2ModelReady(BaseModel):
    name: str
    ready: bool


class V2Live(BaseModel):
    live: bool
