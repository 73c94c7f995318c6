"""Plain two-column CSV/TXT: wavenumber and intensity per row.

Detection rules: lines starting with `#`, `%`, `;` or `//` are comments; leading lines that do not
parse as two numbers are a header (at most `MAX_HEADER_LINES` of them); the delimiter is the first
of tab, comma, semicolon, whitespace that splits the first data row into two or more numbers;
failing all four, the first of tab, semicolon, whitespace that does so with decimal commas
(`1234,5;0,87`, as spreadsheets in much of Europe write numbers). When a file has more than two
columns the first two are used.
"""

from __future__ import annotations

import re

import numpy as np

from spectra.errors import ParseError
from spectra.readers.text import decode, parse_pair
from spectra.types import Spectrum

MAX_HEADER_LINES = 20
COMMENT_PREFIXES = ("#", "%", ";", "//")
_DELIMITERS = [re.compile(p) for p in (r"\t", r"\s*,\s*", r"\s*;\s*", r"\s+")]
_COMMA_DECIMAL_DELIMITERS = [_DELIMITERS[0], _DELIMITERS[2], _DELIMITERS[3]]
Layout = tuple[re.Pattern[str], bool]
"""A data row's delimiter, and whether its numbers use a decimal comma."""


def parse_columns(data: bytes | str, source: str = "<columns>") -> Spectrum:
    """Parse a two-column text file into a spectrum (no label)."""
    text = decode(data, source) if isinstance(data, bytes) else data
    lines = [(n, ln.strip()) for n, ln in enumerate(text.splitlines(), start=1)]
    lines = [(n, ln) for n, ln in lines if ln and not ln.startswith(COMMENT_PREFIXES)]
    if not lines:
        raise ParseError("no data rows (the file is empty or only comments)", source)
    start, (sep, comma) = _find_data_start(lines, source)
    rows = [parse_pair(ln, source, n, sep, comma) for n, ln in lines[start:]]
    arr = np.asarray(rows, dtype=np.float64)
    header = {"HEADER": lines[start - 1][1]} if start else {}
    return Spectrum(arr[:, 0], arr[:, 1], source, None, header)


def looks_like_columns(text: str) -> bool:
    """True when some early non-comment line parses as at least two numbers."""
    lines = [ln.strip() for ln in text.splitlines()[: MAX_HEADER_LINES + 5]]
    lines = [ln for ln in lines if ln and not ln.startswith(COMMENT_PREFIXES)]
    return any(_delimiter_for(ln) is not None for ln in lines)


def _find_data_start(lines: list[tuple[int, str]], source: str) -> tuple[int, Layout]:
    for i, (_, line) in enumerate(lines[: MAX_HEADER_LINES + 1]):
        layout = _delimiter_for(line)
        if layout is not None:
            return i, layout
    n = lines[min(len(lines), MAX_HEADER_LINES + 1) - 1][0]
    raise ParseError(
        "no line of two numbers among the first lines: not a two-column spectrum", source, n
    )


def _delimiter_for(line: str) -> Layout | None:
    for comma, delimiters in ((False, _DELIMITERS), (True, _COMMA_DECIMAL_DELIMITERS)):
        for sep in delimiters:
            fields = [f.replace(",", ".") if comma else f for f in sep.split(line) if f]
            if len(fields) >= 2 and all(_is_number(f) for f in fields[:2]):
                return sep, comma
    return None


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True
