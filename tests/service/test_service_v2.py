"""Open Inference Protocol v2: health, metadata, inference, and the protocol's error form."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from service_fixture_models import CLASSES, GRID, MODEL, spectrum_on_grid

L = GRID.points
INFER = f"/v2/models/{MODEL}/infer"


def tensor(rows: list[list[float]], shape: list[int] | None = None, **over: Any) -> dict[str, Any]:
    flat = [v for row in rows for v in row]
    t = {"name": "spectra", "shape": shape or [len(rows), 1, L], "datatype": "FP32", "data": flat}
    return t | over


def normalised(cls: int) -> list[float]:
    y = np.asarray(spectrum_on_grid(cls))
    return list((y - y.min()) / (y.max() - y.min()))


def assert_v2_error(response: Any, status: int = 400) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["error"] == body["detail"] and body["status"] == status
    message: str = body["error"]
    return message


def test_server_metadata_live_ready(client: TestClient) -> None:
    meta = client.get("/v2").json()
    assert meta["name"] == "raman-service" and meta["extensions"] == []
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}


def test_model_metadata(client: TestClient) -> None:
    meta = client.get(f"/v2/models/{MODEL}").json()
    assert meta["name"] == MODEL and meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "spectra", "datatype": "FP32", "shape": [-1, 1, L]}]
    assert meta["outputs"][0] == {"name": "logits", "datatype": "FP32", "shape": [-1, len(CLASSES)]}
    assert "1" in meta["versions"] and "2" in meta["versions"]


def test_version_metadata_reads_the_card_without_loading(client: TestClient) -> None:
    meta = client.get(f"/v2/models/{MODEL}/versions/1").json()
    assert meta["inputs"][0]["shape"] == [-1, 1, L]
    assert client.get(f"/v2/models/{MODEL}/versions/1/ready").status_code == 400
    assert client.get(f"/v2/models/{MODEL}/versions/99").status_code == 404


def test_model_and_version_ready(client: TestClient) -> None:
    assert client.get(f"/v2/models/{MODEL}/ready").json() == {"name": MODEL, "ready": True}
    assert client.get(f"/v2/models/{MODEL}/versions/2/ready").status_code == 200
    assert client.get("/v2/models/nope/ready").status_code == 404


def test_infer_returns_logits_and_probabilities(client: TestClient) -> None:
    rows = [normalised(c) for c in range(len(CLASSES))]
    r = client.post(INFER, json={"id": "req-7", "inputs": [tensor(rows)]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["model_name"], body["model_version"], body["id"]) == (MODEL, "2", "req-7")
    outputs = {o["name"]: o for o in body["outputs"]}
    assert set(outputs) == {"logits", "probabilities"}
    for out in outputs.values():
        assert out["datatype"] == "FP32" and out["shape"] == [4, len(CLASSES)]
        assert len(out["data"]) == 4 * len(CLASSES)
    logits = np.asarray(outputs["logits"]["data"]).reshape(4, -1)
    probs = np.asarray(outputs["probabilities"]["data"]).reshape(4, -1)
    assert list(logits.argmax(axis=1)) == [0, 1, 2, 3]
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_infer_accepts_two_dimensional_and_nested_tensors(client: TestClient) -> None:
    rows = [normalised(2)]
    flat_2d = client.post(INFER, json={"inputs": [tensor(rows, shape=[1, L])]})
    nested = client.post(INFER, json={"inputs": [tensor(rows) | {"data": [[rows[0]]]}]})
    for r in (flat_2d, nested):
        assert r.status_code == 200, r.text
        assert np.argmax(r.json()["outputs"][0]["data"]) == 2
    assert "id" not in flat_2d.json()


def test_requested_outputs_only(client: TestClient) -> None:
    r = client.post(
        INFER, json={"inputs": [tensor([normalised(0)])], "outputs": [{"name": "logits"}]}
    )
    assert [o["name"] for o in r.json()["outputs"]] == ["logits"]


def test_versioned_infer_uses_that_version(client: TestClient) -> None:
    r = client.post(
        f"/v2/models/{MODEL}/versions/1/infer", json={"inputs": [tensor([normalised(0)])]}
    )
    assert r.status_code == 200 and r.json()["model_version"] == "1"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"inputs": [tensor([[0.0] * L], shape=[2, 1, L])]}, "needs"),
        ({"inputs": [tensor([[0.0] * L], datatype="INT32")]}, "FP32"),
        ({"inputs": [tensor([[0.0] * L], name="x")]}, "named 'spectra'"),
        ({"inputs": [tensor([[0.0] * L]), tensor([[0.0] * L])]}, "exactly one input"),
        ({"inputs": [tensor([[0.0] * 90], shape=[1, 1, 90])]}, "input shape must be"),
        ({"inputs": [tensor([], shape=[0, 1, L])]}, "holds no spectra"),
        ({"inputs": [tensor([[0.0] * L], shape=[-1, 1, L])]}, "holds no spectra"),
        ({"inputs": [tensor([[0.0] * L]) | {"data": [[0.0] * L, [0.0]]}]}, "ragged"),
        ({"inputs": [tensor([[0.0] * L]) | {"data": [[[1e39] * L]]}]}, "overflow"),
        # finite FP32, but the network's output overflows (a 500 before)
        ({"inputs": [tensor([[3e38] * L])]}, "not finite"),
        ({"inputs": [tensor([[0.0] * L])], "outputs": [{"name": "embeddings"}]}, "unknown output"),
        ({"inputs": []}, "inputs"),
        ({"inputs": [tensor([[0.0] * L]) | {"data": ["a"] * L}]}, "data"),
    ],
)
def test_invalid_inference_requests_are_400(
    client: TestClient, body: dict[str, Any], fragment: str
) -> None:
    assert fragment in assert_v2_error(client.post(INFER, json=body))


def test_nan_literal_in_v2_data_is_400(client: TestClient) -> None:
    data = ", ".join(["0.0"] * (L - 1) + ["NaN"])
    raw = '{"inputs": [{"name": "spectra", "shape": [1, 1, %d], "datatype": "FP32", "data": [%s]}]}'
    r = client.post(INFER, content=raw % (L, data), headers={"content-type": "application/json"})
    assert_v2_error(r)


def test_malformed_json_is_400(client: TestClient) -> None:
    r = client.post(INFER, content=b'{"inputs": [', headers={"content-type": "application/json"})
    assert_v2_error(r)


def test_too_many_rows_is_413(make_settings: Any) -> None:
    from service.app import create_app

    with TestClient(create_app(make_settings(max_spectra_per_request=2))) as c:
        r = c.post(INFER, json={"inputs": [tensor([[0.0] * L] * 3)]})
    assert "at most 2" in assert_v2_error(r, 413)


def test_unknown_model_is_404_with_error_field(client: TestClient) -> None:
    r = client.post("/v2/models/nope/infer", json={"inputs": [tensor([normalised(0)])]})
    assert "not in the model store" in assert_v2_error(r, 404)
