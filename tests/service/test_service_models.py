"""Model registry over HTTP: listing, inspection, activation, rollback, refusal of broken
versions (the previous one keeps serving), reload, references, and reload under load."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from service_fixture_models import BROKEN, CLASSES, GRID, MODEL, spectrum_on_grid, write_version

from service.app import create_app
from service.settings import Settings

SPECTRUM = {"spectra": [{"intensities": spectrum_on_grid(1)}]}
REASONS = {
    "10": "5] does not match the card (4 classes)",
    "11": "does not match the card (101 grid points)",
    "12": "sha256 of model.onnx",
    "13": "cannot be loaded by onnxruntime",
    "14": "missing file(s) references.npz",
    "15": "(4 classes)",
    "16": "1 class(es) of the card have no reference spectrum",
}


def serving_version(client: TestClient) -> str:
    r = client.post("/v1/identify", json=SPECTRUM)
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["predictions"][0]["label"] == CLASSES[1]
    version: str = r.json()["model"]["version"]
    return version


def test_list_models(client: TestClient) -> None:
    body = client.get("/v1/models").json()
    assert body["default_model"] == MODEL and body["ready"] is True
    models = {m["name"]: m for m in body["models"]}
    assert set(models) == {MODEL, "biomolecules"}
    minerals = models[MODEL]
    assert minerals["active_version"] == "2"
    assert [v["version"] for v in minerals["versions"]] == ["1", "2", *BROKEN]
    assert [v["version"] for v in minerals["versions"] if v["active"]] == ["2"]
    assert [v["version"] for v in minerals["versions"] if v["loaded"]] == ["2"]


def test_a_directory_without_versions_is_no_model(make_settings: Any, store: Path) -> None:
    # what a fine-tune export that failed into a new model name leaves behind
    (store / "half-made").mkdir()
    (store / "half-made" / ".version.lock").touch()
    with TestClient(create_app(make_settings())) as c:
        assert "half-made" not in {m["name"] for m in c.get("/v1/models").json()["models"]}
        r = c.post("/v1/identify", json=SPECTRUM | {"model": "half-made"})
        assert r.status_code == 404 and r.json()["type"].endswith("model-not-found")


def test_inspect_model(client: TestClient) -> None:
    body = client.get(f"/v1/models/{MODEL}").json()
    assert body["classes"] == len(CLASSES)
    assert body["grid"] == GRID.to_dict()
    assert body["provider"] == "CPUExecutionProvider"
    assert body["metrics"] == {"top1": 0.9}


def test_inspect_version_includes_the_card(client: TestClient) -> None:
    body = client.get(f"/v1/models/{MODEL}/versions/1").json()
    assert (body["name"], body["version"], body["active"], body["loaded"]) == (
        MODEL,
        "1",
        False,
        False,
    )
    assert body["card"]["classes"] == CLASSES
    assert body["provider"] is None
    assert client.get(f"/v1/models/{MODEL}/versions/2").json()["provider"] == "CPUExecutionProvider"


def test_unreadable_card_is_reported_not_fatal(client: TestClient, store: Path) -> None:
    (store / MODEL / "1" / "model.json").write_text("{not json")
    body = client.get(f"/v1/models/{MODEL}/versions/1").json()
    assert "cannot read" in body["error"] and body["card"] is None
    assert client.get("/v1/models").status_code == 200


@pytest.mark.parametrize("path", ["/v1/models/nope", f"/v1/models/{MODEL}/versions/7"])
def test_unknown_model_or_version_is_404(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 404 and r.json()["type"].endswith("model-not-found")


def test_activate_and_roll_back(client: TestClient, auth: dict[str, str], store: Path) -> None:
    r = client.post(f"/v1/models/{MODEL}/versions/1/activate", headers=auth)
    assert r.status_code == 200 and r.json()["active_version"] == "1"
    assert (store / MODEL / "ACTIVE").read_text().strip() == "1"
    assert serving_version(client) == "1"
    assert (
        'raman_model_info{name="rruff-minerals",provider="CPUExecutionProvider",version="1"} 1.0'
        in (client.get("/metrics").text)
    )
    assert 'version="2"} 1.0' not in client.get("/metrics").text
    r = client.post(f"/v1/models/{MODEL}/versions/2/activate", headers=auth)  # roll back
    assert r.status_code == 200 and serving_version(client) == "2"
    assert (store / MODEL / "ACTIVE").read_text().strip() == "2"


@pytest.mark.parametrize("version", sorted(BROKEN))
def test_broken_version_is_refused_and_previous_keeps_serving(
    client: TestClient, auth: dict[str, str], store: Path, version: str
) -> None:
    r = client.post(f"/v1/models/{MODEL}/versions/{version}/activate", headers=auth)
    assert r.status_code == 409, r.text
    problem = r.json()
    assert problem["type"].endswith("model-invalid")
    assert REASONS[version] in problem["detail"] and f"version '{version}'" in problem["detail"]
    assert serving_version(client) == "2"
    assert (store / MODEL / "ACTIVE").read_text().strip() == "2"


def test_reload_picks_up_the_store_state(
    client: TestClient, auth: dict[str, str], store: Path
) -> None:
    (store / MODEL / "ACTIVE").write_text("1\n")
    r = client.post(f"/v1/models/{MODEL}/reload", headers=auth)
    assert r.status_code == 200 and r.json()["active_version"] == "1"
    assert serving_version(client) == "1"
    (store / MODEL / "ACTIVE").write_text("13\n")  # corrupt graph: refused, 1 keeps serving
    r = client.post(f"/v1/models/{MODEL}/reload", headers=auth)
    assert r.status_code == 409 and serving_version(client) == "1"


def test_a_version_added_while_running_can_be_activated(
    client: TestClient, auth: dict[str, str], store: Path
) -> None:
    write_version(store, MODEL, "3")
    assert "3" in [v["version"] for v in client.get(f"/v1/models/{MODEL}").json()["versions"]]
    assert client.post(f"/v1/models/{MODEL}/versions/3/activate", headers=auth).status_code == 200
    assert serving_version(client) == "3"


def test_a_model_added_while_running_is_served_after_reload(
    client: TestClient, auth: dict[str, str], store: Path
) -> None:
    write_version(store, "newcomer", "1")
    r = client.post("/v1/identify", json=SPECTRUM | {"model": "newcomer"})
    assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json"
    assert "POST /v1/models/newcomer/reload" in r.json()["detail"]  # what to do, not only why
    assert client.post("/v1/models/newcomer/reload", headers=auth).status_code == 200
    assert client.post("/v1/identify", json=SPECTRUM | {"model": "newcomer"}).status_code == 200


def test_startup_falls_back_when_the_active_version_is_broken(
    make_settings: Any, store: Path
) -> None:
    (store / MODEL / "ACTIVE").write_text("13\n")
    with TestClient(create_app(make_settings())) as c:
        assert serving_version(c) == "2"  # the highest version that loads


def test_default_version_is_the_highest_without_active_file(tmp_path: Path) -> None:
    for version in ("2", "10", "9"):
        write_version(tmp_path, MODEL, version)
    with TestClient(create_app(Settings(model_store=tmp_path, warmup_batches=0))) as c:
        assert serving_version(c) == "10"  # numeric order, not string order


def test_reference_spectrum_for_a_label_with_spaces_and_parentheses(client: TestClient) -> None:
    r = client.get(f"/v1/models/{MODEL}/references/Gypsum%20%28selenite%29")
    assert r.status_code == 200
    body = r.json()
    assert body["label"] == "Gypsum (selenite)"
    assert len(body["wavenumbers"]) == len(body["intensities"]) == GRID.points
    assert body["wavenumbers"][0] == GRID.start and body["wavenumbers"][-1] == GRID.stop
    peak_at = body["wavenumbers"][body["intensities"].index(max(body["intensities"]))]
    assert peak_at == 800.0
    r = client.get(
        f"/v1/models/{MODEL}/references/Gypsum%20%28selenite%29", params={"version": "1"}
    )
    assert r.json()["model"]["version"] == "1"


def test_unknown_reference_label_is_404(client: TestClient) -> None:
    r = client.get(f"/v1/models/{MODEL}/references/Unobtainium")
    assert r.status_code == 404 and r.json()["type"].endswith("label-not-found")


def test_reload_during_in_flight_requests_drops_nothing(make_settings: Any) -> None:
    """Requests held by version 2 finish on version 2 while version 1 is swapped in and serves.

    Version 2's worker is blocked (its session waits on an event), so the first wave is
    certainly in flight on it when the swap happens; the second wave is answered by version 1
    before the first is released. Every wait is bounded: a regression fails, it does not hang.
    """
    outcome = asyncio.run(asyncio.wait_for(_reload_under_load(make_settings()), 60))
    first_wave, second_wave, old_closed = outcome
    assert [r.status_code for r in first_wave + second_wave] == [200] * 24
    assert {r.json()["model"]["version"] for r in first_wave} == {"2"}
    assert {r.json()["model"]["version"] for r in second_wave} == {"1"}
    assert old_closed


async def _reload_under_load(settings: Settings) -> tuple[list[Any], list[Any], bool]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            old = app.state.manager.active[MODEL]
            release = _block(old.model.session)
            first = [_post(client, SPECTRUM) for _ in range(12)]
            while app.state.traffic.waiting < 12:  # all twelve are held by version 2
                await asyncio.sleep(0.001)
            headers = {"X-API-Key": settings.api_keys[0]}
            swap = await client.post(f"/v1/models/{MODEL}/versions/1/activate", headers=headers)
            assert swap.status_code == 200
            second_wave = list(await asyncio.gather(*(_post(client, SPECTRUM) for _ in range(12))))
            assert not any(t.done() for t in first)  # still blocked on version 2
            release.set()
            first_wave = list(await asyncio.gather(*first))
            return first_wave, second_wave, old.closed


def _post(client: httpx.AsyncClient, body: dict[str, Any]) -> asyncio.Task[httpx.Response]:
    return asyncio.create_task(client.post("/v1/identify", json=body))


def _block(session: Any) -> threading.Event:
    """Make `session.run` wait (in the worker thread) until the returned event is set."""
    release, real_run = threading.Event(), session.run

    def held_run(batch: Any) -> Any:
        release.wait(30)
        return real_run(batch)

    session.run = held_run
    return release
