"""Finding spectrum files in folders and packing them into upload batches."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

SPECTRUM_SUFFIXES = frozenset(
    {".txt", ".csv", ".tsv", ".dat", ".xy", ".asc", ".jdx", ".dx", ".jcamp", ".spc"}
)
"""File name endings collected from folders (the server detects the format from content)."""

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class Upload:
    """One file's name and bytes, read once so a retried request sends the same content."""

    name: str
    data: bytes

    @classmethod
    def read(cls, path: PathLike) -> Upload:
        p = Path(path)
        return cls(p.name, p.read_bytes())


def find_spectrum_files(
    folder: PathLike, recursive: bool = True, suffixes: Iterable[str] = SPECTRUM_SUFFIXES
) -> list[Path]:
    """Spectrum files under `folder` in a stable (sorted) order; hidden entries are skipped."""
    root = Path(folder)
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder")
    wanted = {s.lower() for s in suffixes}
    found = root.rglob("*") if recursive else root.iterdir()
    return sorted(
        p for p in found
        if p.is_file() and p.suffix.lower() in wanted
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )  # fmt: skip


def expand_paths(paths: Iterable[PathLike], recursive: bool = True) -> list[Path]:
    """Files as given, folders replaced by the spectrum files they hold."""
    out: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            out.extend(find_spectrum_files(path, recursive))
        elif path.is_file():
            out.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return out


def batches(paths: Sequence[Path], max_files: int, max_bytes: int) -> Iterator[list[Path]]:
    """Consecutive groups of at most `max_files` files and (where possible) `max_bytes` bytes.

    A single file bigger than `max_bytes` still gets a batch of its own (the server decides).
    """
    group: list[Path] = []
    size = 0
    for path in paths:
        n = path.stat().st_size
        if group and (len(group) >= max_files or size + n > max_bytes):
            yield group
            group, size = [], 0
        group.append(path)
        size += n
    if group:
        yield group
