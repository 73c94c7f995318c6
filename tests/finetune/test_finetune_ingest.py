"""Training-data checks made before a job is queued (`finetune.archive`, `finetune.ingest`)."""

from __future__ import annotations

import io
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from finetune_fixtures import (
    GRID,
    NEW_PEAKS,
    csv_bytes,
    folder_files,
    labelled_json,
    manifest_files,
    on_grid,
    targz_archive,
    zip_archive,
)

from finetune.archive import ArchiveError, ArchiveLimits, read_archive, safe_name
from finetune.ingest import IngestError, IngestLimits, TrainingData, from_archive, from_json
from finetune.schemas import LabelledSpectrum

LIMITS = IngestLimits(max_spectra=100, max_points=5000, min_per_class=2,
                      archive=ArchiveLimits(max_members=50, max_member_bytes=1 << 20,
                                            max_total_bytes=4 << 20))  # fmt: skip
TWO = {k: NEW_PEAKS[k] for k in ("Aspirin", "Caffeine")}


def spectra(items: list[dict]) -> list[LabelledSpectrum]:
    return [LabelledSpectrum.model_validate(d) for d in items]


# --- JSON -----------------------------------------------------------------------------------------


def test_json_spectra_on_and_off_grid_are_prepared_onto_the_grid() -> None:
    data = from_json(spectra(labelled_json(NEW_PEAKS, 4)), None, GRID, 0.2, LIMITS)
    assert data.x.shape == (12, GRID.points) and data.x.dtype == np.float32
    assert data.classes == sorted(NEW_PEAKS) and np.bincount(data.y).tolist() == [4, 4, 4]
    assert data.x.min() >= 0.0 and data.x.max() <= 1.0
    summary = data.summary()
    assert summary["per_class"] == {"Aspirin": 4, "Caffeine": 4, "Glucose": 4}
    assert summary["spectra"] == 12 and summary["source"] == "json"


def test_a_parallel_labels_list_works_and_must_match_in_count() -> None:
    items = [{"intensities": on_grid(p, i)} for p in TWO.values() for i in range(3)]
    labels = [lab for lab in TWO for _ in range(3)]
    assert from_json(spectra(items), labels, GRID, 0.2, LIMITS).classes == list(TWO)
    with pytest.raises(IngestError, match="5 labels for 6 spectra"):
        from_json(spectra(items), labels[:5], GRID, 0.2, LIMITS)


def test_missing_and_contradicting_labels_are_named() -> None:
    items = labelled_json(TWO, 3)
    items[2].pop("label")
    with pytest.raises(IngestError, match="no label") as err:
        from_json(spectra(items), None, GRID, 0.2, LIMITS)
    assert err.value.items == [{"spectrum": "2", "error": "no label"}]
    items = labelled_json(TWO, 3)
    with pytest.raises(IngestError, match="contradict"):
        from_json(spectra(items), ["Caffeine"] * 6, GRID, 0.2, LIMITS)
    items = labelled_json(TWO, 3)
    for item in items:
        item["label"] = f" {item['label']} "  # the same label once cleaned: no contradiction
    labels = [str(item["label"]).strip() for item in items]
    assert from_json(spectra(items), labels, GRID, 0.2, LIMITS).classes == sorted(TWO)


@pytest.mark.parametrize("bad", ["Quartz\x00", "Qu\nartz", "Quartz\x7f"])
def test_labels_with_control_characters_are_refused(bad: str) -> None:
    # "Quartz\x00" was accepted, then stored as "Quartz": a second "Quartz" class failed the job
    items = [{"intensities": on_grid(p, i)} for p in TWO.values() for i in range(3)]
    labels = ["Quartz"] * 3 + [bad] * 3
    with pytest.raises(IngestError, match="control characters"):
        from_json(spectra(items), labels, GRID, 0.2, LIMITS)


@pytest.mark.parametrize(
    ("per_class", "val_fraction", "message"),
    [({"A": 5}, 0.2, "at least two classes"), ({"A": 5, "B": 1}, 0.2, "fewer than 2"),
     ({"A": 5, "B": 2}, 0.2, None), ({"A": 5, "B": 1}, 0.0, "fewer than 2")],
)  # fmt: skip
def test_class_counts(per_class: dict[str, int], val_fraction: float, message: str | None) -> None:
    items = [{"label": c, "intensities": on_grid((300.0 + 100 * k,), i)}
             for k, (c, n) in enumerate(per_class.items()) for i in range(n)]  # fmt: skip
    if message is None:
        from_json(spectra(items), None, GRID, val_fraction, LIMITS)
        return
    with pytest.raises(IngestError, match=message):
        from_json(spectra(items), None, GRID, val_fraction, LIMITS)


def test_min_per_class_of_one_allows_singletons_without_validation() -> None:
    limits = IngestLimits(min_per_class=1)
    items = [
        {"label": c, "intensities": on_grid((300.0 + 100 * k,), 0)} for k, c in enumerate("AB")
    ]
    assert len(from_json(spectra(items), None, GRID, 0.0, limits).y) == 2
    with pytest.raises(IngestError, match="one for training and one for validation"):
        from_json(spectra(items), None, GRID, 0.2, limits)


def test_bad_spectra_wrong_length_and_limits() -> None:
    items = labelled_json(TWO, 3)
    items[1] = {"label": "Aspirin", "intensities": [1.0, 2.0, 3.0]}
    with pytest.raises(IngestError, match="1 spectrum") as err:
        from_json(spectra(items), None, GRID, 0.2, LIMITS)
    assert "expected 128 intensities" in err.value.items[0]["error"]
    with pytest.raises(IngestError, match="at most 5") as err:
        from_json(spectra(labelled_json(TWO, 3)), None, GRID, 0.2, IngestLimits(max_spectra=5))
    assert err.value.too_large
    with pytest.raises(IngestError, match="points; at most 100") as err:
        from_json(spectra(labelled_json(TWO, 3)), None, GRID, 0.2, IngestLimits(max_points=100))
    assert err.value.too_large


def test_nan_is_refused_by_the_schema() -> None:
    with pytest.raises(ValueError, match="finite"):
        LabelledSpectrum.model_validate_json('{"label": "A", "intensities": [1.0, NaN]}')


def test_training_data_round_trips(tmp_path: Path) -> None:
    data = from_json(spectra(labelled_json(TWO, 3)), None, GRID, 0.2, LIMITS)
    data.save(tmp_path / "d")
    back = TrainingData.load(tmp_path / "d")
    assert np.array_equal(back.x, data.x) and np.array_equal(back.y, data.y)
    assert back.classes == data.classes and back.sources == data.sources and back.kind == "json"


# --- archives -------------------------------------------------------------------------------------


@pytest.mark.parametrize("pack", [zip_archive, targz_archive])
def test_manifest_archive(pack: Callable[[dict[str, bytes]], bytes]) -> None:
    data = from_archive(pack(manifest_files(NEW_PEAKS, 3, 1)), GRID, 0.2, LIMITS)
    assert data.classes == sorted(NEW_PEAKS) and len(data.y) == 9 and data.kind == "archive"
    assert "spectra/aspirin_0.csv" in data.sources


def test_folder_per_label_archive_with_a_common_top_folder_and_junk() -> None:
    files = folder_files(NEW_PEAKS, 2, 2) | {
        "__MACOSX/._x.csv": b"junk",
        "lab-export/.DS_Store": b"x",
    }
    data = from_archive(zip_archive(files), GRID, 0.2, LIMITS)
    assert data.classes == sorted(NEW_PEAKS) and len(data.y) == 6


def test_manifest_and_archive_must_agree() -> None:
    files = manifest_files(TWO, 3, 1)
    files["manifest.csv"] += b"spectra/ghost.csv,Aspirin\n"
    files["spectra/stray.csv"] = csv_bytes((500.0,), 1)
    with pytest.raises(IngestError, match=r"1 listed file.s. missing, 1 file.s. not listed") as err:
        from_archive(zip_archive(files), GRID, 0.2, LIMITS)
    named = {item["file"]: item["error"] for item in err.value.items}
    assert "listed in manifest.csv but not in the archive" in named["spectra/ghost.csv"]
    assert named["spectra/stray.csv"] == "not listed in manifest.csv"


def test_unparsable_and_nan_files_are_named() -> None:
    files = manifest_files(TWO, 3, 1)
    files["spectra/aspirin_1.csv"] = b"\x00\x01binary garbage"
    files["spectra/caffeine_2.csv"] = b"x,y\n" + b"".join(
        f"{i},nan\n".encode() for i in range(100, 200)
    )
    with pytest.raises(IngestError, match=r"2 file.s. cannot be used") as err:
        from_archive(zip_archive(files), GRID, 0.2, LIMITS)
    named = {item["file"] for item in err.value.items}
    assert named == {"spectra/aspirin_1.csv", "spectra/caffeine_2.csv"}


def test_files_without_label_are_refused_rruff_files_label_themselves() -> None:
    flat = {"a.csv": csv_bytes((300.0,), 1), "b.csv": csv_bytes((500.0,), 2)}
    with pytest.raises(IngestError, match="no label"):
        from_archive(zip_archive(flat), GRID, 0.2, LIMITS)
    x, y = np.linspace(100, 1200, 300), np.random.default_rng(0).random(300)
    rows = "\n".join(f"{a:.2f}, {b:.5f}" for a, b in zip(x, y, strict=True))
    rruff = {f"{n}{i}.txt": f"##NAMES={n}\n##RRUFFID=R{i}\n{rows}\n##END=\n".encode()
             for n in ("Quartz", "Calcite") for i in range(2)}  # fmt: skip
    assert from_archive(zip_archive(rruff), GRID, 0.2, LIMITS).classes == ["Calcite", "Quartz"]


@pytest.mark.parametrize("name", ["../evil.csv", "/etc/passwd", "a/../../b.csv", "C:\\x.csv"])
def test_path_traversal_is_refused(name: str) -> None:
    with pytest.raises(ArchiveError, match=r"outside|absolute"):
        safe_name(name)
    files = manifest_files(TWO, 2, 1) | {name: b"1,2\n"}
    with pytest.raises(IngestError, match=r"outside|absolute"):
        from_archive(zip_archive(files), GRID, 0.2, LIMITS)


def test_zip_bomb_member_count_and_links_are_refused() -> None:
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(3):
            zf.writestr(f"big{i}.csv", b"0" * (3 << 20))  # 9 MB unpacked, a few kB packed
    assert len(bomb.getvalue()) < 100_000
    with pytest.raises(ArchiveError, match="unpacks to more than") as err:
        read_archive(
            bomb.getvalue(), ArchiveLimits(max_member_bytes=8 << 20, max_total_bytes=4 << 20)
        )
    assert err.value.too_large
    many = zip_archive({f"f{i}.csv": b"1,2\n" for i in range(60)})
    with pytest.raises(ArchiveError, match="entries") as err:
        read_archive(many, ArchiveLimits(max_members=50))
    assert err.value.too_large
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        link = tarfile.TarInfo("Quartz/a.csv")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
    with pytest.raises(ArchiveError, match="link"):
        read_archive(buf.getvalue(), ArchiveLimits())


@pytest.mark.parametrize("method", [zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_damaged_compressed_member_data_is_a_corrupt_archive(method: int) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        zf.writestr("Quartz/a.csv", "".join(f"{i},{i % 7}\n" for i in range(5000)))
    blob = bytearray(buf.getvalue())
    start = 30 + len("Quartz/a.csv") + 12  # into the compressed data (past LZMA's properties)
    blob[start : start + 64] = b"\xff" * 64  # the decompressor fails before any CRC check
    with pytest.raises(ArchiveError, match="corrupt"):  # was zlib.error / OSError / LZMAError
        read_archive(bytes(blob), ArchiveLimits())


def test_not_an_archive_and_empty_archive() -> None:
    with pytest.raises(ArchiveError, match="neither"):
        read_archive(b"just some text", ArchiveLimits())
    with pytest.raises(ArchiveError, match="no files"):
        read_archive(zip_archive({}), ArchiveLimits())
    with pytest.raises(ArchiveError, match="corrupt"):
        read_archive(b"PK\x03\x04" + b"\x00" * 100, ArchiveLimits())
