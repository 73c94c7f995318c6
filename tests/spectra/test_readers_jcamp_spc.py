"""JCAMP-DX and SPC readers, with fixtures written here (text per JCAMP-DX 4.24, binary per the
Thermo/Galactic SPC spec via `struct`), and content-based dispatch in `detect.read_bytes`."""

from __future__ import annotations

import random
import struct

import numpy as np
import pytest

from spectra.errors import ParseError
from spectra.readers.detect import detect_format, read_bytes
from spectra.readers.jcamp import laser_wavelength_nm, looks_like_jcamp, parse_jcamp
from spectra.readers.spc import looks_like_spc, parse_spc


def jdx(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


HEAD = ("##TITLE=Quartz R040031", "##JCAMP-DX=4.24", "##DATA TYPE=RAMAN SPECTRUM")

AFFN = jdx(
    *HEAD,
    "##XUNITS=1/CM",
    "##YUNITS=ARBITRARY UNITS",
    "##XFACTOR=1.0",
    "##YFACTOR=0.5",
    "##FIRSTX=100",
    "##LASTX=110",
    "##NPOINTS=11",
    "##XYDATA=(X++(Y..Y))",
    "100 10 20 30 40  $$ a comment",
    "104 50 60 70 80",
    "108 90 100 110",
    "##END=",
)

# Descending axis, XFACTOR 0.5 (line X values are X/0.5), YFACTOR 0.01. DIF form: each line
# starts with the previous line's last Y as a SQZ check value; `%T` is a DIF 0 written twice
# (DUP 2), `%S0` a DIF 0 written ten times (DUP 10); the last line holds only the Y check.
# Raw Y: 100 110 125 125 125 90 | 40 40 41 1000 -5 0 | 0 x10, 7, -20.
DIF = jdx(
    "##TITLE=difdup",
    "##JCAMP-DX=4.24",
    "##XUNITS=1/CM",
    "##XFACTOR=0.5",
    "##YFACTOR=0.01",
    "##FIRSTX=1000",
    "##LASTX=977",
    "##NPOINTS=24",
    "##XYDATA=(X++(Y..Y))",
    "2000A00J0J5%Tl5",
    "1990I0n0%JR59j005N",
    "1978@%S0Pk7",
    "1954b0",
    "##END=",
)
DIF_Y = [100, 110, 125, 125, 125, 90, 40, 40, 41, 1000, -5, 0] + [0] * 10 + [7, -20]


def xypoints(xunits: str, *extra: str) -> bytes:
    return jdx(
        *HEAD,
        f"##XUNITS={xunits}",
        *extra,
        "##XFACTOR=0.1",
        "##YFACTOR=2",
        "##NPOINTS=8",
        "##XYPOINTS=(XY..XY)",
        "8000, 1; 8010, 2",
        "8020, 3; 8030, 4",
        "8040,5 8050,6 8060,7 8070,8",
        "##END=",
    )


def test_affn_values_units_and_meta() -> None:
    [s] = parse_jcamp(AFFN, "q.jdx")
    assert s.wavenumbers.dtype == np.float64 and s.intensities.dtype == np.float64
    np.testing.assert_allclose(s.wavenumbers, np.arange(100, 111))
    np.testing.assert_allclose(s.intensities, 5.0 * np.arange(1, 12))
    assert s.label is None and s.source == "q.jdx"
    assert s.meta["TITLE"] == "Quartz R040031" and s.meta["DATATYPE"] == "RAMAN SPECTRUM"
    assert all(isinstance(v, str) for v in s.meta.values())


def test_compressed_difdup_descending() -> None:
    [s] = parse_jcamp(DIF, "d.jdx")
    np.testing.assert_allclose(s.wavenumbers, np.linspace(1000, 977, 24))
    np.testing.assert_allclose(s.intensities, np.array(DIF_Y) * 0.01)


def test_sqz_dup_after_a_squeezed_value() -> None:
    head = ["##TITLE=sqz", "##FIRSTX=1", "##LASTX=5", "##NPOINTS=5", "##XYDATA=(X++(Y..Y))"]
    [s] = parse_jcamp(jdx(*head, "1@TA5B3a", "##END="), "s.jdx")  # no XUNITS: cm-1
    np.testing.assert_allclose(s.intensities, [0, 0, 15, 23, -1])


def test_xypoints_factors() -> None:
    [s] = parse_jcamp(xypoints("1/CM"), "p.jdx")
    np.testing.assert_allclose(s.wavenumbers, np.arange(800, 808))
    np.testing.assert_allclose(s.intensities, 2.0 * np.arange(1, 9))


def test_nanometres_need_the_laser() -> None:
    with pytest.raises(ParseError, match="laser") as info:
        parse_jcamp(xypoints("NANOMETERS"), "nm.jdx")
    assert "nm.jdx" in str(info.value)
    [s] = parse_jcamp(xypoints("NANOMETERS", "##$LASER WAVELENGTH=785 nm"), "nm.jdx")
    np.testing.assert_allclose(s.wavenumbers, 1e7 / 785 - 1e7 / np.arange(800, 808))
    [u] = parse_jcamp(xypoints("MICROMETERS", "##$LWN=12738.85"), "um.jdx")  # Bruker: cm-1
    np.testing.assert_allclose(u.wavenumbers, 12738.85 - 1e7 / np.arange(800e3, 808e3, 1e3))


def test_laser_labels() -> None:
    assert laser_wavelength_nm({"$LASER POWER": "500 mW", "$EXCITATION WAVELENGTH": "532"}) == 532
    assert laser_wavelength_nm({"$LASER POWER": "500"}) is None


def test_link_file_gives_one_spectrum_per_block() -> None:
    block = xypoints("NANOMETERS").decode().replace("##TITLE=Quartz R040031\n", "")
    text = "\n".join(
        ["##TITLE=link", "##JCAMP-DX=5.01", "##DATA TYPE=LINK", "##BLOCKS=2"]
        + ["##$LASER WAVELENGTH=785"]
        + [f"##TITLE=block {i}\n##BLOCK_ID={i}\n{block}" for i in (1, 2)]
        + ["##END=", "trailing junk after the last ##END= is ignored"]
    )
    spectra = parse_jcamp(text.encode(), "l.jdx")
    assert [s.source for s in spectra] == ["l.jdx#1", "l.jdx#2"]
    assert [s.meta["TITLE"] for s in spectra] == ["block 1", "block 2"]
    assert spectra[1].meta["BLOCKID"] == "2" and spectra[0].wavenumbers[0] > 0


@pytest.mark.parametrize(
    ("data", "match", "line"),
    [
        (jdx(*HEAD, "##XUNITS=1/CM", "##END="), "no ##XYDATA", 1),
        (AFFN.replace(b"104 50", b"104 5?"), "cannot decode", 13),
        (AFFN.replace(b"108 90 100 110", b"108 90 100 110 garbage!"), "cannot decode", 14),
        (xypoints("1/CM").replace(b"8020, 3;", b"abc, 3;"), "not a row of X,Y", 10),
        (AFFN.replace(b"##NPOINTS=11", b"##NPOINTS=999999999999"), "NPOINTS", 10),
        (AFFN.replace(b"108 90 100 110\n", b""), "truncated", 1),
        (DIF.replace(b"1990I0", b"1990I1"), "Y-Check failed", 11),
        (DIF.replace(b"1978@", b"1968@"), "X-Check failed", 12),
        (xypoints("HZ"), "neither cm-1", 1),
        (jdx(*HEAD, "##PEAK TABLE=(XY..XY)", "1,2", "##END="), "peak table", 4),
        (jdx(*HEAD, "##XYDATA", "##END="), "without '='", 4),
        # a label after the table header swallowed the rows, then int() failed: a 500 before
        (
            xypoints("1/CM")
            .replace(b"##NPOINTS=8\n", b"")
            .replace(b"(XY..XY)\n", b"(XY..XY)\n##NPOINTS=8\n"),
            "after the data table",
            8,
        ),
        (AFFN.replace(b"##NPOINTS=11", b"##NPOINTS=11\n12"), "not a count", 1),
    ],
)
def test_jcamp_errors_name_file_and_line(data: bytes, match: str, line: int) -> None:
    with pytest.raises(ParseError, match=match) as info:
        parse_jcamp(data, "bad.jdx")
    assert info.value.source == "bad.jdx" and info.value.line == line
    assert str(info.value).startswith(f"bad.jdx, line {line}:")


def test_looks_like_jcamp() -> None:
    assert looks_like_jcamp("\n\n##TITLE=x\n") and looks_like_jcamp("$$ c\n##JCAMP-DX=5.01\n")
    assert not looks_like_jcamp("##NAMES=Quartz\n100,1\n") and not looks_like_jcamp("1,2\n")


def spc(
    ys: list[list[float]],
    *,
    xs: list[float] | None = None,
    first: float = 100.0,
    last: float = 107.0,
    xtype: int = 13,
    version: int = 0x4B,
    exp: int = -128,
    log: bytes = b"",
) -> bytes:
    """A new-format SPC: 512-byte header, optional X array, 32-byte subheader + Y per subfile."""
    npts, flags = len(ys[0]), (0x80 if xs else 0) | (0x04 if len(ys) > 1 else 0)
    header = bytearray(512)
    fields = (flags, version, 11, exp, npts, first, last, len(ys), xtype, 4, 0)
    struct.pack_into("<BBBbIddIBBB", header, 0, *fields)
    header[88:100] = b"test comment"
    body = struct.pack(f"<{npts}f", *xs) if xs else b""
    for i, y in enumerate(ys):
        body += struct.pack("<BbHfffIIf4x", 0, exp, i, float(i), float(i + 1), 0, 0, 1, 0)
        if exp == -128:
            body += struct.pack(f"<{npts}f", *y)
        else:  # 32-bit integers scaled by 2**(exp-32)
            body += struct.pack(f"<{npts}i", *(round(v * 2.0 ** (32 - exp)) for v in y))
    if log:
        struct.pack_into("<I", header, 248, 512 + len(body))
        text = log + b"\0"
        body += struct.pack("<IIIII44x", 64 + len(text), 4096, 64, 0, 0) + text
    return bytes(header) + body


Y1 = [float(v) for v in range(10, 18)]
Y2 = [v * 0.5 for v in range(8)]


def test_spc_even_axis_single_file() -> None:
    [s] = parse_spc(spc([Y1]), "a.spc")
    np.testing.assert_allclose(s.wavenumbers, np.linspace(100, 107, 8))
    np.testing.assert_allclose(s.intensities, Y1)
    assert s.intensities.dtype == np.float64 and s.label is None
    assert s.meta["FXTYPE"] == "XRAMANS" and s.meta["FCMNT"] == "test comment"


def test_spc_explicit_x_array_and_integer_y() -> None:
    xs = [200.0, 210.5, 230.0, 260.0, 300.0, 350.0, 410.0, 480.0]
    [s] = parse_spc(spc([Y2], xs=xs, xtype=1, exp=8), "b.spc")
    np.testing.assert_allclose(s.wavenumbers, xs)
    np.testing.assert_allclose(s.intensities, Y2)


def test_spc_multifile() -> None:
    spectra = parse_spc(spc([Y1, Y2]), "m.spc")
    assert [s.source for s in spectra] == ["m.spc#1", "m.spc#2"]
    np.testing.assert_allclose(spectra[1].intensities, Y2)
    np.testing.assert_allclose(spectra[1].wavenumbers, np.linspace(100, 107, 8))


def test_spc_nanometres() -> None:
    with pytest.raises(ParseError, match="laser") as info:
        parse_spc(spc([Y1], first=800, last=807, xtype=3), "nm.spc")
    assert "nm.spc" in str(info.value)
    log = b"Operator=a=b\r\nLaser Wavelength=785 nm\r\n"
    [s] = parse_spc(spc([Y1], first=800, last=807, xtype=3, log=log), "nm.spc")
    np.testing.assert_allclose(s.wavenumbers, 1e7 / 785 - 1e7 / np.linspace(800, 807, 8))
    assert s.meta["LOG LASER WAVELENGTH"] == "785 nm"


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (spc([Y1])[:560], "truncated"),
        (spc([Y1])[:300], "truncated"),
        (spc([Y1], version=0x4A), "version byte 0x4A"),
        (spc([Y1], version=0x4C), "big-endian"),
        (spc([Y1], xtype=16), "XDIODE"),
    ],
)
def test_spc_errors_name_the_file(data: bytes, match: str) -> None:
    with pytest.raises(ParseError, match=match) as info:
        parse_spc(data, "bad.spc")
    assert str(info.value).startswith("bad.spc: ")


def test_looks_like_spc_is_strict() -> None:
    assert looks_like_spc(spc([Y1])) and looks_like_spc(spc([Y1])[:40])
    assert not looks_like_spc(spc([Y1], version=0x4A))
    assert not looks_like_spc(AFFN) and not looks_like_spc(b"xK" + b"a" * 600)
    rng = random.Random(0)
    noise = [bytes(rng.getrandbits(8) for _ in range(512)) for _ in range(2000)]
    assert not any(looks_like_spc(b"\0K" + n[2:]) for n in noise)


@pytest.mark.parametrize(
    ("data", "name", "fmt"),
    [(AFFN, "x.csv", "jcamp"), (DIF, "x.spc", "jcamp"), (spc([Y1]), "x.txt", "spc")],
)
def test_read_bytes_dispatches_on_content(data: bytes, name: str, fmt: str) -> None:
    assert detect_format(data, name) == fmt
    [s] = read_bytes(data, name)
    assert s.source == name and len(s) >= 8


def test_read_bytes_errors_name_the_file() -> None:
    for data in (spc([Y1])[:100], spc([Y1], version=0x4A), xypoints("NANOMETERS")):
        with pytest.raises(ParseError, match=r"^f\.dat"):
            read_bytes(data, "f.dat")
