"""Fine-tune jobs through `RamanClient` and the CLI, against a real server with a local worker.

The base is a tiny DRCNN trained by tests/finetune/finetune_fixtures.py (it needs torch); the
job teaches it three new classes from a zip of CSV files, one folder per label.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from live_server import (
    FINETUNE_SETTINGS,
    LiveServer,
    add_finetune_base,
    finetune_fixtures,
    start_server,
)

from raman_client import Job, RamanAPIError, RamanClient
from raman_client.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ft() -> ModuleType:
    pytest.importorskip("torch", reason="fine-tune jobs train with torch (the `train` extra)")
    return finetune_fixtures()


@pytest.fixture(scope="module")
def ft_server(ft: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("ft-server")
    add_finetune_base(root / "models")
    live = start_server(root / "models", root, api_keys=ft.API_KEY, default_model=ft.BASE_MODEL,
                        **FINETUNE_SETTINGS)  # fmt: skip
    yield live
    live.stop()


@pytest.fixture(scope="module")
def archive(ft: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ft-data") / "new-classes.zip"
    path.write_bytes(ft.zip_archive(ft.folder_files(ft.NEW_PEAKS, 4, seed=1)))
    return path


@pytest.fixture
def client(ft: ModuleType, ft_server: LiveServer) -> Iterator[RamanClient]:
    with RamanClient(ft_server.url, api_key=ft.API_KEY, retries=1) as c:
        yield c


def test_jobs_need_an_api_key(ft_server: LiveServer) -> None:
    with RamanClient(ft_server.url, retries=0) as anonymous, pytest.raises(RamanAPIError) as caught:
        anonymous.jobs()
    assert caught.value.status == 401 and "API key" in caught.value.detail


def test_finetune_archive_runs_to_a_new_version(
    client: RamanClient, ft: ModuleType, archive: Path
) -> None:
    job = client.finetune(archive, hyperparameters={"epochs": 2}, batch_size=4)
    assert isinstance(job, Job) and job.state in ("queued", "running") and len(job.id) == 32
    assert (job.base_model, job.base_version, job.output_model) == (
        ft.BASE_MODEL,
        "1",
        ft.BASE_MODEL,
    )
    assert job.raw["data"]["classes"] == 3 and job.raw["hyperparameters"]["epochs"] == 2
    seen: list[str] = []
    done = client.wait(job.id, poll=0.3, timeout=240, on_update=lambda j: seen.append(j.state))
    assert done.succeeded, client.job_log(job.id).text
    assert (done.result_model, done.result_version, done.progress) == (ft.BASE_MODEL, "2", 1.0)
    assert seen[-1] == "succeeded" and set(seen) <= {"queued", "running", "succeeded"}
    log = client.job_log(job.id)
    assert "registered" in log.text and log.next_after == log.lines[-1].line
    assert client.job_log(job.id, after=log.next_after).lines == []
    versions = [v.version for m in client.models() if m.name == ft.BASE_MODEL for v in m.versions]
    assert versions == ["1", "2"]
    assert job.id in [j.id for j in client.jobs()]


def test_cancel_a_job(client: RamanClient, archive: Path) -> None:
    job = client.finetune(archive, epochs=500, patience=500)
    after = client.cancel(job.id)
    assert after.id == job.id and after.raw["cancel_requested"] is True
    final = client.wait(job.id, poll=0.3, timeout=120)
    assert final.state == "cancelled" and not final.succeeded
    with pytest.raises(RamanAPIError) as caught:
        client.cancel(job.id)
    assert caught.value.status == 409 and "already ended" in caught.value.detail


def test_problems_from_the_jobs_api(client: RamanClient, tmp_path: Path) -> None:
    with pytest.raises(RamanAPIError) as missing:
        client.job("0" * 32)
    assert (missing.value.status, missing.value.slug) == (404, "job-not-found")
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"this is not an archive")
    with pytest.raises(RamanAPIError) as bad:
        client.finetune(junk)
    assert bad.value.status == 422 and bad.value.detail
    with pytest.raises(ValueError, match="exactly one"):
        client.finetune()


def test_cli_jobs_and_log(
    ft: ModuleType, ft_server: LiveServer, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--url", ft_server.url, "--api-key", ft.API_KEY]
    assert main([*common, "jobs"]) == 0  # options before the command work too
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["job", "state", "progress", "base", "result", "message"]
    assert any(
        "succeeded" in row and "100%" in row and f"{ft.BASE_MODEL}:2" in row for row in table
    )
    assert main(["jobs", "--json", *common]) == 0
    jobs = json.loads(capsys.readouterr().out)
    finished = next(j for j in jobs if j["state"] == "succeeded")
    assert main(["job", finished["id"], "--log", *common]) == 0
    assert "registered" in capsys.readouterr().out
    assert main(["job", "f" * 32, *common]) == 1
    assert "(404)" in capsys.readouterr().err


def test_cli_finetune_passes_output_model_and_activate(
    ft: ModuleType, ft_server: LiveServer, archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # both flags were parsed and then dropped: the job went to the base name, not activated
    common = ["--url", ft_server.url, "--api-key", ft.API_KEY]
    args = ["finetune", str(archive), "--output-model", "cli-out", "--activate", "--epochs", "500"]
    assert main([*args, "--json", *common]) == 0
    job = json.loads(capsys.readouterr().out)
    assert (job["output_model"], job["activate"]) == ("cli-out", True)
    with RamanClient(ft_server.url, api_key=ft.API_KEY, retries=1) as client:
        client.cancel(job["id"])
        assert client.wait(job["id"], poll=0.3, timeout=120).state == "cancelled"
