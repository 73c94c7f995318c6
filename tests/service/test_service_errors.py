"""Malformed input, limits, auth and routing errors: each a problem+json with the right status."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from service_fixture_models import GRID, MODEL, spectrum_on_grid

from service.app import create_app

ON_GRID = spectrum_on_grid(0)


def assert_problem(response: Response, status: int, slug: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert {"type", "title", "status", "detail", "instance"} <= set(body)
    assert body["status"] == status
    assert body["instance"] == response.request.url.path
    if slug is not None:
        assert body["type"] == f"urn:raman:problem:{slug}"
    return body


def post_raw(client: TestClient, body: str | bytes, **headers: str) -> Response:
    headers = {"content-type": "application/json"} | headers
    return client.post("/v1/identify", content=body, headers=headers)


def grid_json(values: str) -> str:
    return '{"spectra": [{"intensities": [' + values + "]}]}"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_json_literals_are_422(client: TestClient, literal: str) -> None:
    values = ", ".join(["1.0"] * (GRID.points - 1) + [literal])
    body = assert_problem(post_raw(client, grid_json(values)), 422, "invalid-input")
    assert body["errors"], "the problem lists the offending fields"


def test_non_finite_wavenumbers_are_422(client: TestClient) -> None:
    x = ", ".join(["NaN"] + [str(float(i)) for i in range(1, 20)])
    y = ", ".join(["1.0"] * 20)
    body = f'{{"spectra": [{{"wavenumbers": [{x}], "intensities": [{y}]}}]}}'
    assert_problem(post_raw(client, body), 422)


@pytest.mark.parametrize("on_grid", [True, False])
def test_huge_finite_intensities_are_answered_not_500(client: TestClient, on_grid: bool) -> None:
    # finite, but max - min overflows float64: these came back as NaN and a 500
    y = [1e308 if i % 2 else -1e308 for i in range(GRID.points)]
    spectrum: dict[str, Any] = {"intensities": y}
    if not on_grid:
        spectrum["wavenumbers"] = [float(w) for w in GRID.axis]
    r = client.post("/v1/identify", json={"spectra": [spectrum]})
    assert r.status_code == 200, r.text
    probabilities = [p["probability"] for p in r.json()["results"][0]["predictions"]]
    assert all(0.0 <= p <= 1.0 for p in probabilities)


@pytest.mark.parametrize(
    "body",
    [
        '{"spectra": [',
        "not json at all",
        "",
        "[]",
        '{"spectra": []}',
        '{"spectra": [{"intensities": []}]}',
        '{"spectra": [{"wavenumbers": [], "intensities": [1, 2]}]}',
        '{"spectra": {"intensities": [1, 2]}}',
        '{"spectra": [{"intensities": ["1.0", "2.0"]}]}',
        '{"spectra": [{"intensities": [true, false]}]}',
        '{"spectra": [{"intensities": [[1, 2], [3, 4]]}]}',
        '{"spectra": [{"intensities": [1, 2]}], "top_k": "five"}',
        '{"spectra": [{"intensities": [1, 2]}], "top_k": 0}',
        '{"spectra": [{"intensity": [1, 2]}]}',
        '{"spectra": [{"intensities": [1, 2]}], "unexpected": 1}',
        '{"spectra": [{"id": 5, "intensities": [1, 2]}]}',
        # no coercion: these were taken as top_k 3 / 1 / 2 and the default model
        '{"spectra": [{"intensities": [1, 2]}], "top_k": "3"}',
        '{"spectra": [{"intensities": [1, 2]}], "top_k": true}',
        '{"spectra": [{"intensities": [1, 2]}], "top_k": 2.0}',
        '{"spectra": [{"intensities": [1, 2]}], "model": ""}',
        '{"spectra": [{"intensities": [1, 2]}], "include_spectrum": "yes"}',
    ],
)
def test_malformed_or_mistyped_bodies_are_422(client: TestClient, body: str) -> None:
    assert_problem(post_raw(client, body), 422, "invalid-input")


def test_ragged_arrays_are_422(client: TestClient) -> None:
    body = {"spectra": [{"id": "r", "wavenumbers": [1.0, 2.0, 3.0], "intensities": [1.0, 2.0]}]}
    problem = assert_problem(client.post("/v1/identify", json=body), 422)
    assert "3 wavenumbers but 2 intensities" in problem["detail"]


def test_wrong_on_grid_length_names_the_spectrum(client: TestClient) -> None:
    body = {"spectra": [{"id": "short-one", "intensities": [1.0] * 50}]}
    problem = assert_problem(client.post("/v1/identify", json=body), 422, "invalid-input")
    assert "short-one" in problem["detail"] and f"expected {GRID.points}" in problem["detail"]
    assert problem["spectrum"] == "short-one"


def test_non_monotonic_axis_is_422(client: TestClient) -> None:
    x = [300.0 + i for i in range(20)]
    x[10] = 100.0
    body = {"spectra": [{"wavenumbers": x, "intensities": [1.0] * 20}]}
    assert "not monotonic" in assert_problem(client.post("/v1/identify", json=body), 422)["detail"]


def test_axis_outside_the_grid_is_422(client: TestClient) -> None:
    body = {
        "spectra": [{"wavenumbers": [3000.0 + i for i in range(20)], "intensities": [1.0] * 20}]
    }
    assert (
        "does not overlap" in assert_problem(client.post("/v1/identify", json=body), 422)["detail"]
    )


def test_non_json_content_type_is_415(client: TestClient) -> None:
    r = post_raw(client, "spectra=1", **{"content-type": "application/x-www-form-urlencoded"})
    assert_problem(r, 415, "unsupported-media-type")


@pytest.fixture
def limited(make_settings: Any) -> Iterator[TestClient]:
    settings = make_settings(
        max_spectra_per_request=3,
        max_points_per_spectrum=200,
        max_top_k=3,
        max_body_bytes=64 * 1024,
    )
    with TestClient(create_app(settings)) as c:
        yield c


def test_too_many_spectra_is_413(limited: TestClient) -> None:
    body = {"spectra": [{"intensities": ON_GRID}] * 4}
    problem = assert_problem(limited.post("/v1/identify", json=body), 413, "limit-exceeded")
    assert "at most 3" in problem["detail"]


def test_too_many_points_is_413(limited: TestClient) -> None:
    x = [100.0 + i for i in range(201)]
    body = {"spectra": [{"wavenumbers": x, "intensities": [1.0] * 201}]}
    assert_problem(limited.post("/v1/identify", json=body), 413, "limit-exceeded")


def test_top_k_over_the_limit_is_422(limited: TestClient) -> None:
    body = {"spectra": [{"intensities": ON_GRID}], "top_k": 4}
    assert "top_k 4" in assert_problem(limited.post("/v1/identify", json=body), 422)["detail"]


def test_declared_oversize_body_is_413_before_reading(limited: TestClient) -> None:
    body = json.dumps({"spectra": [{"intensities": [1.0] * 20_000}]})
    assert len(body) > 64 * 1024
    assert_problem(post_raw(limited, body), 413, "payload-too-large")


def test_streamed_oversize_body_without_length_is_413(limited: TestClient) -> None:
    chunk = b"1.0, " * 4096  # 20 KB per chunk; no Content-Length: the middleware counts bytes

    def stream() -> Iterator[bytes]:
        yield b'{"spectra": [{"intensities": ['
        for _ in range(8):
            yield chunk
        yield b"1.0]}]}"

    r = limited.post("/v1/identify", content=stream(), headers={"content-type": "application/json"})
    assert "content-length" not in r.request.headers
    assert_problem(r, 413, "payload-too-large")


def test_streamed_oversize_multipart_is_413(limited: TestClient) -> None:
    big = b"100.0, 1.0\n" * 8000
    r = limited.post("/v1/identify/files", files={"files": ("big.csv", big, "text/csv")})
    assert_problem(r, 413, "payload-too-large")


def test_oversize_v2_body_carries_the_protocol_error_field(limited: TestClient) -> None:
    data = [0.0] * 20_000
    body = {"inputs": [{"name": "spectra", "shape": [1, 20_000], "datatype": "FP32", "data": data}]}
    problem = assert_problem(limited.post(f"/v2/models/{MODEL}/infer", json=body), 413)
    assert problem["error"] == problem["detail"]


def test_unknown_route_and_wrong_method(client: TestClient) -> None:
    assert_problem(client.get("/v1/nothing-here"), 404, "not-found")
    assert_problem(client.get("/v1/identify"), 405, "method-not-allowed")


@pytest.mark.parametrize(
    "path",
    [
        "/v1/models/%2e%2e",
        "/v1/models/%2e%2e/versions/1",
        f"/v1/models/{MODEL}/versions/%2e%2e",
        "/v1/models/..%2fmodels",
        "/v1/models/.hidden",
        f"/v1/models/{MODEL}/versions/..%5c..",
        "/v2/models/%2e%2e/versions/1",
        f"/v1/models/{'a' * 65}",
    ],
)
def test_path_traversal_is_refused(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"


def test_traversal_on_mutating_routes_is_refused(client: TestClient, auth: dict[str, str]) -> None:
    paths = [
        "/v1/models/%2e%2e/versions/1/activate",
        f"/v1/models/{MODEL}/versions/%2e%2e/activate",
        "/v1/models/%2e%2e/reload",
    ]
    for path in paths:
        assert client.post(path, headers=auth).status_code == 404


def test_symlink_out_of_the_store_is_not_served(
    client: TestClient, store: Any, tmp_path: Any
) -> None:
    outside = tmp_path / "outside"
    (outside / "1").mkdir(parents=True)
    (store / "escape").symlink_to(outside)
    assert "escape" not in [m["name"] for m in client.get("/v1/models").json()["models"]]
    assert client.get("/v1/models/escape").status_code == 404


def test_mutations_need_a_valid_api_key(client: TestClient) -> None:
    path = f"/v1/models/{MODEL}/versions/1/activate"
    for headers in (
        {},
        {"X-API-Key": "wrong"},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ):
        problem = assert_problem(client.post(path, headers=headers), 401, "unauthorized")
        assert problem["detail"]
        assert client.post(path, headers=headers).headers["www-authenticate"].startswith("Bearer")
    assert client.get(f"/v1/models/{MODEL}").json()["active_version"] == "2"


def test_bearer_token_is_accepted(client: TestClient) -> None:
    r = client.post(f"/v1/models/{MODEL}/reload", headers={"Authorization": "Bearer test-key-123"})
    assert r.status_code == 200


def test_no_configured_keys_disables_mutations(make_settings: Any) -> None:
    with TestClient(create_app(make_settings(api_keys=[]))) as c:
        r = c.post(f"/v1/models/{MODEL}/reload", headers={"X-API-Key": "anything"})
    assert "RAMAN_API_KEYS" in assert_problem(r, 403, "forbidden")["detail"]


def test_inference_failure_is_a_500_problem(client: TestClient, monkeypatch: Any) -> None:
    predictor = client.app.state.manager.active[MODEL]  # type: ignore[attr-defined]

    def broken(batch: Any) -> Any:
        raise RuntimeError("device lost")

    monkeypatch.setattr(predictor.model.session, "run", broken)
    body = {"spectra": [{"intensities": ON_GRID}] * 3}
    assert_problem(client.post("/v1/identify", json=body), 500, "inference-failed")
