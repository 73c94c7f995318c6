"""`POST /v1/identify` (JSON) and `POST /v1/identify/files` (multipart instrument files)."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Request, Response, UploadFile

from service.deps import ManagerDep, SettingsDep, StartedDep
from service.errors import InvalidInput, LimitExceeded, UnsupportedMediaType
from service.predictor import Predictor
from service.routes.common import json_body, json_body_openapi, json_response, problems
from service.routes.files import identify_uploads
from service.schemas import FilesResponse, IdentifyRequest, IdentifyResponse, SpectrumIn
from service.settings import Settings
from spectra.errors import SpectrumError
from spectra.preprocess import Prepared, Preprocessor

router = APIRouter(prefix="/v1", tags=["identify"])

IdentifyBody = Annotated[IdentifyRequest, Depends(json_body(IdentifyRequest))]
COMMON_PROBLEMS = problems(404, 408, 409, 413, 422, 429, 503, 504)
INLINE_POINTS = 16_384
"""Requests with more points than this are preprocessed off the event loop (about 1 ms)."""


@router.post(
    "/identify",
    summary="Identify spectra sent as JSON",
    response_model=IdentifyResponse,
    responses=problems(415) | COMMON_PROBLEMS,
    openapi_extra=json_body_openapi(IdentifyRequest),
)
async def identify(
    body: IdentifyBody, manager: ManagerDep, settings: SettingsDep, started: StartedDep
) -> Response:
    """Top-k labels, probabilities, library similarity and the no-match flag per spectrum."""
    check_limits(body, settings)
    async with manager.lease(body.model, body.version) as predictor:
        prepared = await prepare_all(predictor.model.preprocessor, body.spectra)
        answers = await predictor.identify(prepared, body.top_k, body.include_spectrum)
    total_ms = (time.perf_counter() - started) * 1e3
    results = [
        {"id": spectrum_id(s, i), **a}
        for i, (s, a) in enumerate(zip(body.spectra, answers, strict=True))
    ]
    for result in results:
        result["timings"]["total_ms"] = total_ms
    return json_response({"model": model_ref(predictor), "results": results})


async def require_multipart(request: Request) -> None:
    """415 unless the body is multipart/form-data (else FastAPI finds no `files` field: 422)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "multipart/form-data":
        raise UnsupportedMediaType(f"upload files as multipart/form-data, not {media or 'nothing'}")


@router.post(
    "/identify/files",
    summary="Identify spectra in uploaded instrument files",
    response_model=FilesResponse,
    responses=problems(400, 415) | COMMON_PROBLEMS,
    dependencies=[Depends(require_multipart)],
)
async def identify_files(
    files: Annotated[list[UploadFile], File(description="RRUFF txt, CSV/TXT, JCAMP-DX or SPC.")],
    manager: ManagerDep,
    settings: SettingsDep,
    started: StartedDep,
    top_k: Annotated[int, Form(ge=1)] = 5,
    model: Annotated[str | None, Form()] = None,
    version: Annotated[str | None, Form()] = None,
    include_spectrum: Annotated[bool, Form()] = False,
) -> Response:
    """One result per spectrum found; a file that cannot be used gets an `error` result."""
    if len(files) > settings.max_files_per_request:
        raise LimitExceeded(
            f"{len(files)} files; at most {settings.max_files_per_request} per request"
        )
    check_top_k(top_k, settings)
    async with manager.lease(model, version) as predictor:
        results = await identify_uploads(
            files, predictor, settings, top_k, started, include_spectrum
        )
    return json_response({"model": model_ref(predictor), "results": results})


def check_limits(body: IdentifyRequest, settings: Settings) -> None:
    """413 for too many spectra or points; 422 for a `top_k` over the limit."""
    if len(body.spectra) > settings.max_spectra_per_request:
        raise LimitExceeded(
            f"{len(body.spectra)} spectra; at most {settings.max_spectra_per_request} per request"
        )
    for i, spectrum in enumerate(body.spectra):
        if len(spectrum.intensities) > settings.max_points_per_spectrum:
            raise LimitExceeded(
                f"spectrum {spectrum_id(spectrum, i)!r} has {len(spectrum.intensities)} points; "
                f"at most {settings.max_points_per_spectrum}"
            )
    check_top_k(body.top_k, settings)


def check_top_k(top_k: int, settings: Settings) -> None:
    """422 when `top_k` exceeds the configured maximum."""
    if top_k > settings.max_top_k:
        raise InvalidInput(f"top_k {top_k} exceeds the limit of {settings.max_top_k}")


async def prepare_all(pre: Preprocessor, spectra: list[SpectrumIn]) -> list[Prepared]:
    """Prepare every spectrum; big requests in a thread so the event loop keeps serving."""
    work = [(pre, s, i) for i, s in enumerate(spectra)]
    if sum(len(s.intensities) for s in spectra) <= INLINE_POINTS:
        return [prepare(*args) for args in work]
    return await asyncio.to_thread(lambda: [prepare(*args) for args in work])


def prepare(pre: Preprocessor, spectrum: SpectrumIn, index: int) -> Prepared:
    """Model input for one JSON spectrum (on the grid, or resampled from its own axis)."""
    source = spectrum_id(spectrum, index)
    try:
        if spectrum.wavenumbers is None:
            return pre.prepare_on_grid(spectrum.intensities, source)
        return pre.prepare(spectrum.wavenumbers, spectrum.intensities, source)
    except SpectrumError as exc:
        raise InvalidInput(str(exc), spectrum=source) from None


def spectrum_id(spectrum: SpectrumIn, index: int) -> str:
    """The client's id, or the spectrum's position in the request."""
    return spectrum.id if spectrum.id is not None else str(index)


def model_ref(predictor: Predictor) -> dict[str, Any]:
    """The `model` object of an answer."""
    return {"name": predictor.name, "version": predictor.version, "provider": predictor.provider}
