"""Uploaded instrument files -> spectra -> answers, with an error result per unusable file.

The format is detected from content (`spectra.readers.detect.read_bytes`). A file that cannot be
used answers with a problem document in its result and the others are still answered; when no
file can be used the whole request is 422, naming every file and its reason.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from fastapi import UploadFile

from service.errors import (
    AllFilesFailed,
    InvalidFile,
    LimitExceeded,
    ProblemError,
    UnsupportedMediaType,
)
from service.predictor import Predictor
from service.settings import Settings
from spectra.errors import SpectrumError, UnsupportedFormatError
from spectra.preprocess import Prepared, Preprocessor
from spectra.readers.detect import read_bytes

INSTANCE = "/v1/identify/files"


@dataclass
class Parsed:
    """What one uploaded file yielded: prepared spectra with their ids, or an error."""

    file: str
    ids: list[str] = field(default_factory=list)
    prepared: list[Prepared] = field(default_factory=list)
    error: ProblemError | None = None


async def identify_uploads(
    files: list[UploadFile],
    predictor: Predictor,
    settings: Settings,
    top_k: int,
    started: float,
    include_spectrum: bool = False,
) -> list[dict[str, Any]]:
    """Results in upload order: one per spectrum found, or one `error` result per bad file."""
    pre = predictor.model.preprocessor
    parsed = [await parse_upload(f, i, pre, settings) for i, f in enumerate(files)]
    if all(p.error is not None for p in parsed):
        raise AllFilesFailed(
            f"none of the {len(parsed)} file(s) could be used: {', '.join(p.file for p in parsed)}",
            files=[_error_result(p) for p in parsed],
        )
    prepared = [prep for p in parsed for prep in p.prepared]
    if len(prepared) > settings.max_spectra_per_request:
        raise LimitExceeded(
            f"the files hold {len(prepared)} spectra; at most {settings.max_spectra_per_request}"
        )
    answers = iter(await predictor.identify(prepared, top_k, include_spectrum))
    total_ms = (time.perf_counter() - started) * 1e3
    return [result for p in parsed for result in _results(p, answers, total_ms)]


async def parse_upload(
    upload: UploadFile, index: int, pre: Preprocessor, settings: Settings
) -> Parsed:
    """Read and prepare one file off the event loop; map failures to a problem."""
    name = safe_name(upload.filename, index)
    data = await upload.read()
    try:
        return await asyncio.to_thread(_read, data, name, pre, settings.max_points_per_spectrum)
    except UnsupportedFormatError as exc:
        return Parsed(name, error=UnsupportedMediaType(str(exc), file=name))
    except SpectrumError as exc:
        return Parsed(name, error=InvalidFile(str(exc), file=name))
    except LimitExceeded as exc:
        return Parsed(name, error=exc)


def _read(data: bytes, name: str, pre: Preprocessor, max_points: int) -> Parsed:
    spectra = read_bytes(data, name)
    for spectrum in spectra:
        if len(spectrum) > max_points:
            raise LimitExceeded(f"{name}: {len(spectrum)} points; at most {max_points}", file=name)
    ids = [name] if len(spectra) == 1 else [f"{name}#{k + 1}" for k in range(len(spectra))]
    prepared = [
        pre.prepare(s.wavenumbers, s.intensities, i) for s, i in zip(spectra, ids, strict=True)
    ]
    return Parsed(name, ids, prepared)


def safe_name(filename: str | None, index: int) -> str:
    """The file's base name (clients may send paths), bounded; `file<index>` when absent."""
    if not filename:
        return f"file{index}"
    base = PureWindowsPath(PurePosixPath(filename).name).name
    return base[:200] or f"file{index}"


def _results(parsed: Parsed, answers: Any, total_ms: float) -> list[dict[str, Any]]:
    if parsed.error is not None:
        return [_error_result(parsed)]
    results = []
    for spectrum_id in parsed.ids:
        answer = next(answers)
        answer["timings"]["total_ms"] = total_ms
        results.append({"id": spectrum_id, "file": parsed.file, **answer})
    return results


def _error_result(parsed: Parsed) -> dict[str, Any]:
    assert parsed.error is not None
    return {"id": parsed.file, "file": parsed.file, "error": parsed.error.body(INSTANCE)}
