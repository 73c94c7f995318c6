"""Typed results: plain dataclasses built from the service's JSON.

Unknown fields are ignored (or kept in `raw` where a shape is still growing, as for jobs), so a
newer server does not break an older client.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})
"""Job states after which a job never changes again."""


@dataclass(frozen=True)
class ModelRef:
    """Which model version answered, and on which onnxruntime provider."""

    name: str
    version: str
    provider: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelRef:
        return cls(str(data["name"]), str(data["version"]), str(data.get("provider") or ""))


@dataclass(frozen=True)
class Prediction:
    """One ranked label: calibrated probability and cosine similarity to its reference."""

    rank: int
    label: str
    probability: float
    similarity: float

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Prediction:
        return cls(int(data["rank"]), str(data["label"]), float(data["probability"]),
                   float(data.get("similarity", float("nan"))))  # fmt: skip


@dataclass(frozen=True)
class Problem:
    """An RFC 9457 problem document attached to one result (a file the server could not use)."""

    status: int
    title: str
    detail: str
    type: str = "about:blank"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Problem:
        return cls(int(data.get("status", 0)), str(data.get("title", "")),
                   str(data.get("detail", "")), str(data.get("type", "about:blank")))  # fmt: skip


@dataclass(frozen=True)
class Result:
    """The answer for one spectrum, or (`error` set, no predictions) for one unusable file."""

    id: str
    predictions: list[Prediction] = field(default_factory=list)
    match: bool = False
    warnings: list[str] = field(default_factory=list)
    coverage: float | None = None
    no_match_rule: str = ""
    file: str | None = None
    model: ModelRef | None = None
    error: Problem | None = None
    timings: dict[str, float] = field(default_factory=dict)
    """queue_ms, inference_ms, batch_size, total_ms as the server reports them."""

    @property
    def ok(self) -> bool:
        """Whether the spectrum was identified (as opposed to the file being refused)."""
        return self.error is None

    @property
    def top(self) -> Prediction | None:
        """The best-ranked prediction, if any."""
        return self.predictions[0] if self.predictions else None

    @classmethod
    def from_dict(cls, data: dict[str, Any], model: ModelRef | None = None) -> Result:
        if "error" in data and isinstance(data["error"], dict):
            return cls(id=str(data.get("id", data.get("file", ""))), file=data.get("file"),
                       model=model, error=Problem.from_dict(data["error"]))  # fmt: skip
        return cls(
            id=str(data.get("id", "")),
            predictions=[Prediction.from_dict(p) for p in data.get("predictions", [])],
            match=bool(data.get("match", False)),
            warnings=[str(w) for w in data.get("warnings", [])],
            coverage=_float_or_none(data.get("coverage")),
            no_match_rule=str(data.get("no_match_rule", "")),
            file=data.get("file"),
            model=model,
            timings=dict(data.get("timings") or {}),
        )


@dataclass(frozen=True)
class Grid:
    """The model's wavenumber grid (cm-1)."""

    start: float
    stop: float
    points: int

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Grid | None:
        if not data:
            return None
        return cls(float(data["start"]), float(data["stop"]), int(data["points"]))


@dataclass(frozen=True)
class VersionInfo:
    """One version of a model as `/v1/models` lists it."""

    version: str
    active: bool
    loaded: bool
    created_at: str | None = None
    classes: int | None = None
    grid: Grid | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VersionInfo:
        return cls(
            version=str(data["version"]), active=bool(data.get("active")),
            loaded=bool(data.get("loaded")), created_at=data.get("created_at"),
            classes=data.get("classes"), grid=Grid.from_dict(data.get("grid")),
            metrics=dict(data.get("metrics") or {}), error=data.get("error"),
        )  # fmt: skip


@dataclass(frozen=True)
class ModelInfo:
    """A model, its active version and every version in the store."""

    name: str
    active_version: str | None
    provider: str | None
    classes: int | None
    grid: Grid | None
    metrics: dict[str, Any]
    versions: list[VersionInfo]
    default: bool = False

    @classmethod
    def from_dict(cls, data: dict[str, Any], default_model: str = "") -> ModelInfo:
        return cls(
            name=str(data["name"]), active_version=data.get("active_version"),
            provider=data.get("provider"), classes=data.get("classes"),
            grid=Grid.from_dict(data.get("grid")), metrics=dict(data.get("metrics") or {}),
            versions=[VersionInfo.from_dict(v) for v in data.get("versions", [])],
            default=data["name"] == default_model,
        )  # fmt: skip


@dataclass(frozen=True)
class Reference:
    """A class's reference spectrum on the model grid (for overlay plots)."""

    label: str
    model: ModelRef
    wavenumbers: list[float]
    intensities: list[float]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Reference:
        return cls(str(data["label"]), ModelRef.from_dict(data["model"]),
                   [float(v) for v in data["wavenumbers"]],
                   [float(v) for v in data["intensities"]])  # fmt: skip


@dataclass(frozen=True)
class Job:
    """A fine-tune job. `progress` is the fraction of epochs done (None before training);
    `stage` what the worker is doing; `raw` keeps the whole server document (hyper-parameters,
    data summary, losses, timestamps, links)."""

    id: str
    state: str
    progress: float | None = None
    stage: str = ""
    base_model: str | None = None
    base_version: str | None = None
    output_model: str | None = None
    result_model: str | None = None
    result_version: str | None = None
    activated: bool = False
    val_accuracy: float | None = None
    error: str | None = None
    created_at: str | None = None
    finished_at: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def done(self) -> bool:
        """Whether the job reached a terminal state."""
        return self.state.lower() in TERMINAL_STATES

    @property
    def succeeded(self) -> bool:
        return self.state.lower() == "succeeded"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        progress: dict[str, Any] = _dict(data.get("progress"))
        result: dict[str, Any] = _dict(data.get("result"))
        val = result.get("val_accuracy", progress.get("best_val_accuracy"))
        return cls(
            id=str(data.get("id", "")),
            state=str(data.get("state", "unknown")),
            progress=_progress(data.get("progress")),
            stage=str(progress.get("stage") or ""),
            base_model=_pick(data, "base_model", ("base", "name")),
            base_version=_pick(data, "base_version", ("base", "version")),
            output_model=data.get("output_model"),
            result_model=_pick(data, "result_model", ("result", "model")),
            result_version=_pick(data, "result_version", ("result", "version")),
            activated=bool(result.get("activated", False)),
            val_accuracy=_float_or_none(val),
            error=_error_text(data.get("error")),
            created_at=data.get("created_at"),
            finished_at=data.get("finished_at"),
            raw=data,
        )


@dataclass(frozen=True)
class LogLine:
    """One line of a job's log."""

    line: int
    at: str
    message: str


@dataclass(frozen=True)
class JobLog:
    """Log lines of a job; pass `next_after` as `after` to read only newer lines."""

    id: str
    state: str
    lines: list[LogLine]
    next_after: int

    @property
    def text(self) -> str:
        return "".join(f"{x.at}  {x.message}\n" for x in self.lines)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobLog:
        lines = [LogLine(int(x["line"]), str(x.get("at", "")), str(x.get("message", "")))
                 for x in data.get("lines", [])]  # fmt: skip
        return cls(str(data.get("id", "")), str(data.get("state", "")), lines,
                   int(data.get("next_after", lines[-1].line if lines else 0)))  # fmt: skip


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def _progress(value: Any) -> float | None:
    """A fraction from a number, or from an object with `fraction` or `epoch`/`epochs`."""
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, dict):
        if isinstance(value.get("fraction"), int | float):
            return float(value["fraction"])
        done, total = value.get("epoch"), value.get("epochs")
        if isinstance(done, int | float) and isinstance(total, int | float) and total > 0:
            return float(done) / float(total)
    return None


def _pick(data: dict[str, Any], key: str, *paths: tuple[str, str]) -> str | None:
    """`data[key]`, else the first nested `data[a][b]` that is present."""
    if data.get(key) is not None and not isinstance(data[key], dict):
        return str(data[key])
    for outer, inner in paths:
        nested = data.get(outer)
        if isinstance(nested, dict) and nested.get(inner) is not None:
            return str(nested[inner])
    return None


def _error_text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, dict):
        return str(value.get("detail") or value.get("title") or value)
    return str(value)
