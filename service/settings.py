"""Service configuration: one pydantic-settings class, read from `RAMAN_*` environment variables.

Nothing reads configuration at import time: `create_app(settings)` takes a `Settings`, and the
command line builds one through the cached `get_settings()` (tests pass their own).
List settings accept either JSON (`["a","b"]`) or a comma-separated string (`a,b`).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]


def default_model_store() -> Path:
    """The repository's `models/` directory when it exists, else `./models`."""
    shipped = REPO_ROOT / "models"
    return shipped if shipped.is_dir() else Path.cwd() / "models"


def split_list(value: Any) -> Any:
    """Turn `"a, b"` or `'["a","b"]'` into a list; leave other values to pydantic."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        return json.loads(text)
    return [part.strip() for part in text.split(",") if part.strip()]


StrList = Annotated[list[str], NoDecode]
IntList = Annotated[list[int], NoDecode]


class Settings(BaseSettings):
    """Every knob of the HTTP service; environment variables are `RAMAN_<FIELD>` (upper case)."""

    model_config = SettingsConfigDict(
        env_prefix="RAMAN_",
        use_attribute_docstrings=True,
        extra="ignore",
        protected_namespaces=(),
    )

    # --- models ---
    model_store: Path = Field(default_factory=default_model_store)
    """Directory of `<name>/<version>/` model versions (default: the repository's `models/`)."""
    job_store: Path = Path("var/jobs")
    """Directory for fine-tune job state (used by the fine-tune worker)."""
    default_model: str = "rruff-minerals"
    """Model name used when a request names none."""
    max_pinned_versions: int = Field(default=1, ge=0, le=16)
    """Non-active versions kept loaded for requests that pin one (0: such requests get 409)."""

    # --- security ---
    api_keys: StrList = Field(default_factory=list, repr=False)
    """API keys for mutating endpoints (comma-separated); empty disables those endpoints (403)."""

    # --- runtime ---
    providers: StrList = Field(
        default_factory=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    """onnxruntime execution providers in order of preference; unavailable ones are skipped."""
    cuda_device_id: int = Field(default=0, ge=0)
    """GPU index for the CUDA execution provider."""
    cudnn_conv_algo_search: Literal["HEURISTIC", "EXHAUSTIVE", "DEFAULT"] = "HEURISTIC"
    """cuDNN convolution algorithm search (HEURISTIC: fast start, near-best kernels)."""
    use_io_binding: bool = False
    """Bind inputs/outputs through IOBinding on CUDA (always on when CUDA graphs are enabled)."""
    cuda_graph_batch_sizes: IntList = Field(default_factory=list)
    """Batch sizes to capture as CUDA graphs (empty: off); batches are padded to the next size."""
    intra_op_threads: int = Field(default=0, ge=0)
    """onnxruntime intra-op threads for the CPU provider (0: onnxruntime's default)."""
    intra_op_spinning: bool = False
    """Let idle intra-op threads spin between runs (onnxruntime's own default is on); off leaves
    the cores to request handling, which shares them (see docs/service.md)."""
    warmup_batches: int = Field(default=2, ge=0, le=100)
    """Warm-up runs per batch-size bucket before the service reports ready."""

    # --- batching ---
    max_batch_size: int = Field(default=64, ge=1, le=4096)
    """Largest batch sent to the session; bigger requests are split across batches."""
    max_wait_ms: float = Field(default=2.0, ge=0.0, le=10_000.0)
    """Longest a queued spectrum waits for companions before its batch closes."""
    batch_wait_when_idle: bool = False
    """Hold a batch open for max_wait_ms even when no other request is in flight (classic
    fixed-window batching); by default a lone request is dispatched at once."""
    queue_size: int = Field(default=1024, ge=1)
    """Spectra that may wait per model; a request that does not fit gets 429 at once."""
    request_timeout_s: float = Field(default=10.0, gt=0.0)
    """Time a request may wait for its results before it is answered 504."""

    # --- limits ---
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    """Largest request body in bytes (counted as it streams); larger bodies get 413."""
    body_idle_timeout_s: float = Field(default=30.0, gt=0.0)
    """Longest wait for the next part of a request body; a client that stalls longer gets 408."""
    max_spectra_per_request: int = Field(default=256, ge=1)
    """Most spectra in one identify or v2 infer request (more: 413)."""
    max_points_per_spectrum: int = Field(default=20_000, ge=8)
    """Most points in one spectrum (more: 413)."""
    max_top_k: int = Field(default=50, ge=1)
    """Largest `top_k` a request may ask for (more: 422)."""
    max_files_per_request: int = Field(default=64, ge=1)
    """Most files in one multipart upload (more: 413)."""

    # --- server ---
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    """Log level of the service and uvicorn."""
    host: str = "127.0.0.1"
    """Interface `python -m service` binds to."""
    port: int = Field(default=8000, ge=0, le=65535)
    """TCP port `python -m service` listens on."""
    graceful_shutdown_s: int = Field(default=10, ge=0)
    """On SIGTERM, time allowed for in-flight requests before connections are closed."""

    # --- fine-tune jobs (docs/finetune.md) ---
    finetune_worker: Literal["process", "external", "kubernetes"] = "process"
    """Who runs fine-tune jobs: "process" (the API starts and supervises one local worker on the
    first job), "external" (`raman-worker` processes run elsewhere and poll the job store), or
    "kubernetes" (each job becomes a Kubernetes Job from `finetune_k8s_template`)."""
    finetune_device: str = "auto"
    """torch device of the local worker ("auto": the GPU when present, else the CPU)."""
    finetune_worker_threads: int = Field(default=0, ge=0)
    """torch CPU threads of a training job (0: half the cores, the rest stay with inference)."""
    finetune_worker_nice: int = Field(default=10, ge=0, le=19)
    """Niceness added to the local worker, so inference keeps priority on a shared CPU."""
    finetune_max_upload_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    """Largest uploaded archive (413 above; the body limit `max_body_bytes` applies as well)."""
    finetune_max_uncompressed_bytes: int = Field(default=200 * 1024 * 1024, ge=1024)
    """Most bytes an archive may unpack to (zip bombs stop here: 413)."""
    finetune_max_archive_members: int = Field(default=10_000, ge=1)
    """Most entries in an uploaded archive (413 above)."""
    finetune_max_spectra: int = Field(default=20_000, ge=2)
    """Most training spectra in one job (413 above)."""
    finetune_min_per_class: int = Field(default=2, ge=1)
    """Fewest spectra per class (and at least 2 when a validation share is asked for; 422)."""
    finetune_default_epochs: int = Field(default=60, ge=1)
    """Epochs of a job that names none."""
    finetune_max_epochs: int = Field(default=1000, ge=1)
    """Most epochs a job may ask for (422 above)."""
    finetune_max_queued: int = Field(default=32, ge=1)
    """Jobs that may wait in the queue; one more gets 429."""
    finetune_data_retention_s: float = Field(default=0.0, ge=0.0)
    """Seconds a job's uploaded (preprocessed) data is kept after it ends (0: removed at once)."""
    finetune_poll_s: float = Field(default=1.0, gt=0.0, le=60.0)
    """How often the API and the worker look at the job store."""
    finetune_heartbeat_timeout_s: float = Field(default=60.0, gt=0.0)
    """A running job silent this long is failed as "worker died"."""
    finetune_cancel_grace_s: float = Field(default=5.0, gt=0.0)
    """After a cancel, time the training process gets to stop by itself before it is killed."""
    finetune_store_journal: Literal["wal", "delete"] = "wal"
    """SQLite journal of the job store: "wal" when the API and workers share one host; "delete"
    when the store is on a volume that several nodes mount (it needs working POSIX locks)."""
    finetune_k8s_template: Path = REPO_ROOT / "deploy" / "finetune" / "job.yaml"
    """Kubernetes Job template for `finetune_worker=kubernetes` ($JOB_ID, $JOB_NAME filled in)."""

    @field_validator("api_keys", "providers", "cuda_graph_batch_sizes", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return split_list(value)

    @field_validator("cuda_graph_batch_sizes")
    @classmethod
    def _positive_sizes(cls, value: list[int]) -> list[int]:
        if any(size < 1 for size in value):
            raise ValueError("CUDA graph batch sizes must be positive")
        return sorted(set(value))

    @model_validator(mode="after")
    def _graphs_cover_batches(self) -> Settings:
        # A batch larger than every captured graph would have no graph to replay.
        if self.cuda_graph_batch_sizes and self.max_batch_size > self.cuda_graph_batch_sizes[-1]:
            raise ValueError(
                f"max_batch_size {self.max_batch_size} exceeds the largest CUDA graph batch size "
                f"{self.cuda_graph_batch_sizes[-1]}"
            )
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings from the environment, built once per process (tests build their own)."""
    return Settings()
