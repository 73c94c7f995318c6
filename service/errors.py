"""Every failure the service reports, as one exception class per kind, rendered once.

Each class carries its HTTP status, problem type and title; `install_handlers` renders them (and
FastAPI's validation errors and Starlette's 404/405) as `application/problem+json` (RFC 9457);
anything unexpected is rendered by `service.middleware.UnexpectedErrorMiddleware`. Under `/v2`
the body also carries `error`, the field the Open Inference Protocol's clients read.
"""

from __future__ import annotations

from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "urn:raman:problem:"
"""Problem types are URNs (RFC 9457 allows non-resolvable URIs); docs/service.md lists them."""


class ProblemError(Exception):
    """Base of every reported failure: status, problem type slug, title, detail, extensions."""

    status: ClassVar[int] = 500
    slug: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal server error"

    def __init__(
        self, detail: str, headers: dict[str, str] | None = None, **extensions: Any
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        self.extensions = extensions

    def body(self, instance: str) -> dict[str, Any]:
        """The RFC 9457 document for this failure."""
        return problem_body(self.status, self.slug, self.title, self.detail, instance) | (
            self.extensions
        )


class BadRequest(ProblemError):
    status, slug, title = 400, "bad-request", "Malformed request"


class Unauthorized(ProblemError):
    status, slug, title = 401, "unauthorized", "Missing or invalid API key"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="raman-service"'})


class Forbidden(ProblemError):
    status, slug, title = 403, "forbidden", "Operation disabled"


class NotFound(ProblemError):
    status, slug, title = 404, "not-found", "Not found"


class ModelNotFound(NotFound):
    slug, title = "model-not-found", "Unknown model or version"


class LabelNotFound(NotFound):
    slug, title = "label-not-found", "Unknown class label"


class MethodNotAllowed(ProblemError):
    status, slug, title = 405, "method-not-allowed", "Method not allowed"


class VersionNotLoaded(ProblemError):
    status, slug, title = 409, "version-not-loaded", "Model version not loaded"


class ModelInvalid(ProblemError):
    status, slug, title = 409, "model-invalid", "Model version refused"


class BodyTimeout(ProblemError):
    status, slug, title = 408, "body-timeout", "Request body not received in time"


class PayloadTooLarge(ProblemError):
    status, slug, title = 413, "payload-too-large", "Request too large"


class LimitExceeded(ProblemError):
    status, slug, title = 413, "limit-exceeded", "Request exceeds a configured limit"


class UnsupportedMediaType(ProblemError):
    status, slug, title = 415, "unsupported-media-type", "Unsupported content"


class InvalidInput(ProblemError):
    status, slug, title = 422, "invalid-input", "Invalid input"


class InvalidFile(ProblemError):
    status, slug, title = 422, "invalid-file", "Unreadable spectrum file"


class AllFilesFailed(ProblemError):
    status, slug, title = 422, "files-failed", "No uploaded file could be used"


class Overloaded(ProblemError):
    status, slug, title = 429, "overloaded", "Too many requests queued"

    def __init__(self, detail: str, retry_after_s: int = 1) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after_s)})


class NotReady(ProblemError):
    status, slug, title = 503, "not-ready", "Service not ready"


class Timeout(ProblemError):
    status, slug, title = 504, "timeout", "Request timed out"


class InferenceFailed(ProblemError):
    status, slug, title = 500, "inference-failed", "Inference failed"


class V2Error(BadRequest):
    slug, title = "inference-request-invalid", "Invalid inference request"


def problem_body(status: int, slug: str, title: str, detail: str, instance: str) -> dict[str, Any]:
    """An RFC 9457 problem document."""
    return {
        "type": PROBLEM_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
    }


def for_path(body: dict[str, Any], path: str) -> dict[str, Any]:
    """The problem document as answered on `path`: under `/v2` with the protocol's `error`."""
    return {"error": body["detail"], **body} if path.startswith("/v2") else body


def problem_response(
    request: Request, body: dict[str, Any], headers: dict[str, str] | None = None
) -> JSONResponse:
    """Render a problem document; `/v2` answers also carry the protocol's `error` field."""
    body = for_path(body, request.url.path)
    return JSONResponse(
        body, status_code=body["status"], headers=headers, media_type=PROBLEM_MEDIA_TYPE
    )


async def _on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    return problem_response(request, exc.body(request.url.path), exc.headers)


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [_describe(err) for err in exc.errors()]
    detail = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors[:5])
    if request.url.path.startswith("/v2"):
        error: ProblemError = V2Error(detail, errors=errors)
    else:
        error = InvalidInput(detail, errors=errors)
    return problem_response(request, error.body(request.url.path))


def _describe(err: Any) -> dict[str, Any]:
    # Never echo `input`: it may be megabytes of spectrum.
    loc = ".".join(str(part) for part in err.get("loc", ()))
    return {"loc": loc, "msg": str(err.get("msg", "")), "type": str(err.get("type", ""))}


HTTP_KINDS: dict[int, type[ProblemError]] = {
    400: BadRequest,
    404: NotFound,
    405: MethodNotAllowed,
    408: BodyTimeout,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
}
"""Starlette/FastAPI `HTTPException` statuses and the problem kind each is rendered as."""


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    path, detail = request.url.path, str(exc.detail)
    kind = HTTP_KINDS.get(exc.status_code)
    if kind is None:
        body = problem_body(exc.status_code, "http-error", "HTTP error", detail, path)
    else:
        body = kind(detail).body(path)
    return problem_response(request, body, dict(exc.headers or {}))


def install_handlers(app: FastAPI) -> None:
    """Register the single rendering path for every error (anything unexpected is rendered by
    `service.middleware.UnexpectedErrorMiddleware`)."""
    app.add_exception_handler(ProblemError, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
