"""Shared fixtures: the real RRUFF data (skipped where absent) and small synthetic RRUFF files.

Synthetic spectra are Lorentzian peaks on a small baseline; each class has its own peak
positions, so a tiny network (or a cosine library search) can tell them apart.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
RRUFF_ZIP = SHARED_DATA / "rruff_excellent_unoriented_2019" / "excellent_unoriented.zip"


def rruff_text(
    name: str,
    rruff_id: str,
    x: Iterable[float],
    y: Iterable[float],
    *,
    end: bool = True,
    newline: str = "\r\n",
) -> str:
    """A file in the layout RRUFF serves: `##KEY=value` header, `x, y` rows, `##END=`."""
    header = [
        f"##NAMES={name}",
        f"##RRUFFID={rruff_id}",
        "##IDEAL CHEMISTRY=SiO_2_",
        "##LOCALITY=Somewhere, Earth",
        "##OWNER=RRUFF",
        f"##URL=rruff.info/{rruff_id}",
    ]
    rows = [f"{a:.4f}, {b:.7E}" for a, b in zip(x, y, strict=True)]
    return newline.join(header + rows + (["##END="] if end else [])) + newline


def rruff_member_name(
    name: str, rruff_id: str, laser: int, serial: int, kind: str = "Processed"
) -> str:
    """RRUFF's file-name scheme (mineral token, sample id, laser, data kind, serial)."""
    token = "".join(ch for ch in name if ch.isalnum())
    return f"{token}__{rruff_id}__Raman__{laser}__0__unoriented__Raman_Data_{kind}__{serial}.txt"


def peak_spectrum(
    centres: Iterable[float],
    rng: np.random.Generator,
    x: np.ndarray | None = None,
    noise: float = 0.01,
    jitter: float = 2.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Lorentzian peaks (width ~8 cm-1) plus noise on an axis (default 100..1200 cm-1)."""
    x = np.linspace(100.0, 1200.0, 551) if x is None else x
    y = np.full_like(x, 0.05)
    for c in centres:
        c = c + rng.uniform(-jitter, jitter)
        y += rng.uniform(0.6, 1.0) / (1.0 + ((x - c) / 8.0) ** 2)
    return x, y + rng.normal(0.0, noise, x.shape)


CLASS_PEAKS = {
    "Quartz": (206.0, 464.0),
    "Calcite": (282.0, 712.0, 1086.0),
    "Diamond": (1000.0,),
    "Beryl": (322.0, 685.0, 1067.0),
    "Grossular": (372.0, 550.0, 880.0),
    "Epidote": (455.0, 600.0, 915.0),
}


@pytest.fixture(scope="session")
def shared_rruff_zip() -> Path:
    """The real RRUFF `excellent_unoriented` zip under ../shared/data, or skip."""
    if not RRUFF_ZIP.is_file():
        pytest.skip(f"real RRUFF data not found at {RRUFF_ZIP} (needs ../shared/data)")
    return RRUFF_ZIP


def write_rruff_file(
    folder: Path,
    name: str,
    rruff_id: str,
    laser: int = 532,
    serial: int = 0,
    y: np.ndarray | None = None,
    kind: str = "Processed",
    x: np.ndarray | None = None,
    filename: str | None = None,
) -> Path:
    """Write one synthetic RRUFF .txt file into `folder` and return its path.

    The intensities default to `name`'s peaks with noise seeded by `serial` (so two files with
    different serials never hold identical arrays); the axis defaults to 100..1200 cm-1.
    """
    folder.mkdir(parents=True, exist_ok=True)
    x_def, y_def = peak_spectrum(CLASS_PEAKS.get(name, (500.0,)), np.random.default_rng(serial))
    x = x_def if x is None else x
    if y is None:
        y = y_def if x is x_def else np.interp(x, x_def, y_def)
    path = folder / (filename or rruff_member_name(name, rruff_id, laser, serial, kind))
    path.write_text(rruff_text(name, rruff_id, x, y), newline="")
    return path


def zip_files(folder: Path, target: Path) -> Path:
    """Pack every file of `folder` into a flat zip at `target` (as rruff.info serves them)."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(folder.iterdir()):
            zf.write(f, f.name)
    return target


def peak_dataset(
    n_classes: int, per_class: int, length: int, seed: int = 0, noise: float = 0.03
) -> tuple[np.ndarray, np.ndarray]:
    """Min-max normalised synthetic spectra on `length` points: class c has its own 1-3 peaks,
    jittered by up to 1 % of the axis per spectrum. Returns (x float32 [N, L], y int64 [N])."""
    rng = np.random.default_rng(seed)
    axis = np.linspace(0.0, 1.0, length)
    centres = [rng.uniform(0.05, 0.95, rng.integers(1, 4)) for _ in range(n_classes)]
    xs, ys = [], []
    for c in range(n_classes):
        for _ in range(per_class):
            y = np.zeros(length)
            for m in centres[c]:
                m = m + rng.uniform(-0.01, 0.01)
                y += rng.uniform(0.5, 1.0) / (1.0 + ((axis - m) / 0.01) ** 2)
            y += rng.normal(0.0, noise, length)
            xs.append((y - y.min()) / (y.max() - y.min()))
            ys.append(c)
    return np.asarray(xs, dtype=np.float32), np.asarray(ys, dtype=np.int64)


@pytest.fixture(scope="session")
def rruff_writer() -> Callable[..., Path]:
    """`write_rruff_file(folder, name, rruff_id, ...)`, for fixtures of any scope."""
    return write_rruff_file


@pytest.fixture(scope="session")
def rruff_zipper() -> Callable[[Path, Path], Path]:
    """`zip_files(folder, target)`, for fixtures of any scope."""
    return zip_files


@pytest.fixture(scope="session")
def make_peak_dataset() -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """`peak_dataset(n_classes, per_class, length, seed=0, noise=0.03)`: synthetic model input."""
    return peak_dataset


@pytest.fixture
def write_rruff(tmp_path: Path) -> Callable[..., Path]:
    """`write_rruff(name, rruff_id, laser=532, serial=0, ...)` into `tmp_path/rruff/`."""

    def write(name: str, rruff_id: str, **kwargs: Any) -> Path:
        return write_rruff_file(tmp_path / "rruff", name, rruff_id, **kwargs)

    return write


@pytest.fixture
def zip_folder(tmp_path: Path) -> Callable[..., Path]:
    """`zip_folder(folder, name="rruff.zip")`: pack a folder into `tmp_path/name`."""

    def pack(folder: Path, name: str = "rruff.zip") -> Path:
        return zip_files(folder, tmp_path / name)

    return pack
