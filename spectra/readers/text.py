"""Helpers for text formats: decoding and numeric rows with line numbers."""

from __future__ import annotations

import re

from spectra.errors import ParseError

_SPLIT = re.compile(r"[,;\t ]+")


_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def decode(data: bytes, source: str) -> str:
    """Decode UTF-8 (with or without BOM) or UTF-16 with its BOM (Windows software writes it),
    falling back to Latin-1 for old instrument software."""
    if data[:2] in _UTF16_BOMS:
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            raise ParseError("a UTF-16 byte-order mark, then no UTF-16 text", source) from None
    if b"\x00" in data[:4096]:
        raise ParseError("binary content where text was expected", source)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def parse_pair(
    line: str,
    source: str,
    lineno: int,
    sep: re.Pattern[str] = _SPLIT,
    decimal_comma: bool = False,
) -> tuple[float, float]:
    """Parse one "x<sep>y" row into floats (with `decimal_comma`, "1234,5" is 1234.5), with an
    error naming the line otherwise."""
    fields = [f for f in sep.split(line.strip()) if f]
    if len(fields) < 2:
        raise ParseError(f"expected two numbers, found {line.strip()[:60]!r}", source, lineno)
    if decimal_comma:
        fields = [f.replace(",", ".") for f in fields[:2]]
    try:
        return float(fields[0]), float(fields[1])
    except ValueError:
        raise ParseError(f"not a number pair: {line.strip()[:60]!r}", source, lineno) from None
