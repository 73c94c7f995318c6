"""Helpers for text formats: decoding and numeric rows with line numbers."""

from __future__ import annotations

import re

from spectra.errors import ParseError

_SPLIT = re.compile(r"[,;\t ]+")


_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_SNIFF_BYTES = 4096
_UTF16_NUL_SHARE = 0.9  # of the high bytes; the rest are non-Latin-1 characters such as "⁻¹"


def decode(data: bytes, source: str) -> str:
    """Decode UTF-8 (with or without BOM), UTF-16 with its BOM (Windows software writes it) or
    without it (recognised by its NUL high bytes), falling back to Latin-1 for old instrument
    software."""
    codec = "utf-16" if data[:2] in _UTF16_BOMS else utf16_without_bom(data)
    if codec:
        try:
            return data.decode(codec)
        except UnicodeDecodeError:
            raise ParseError(
                f"{codec.upper()} text expected, and it does not decode", source
            ) from None
    if b"\x00" in data[:_SNIFF_BYTES]:
        raise ParseError("binary content where text was expected", source)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def utf16_without_bom(data: bytes) -> str | None:
    """The codec ("utf-16-le" or "utf-16-be") of text written as UTF-16 without its byte-order
    mark, else None. Such text (digits, separators, ASCII headers) has a NUL high byte in almost
    every code unit and never a NUL low byte; binary data has NULs at both positions."""
    head = data[:_SNIFF_BYTES]
    if len(head) < 2 or len(head) % 2:
        return None
    even, odd = head[0::2], head[1::2]
    for codec, high, low in (("utf-16-le", odd, even), ("utf-16-be", even, odd)):
        if 0 not in low and high.count(0) >= _UTF16_NUL_SHARE * len(high):
            return codec
    return None


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
