"""Format detection from content (the file name's extension is only a tie-breaker).

Order: Thermo/Galactic SPC (binary header), JCAMP-DX (`##TITLE=`/`##JCAMP-DX=`), RRUFF
(`##NAMES=`), then plain two-column text. Anything else is `UnsupportedFormatError`.
"""

from __future__ import annotations

from pathlib import Path

from spectra.errors import ParseError, UnsupportedFormatError
from spectra.readers.columns import looks_like_columns, parse_columns
from spectra.readers.jcamp import looks_like_jcamp, parse_jcamp
from spectra.readers.rruff import looks_like_rruff, parse_rruff
from spectra.readers.spc import looks_like_spc, parse_spc
from spectra.readers.text import decode
from spectra.types import Spectrum

MAX_FILE_BYTES = 50 * 1024 * 1024
"""Larger files are refused before parsing: no Raman spectrum needs this much."""


def detect_format(data: bytes, source: str = "<file>") -> str:
    """Name the format of `data`: "spc", "jcamp", "rruff" or "columns"."""
    if looks_like_spc(data):
        return "spc"
    if not data.strip():
        raise ParseError("the file is empty", source)
    try:
        text = decode(data[:65536], source)
    except ParseError:
        raise UnsupportedFormatError(
            "binary content that is not a Thermo/Galactic SPC file", source
        ) from None
    if looks_like_jcamp(text):
        return "jcamp"
    if looks_like_rruff(text):
        return "rruff"
    if looks_like_columns(text):
        return "columns"
    raise UnsupportedFormatError(
        "not a recognised spectrum format (RRUFF txt, two-column CSV/TXT, JCAMP-DX, SPC)", source
    )


def read_bytes(data: bytes, source: str = "<file>") -> list[Spectrum]:
    """Parse the spectra held in one file's bytes (SPC and JCAMP may hold several)."""
    if len(data) > MAX_FILE_BYTES:
        raise ParseError(f"file of {len(data)} bytes exceeds {MAX_FILE_BYTES}", source)
    fmt = detect_format(data, source)
    if fmt == "spc":
        return parse_spc(data, source)
    if fmt == "jcamp":
        return parse_jcamp(data, source)
    if fmt == "rruff":
        return [parse_rruff(data, source)]
    return [parse_columns(data, source)]


def read_path(path: str | Path) -> list[Spectrum]:
    """Read a spectrum file from disk; see `read_bytes`."""
    p = Path(path)
    return read_bytes(p.read_bytes(), p.name)
