"""Thermo/Galactic SPC reader on top of the maintained `spc-io` package (0.2.x).

We check the 512-byte main header ourselves before spc-io sees the bytes, so that a bad file
fails with a clear message (naming the file) instead of a ctypes error, and so that point and
subfile counts are bounded by the file size before anything is allocated. spc-io reads the
log block sequentially after the data ("assume packed") instead of at `flogoff` and fails on
unusual log text, so it is handed a copy with `flogoff` cleared and we read the log's
`key=value` text here (it may name the laser). Only new-format little-endian files (version
byte 0x4B) are read: spc-io refuses 0x4C (big-endian) and 0x4D (old format), and so do we.
spc-io imports pandas, so it is imported on first use, not when the service starts.

One Spectrum per subfile; X is the file's X array (TXVALS, global or per subfile) or
`linspace(ffirst, flast, fnpts)`. fxtype 1 (wavenumber) and 13 (Raman shift) are cm-1;
nanometers/micrometers need a laser wavelength in the log; other X units are refused.
"""

from __future__ import annotations

import io
import math
import re
import struct

import numpy as np

from spectra.errors import ParseError
from spectra.readers.jcamp import to_raman_shift, x_unit_kind
from spectra.types import Spectrum

HEADER_SIZE = 512
MAX_POINTS = 1_000_000
MAX_SUBFILES = 10_000
_SUBHEADER_SIZE, _LOG_HEADER_SIZE = 32, 64
_TSPREC, _TMULTI, _TALABS, _TXYXYS, _TXVALS = 0x01, 0x04, 0x20, 0x40, 0x80
_X_TYPES = {*range(31), 255}  # fxtype codes the spec defines
_X_KIND = {1: "cm-1", 13: "cm-1", 2: "um", 3: "nm"}
_LASER_HINT = "a log-book entry such as 'Laser Wavelength=785'"


def looks_like_spc(data: bytes) -> bool:
    """True when `data` starts with a plausible SPC header (new 0x4B/0x4C or old 0x4D format).

    Beyond the version byte, the X-unit code, point count and X range must be sane, so text
    files (whose bytes are all printable) and random binary do not match.
    """
    if len(data) < 32 or data[1] not in (0x4B, 0x4C, 0x4D):
        return False
    if data[1] == 0x4D:  # old format: float point count and range, X type at byte 16
        npts, first, last = struct.unpack_from("<fff", data, 4)
        whole = math.isfinite(npts) and npts == int(npts) and 1 <= npts <= MAX_POINTS
        return whole and data[16] in _X_TYPES and _sane(first, last)
    flags = data[0]
    npts, first, last, nsub = struct.unpack_from("<IddI" if data[1] == 0x4B else ">IddI", data, 4)
    if data[28] not in _X_TYPES or nsub > MAX_SUBFILES or (flags & _TMULTI and nsub < 1):
        return False
    # With TXYXYS, fnpts is the offset of the subfile directory, not a point count.
    return bool(flags & _TXYXYS or 1 <= npts <= MAX_POINTS) and _sane(first, last)


def parse_spc(data: bytes, source: str) -> list[Spectrum]:
    """Parse every subfile of a new-format (0x4B) SPC file into a spectrum."""
    flags, npts, first, last, nsub, xtype, logoff = _check_header(data, source)
    from spc_io.low_level import SpcRaw  # deferred: spc-io imports pandas

    patched = bytearray(data[:logoff] if HEADER_SIZE < logoff <= len(data) else data)
    struct.pack_into("<I", patched, 24, nsub)
    struct.pack_into("<I", patched, 248, 0)  # no log for spc-io: we read it ourselves
    try:
        raw = SpcRaw.from_bytes_io(io.BytesIO(bytes(patched)))
        meta = _meta(raw.main_header, data, logoff)
        subs = [(sub.xarray, sub.yarray, sub.z) for sub in raw.subs]
        global_x = raw.xarray
    except Exception as exc:
        raise ParseError(f"spc-io cannot read this SPC file: {exc}", source) from None
    kind = _X_KIND.get(xtype)
    if kind is None and xtype == 0 and flags & _TALABS:  # "arbitrary" units with a text label
        kind = x_unit_kind(meta.get("FCATXT", ""))
    if kind is None:
        raise ParseError(
            f"X units {meta['FXTYPE']} (fxtype {xtype}) are neither cm-1 nor a wavelength", source
        )
    spectra = []
    for i, (sub_x, sub_y, z) in enumerate(subs, start=1):
        x = sub_x if sub_x is not None else global_x
        x = np.linspace(first, last, npts) if x is None else np.asarray(x, dtype=np.float64)
        y = np.asarray(sub_y, dtype=np.float64)
        if y.size == 0 or x.size != y.size:
            raise ParseError(f"subfile {i} has {x.size} X but {y.size} Y values", source)
        sub_meta = dict(meta) if z is None else {**meta, "SUBFIRST": f"{z:g}"}
        name = source if len(subs) == 1 else f"{source}#{i}"
        x = to_raman_shift(x, kind, meta, source, _LASER_HINT)
        spectra.append(Spectrum(x, y, name, None, sub_meta))
    return spectra


def _sane(*values: float) -> bool:
    return all(math.isfinite(v) and abs(v) < 1e9 for v in values)


def _check_header(data: bytes, source: str) -> tuple[int, int, float, float, int, int, int]:
    """Validate the main header against the file size; return the fields the parse needs."""
    if len(data) < HEADER_SIZE:
        raise ParseError(f"truncated SPC file: {len(data)} bytes, less than its header", source)
    version = data[1]
    if version == 0x4D:
        raise ParseError("old-format SPC (version byte 0x4D) is not supported", source)
    if version == 0x4C:
        raise ParseError("big-endian SPC (version byte 0x4C) is not supported", source)
    if version != 0x4B:
        raise ParseError(f"not an SPC file: version byte 0x{version:02X}, expected 0x4B", source)
    flags, fexp, npts, first, last, nsub, xtype = struct.unpack_from("<BxxbIddIB", data, 0)
    (logoff,) = struct.unpack_from("<I", data, 248)
    nsub = nsub if flags & _TMULTI else 1  # single files should say 1; some writers leave 0
    if not 1 <= nsub <= MAX_SUBFILES:
        raise ParseError(f"implausible subfile count {nsub}", source)
    if not flags & _TXYXYS:  # fixed-size layout: check the file is long enough before reading
        if not 1 <= npts <= MAX_POINTS or not _sane(first, last):
            raise ParseError(f"implausible header: {npts} points from {first} to {last}", source)
        y_bytes = 2 if flags & _TSPREC and fexp != -128 else 4
        need = HEADER_SIZE + (4 * npts if flags & _TXVALS else 0)
        need += nsub * (_SUBHEADER_SIZE + y_bytes * npts)
        if len(data) < need:
            raise ParseError(
                f"truncated SPC file: {len(data)} bytes, but {nsub} subfile(s) of {npts} points "
                f"need {need}",
                source,
            )
    return flags, npts, first, last, nsub, xtype, logoff


def _meta(header: object, data: bytes, logoff: int) -> dict[str, str]:
    """Header descriptions and log-book entries, as strings."""
    meta = {k.upper(): str(getattr(header, k)) for k in ("fexper", "fxtype", "fytype")}
    for key in ("fcmnt", "fsource", "fres", "fcatxt", "fmethod"):
        text = getattr(header, key).decode("latin-1").strip()  # c_char arrays stop at NUL
        if text:
            meta[key.upper()] = text
    if not HEADER_SIZE <= logoff <= len(data) - _LOG_HEADER_SIZE:
        return meta
    size, _, text_at = struct.unpack_from("<III", data, logoff)
    start, end = logoff + text_at, min(logoff + size, len(data))
    if logoff + _LOG_HEADER_SIZE <= start < end:
        text = data[start:end].split(b"\0", 1)[0].decode("latin-1")
        for line in re.split(r"[\r\n]+", text)[:1000]:
            key, sep, value = line.partition("=")
            if sep and key.strip():
                meta[f"LOG {key.strip().upper()}"[:100]] = value.strip()[:1000]
    return meta
