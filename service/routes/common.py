"""HTTP plumbing shared by the routers: fast JSON bodies, JSON responses, OpenAPI problems.

JSON request bodies on the hot paths are parsed by pydantic's own JSON parser straight from bytes
(`model_validate_json`): about ten times faster than `json.loads` followed by validation for a
spectrum of a thousand floats, and it refuses `NaN`/`Infinity` literals. The body schema is still
published in OpenAPI (`json_body_openapi` + `add_schemas`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from service.errors import PROBLEM_MEDIA_TYPE, UnsupportedMediaType

M = TypeVar("M", bound=BaseModel)
REF = "#/components/schemas/{model}"


def json_body(model: type[M]) -> Callable[[Request], Coroutine[Any, Any, M]]:
    """A dependency that reads the body and validates it as `model` (422 on any error)."""

    async def parse(request: Request) -> M:
        content_type = request.headers.get("content-type", "application/json")
        media = content_type.split(";")[0].strip().lower()
        if media != "application/json" and not media.endswith("+json"):
            raise UnsupportedMediaType(f"send JSON (Content-Type: application/json), not {media}")
        try:
            return model.model_validate_json(await request.body())
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_input=False)
            raise RequestValidationError(
                [{**e, "loc": ("body", *e["loc"])} for e in errors]
            ) from None

    return parse


def json_body_openapi(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` declaring `model` as the required JSON request body."""
    schema = {"$ref": REF.format(model=model.__name__)}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def add_schemas(app: FastAPI, *models: type[BaseModel]) -> None:
    """Publish `models` under components/schemas, and document validation errors as problems.

    FastAPI documents a default 422 (`HTTPValidationError`, application/json) on every route with
    parameters; this service renders them as problem+json instead (400 under `/v2`).
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        spec = build()
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        for model in models:
            schema = model.model_json_schema(ref_template=REF)
            schemas.update(schema.pop("$defs", {}))
            schemas[model.__name__] = schema
        for path, item in spec.get("paths", {}).items():
            for operation in item.values():
                _problem_validation(path, operation.get("responses", {}))
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


def _problem_validation(path: str, responses: dict[str, Any]) -> None:
    default = responses.get("422", {}).get("content", {}).get("application/json", {})
    if "HTTPValidationError" not in str(default.get("schema", "")):
        return
    del responses["422"]
    status = "400" if path.startswith("/v2") else "422"
    responses.setdefault(status, problems(int(status))[int(status)])


def json_response(payload: Any, status_code: int = 200) -> Response:
    """Serialise plain dicts/lists of JSON types without per-field validation."""
    body = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
    return Response(body, status_code=status_code, media_type="application/json")


_TITLES = {
    400: "Malformed request",
    401: "Missing or invalid API key",
    403: "Operation disabled",
    404: "Unknown model, version, label or route",
    408: "Request body not received in time",
    409: "Model version refused or not loaded",
    413: "Request exceeds a size limit",
    415: "Unsupported content",
    422: "Invalid input",
    429: "Queue full; retry after the Retry-After delay",
    503: "Not ready",
    504: "Timed out",
}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the problem statuses a route can answer."""
    content = {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": REF.format(model="Problem")}}}
    return {s: {"description": _TITLES[s], "content": content} for s in statuses}
