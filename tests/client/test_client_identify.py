"""`RamanClient` against the real service process: arrays, files, folders, batching, models."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from live_server import LiveServer, request_count

from raman_client import ModelInfo, RamanAPIError, RamanClient, Result

pytestmark = pytest.mark.slow
MODEL = "rruff-minerals"  # the fixture store's default model (see conftest.py)
LABELS = ["Quartz", "Calcite", "Gypsum (selenite)", "Anatase TiO2"]


@pytest.fixture
def client(server: LiveServer) -> Iterator[RamanClient]:
    with RamanClient(server.url, timeout=20.0, retries=0) as c:
        yield c


def test_identify_on_grid_lists_and_numpy_rows(
    client: RamanClient, models_module: ModuleType
) -> None:
    rows = np.array([models_module.spectrum_on_grid(c) for c in (0, 3)], dtype=np.float32)
    results = client.identify(rows, top_k=2)
    assert [r.top.label for r in results if r.top] == ["Quartz", "Anatase TiO2"]
    first = results[0]
    assert isinstance(first, Result) and first.ok and first.match
    assert first.id == "0" and len(first.predictions) == 2
    assert first.predictions[0].rank == 1 and 0.5 < first.predictions[0].probability <= 1.0
    assert first.model is not None and first.model.name == MODEL and first.model.version == "1"
    assert "probability" in first.no_match_rule


def test_identify_pairs_and_mappings_keep_ids(
    client: RamanClient, models_module: ModuleType
) -> None:
    calcite = models_module.spectrum_off_grid(1)
    gypsum = models_module.spectrum_off_grid(2)
    results = client.identify(
        [calcite, {"id": "g", "wavenumbers": gypsum[0], "intensities": gypsum[1]}], ids=["c", "x"]
    )
    assert [(r.id, r.top.label if r.top else None) for r in results] == [
        ("c", "Calcite"),
        ("g", "Gypsum (selenite)"),
    ]
    one = client.identify_spectrum(np.asarray(calcite[0]), np.asarray(calcite[1]), top_k=1)
    assert one.top is not None and one.top.label == "Calcite" and one.coverage == pytest.approx(1.0)


def test_identify_splits_large_inputs_into_requests(
    client: RamanClient, server: LiveServer, models_module: ModuleType
) -> None:
    spectra = [models_module.spectrum_on_grid(i % 4, noise=0.01, seed=i) for i in range(5)]
    before = request_count(server.url, "/v1/identify")
    results = client.identify(spectra, top_k=1, batch=2)
    assert request_count(server.url, "/v1/identify") - before == 3  # 2 + 2 + 1
    assert [r.id for r in results] == ["0", "1", "2", "3", "4"]
    assert [r.top.label for r in results if r.top] == [LABELS[i % 4] for i in range(5)]


def test_identify_refuses_non_finite_values_before_sending(client: RamanClient) -> None:
    with pytest.raises(ValueError, match=r"intensities\[1\] is nan"):
        client.identify([[0.0, float("nan"), 1.0]])


def test_identify_files_reports_unusable_files_without_raising(
    client: RamanClient, tmp_path: Path, write_spectrum: Callable[[Path, int], Path]
) -> None:
    good = write_spectrum(tmp_path / "quartz.csv", 0)
    bad = tmp_path / "broken.txt"
    bad.write_bytes(b"\x00\x01\x02 not a spectrum")
    results = client.identify_files([good, bad], top_k=3)
    assert [r.file for r in results] == ["quartz.csv", "broken.txt"]
    assert results[0].ok and results[0].top is not None and results[0].top.label == "Quartz"
    assert not results[1].ok and results[1].error is not None
    assert (
        results[1].error.status == 415
        and "not a Thermo/Galactic SPC file" in results[1].error.detail
    )


def test_identify_folder_batches_files_and_reports_progress(
    client: RamanClient,
    server: LiveServer,
    tmp_path: Path,
    write_spectrum: Callable[[Path, int], Path],
) -> None:
    folder = tmp_path / "run"
    for i in range(7):
        write_spectrum(folder / ("sub" if i % 2 else "") / f"s{i}.csv", i % 4)
    (folder / "notes.md").write_text("not a spectrum: skipped by suffix")
    (folder / ".hidden.txt").write_text("skipped: hidden")
    seen: list[tuple[int, int]] = []
    before = request_count(server.url, "/v1/identify/files")
    results = client.identify_folder(
        folder, top_k=1, batch=3, progress=lambda d, t: seen.append((d, t))
    )
    assert request_count(server.url, "/v1/identify/files") - before == 3  # 3 + 3 + 1 files
    assert seen == [(3, 7), (6, 7), (7, 7)]
    assert len(results) == 7 and all(r.ok for r in results)
    by_file = {r.file: r.top.label for r in results if r.top}
    assert by_file == {f"s{i}.csv": LABELS[i % 4] for i in range(7)}


def test_folder_where_every_file_of_a_batch_fails_yields_error_results(
    client: RamanClient, tmp_path: Path, write_spectrum: Callable[[Path, int], Path]
) -> None:
    folder = tmp_path / "mixed"
    for name in ("a.txt", "b.txt"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("not, numbers\nat, all\n")
    write_spectrum(folder / "c.csv", 3)
    results = client.identify_folder(folder, batch=2, progress=False)
    assert [(r.file, r.ok) for r in results] == [
        ("a.txt", False),
        ("b.txt", False),
        ("c.csv", True),
    ]
    assert all(r.error is not None and r.error.detail for r in results[:2])


def test_too_many_files_in_one_request_is_a_problem_error(
    client: RamanClient, tmp_path: Path, write_spectrum: Callable[[Path, int], Path]
) -> None:
    files = [write_spectrum(tmp_path / f"f{i}.csv", 0) for i in range(5)]
    with pytest.raises(RamanAPIError) as caught:
        client.identify_files(files, batch=5)
    err = caught.value
    assert err.status == 413 and err.slug == "limit-exceeded" and "at most 4" in err.detail


def test_problem_details_are_carried_by_the_exception(client: RamanClient) -> None:
    with pytest.raises(RamanAPIError) as caught:
        client.identify([[0.1] * 10])
    err = caught.value
    assert (err.status, err.slug) == (422, "invalid-input")
    assert "101" in err.detail and err.instance == "/v1/identify" and err.title
    with pytest.raises(RamanAPIError) as missing:
        client.identify([[0.1] * 101], model="no-such-model")
    assert missing.value.status == 404 and "no-such-model" in missing.value.detail
    with pytest.raises(RamanAPIError) as validation:
        client.identify([[0.1] * 101], top_k=0)
    assert validation.value.status == 422 and validation.value.extensions.get("errors")


def test_models_and_references(client: RamanClient) -> None:
    models = {m.name: m for m in client.models()}
    assert set(models) == {MODEL, "biomolecules"}
    info = models[MODEL]
    assert isinstance(info, ModelInfo) and info.default and not models["biomolecules"].default
    assert info.active_version == "1" and info.classes == 4 and info.grid is not None
    assert (info.grid.start, info.grid.stop, info.grid.points) == (200.0, 1200.0, 101)
    assert [v.version for v in info.versions] == ["1"] and info.versions[0].active
    assert client.model(MODEL).name == MODEL and client.ready()
    ref = client.reference(MODEL, "Gypsum (selenite)")
    assert ref.label == "Gypsum (selenite)" and len(ref.wavenumbers) == len(ref.intensities) == 101
    assert ref.wavenumbers[int(np.argmax(ref.intensities))] == pytest.approx(800.0)
