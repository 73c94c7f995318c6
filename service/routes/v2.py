"""Open Inference Protocol v2 (KServe / Triton REST): health, metadata and inference.

Inference takes model input as the graph wants it (`spectra`, FP32, shape `[N, 1, L]`, or
`[N, L]`; data flat in row-major order or nested) and returns `logits` and `probabilities`
(the card's probabilities, as /v1/identify computes them), FP32, flat. Errors are problem+json
documents that also carry the protocol's `error` field; malformed inference requests are 400 as
the protocol asks. Health answers 200 when true and 400 when false (protocol: 4xx means false).
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Response

from service import __version__
from service.catalog import loaded_version, read_card
from service.deps import ManagerDep, SettingsDep
from service.errors import LimitExceeded, ModelInvalid, NotReady, V2Error
from service.manager import ModelManager
from service.model import LoadedModel
from service.registry import check_name
from service.routes.common import json_body, json_body_openapi, json_response, problems
from service.schemas import (
    V2InferRequest,
    V2InferResponse,
    V2Live,
    V2ModelMetadata,
    V2ModelReady,
    V2Ready,
    V2ServerMetadata,
)
from spectra.card import CardError

router = APIRouter(prefix="/v2", tags=["open inference protocol v2"])
InferBody = Annotated[V2InferRequest, Depends(json_body(V2InferRequest))]
PROBABILITIES = "probabilities"
INFER: dict[str, Any] = {
    "response_model": V2InferResponse,
    "responses": problems(400, 404, 408, 409, 413, 415, 429, 503, 504),
    "openapi_extra": json_body_openapi(V2InferRequest),
}


class V2NotReady(V2Error):
    slug, title = "not-ready", "Not ready"


@router.get("", summary="Server metadata", response_model=V2ServerMetadata)
async def server_metadata() -> dict[str, Any]:
    return {"name": "raman-service", "version": __version__, "extensions": []}


@router.get("/health/live", summary="Server live", response_model=V2Live)
async def live() -> dict[str, Any]:
    return {"live": True}


@router.get(
    "/health/ready", summary="Server ready", response_model=V2Ready, responses=problems(400)
)
async def ready(manager: ManagerDep) -> dict[str, Any]:
    if not manager.ready:
        raise V2NotReady("no model is loaded yet (or the model store is missing or empty)")
    return {"ready": True}


@router.get(
    "/models/{name}",
    summary="Model metadata",
    response_model=V2ModelMetadata,
    responses=problems(404, 503),
)
async def model_metadata(name: str, manager: ManagerDep) -> dict[str, Any]:
    return metadata(manager, name, manager.get_active(name).version)


@router.get(
    "/models/{name}/versions/{version}",
    summary="Model version metadata",
    response_model=V2ModelMetadata,
    responses=problems(404, 409),
)
async def version_metadata(name: str, version: str, manager: ManagerDep) -> dict[str, Any]:
    return metadata(manager, name, version)


@router.get(
    "/models/{name}/ready",
    summary="Model ready",
    response_model=V2ModelReady,
    responses=problems(400, 404),
)
async def model_ready(name: str, manager: ManagerDep) -> dict[str, Any]:
    try:
        manager.get_active(name)
    except NotReady as exc:
        raise V2NotReady(exc.detail) from None
    return {"name": name, "ready": True}


@router.get(
    "/models/{name}/versions/{version}/ready",
    summary="Model version ready",
    response_model=V2ModelReady,
    responses=problems(400, 404),
)
async def version_ready(name: str, version: str, manager: ManagerDep) -> dict[str, Any]:
    manager.store.version_dir(check_name(name), check_name(version, "version"))
    if loaded_version(manager, name, version) is None:
        raise V2NotReady(f"version {version} of {name!r} is not loaded")
    return {"name": name, "ready": True}


@router.post("/models/{name}/infer", summary="Inference", **INFER)
async def infer(name: str, body: InferBody, manager: ManagerDep, settings: SettingsDep) -> Response:
    return await run_inference(manager, name, None, body, settings.max_spectra_per_request)


@router.post("/models/{name}/versions/{version}/infer", summary="Inference (version)", **INFER)
async def infer_version(
    name: str, version: str, body: InferBody, manager: ManagerDep, settings: SettingsDep
) -> Response:
    return await run_inference(manager, name, version, body, settings.max_spectra_per_request)


def metadata(manager: ModelManager, name: str, version: str) -> dict[str, Any]:
    """The protocol's model metadata, from the version's card."""
    manager.store.version_dir(check_name(name), check_name(version, "version"))
    try:
        card = read_card(manager, name, version)
    except CardError as exc:
        raise ModelInvalid(f"version {version} of {name!r} has an unreadable card: {exc}") from None
    points, classes = card.grid.points, len(card.classes)
    return {
        "name": name,
        "versions": manager.store.versions(name),
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": card.input_name, "datatype": "FP32", "shape": [-1, 1, points]}],
        "outputs": [
            {"name": card.output_name, "datatype": "FP32", "shape": [-1, classes]},
            {"name": PROBABILITIES, "datatype": "FP32", "shape": [-1, classes]},
        ],
    }


async def run_inference(
    manager: ModelManager, name: str, version: str | None, body: V2InferRequest, max_rows: int
) -> Response:
    """Validate the tensor, batch it with other requests, answer the requested outputs."""
    async with manager.lease(check_name(name), version) as predictor:
        wanted = requested_outputs(body, predictor.model)
        rows = input_rows(body, predictor.model, max_rows)
        done = await predictor.score(rows)
    logits = finite(np.stack([d.value.logits for d in done]).astype(np.float32))
    tensors = {predictor.model.card.output_name: logits}
    if PROBABILITIES in wanted:  # the same probabilities /v1/identify ranks by
        probs = np.stack([d.value.probabilities for d in done])
        tensors[PROBABILITIES] = finite(probs.astype(np.float32))
    outputs = [_tensor(n, tensors[n]) for n in wanted]
    answer = {"model_name": name, "model_version": predictor.version, "outputs": outputs}
    return json_response(answer | ({"id": body.id} if body.id is not None else {}))


def finite(values: np.ndarray) -> np.ndarray:
    """`values`, or a 400 when finite FP32 input far outside the model's [0, 1] range has
    overflowed the network (its JSON answer cannot hold the result)."""
    if not np.isfinite(values).all():
        raise V2Error(
            "the model's output is not finite for this input: send spectra min-max normalised "
            "to [0, 1] as the model expects (or use /v1/identify, which normalises them)"
        )
    return values


def requested_outputs(body: V2InferRequest, model: LoadedModel) -> list[str]:
    """Names of the outputs to return (all of them when the request names none)."""
    known = [model.card.output_name, PROBABILITIES]
    if not body.outputs:
        return known
    names = [o.name for o in body.outputs]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise V2Error(f"unknown output(s) {unknown}; this model has {known}")
    return list(dict.fromkeys(names))


def input_rows(body: V2InferRequest, model: LoadedModel, max_rows: int) -> np.ndarray:
    """The request's single input tensor as float32 rows `[N, L]`, after every protocol check."""
    if len(body.inputs) != 1 or body.inputs[0].name != model.card.input_name:
        raise V2Error(f"expected exactly one input named {model.card.input_name!r}")
    tensor, points = body.inputs[0], model.length
    if tensor.datatype != "FP32":
        raise V2Error(f"input datatype must be FP32, got {tensor.datatype!r}")
    if tensor.shape not in ([tensor.shape[0], 1, points], [tensor.shape[0], points]):
        raise V2Error(f"input shape must be [N, 1, {points}] or [N, {points}], got {tensor.shape}")
    rows = tensor.shape[0]
    if rows < 1:
        raise V2Error(f"input shape {tensor.shape} holds no spectra")
    if rows > max_rows:
        raise LimitExceeded(f"{rows} spectra; at most {max_rows} per request")
    return _as_rows(tensor.data, tensor.shape, rows, points)


def _as_rows(data: list[Any], shape: list[int], rows: int, points: int) -> np.ndarray:
    try:
        with np.errstate(over="ignore"):  # overflow is reported below, as a client error
            values = np.asarray(data, dtype=np.float32)
    except ValueError:
        raise V2Error("nested input data is ragged") from None
    if values.size != math.prod(shape):
        raise V2Error(f"shape {shape} needs {math.prod(shape)} values; data holds {values.size}")
    if values.ndim > 1 and list(values.shape) != shape:
        raise V2Error(f"nested data has shape {list(values.shape)}, the input says {shape}")
    if not np.isfinite(values).all():
        raise V2Error("input data holds values that overflow FP32")
    return values.reshape(rows, points)


def _tensor(name: str, values: np.ndarray) -> dict[str, Any]:
    return {
        "name": name,
        "datatype": "FP32",
        "shape": list(values.shape),
        "data": values.ravel().tolist(),
    }
