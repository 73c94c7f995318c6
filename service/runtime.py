"""The onnxruntime session: providers, their options, warm-up, IOBinding and CUDA graphs.

Synchronous and single-purpose: a float32 batch `[n, 1, L]` in, logits `[n, C]` out. Nothing here
knows about asyncio, HTTP or spectra. The provider plan is a pure function of the configuration
and of `onnxruntime.get_available_providers()`, so it is unit-tested on machines without a GPU;
a provider that is not available is skipped (CPU is always the last resort).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


@dataclass(frozen=True)
class RuntimeConfig:
    """What the session needs from the settings (see `service.settings.Settings`)."""

    providers: tuple[str, ...] = (CUDA, CPU)
    cuda_device_id: int = 0
    cudnn_conv_algo_search: str = "HEURISTIC"
    use_io_binding: bool = False
    cuda_graph_batch_sizes: tuple[int, ...] = ()
    intra_op_threads: int = 0
    intra_op_spinning: bool = False
    warmup_batches: int = 2
    warmup_sizes: tuple[int, ...] = (1,)


@dataclass(frozen=True)
class ProviderPlan:
    """Providers to request, in order, with their options; `dropped` were unavailable."""

    providers: list[str]
    options: list[dict[str, str]]
    dropped: list[str] = field(default_factory=list)


def provider_options(provider: str, cfg: RuntimeConfig) -> dict[str, str]:
    """onnxruntime options for one provider (strings, as the C API wants them)."""
    if provider != CUDA:
        return {}
    options = {
        "device_id": str(cfg.cuda_device_id),
        "cudnn_conv_algo_search": cfg.cudnn_conv_algo_search,
        "do_copy_in_default_stream": "1",
    }
    if cfg.cuda_graph_batch_sizes:
        options["enable_cuda_graph"] = "1"
    return options


def plan_providers(cfg: RuntimeConfig, available: Iterable[str]) -> ProviderPlan:
    """Keep the configured providers that this onnxruntime build offers; CPU if none is left."""
    offered = set(available)
    kept = [p for p in dict.fromkeys(cfg.providers) if p in offered]
    dropped = [p for p in cfg.providers if p not in offered]
    if not kept:
        kept = [CPU]
    return ProviderPlan(kept, [provider_options(p, cfg) for p in kept], dropped)


def session_options(cfg: RuntimeConfig) -> ort.SessionOptions:
    """Graph optimisation on, sequential execution, intra-op threads and spinning as set."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.inter_op_num_threads = 1
    if cfg.intra_op_threads > 0:
        opts.intra_op_num_threads = cfg.intra_op_threads
    # Spinning threads answer the next op sooner but burn a core the event loop may need.
    opts.add_session_config_entry(
        "session.intra_op.allow_spinning", "1" if cfg.intra_op_spinning else "0"
    )
    opts.log_severity_level = 3  # errors only: provider fallback is logged by us, once
    return opts


def warmup_sizes(max_batch_size: int, graph_sizes: Sequence[int] = ()) -> tuple[int, ...]:
    """Batch sizes to warm up: the CUDA graph sizes, else powers of two up to the max batch."""
    if graph_sizes:
        return tuple(sorted(set(graph_sizes)))
    sizes = {1 << i for i in range(max_batch_size.bit_length()) if 1 << i <= max_batch_size}
    return tuple(sorted(sizes | {max_batch_size}))


def graph_bucket(n: int, sizes: Sequence[int]) -> int:
    """The smallest captured CUDA graph batch size that holds `n` rows."""
    for size in sorted(sizes):
        if size >= n:
            return size
    raise ValueError(f"batch of {n} exceeds the largest CUDA graph batch size {max(sizes)}")


def pad_rows(batch: np.ndarray, rows: int) -> np.ndarray:
    """`batch` with zero rows appended up to `rows` (CUDA graphs replay one fixed shape)."""
    if batch.shape[0] == rows:
        return batch
    padded = np.zeros((rows, *batch.shape[1:]), dtype=batch.dtype)
    padded[: batch.shape[0]] = batch
    return padded


class OnnxSession:
    """One `onnxruntime.InferenceSession` with the runner its provider supports best."""

    def __init__(self, path: Path, cfg: RuntimeConfig, input_name: str, output_name: str) -> None:
        plan = plan_providers(cfg, ort.get_available_providers())
        if plan.dropped:
            log.info("execution providers not available here, skipped: %s", plan.dropped)
        if CUDA in plan.providers:
            _preload_cuda_libraries()
        self.session = ort.InferenceSession(
            str(path),
            session_options(cfg),
            providers=plan.providers,
            provider_options=plan.options,
        )
        self.provider: str = self.session.get_providers()[0]
        if self.provider != plan.providers[0]:
            log.warning("%s failed to initialise; running on %s", plan.providers[0], self.provider)
        self.cfg = cfg
        self.input_name = input_name
        self.output_name = output_name
        self._runner: _Runner = _PlainRunner(self)

    def io_shapes(self) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
        """Declared shapes of the graph's inputs and outputs, by name (symbolic dims as str)."""
        ins = {i.name: list(i.shape) for i in self.session.get_inputs()}
        outs = {o.name: list(o.shape) for o in self.session.get_outputs()}
        return ins, outs

    def prepare(self, length: int, classes: int) -> None:
        """Pick the runner once the graph is validated (CUDA runners need the fixed shapes)."""
        if self.provider != CUDA:
            return
        if self.cfg.cuda_graph_batch_sizes:
            self._runner = _CudaGraphRunner(self, length, classes)
        elif self.cfg.use_io_binding:
            self._runner = _IoBindingRunner(self)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits for a float32 batch `[n, 1, L]`."""
        return self._runner.run(np.ascontiguousarray(batch, dtype=np.float32))

    def warmup(self, length: int) -> None:
        """Run `warmup_batches` zero batches of every warm-up size (kernels, arenas, graphs)."""
        for size in self.cfg.warmup_sizes:
            for _ in range(self.cfg.warmup_batches):
                self.run(np.zeros((size, 1, length), dtype=np.float32))


class _Runner:
    def __init__(self, owner: OnnxSession) -> None:
        self.owner = owner

    def run(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class _PlainRunner(_Runner):
    def run(self, batch: np.ndarray) -> np.ndarray:
        o = self.owner
        return np.asarray(o.session.run([o.output_name], {o.input_name: batch})[0])


class _IoBindingRunner(_Runner):
    """Outputs stay on the device until copied once; saves a round trip per run."""

    def __init__(self, owner: OnnxSession, device: str = "cuda") -> None:
        super().__init__(owner)
        self.device = device

    def run(self, batch: np.ndarray) -> np.ndarray:
        o = self.owner
        binding = o.session.io_binding()
        binding.bind_cpu_input(o.input_name, batch)
        binding.bind_output(o.output_name, self.device, o.cfg.cuda_device_id)
        o.session.run_with_iobinding(binding)
        return np.asarray(binding.copy_outputs_to_cpu()[0])


class _CudaGraphRunner(_Runner):
    """One captured graph per batch size, on fixed device buffers; batches padded to the size.

    `device` is "cuda" in service; tests drive the same buffer logic on "cpu".
    """

    def __init__(self, owner: OnnxSession, length: int, classes: int, device: str = "cuda") -> None:
        super().__init__(owner)
        self.device = device
        self.sizes = tuple(sorted(owner.cfg.cuda_graph_batch_sizes))
        self.slots = {
            size: self._slot(i, size, length, classes) for i, size in enumerate(self.sizes)
        }

    def _slot(self, graph_id: int, size: int, length: int, classes: int) -> tuple[Any, ...]:
        o, dev = self.owner, self.owner.cfg.cuda_device_id
        zeros = np.zeros((size, 1, length), np.float32)
        x = ort.OrtValue.ortvalue_from_numpy(zeros, self.device, dev)
        y = ort.OrtValue.ortvalue_from_shape_and_type((size, classes), np.float32, self.device, dev)
        binding = o.session.io_binding()
        binding.bind_ortvalue_input(o.input_name, x)
        binding.bind_ortvalue_output(o.output_name, y)
        run_options = ort.RunOptions()
        run_options.add_run_config_entry("gpu_graph_id", str(graph_id))
        return x, y, binding, run_options

    def run(self, batch: np.ndarray) -> np.ndarray:
        largest = self.sizes[-1]
        parts = [self._run_one(batch[i : i + largest]) for i in range(0, batch.shape[0], largest)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _run_one(self, batch: np.ndarray) -> np.ndarray:
        x, y, binding, run_options = self.slots[graph_bucket(batch.shape[0], self.sizes)]
        x.update_inplace(pad_rows(batch, x.shape()[0]))
        self.owner.session.run_with_iobinding(binding, run_options)
        # Copy: the output buffer is reused by the next run (and `numpy()` may be a view of it).
        return np.array(y.numpy()[: batch.shape[0]], copy=True)


def _preload_cuda_libraries() -> None:
    # onnxruntime-gpu >= 1.21 can load CUDA/cuDNN from the nvidia-* wheels; harmless if absent.
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    try:
        preload()
    except Exception as exc:  # a failed preload only means CUDA EP may fall back to CPU
        log.info("onnxruntime.preload_dlls() failed: %s", exc)
