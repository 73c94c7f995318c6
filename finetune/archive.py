"""Reading an uploaded .zip or .tar(.gz) in memory, refusing what could hurt the server.

Nothing is extracted to disk. Refused with a reason: member names that are absolute or climb out
of the archive (`..`), links and device files, encrypted zip members, more than `max_members`
entries, a member over `max_member_bytes` or more than `max_total_bytes` in all. Sizes are
counted on the bytes actually decompressed, never taken from headers, so a zip bomb stops at
the limit. Hidden files and macOS resource forks (`__MACOSX/`, `._x`, `.DS_Store`) are skipped.
"""

from __future__ import annotations

import io
import lzma
import re
import stat
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from typing import IO

CHUNK = 1 << 16


class ArchiveError(ValueError):
    """The archive cannot be used; `too_large` distinguishes size limits (413) from the rest."""

    def __init__(self, message: str, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


@dataclass(frozen=True)
class ArchiveLimits:
    """Bounds on what one archive may unpack to."""

    max_members: int = 10_000
    max_member_bytes: int = 20 * 1024 * 1024
    max_total_bytes: int = 200 * 1024 * 1024


@dataclass(frozen=True)
class Member:
    """A regular file of the archive: its normalised relative path and its bytes."""

    name: str
    data: bytes


def read_archive(blob: bytes, limits: ArchiveLimits) -> list[Member]:
    """The files of a zip or tar archive (gzip, bzip2, xz or plain), detected from content."""
    if blob[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        members = _read_zip(blob, limits)
    elif blob[:2] == b"\x1f\x8b" or _is_tar(blob):
        members = _read_tar(blob, limits)
    else:
        raise ArchiveError("the upload is neither a .zip nor a .tar(.gz) archive")
    if not members:
        raise ArchiveError("the archive holds no files")
    names = [m.name for m in members]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ArchiveError(f"the archive holds the same path twice: {', '.join(twice[:5])}")
    return members


def safe_name(raw: str) -> str:
    """A member name as a clean relative POSIX path; refuses absolute and climbing paths."""
    name = raw.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise ArchiveError(f"archive member {raw[:200]!r} has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(f"archive member {raw[:200]!r} points outside the archive ('..')")
    return "/".join(parts)


def is_junk(name: str) -> bool:
    """Hidden files and macOS metadata that archivers add."""
    return any(p.startswith(".") or p == "__MACOSX" for p in name.split("/"))


class _Budget:
    """Counts members and decompressed bytes against the limits."""

    def __init__(self, limits: ArchiveLimits) -> None:
        self.limits, self.members, self.total = limits, 0, 0

    def member(self) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            raise ArchiveError(
                f"the archive holds more than {self.limits.max_members} entries", too_large=True
            )

    def read(self, fh: IO[bytes], name: str) -> bytes:
        out, size = bytearray(), 0
        while chunk := fh.read(CHUNK):
            size += len(chunk)
            self.total += len(chunk)
            if size > self.limits.max_member_bytes:
                raise ArchiveError(
                    f"{name} unpacks to more than {self.limits.max_member_bytes} bytes",
                    too_large=True,
                )
            if self.total > self.limits.max_total_bytes:
                raise ArchiveError(
                    f"the archive unpacks to more than {self.limits.max_total_bytes} bytes",
                    too_large=True,
                )
            out += chunk
        return bytes(out)


_CORRUPT = (EOFError, OSError, zlib.error, lzma.LZMAError)
"""What the decompressors raise on damaged member data (deflate, bzip2, LZMA, gzip)."""


def _read_zip(blob: bytes, limits: ArchiveLimits) -> list[Member]:
    budget, out = _Budget(limits), []
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as zf:
            infos = zf.infolist()
            if len(infos) > limits.max_members:
                raise ArchiveError(
                    f"the archive holds {len(infos)} entries; at most {limits.max_members}",
                    too_large=True,
                )
            for info in infos:
                budget.member()
                name = safe_name(info.filename)
                if info.is_dir() or is_junk(name):
                    continue
                if stat.S_ISLNK(info.external_attr >> 16):
                    raise ArchiveError(f"archive member {name!r} is a symbolic link")
                if info.flag_bits & 0x1:
                    raise ArchiveError(f"archive member {name!r} is encrypted")
                with zf.open(info) as fh:
                    out.append(Member(name, budget.read(fh, name)))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, *_CORRUPT, NotImplementedError) as exc:
        raise ArchiveError(f"the zip archive is corrupt or unsupported: {exc}") from None
    return out


def _read_tar(blob: bytes, limits: ArchiveLimits) -> list[Member]:
    budget, out = _Budget(limits), []
    try:
        # Stream mode ("r|*"): members are read in order, never all listed up front.
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r|*") as tf:
            for info in tf:
                budget.member()
                name = safe_name(info.name)
                if info.isdir() or is_junk(name):
                    continue
                if not info.isfile():
                    raise ArchiveError(f"archive member {name!r} is a link or device file")
                if info.size > limits.max_member_bytes:
                    raise ArchiveError(
                        f"{name} unpacks to {info.size} bytes; at most {limits.max_member_bytes}",
                        too_large=True,
                    )
                fh = tf.extractfile(info)
                assert fh is not None  # regular files always have a body
                out.append(Member(name, budget.read(fh, name)))
    except (tarfile.TarError, *_CORRUPT) as exc:
        raise ArchiveError(f"the tar archive is corrupt or unsupported: {exc}") from None
    return out


def _is_tar(blob: bytes) -> bool:
    return (len(blob) >= 262 and blob[257:262] == b"ustar") or blob[:3] in (b"BZh", b"\xfd7z")
