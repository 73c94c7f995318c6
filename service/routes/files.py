"""Uploaded instrument files -> spectra -> answers, with an error result per unusable file.

The format is detected from content (`spectra.readers.detect.read_bytes`). A file that cannot be
used answers with a problem document in its result and the others are still answered; when no
file can be used the whole request is 422, naming every file and its reason.
"""

from __future__ import annotations

import asyncio
import logging
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
log = logging.getLogger(__name__)


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
    pre, parsed, found = predictor.model.preprocessor, [], 0
    for i, upload in enumerate(files):  # one at a time: the spectra limit stops the rest early
        parsed.append(await parse_upload(upload, i, pre, settings, found))
        found += len(parsed[-1].prepared)
    if all(p.error is not None for p in parsed):
        raise AllFilesFailed(
            f"none of the {len(parsed)} file(s) could be used: {', '.join(p.file for p in parsed)}",
            files=[_error_result(p) for p in parsed],
        )
    prepared = [prep for p in parsed for prep in p.prepared]
    answers = iter(await predictor.identify(prepared, top_k, include_spectrum))
    total_ms = (time.perf_counter() - started) * 1e3
    return [result for p in parsed for result in _results(p, answers, total_ms)]


class TooManySpectra(LimitExceeded):
    """The request's files hold more spectra than one request may: the whole request is 413."""


async def parse_upload(
    upload: UploadFile, index: int, pre: Preprocessor, settings: Settings, found: int = 0
) -> Parsed:
    """Read and prepare one file off the event loop (`found` spectra came in earlier files);
    map the file's failures to a problem in its result."""
    name = safe_name(upload.filename, index)
    data = await upload.read()
    limits = (settings.max_points_per_spectrum, settings.max_spectra_per_request - found)
    try:
        return await asyncio.to_thread(_read, data, name, pre, *limits)
    except TooManySpectra as exc:
        raise TooManySpectra(
            f"the files hold more than {settings.max_spectra_per_request} spectra ({exc.detail}); "
            f"at most {settings.max_spectra_per_request} per request"
        ) from None
    except UnsupportedFormatError as exc:
        return Parsed(name, error=UnsupportedMediaType(str(exc), file=name))
    except SpectrumError as exc:
        return Parsed(name, error=InvalidFile(str(exc), file=name))
    except LimitExceeded as exc:
        return Parsed(name, error=exc)
    except Exception:  # a reader bug on one file must not fail the others
        log.exception("reading upload %s failed", name)
        return Parsed(name, error=InvalidFile(f"{name}: the file could not be read", file=name))


def _read(data: bytes, name: str, pre: Preprocessor, max_points: int, max_spectra: int) -> Parsed:
    spectra = read_bytes(data, name)
    if len(spectra) > max_spectra:  # before preprocessing them all
        raise TooManySpectra(f"{name} holds {len(spectra)}")
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
