"""Text readers: RRUFF `.txt` files and zips, plain two-column CSV/TXT, and format detection
(`spectra.readers.rruff`, `columns`, `text`, `detect`). JCAMP-DX and SPC are tested elsewhere."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from spectra.errors import ParseError, SpectrumError, UnsupportedFormatError
from spectra.readers.columns import looks_like_columns, parse_columns
from spectra.readers.detect import MAX_FILE_BYTES, detect_format, read_bytes, read_path
from spectra.readers.rruff import ZipReport, iter_rruff_zip, looks_like_rruff, parse_rruff
from spectra.readers.text import decode, utf16_without_bom

# The layout of the files in RRUFF's zips, byte for byte: `\n` after header lines, CRLF after
# data rows, a final `##END=` (see ../shared/data/rruff_excellent_unoriented_2019/PROVENANCE.md).
RRUFF_SAMPLE = (
    b"##NAMES=Quartz\n"
    b"##RRUFFID=R040031\n"
    b"##IDEAL CHEMISTRY=SiO_2_\n"
    b"##LOCALITY=Hot Springs, Garland County, Arkansas, USA\n"
    b"##OWNER=RRUFF\n"
    b"##SOURCE=Michael Scott S100\n"
    b"##DESCRIPTION=Colorless crystal\n"
    b"##STATUS=The identification of this mineral has been confirmed by X-ray diffraction.\n"
    b"##URL=rruff.info/R040031\n"
    b"113.1730, 0.0000000E+00\r\n"
    b"114.1370, 12.34560\r\n"
    b"115.1010, 25.00000\r\n"
    b"116.0650, 1.500000E+02\r\n"
    b"117.0290, 99.00000\r\n"
    b"117.9930, 40.00000\r\n"
    b"118.9570, 10.00000\r\n"
    b"119.9210, 5.000000\r\n"
    b"##END=\r\n"
)
SAMPLE_X = [113.173, 114.137, 115.101, 116.065, 117.029, 117.993, 118.957, 119.921]
SAMPLE_Y = [0.0, 12.3456, 25.0, 150.0, 99.0, 40.0, 10.0, 5.0]
FIRST_DATA_LINE = 10


def rows(n: int = 10, sep: str = ", ") -> list[str]:
    return [f"{100.0 + i:.1f}{sep}{i * i:.3f}" for i in range(n)]


# --- RRUFF .txt ----------------------------------------------------------------------------------


def test_parse_rruff_real_layout() -> None:
    s = parse_rruff(RRUFF_SAMPLE, "Quartz__R040031.txt")
    np.testing.assert_allclose(s.wavenumbers, SAMPLE_X)
    np.testing.assert_allclose(s.intensities, SAMPLE_Y)
    assert s.wavenumbers.dtype == np.float64
    assert s.label == "Quartz" and s.source == "Quartz__R040031.txt"
    assert s.meta["RRUFFID"] == "R040031" and s.sample_id == "R040031"
    assert s.meta["IDEAL CHEMISTRY"] == "SiO_2_"
    assert "END" not in s.meta


def test_parse_rruff_accepts_str_and_lf_only() -> None:
    s = parse_rruff(RRUFF_SAMPLE.decode().replace("\r\n", "\n"))
    np.testing.assert_allclose(s.intensities, SAMPLE_Y)


def test_parse_rruff_stops_at_end() -> None:
    s = parse_rruff(RRUFF_SAMPLE + b"999.0, this is not data\r\n")
    assert len(s) == len(SAMPLE_X)


def test_parse_rruff_keeps_value_with_equals_and_strips_label() -> None:
    text = "##NAMES=  Agardite-(Y)  \n##DESCRIPTION=a=b\n" + "\n".join(rows())
    s = parse_rruff(text)
    assert s.label == "Agardite-(Y)" and s.meta["DESCRIPTION"] == "a=b"
    assert s.sample_id is None


def test_parse_rruff_without_end_and_with_tab_or_semicolon_rows() -> None:
    for sep in ("\t", ";", "  "):
        s = parse_rruff("##NAMES=Calcite\n" + "\n".join(rows(sep=sep)))
        np.testing.assert_allclose(s.wavenumbers, 100.0 + np.arange(10))
        np.testing.assert_allclose(s.intensities, np.arange(10.0) ** 2)


@pytest.mark.parametrize(
    ("bad_row", "match"),
    [("116.0650, abc", "not a number pair: '116.0650, abc'"), ("116.0650", "expected two numbers")],
)
def test_malformed_row_names_file_and_line(bad_row: str, match: str) -> None:
    lines = RRUFF_SAMPLE.decode().split("\n")
    bad_line = FIRST_DATA_LINE + 3
    lines[bad_line - 1] = bad_row + "\r"
    with pytest.raises(ParseError, match=match) as info:
        parse_rruff("\n".join(lines).encode(), "Quartz__R040031.txt")
    assert info.value.source == "Quartz__R040031.txt"
    assert info.value.line == bad_line
    assert str(info.value).startswith(f"Quartz__R040031.txt, line {bad_line}: ")


def test_line_numbers_count_blank_lines() -> None:
    text = "##NAMES=Quartz\n\n\n100, 1\n\n101, x\n"
    with pytest.raises(ParseError) as info:
        parse_rruff(text, "q.txt")
    assert info.value.line == 6


def test_rows_of_three_and_one_fields_are_not_paired_silently() -> None:
    # The token count (4 = 2 rows x 2) matches, but the rows do not: an error, not 100->2.
    with pytest.raises(ParseError, match="expected two numbers") as info:
        parse_rruff("##NAMES=Quartz\n100, 1, 2\n101\n", "q.txt")
    assert info.value.line == 3


def test_extra_columns_use_the_first_two() -> None:
    s = parse_rruff("##NAMES=Quartz\n" + "\n".join(f"{100 + i}, {i}, 0.5" for i in range(10)))
    np.testing.assert_allclose(s.intensities, np.arange(10.0))


@pytest.mark.parametrize(
    "text",
    ["##RRUFFID=R1\n" + "\n".join(rows()), "##NAMES=\n##RRUFFID=R1\n" + "\n".join(rows())],
)
def test_missing_or_empty_names_is_an_error(text: str) -> None:
    with pytest.raises(ParseError, match="no ##NAMES= header"):
        parse_rruff(text, "x.txt")


@pytest.mark.parametrize(
    "text", ["##NAMES=Quartz\n##RRUFFID=R1\n", "##NAMES=Quartz\n##END=\n1, 2\n"]
)
def test_header_only_is_an_error(text: str) -> None:
    with pytest.raises(ParseError, match="no data rows after the header"):
        parse_rruff(text, "x.txt")


def test_looks_like_rruff() -> None:
    assert looks_like_rruff("\n\n  ##names=Quartz\n1, 2")
    assert not looks_like_rruff("##TITLE=Quartz\n##NAMES=Quartz")
    assert not looks_like_rruff("100, 2\n")


# --- decode ------------------------------------------------------------------------------------


def test_decode_bom_latin1_and_binary() -> None:
    assert decode("\ufeff##NAMES=Quartz".encode(), "a") == "##NAMES=Quartz"
    assert decode("##NAMES=Fluorapatite \xe9".encode("latin-1"), "a").endswith("\xe9")
    with pytest.raises(ParseError, match="binary content"):
        decode(b"ab\x00cd", "a.bin")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_text_with_its_byte_order_mark_is_read(encoding: str) -> None:
    # Windows instrument software writes UTF-16; it was refused as binary (NUL bytes)
    text = "Raman shift,Intensity\n" + "\n".join(rows(sep=","))
    data = text.encode(encoding)
    if encoding != "utf-16":  # the plain codec writes its own BOM
        data = "\ufeff".encode(encoding) + data
    [s] = read_bytes(data, "w.csv")
    np.testing.assert_allclose(s.intensities, np.arange(10.0) ** 2)


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_utf16_text_without_its_byte_order_mark_is_recognised(encoding: str) -> None:
    text = "Raman shift (cm\u207b\u00b9),Intensity\n" + "\n".join(rows(sep=","))
    [s] = read_bytes(text.encode(encoding), "no-bom.csv")
    np.testing.assert_allclose(s.intensities, np.arange(10.0) ** 2)
    assert decode(text.encode(encoding), "no-bom.csv") == text


def test_binary_with_nul_bytes_is_not_taken_for_utf16() -> None:
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, 4096, dtype=np.uint8)
    noise[::7] = 0  # NULs at both byte positions
    for data in (
        noise.tobytes(),
        b"ab\x00cd",
        b"\x00\x00\x00\x00",
        "odd".encode("utf-16-le") + b"x",
    ):
        with pytest.raises(ParseError, match="binary content"):
            decode(data, "x.bin")
    assert utf16_without_bom("Quartz".encode("utf-16-le")) == "utf-16-le"
    assert utf16_without_bom(b"Quartz") is None


# --- RRUFF zips ----------------------------------------------------------------------------------


@pytest.fixture
def rruff_zip(tmp_path: Path) -> Path:
    """Three good members, one corrupt one, a non-.txt member and a directory entry."""
    path = tmp_path / "rruff.zip"
    good = parse_rruff(RRUFF_SAMPLE)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("c_Quartz__R3.txt", RRUFF_SAMPLE.replace(b"R040031", b"R3"))
        zf.writestr("a_Quartz__R1.txt", RRUFF_SAMPLE.replace(b"R040031", b"R1"))
        zf.writestr("b_Broken__R2.txt", b"##NAMES=Broken\n100, 1\n101, 2\n102, oops\n")
        zf.writestr("d_Calcite__R4.TXT", RRUFF_SAMPLE.replace(b"Quartz", b"Calcite"))
        zf.writestr("README.csv", b"not, a, spectrum\n")
        zf.writestr("image.png", b"\x89PNG\r\n\x1a\n\x00\x00")
        zf.writestr("folder/", b"")
    assert len(good) == len(SAMPLE_X)
    return path


def test_iter_rruff_zip_skips_and_reports_a_corrupt_member(rruff_zip: Path) -> None:
    report = ZipReport()
    spectra = list(iter_rruff_zip(rruff_zip, report))
    assert [s.sample_id for s in spectra] == ["R1", "R3", "R040031"]  # member-name order
    assert [s.label for s in spectra] == ["Quartz", "Quartz", "Calcite"]
    assert spectra[0].source == "rruff.zip:a_Quartz__R1.txt"
    assert report.read == 3
    assert report.skipped == ["rruff.zip:b_Broken__R2.txt, line 4: not a number pair: '102, oops'"]


def test_iter_rruff_zip_strict_raises(rruff_zip: Path) -> None:
    with pytest.raises(ParseError, match=r"b_Broken__R2.txt, line 4"):
        list(iter_rruff_zip(rruff_zip, strict=True))


def test_iter_rruff_zip_works_without_a_report(rruff_zip: Path) -> None:
    assert len(list(iter_rruff_zip(str(rruff_zip)))) == 3


def test_not_a_zip_is_a_parse_error(tmp_path: Path) -> None:
    fake = tmp_path / "fake.zip"
    fake.write_bytes(RRUFF_SAMPLE)
    with pytest.raises(ParseError, match="cannot open zip") as info:
        list(iter_rruff_zip(fake))
    assert info.value.source == str(fake)
    with pytest.raises(ParseError, match="cannot open zip"):
        list(iter_rruff_zip(tmp_path / "missing.zip"))


def test_synthetic_fixture_files_parse(
    write_rruff: Callable[..., Path], zip_folder: Callable[..., Path]
) -> None:
    write_rruff("Quartz", "R040031", serial=1)
    write_rruff("Calcite", "R050009", serial=2)
    spectra = list(iter_rruff_zip(zip_folder(write_rruff("Diamond", "R050204").parent)))
    assert sorted(s.label for s in spectra) == ["Calcite", "Diamond", "Quartz"]
    assert all(len(s) == 551 for s in spectra)


@pytest.mark.data
def test_parse_a_member_of_the_real_rruff_zip(shared_rruff_zip: Path) -> None:
    with zipfile.ZipFile(shared_rruff_zip) as zf:
        name = next(n for n in zf.namelist() if n.startswith("Quartz__R040031__"))
        s = parse_rruff(zf.read(name), name)
    assert s.label == "Quartz" and s.sample_id == "R040031"
    assert len(s) > 500 and np.all(np.diff(s.wavenumbers) > 0)
    assert s.meta["URL"] == "rruff.info/R040031"


# --- two-column CSV/TXT -------------------------------------------------------------------------


@pytest.mark.parametrize("sep", [",", ", ", "\t", ";", " ; ", " ", "   "])
def test_parse_columns_delimiters(sep: str) -> None:
    s = parse_columns("\n".join(rows(sep=sep)), "a.csv")
    np.testing.assert_allclose(s.wavenumbers, 100.0 + np.arange(10))
    np.testing.assert_allclose(s.intensities, np.arange(10.0) ** 2)
    assert s.label is None and s.source == "a.csv" and s.meta == {}


@pytest.mark.parametrize("sep", [";", "\t", " ", " ; "])
def test_parse_columns_with_decimal_commas(sep: str) -> None:
    # "1234,5;0,87": spreadsheets in much of Europe; these were refused as unsupported (415)
    lines = [f"{100.5 + i:.1f}{sep}{i * i + 0.25:.2f}".replace(".", ",") for i in range(10)]
    s = parse_columns("Wellenzahl;Intensität\n" + "\n".join(lines), "eu.csv")
    np.testing.assert_allclose(s.wavenumbers, 100.5 + np.arange(10))
    np.testing.assert_allclose(s.intensities, np.arange(10.0) ** 2 + 0.25)


def test_a_comma_between_two_numbers_is_still_a_delimiter() -> None:
    s = parse_columns("\n".join(f"{100 + i},{i}" for i in range(10)), "plain.csv")
    np.testing.assert_allclose(s.wavenumbers, 100.0 + np.arange(10))  # not 100.0, 101.1, ...
    np.testing.assert_allclose(s.intensities, np.arange(10.0))


def test_parse_columns_header_comments_and_scientific_notation() -> None:
    text = (
        "# exported by SomeSoft 2.1\n"
        "% laser 532 nm\n"
        "\n"
        "Wavenumber (cm-1),Intensity (a.u.)\n"
        "1.0E+02,3.5e-1\r\n"
        "// a comment between rows\n"
        "101,-2\r\n"
        "; another\n"
        "102,4\n"
    )
    s = parse_columns(text.encode(), "b.csv")
    np.testing.assert_allclose(s.wavenumbers, [100.0, 101.0, 102.0])
    np.testing.assert_allclose(s.intensities, [0.35, -2.0, 4.0])
    assert s.meta == {"HEADER": "Wavenumber (cm-1),Intensity (a.u.)"}


def test_parse_columns_uses_the_first_two_of_many_columns() -> None:
    text = "x\ty\tsigma\tmask\n" + "\n".join(f"{100 + i}\t{2 * i}\t0.1\t1" for i in range(10))
    s = parse_columns(text)
    np.testing.assert_allclose(s.intensities, 2.0 * np.arange(10))


def test_parse_columns_garbage_row_names_file_and_line() -> None:
    text = "# comment\nx,y\n100,1\n101,2\n\n102,banana\n103,4\n"
    with pytest.raises(ParseError, match="not a number pair: '102,banana'") as info:
        parse_columns(text, "c.csv")
    assert (info.value.source, info.value.line) == ("c.csv", 6)
    assert str(info.value).startswith("c.csv, line 6: ")


def test_parse_columns_short_row_names_line() -> None:
    with pytest.raises(ParseError, match="expected two numbers") as info:
        parse_columns("100,1\n101\n", "d.csv")
    assert info.value.line == 2


@pytest.mark.parametrize("text", ["", "\n\n  \n", "# only\n% comments\n"])
def test_parse_columns_empty_is_an_error(text: str) -> None:
    with pytest.raises(ParseError, match="no data rows") as info:
        parse_columns(text, "e.csv")
    assert info.value.source == "e.csv"


def test_parse_columns_without_numbers_is_an_error() -> None:
    text = "\n".join(f"words on line {i}" for i in range(30))
    with pytest.raises(ParseError, match="no line of two numbers") as info:
        parse_columns(text, "f.txt")
    assert info.value.line == 21  # the last line looked at for a header


def test_looks_like_columns() -> None:
    assert looks_like_columns("header\n# c\n100 1\n")
    assert not looks_like_columns("just some words\nand more words\n")


# --- detection ------------------------------------------------------------------------------------


def test_read_bytes_detects_rruff_by_content_not_name() -> None:
    assert detect_format(RRUFF_SAMPLE, "quartz.csv") == "rruff"
    (s,) = read_bytes(RRUFF_SAMPLE, "quartz.csv")
    assert s.label == "Quartz" and s.source == "quartz.csv"


def test_read_bytes_detects_columns() -> None:
    data = ("wavenumber;intensity\n" + "\n".join(rows(sep=";"))).encode()
    assert detect_format(data, "scan.txt") == "columns"
    (s,) = read_bytes(data, "scan.txt")
    assert s.label is None and len(s) == 10


@pytest.mark.parametrize("data", [b"", b"  \r\n\t\n"])
def test_read_bytes_empty_file(data: bytes) -> None:
    with pytest.raises(ParseError, match="the file is empty") as info:
        read_bytes(data, "empty.csv")
    assert not isinstance(info.value, UnsupportedFormatError)
    assert info.value.source == "empty.csv"


def test_read_bytes_random_binary_is_unsupported() -> None:
    data = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    data = data[:100] + b"\x00" + data[100:]
    with pytest.raises(UnsupportedFormatError, match="binary content") as info:
        read_bytes(data, "blob.bin")
    assert info.value.source == "blob.bin"


def test_read_bytes_prose_is_unsupported() -> None:
    with pytest.raises(UnsupportedFormatError, match="not a recognised spectrum format"):
        read_bytes(b"Dear colleague,\nplease find the spectrum attached.\n", "letter.txt")


def test_read_bytes_refuses_huge_files() -> None:
    with pytest.raises(ParseError, match="exceeds"):
        read_bytes(b"1" * (MAX_FILE_BYTES + 1), "huge.csv")


def test_errors_are_spectrum_errors() -> None:
    assert issubclass(UnsupportedFormatError, ParseError)
    assert issubclass(ParseError, SpectrumError) and issubclass(SpectrumError, ValueError)


def test_read_path_uses_the_file_name_as_source(tmp_path: Path) -> None:
    path = tmp_path / "Quartz__R040031.txt"
    path.write_bytes(RRUFF_SAMPLE)
    (s,) = read_path(path)
    assert s.source == "Quartz__R040031.txt" and s.label == "Quartz"
