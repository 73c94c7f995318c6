"""Provider plan and options (pure functions: the CUDA path is testable without a GPU), CUDA graph
bucketing, warm-up sizes, the CPU session itself, and the settings that feed them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from service_fixture_models import GRID, write_version

from service.app import runtime_config
from service.runtime import (
    CPU,
    CUDA,
    OnnxSession,
    RuntimeConfig,
    _CudaGraphRunner,
    _IoBindingRunner,
    _PlainRunner,
    graph_bucket,
    pad_rows,
    plan_providers,
    provider_options,
    warmup_sizes,
)
from service.settings import Settings

TRT = "TensorrtExecutionProvider"


def test_cuda_first_then_cpu_when_both_available() -> None:
    plan = plan_providers(RuntimeConfig(), [TRT, CUDA, CPU])
    assert plan.providers == [CUDA, CPU]
    assert plan.dropped == []
    cuda, cpu = plan.options
    assert cuda["cudnn_conv_algo_search"] == "HEURISTIC"
    assert cuda["device_id"] == "0"
    assert "enable_cuda_graph" not in cuda
    assert cpu == {}


def test_cuda_unavailable_falls_back_to_cpu() -> None:
    plan = plan_providers(RuntimeConfig(), ["AzureExecutionProvider", CPU])
    assert plan.providers == [CPU]
    assert plan.dropped == [CUDA]


def test_nothing_usable_still_gives_cpu() -> None:
    plan = plan_providers(RuntimeConfig(providers=("NoSuchExecutionProvider",)), [CPU])
    assert plan.providers == [CPU]
    assert plan.dropped == ["NoSuchExecutionProvider"]


def test_duplicate_providers_are_requested_once() -> None:
    plan = plan_providers(RuntimeConfig(providers=(CPU, CPU)), [CPU])
    assert plan.providers == [CPU]


def test_cuda_options_follow_the_configuration() -> None:
    cfg = RuntimeConfig(
        cuda_device_id=2, cudnn_conv_algo_search="EXHAUSTIVE", cuda_graph_batch_sizes=(1, 8)
    )
    options = provider_options(CUDA, cfg)
    assert options == {
        "device_id": "2",
        "cudnn_conv_algo_search": "EXHAUSTIVE",
        "do_copy_in_default_stream": "1",
        "enable_cuda_graph": "1",
    }
    assert provider_options(CPU, cfg) == {}


def test_settings_reach_the_runtime_config() -> None:
    assert runtime_config(Settings()).intra_op_spinning is False
    settings = Settings(
        intra_op_spinning=True,
        providers=[CPU],
        cudnn_conv_algo_search="DEFAULT",
        use_io_binding=True,
        cuda_graph_batch_sizes=[16, 4],
        max_batch_size=16,
        intra_op_threads=2,
        warmup_batches=3,
    )
    cfg = runtime_config(settings)
    assert cfg.providers == (CPU,)
    assert cfg.cuda_graph_batch_sizes == (4, 16)
    assert cfg.warmup_sizes == (4, 16)
    assert (cfg.use_io_binding, cfg.intra_op_threads, cfg.warmup_batches) == (True, 2, 3)
    assert cfg.intra_op_spinning is True


@pytest.mark.parametrize(
    ("max_batch", "graphs", "expected"),
    [
        (64, (), (1, 2, 4, 8, 16, 32, 64)),
        (10, (), (1, 2, 4, 8, 10)),
        (1, (), (1,)),
        (64, (64, 1, 8), (1, 8, 64)),
    ],
)
def test_warmup_sizes(max_batch: int, graphs: tuple[int, ...], expected: tuple[int, ...]) -> None:
    assert warmup_sizes(max_batch, graphs) == expected


def test_graph_bucket_picks_the_smallest_size_that_fits() -> None:
    sizes = [8, 1, 32]
    assert [graph_bucket(n, sizes) for n in (1, 2, 8, 9, 32)] == [1, 8, 8, 32, 32]
    with pytest.raises(ValueError, match="exceeds"):
        graph_bucket(33, sizes)


def test_pad_rows_appends_zero_rows() -> None:
    batch = np.ones((3, 1, 5), dtype=np.float32)
    padded = pad_rows(batch, 8)
    assert padded.shape == (8, 1, 5)
    assert padded.dtype == np.float32
    assert padded[:3].sum() == 15 and padded[3:].sum() == 0
    assert pad_rows(batch, 3) is batch


def test_cpu_session_runs_and_reports_its_provider(tmp_path: Path) -> None:
    directory = write_version(tmp_path, "m", "1")
    cfg = RuntimeConfig(intra_op_threads=1, warmup_sizes=(1, 4))  # spinning off by default
    session = OnnxSession(directory / "model.onnx", cfg, "spectra", "logits")
    assert session.provider == CPU  # CUDA was requested first and is not available here
    options = session.session.get_session_options()
    assert options.intra_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    out = session.run(np.zeros((3, 1, GRID.points), dtype=np.float64))  # cast to float32
    assert out.shape == (3, 4) and out.dtype == np.float32
    session.prepare(GRID.points, 4)  # CPU: keeps the plain runner
    session.warmup(GRID.points)


def test_graph_runner_pads_splits_and_matches_the_plain_run(tmp_path: Path) -> None:
    # The CUDA-graph runner's buffer logic (fixed buffers per size, padding, chunking) on CPU
    # buffers; on a GPU the same code binds CUDA buffers and replays the captured graphs.
    directory = write_version(tmp_path, "m", "1")
    cfg = RuntimeConfig(providers=(CPU,), cuda_graph_batch_sizes=(1, 4))
    session = OnnxSession(directory / "model.onnx", cfg, "spectra", "logits")
    graphs = _CudaGraphRunner(session, GRID.points, 4, device="cpu")
    plain = _PlainRunner(session)
    rng = np.random.default_rng(0)
    for rows in (1, 3, 4, 9):
        batch = rng.random((rows, 1, GRID.points), dtype=np.float32)
        assert np.allclose(graphs.run(batch), plain.run(batch), atol=1e-5)
    x, _, _, _ = graphs.slots[4]
    assert x.shape() == [4, 1, GRID.points]


def test_io_binding_runner_matches_the_plain_run(tmp_path: Path) -> None:
    directory = write_version(tmp_path, "m", "1")
    session = OnnxSession(
        directory / "model.onnx", RuntimeConfig(providers=(CPU,)), "spectra", "logits"
    )
    batch = np.random.default_rng(1).random((5, 1, GRID.points), dtype=np.float32)
    bound = _IoBindingRunner(session, device="cpu").run(batch)
    assert np.allclose(bound, _PlainRunner(session).run(batch), atol=1e-6)


def test_every_setting_is_documented() -> None:
    undocumented = [n for n, f in Settings.model_fields.items() if not f.description]
    assert undocumented == []


def test_list_settings_accept_commas_and_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAMAN_API_KEYS", " k1, k2 ,")
    monkeypatch.setenv("RAMAN_PROVIDERS", '["CPUExecutionProvider"]')
    monkeypatch.setenv("RAMAN_CUDA_GRAPH_BATCH_SIZES", "64,1,8")
    settings = Settings()
    assert settings.api_keys == ["k1", "k2"]
    assert settings.providers == [CPU]
    assert settings.cuda_graph_batch_sizes == [1, 8, 64]
    assert "k1" not in repr(settings)


def test_cuda_graphs_must_cover_the_max_batch() -> None:
    with pytest.raises(ValidationError, match="exceeds the largest CUDA graph"):
        Settings(cuda_graph_batch_sizes=[1, 8], max_batch_size=64)
    with pytest.raises(ValidationError):
        Settings(cuda_graph_batch_sizes=[0, 8], max_batch_size=8)


def test_default_store_is_the_repository_models_dir() -> None:
    settings = Settings()
    repo_models = Path(__file__).resolve().parents[2] / "models"
    expected = repo_models if repo_models.is_dir() else Path.cwd() / "models"
    assert settings.model_store == expected
