"""Helpers for text formats: decoding and numeric rows with line numbers."""

from __future__ import annotations

import re

from spectra.errors import ParseError

_SPLIT = re.compile(r"[,;\t ]+")


def decode(data: bytes, source: str) -> str:
    """Decode UTF-8 (with or without BOM), falling back to Latin-1 for old instrument software."""
    if b"\x00" in data[:4096]:
        raise ParseError("binary content where text was expected", source)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def parse_pair(
    line: str, source: str, lineno: int, sep: re.Pattern[str] = _SPLIT
) -> tuple[float, float]:
    """Parse one "x<sep>y" row into floats, with an error naming the line otherwise."""
    fields = [f for f in sep.split(line.strip()) if f]
    if len(fields) < 2:
        raise ParseError(f"expected two numbers, found {line.strip()[:60]!r}", source, lineno)
    try:
        return float(fields[0]), float(fields[1])
    except ValueError:
        raise ParseError(f"not a number pair: {line.strip()[:60]!r}", source, lineno) from None
