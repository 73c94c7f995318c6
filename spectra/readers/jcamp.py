"""JCAMP-DX (4.24 / 5.x) reader on top of the maintained `jcamp` package (1.3.x).

`jcamp.read` decodes AFFN, SQZ/DIF (ASDF) and (XY..XY) tables and applies XFACTOR/YFACTOR, but
it trusts its input: failed X/Y checks and length mismatches are only printed, NPOINTS values
are allocated without a bound, non-numeric XYPOINTS rows are skipped silently, DUP counts are
read by their first digit only (and crash after a SQZ value), and errors are bare exceptions
without a line. So this module scans the text first -- splitting LINK files into their data
blocks, dropping `$$` comments, normalising label names (spaces, `-`, `_`, `/` removed, upper
case: `##DATA TYPE=` is `meta["DATATYPE"]`), bounding NPOINTS, checking rows, expanding DUP --
then feeds each block to `jcamp.read` line by line, so failures carry their line number.

X units: 1/CM is kept as Raman shift; NANOMETERS or MICROMETERS are converted with the laser
wavelength from a label such as `##$LASER WAVELENGTH=785` (or Bruker's `##$LWN=` laser
wavenumber) and refused without one. A missing ##XUNITS= is taken as cm-1.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import jcamp
import numpy as np

from spectra.errors import ParseError
from spectra.readers.text import decode
from spectra.types import Spectrum

MAX_POINTS = 1_000_000
"""Largest NPOINTS accepted: far above any Raman spectrum, far below a memory problem."""
MAX_BLOCKS = 1000
_MAX_VALUE = 4000  # characters kept per meta value (multi-line comments can be long)
_LOCK = threading.Lock()  # jcamp.print is patched while a block is decoded
_LABEL = re.compile(r"##([^=]*)=(.*)")
_TOKEN = re.compile(r"[@A-Ia-i%J-Rj-rS-Zs+\-]?[0-9.]*")
_DUP = {c: str(i) for i, c in enumerate("STUVWXYZs", start=1)}
_NUMBER_UNIT = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([^\s(]*)")
_FORMS = {"XYDATA": ("(X++(Y..Y))", "(XY..XY)"), "XYPOINTS": ("(XY..XY)",)}


def looks_like_jcamp(text: str) -> bool:
    """True when the first non-blank line is `##TITLE=` or a `##JCAMP-DX=` label is near the top."""
    lines = text[:8192].lstrip().splitlines()[:40]
    if lines and re.match(r"##\s*TITLE\s*=", lines[0], re.IGNORECASE):
        return True
    return any(re.match(r"\s*##\s*JCAMP[-_ ]?DX\s*=", ln, re.IGNORECASE) for ln in lines)


def parse_jcamp(data: bytes, source: str) -> list[Spectrum]:
    """Parse every spectrum of a JCAMP-DX file (one per data block; LINK files hold several)."""
    blocks = _blocks(decode(data, source), source)
    if not blocks:
        raise ParseError("no JCAMP-DX data block (##TITLE= ... ##END=) found", source)
    if len(blocks) > MAX_BLOCKS:
        raise ParseError(f"{len(blocks)} data blocks; at most {MAX_BLOCKS} are read", source)
    many = len(blocks) > 1
    return [
        _spectrum(b, f"{source}#{i}" if many else source, source) for i, b in enumerate(blocks, 1)
    ]


@dataclass
class _Block:
    lineno: int  # line of the block's ##TITLE=
    meta: dict[str, str]  # its labels, after those inherited from enclosing LINK blocks
    rows: list[tuple[int, str]] = field(default_factory=list)  # what jcamp.read is fed
    size: int = 0  # characters of table rows, bounded against DUP expansion bombs
    table: str | None = None  # the data-table label whose rows are being read
    nested: bool = False  # a LINK container: its children are the spectra


def _blocks(text: str, source: str) -> list[_Block]:
    """Split the file into data blocks, checking labels and table rows on the way."""
    stack = [_Block(1, {}, nested=False)]  # labels before the first ##TITLE= are inherited
    leaves: list[_Block] = []
    key = ""
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("$$", 1)[0].strip()  # `$$` starts a comment, anywhere on a line
        if not line:
            continue
        block = stack[-1]
        if line.startswith("##"):
            match = _LABEL.fullmatch(line)
            if match is None:
                raise ParseError(f"label without '=': {line[:60]!r}", source, n)
            key, value = re.sub(r"[\s\-_/]", "", match[1]).upper(), match[2].strip()
            if key == "TITLE":
                if any(k in block.meta for k in _FORMS):  # a LINK container holds no table
                    raise ParseError("##TITLE= inside a data block: ##END= missing", source, n)
                block.nested = True
                block = _Block(n, dict(block.meta))
                stack.append(block)
            elif key == "END":
                if len(stack) > 1 and not stack.pop().nested:
                    leaves.append(block)
                key = ""
                continue
            elif block.table:  # jcamp would read the table's rows as this label's value
                raise ParseError(
                    f"##{match[1].strip()}= after the data table; labels must come before "
                    "##XYDATA= / ##XYPOINTS=",
                    source,
                    n,
                )
            block.table = _check_label(key, value, source, n)
            if block.table:
                value = value.replace(" ", "").upper()
            block.meta[key] = value[:_MAX_VALUE]
            block.rows.append((n, f"##{key}={value}"))
        elif block.table:
            block.rows.append((n, row := _check_row(block.table, line, source, n)))
            block.size += len(row)
            if block.size > 16 * MAX_POINTS:
                raise ParseError(f"the data table holds over {MAX_POINTS} values", source, n)
        elif key in block.meta and len(block.meta[key]) < _MAX_VALUE:
            block.meta[key] = f"{block.meta[key]}\n{line}"[:_MAX_VALUE]  # multi-line value
    # A file cut short before its ##END= still yields its open blocks; NPOINTS catches the cut.
    leaves += [b for b in stack[1:] if not b.nested]
    return leaves + ([stack[0]] if not stack[0].nested and stack[0].rows else [])


def _check_label(key: str, value: str, source: str, n: int) -> str | None:
    """Validate the labels jcamp would trust; return the table kind if `key` opens one."""
    if key == "NPOINTS" and not (_is_count(value) and 2 <= int(value) <= MAX_POINTS):
        raise ParseError(f"##NPOINTS={value[:30]} is not a count in 2..{MAX_POINTS}", source, n)
    if key in ("PEAKTABLE", "PEAKASSIGNMENTS"):
        raise ParseError("a peak table lists peaks, not a measured spectrum", source, n)
    if key == "NTUPLES":
        raise ParseError("NTUPLES (multi-dimensional) JCAMP-DX files are not supported", source, n)
    if key not in _FORMS:
        return None
    form = value.replace(" ", "").upper()
    if form not in _FORMS[key]:
        raise ParseError(f"unsupported ##{key}= form {value[:30]!r}", source, n)
    return form


def _check_row(form: str, line: str, source: str, n: int) -> str:
    """Return a data row ready for jcamp: (XY..XY) rows must be number pairs, DUP is expanded."""
    if form == "(XY..XY)":
        fields = [f for f in re.split(r"[,;\s]+", line) if f]
        try:
            [float(f) for f in fields]
        except ValueError:
            raise ParseError(f"not a row of X,Y numbers: {line[:60]!r}", source, n) from None
        if len(fields) % 2:
            raise ParseError(f"odd number of values in an (XY..XY) row: {line[:60]!r}", source, n)
        return line
    if not any(c in _DUP for c in line):
        return line
    chunks = []
    for chunk in line.split():
        tokens = [t for t in _TOKEN.findall(chunk) if t]
        if "".join(tokens) != chunk:
            raise ParseError(f"unexpected character in compressed data {chunk[:60]!r}", source, n)
        out: list[str] = []
        for token in tokens:
            if token[0] not in _DUP:
                out.append(token)
                continue
            count = _DUP[token[0]] + token[1:]
            if not out or not _is_count(count) or int(count) > MAX_POINTS:
                raise ParseError(f"bad DUP count {token!r}", source, n)
            out += [out[-1]] * (int(count) - 1)
        chunks.append("".join(f" {t}" if t[0] in "0123456789." else t for t in out).strip())
    return " ".join(chunks)


def _is_count(text: str) -> bool:
    return text.isascii() and text.isdigit()  # str.isdigit alone accepts "³"


class _Feed:
    """Iterates a block's rows for jcamp.read, remembering the line being read."""

    def __init__(self, rows: list[tuple[int, str]]) -> None:
        self.rows, self.lineno = rows, rows[0][0] if rows else None

    def __iter__(self) -> Iterator[str]:
        for lineno, line in self.rows:
            self.lineno = lineno
            yield line


def _decode(block: _Block, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Run jcamp.read on one block; turn its exceptions and printed check failures into errors."""
    if not any(k in block.meta for k in _FORMS):
        raise ParseError("no ##XYDATA= or ##XYPOINTS= data table", source, block.lineno)
    feed, printed = _Feed(block.rows), []

    def note(*args: object, **_: object) -> None:
        printed.append((feed.lineno, " ".join(map(str, args))))

    with _LOCK:
        jcamp.print = note  # jcamp reports failed X/Y checks with print(); collect them instead
        try:
            result = jcamp.read(feed)
        except KeyError as exc:
            label = str(exc.args[0]).upper()
            raise ParseError(f"missing label ##{label}=", source, block.lineno) from None
        except Exception as exc:
            raise ParseError(f"cannot decode data: {exc}", source, feed.lineno) from None
        finally:
            del jcamp.print
    for lineno, message in printed:
        if "Check failed" in message:
            raise ParseError(f"{message} The data are corrupt or out of order.", source, lineno)
    x, y = np.asarray(result["x"], dtype=np.float64), np.asarray(result["y"], dtype=np.float64)
    npoints = block.meta.get("NPOINTS", str(y.size))
    if not _is_count(npoints):  # a multi-line value: text between the label and the table
        raise ParseError(f"##NPOINTS={npoints[:30]!r} is not a count", source, block.lineno)
    declared = int(npoints)
    if y.size == 0:
        raise ParseError("the data table holds no values", source, block.lineno)
    if x.size != y.size or declared != y.size:
        raise ParseError(
            f"##NPOINTS={declared} but the table decodes to {x.size} X and {y.size} Y values: "
            "the file is truncated or mis-encoded",
            source,
            block.lineno,
        )
    return x, y


def _spectrum(block: _Block, name: str, source: str) -> Spectrum:
    x, y = _decode(block, source)
    units = block.meta.get("XUNITS", "1/CM")
    kind = x_unit_kind(units)
    if kind is None:
        raise ParseError(
            f"X units {units!r} are neither cm-1 nor a wavelength", source, block.lineno
        )
    hint = "a label such as ##$LASER WAVELENGTH=785"
    return Spectrum(to_raman_shift(x, kind, block.meta, source, hint), y, name, None, block.meta)


def x_unit_kind(units: str) -> str | None:
    """Classify an X-unit text as "cm-1", "nm" or "um"; None when it is none of them."""
    u = re.sub(r"[\s.]", "", units.upper()).replace("Μ", "U").replace("µ", "U")
    if any(t in u for t in ("1/CM", "CM-1", "CM^-1", "CM**-1", "CM^(-1)", "WAVENUMBER", "SHIFT")):
        return "cm-1"
    if u in ("NM", "NANOMETER", "NANOMETERS"):
        return "nm"
    if u in ("UM", "MICROMETER", "MICROMETERS", "MICRON", "MICRONS"):
        return "um"
    return None


def laser_wavelength_nm(meta: Mapping[str, str]) -> float | None:
    """The excitation wavelength (nm) from a laser/excitation label, or None if none is given."""
    for key, value in meta.items():
        k, match = re.sub(r"[^A-Z]", "", key.upper()), _NUMBER_UNIT.match(value)
        if match is None or not ("LASER" in k or "EXCITATION" in k or k == "LWN"):
            continue
        number, unit = float(match[1]), x_unit_kind(match[2]) if match[2] else None
        if unit is None and not match[2]:  # no unit written: the label name tells
            unit = "cm-1" if k == "LWN" or "WAVENUMBER" in k else None
            unit = unit or ("nm" if re.search("WAVELENGTH|LAMBDA|WL$|NM$", k) else None)
        if unit is None or number <= 0:
            continue
        nm = {"cm-1": 1e7 / number, "um": number * 1000.0, "nm": number}[unit]
        if 100.0 <= nm <= 3000.0:
            return nm
    return None


def to_raman_shift(
    x: np.ndarray, kind: str, meta: Mapping[str, str], source: str, hint: str
) -> np.ndarray:
    """Return `x` (in `kind` units) as Raman shift in cm-1; wavelengths need the laser line."""
    if kind == "cm-1":
        return x
    laser = laser_wavelength_nm(meta)
    if laser is None:
        raise ParseError(
            f"the X axis is an absolute wavelength ({kind}), which cannot be converted to Raman "
            f"shift (cm-1) without the excitation laser wavelength; the file gives none ({hint})",
            source,
        )
    x_nm = x * 1000.0 if kind == "um" else x
    if np.any(x_nm <= 0):
        raise ParseError(f"non-positive wavelengths on the X axis ({kind})", source)
    return 1e7 / laser - 1e7 / x_nm
