#!/usr/bin/env python3
"""Pinned requirements of the container images: generate them and prove they are complete.

The images install `deploy/requirements/*.txt` with `pip install --only-binary=:all:` on
CPython 3.12 / manylinux x86_64. This tool answers, without installing multi-GB wheels:

* ``check``: for every requirements file, walk the dependency graph from the roots that
  pyproject.toml declares for that image (dependencies + extras) and verify that
    - every requirement reached has exactly one ``==`` pin, and the pin satisfies it;
    - every pinned release has a wheel that CPython 3.12 on manylinux x86_64 can install;
    - no pin is left that nothing needs (a stale pin);
    - no pin is for a package that must not be in that image (torch in the API images).
  Each package's ``Requires-Dist`` comes from the index's PEP 658 metadata where served, else
  from the wheel's ``*.dist-info/METADATA`` read with HTTP range requests (a few hundred KB,
  never the whole 900 MB torch wheel). Everything fetched is cached under build/deploy-cache/.
* ``compile``: write the files from pyproject.toml, choosing for every package the newest
  release that satisfies every constraint (greedy, restarting when a later constraint rules a
  choice out) and honouring the hard pins in HINTS below. Run it after changing dependencies:
  ``build/deploy-venv/bin/python deploy/tools/pins.py compile``.

Only the standard library and `packaging` are needed.
"""

from __future__ import annotations

import argparse
import email.parser
import io
import json
import os
import re
import ssl
import sys
import time
import tomllib
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from packaging import tags
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

REPO = Path(__file__).resolve().parents[2]
REQ_DIR = REPO / "deploy" / "requirements"
CACHE = Path(os.environ.get("RAMAN_DEPLOY_CACHE", REPO / "build" / "deploy-cache"))
INDEX = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")

# The images: CPython 3.12 on glibc >= 2.36 (python:3.12-slim-bookworm; Ubuntu 24.04 has 2.39).
PY = (3, 12)
GLIBC_MAX = 36
PLATFORMS = [f"manylinux_2_{m}_x86_64" for m in range(GLIBC_MAX, 4, -1)] + [
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
    "linux_x86_64",
]
TARGET_TAGS = list(tags.cpython_tags(PY, abis=["cp312", "abi3", "none"], platforms=PLATFORMS)) + [
    t
    for t in tags.compatible_tags(PY, "cp312", PLATFORMS)
    if t not in set(tags.cpython_tags(PY, abis=["cp312", "abi3", "none"], platforms=PLATFORMS))
]
TAG_RANK = {t: i for i, t in enumerate(TARGET_TAGS)}
MARKER_ENV = {
    "implementation_name": "cpython",
    "implementation_version": "3.12.3",
    "os_name": "posix",
    "platform_machine": "x86_64",
    "platform_python_implementation": "CPython",
    "platform_release": "",
    "platform_system": "Linux",
    "platform_version": "",
    "python_full_version": "3.12.3",
    "python_version": "3.12",
    "sys_platform": "linux",
}


@dataclass(frozen=True)
class Image:
    """One requirements file: which extras of the project it carries and what it must not."""

    file: str
    extras: tuple[str, ...]
    forbidden: tuple[str, ...] = ()
    note: str = ""
    cpu_torch: bool = False


IMAGES = [
    Image(
        "api-cpu.txt",
        ("cpu",),
        forbidden=("torch", "onnxruntime-gpu"),
        note="API image, CPU (target api-cpu): no torch.",
    ),
    Image(
        "api-gpu.txt",
        ("gpu",),
        forbidden=("torch", "onnxruntime"),
        note="API image, CUDA 13 / cuDNN 9 from the nvidia/cuda base (target api-gpu): no torch;"
        " onnxruntime-gpu without its [cuda,cudnn] extras (the base image has the libraries).",
    ),
    Image(
        "worker.txt",
        ("train", "cpu"),
        forbidden=("onnxruntime-gpu",),
        note="fine-tune worker, GPU (target worker-gpu): torch from PyPI (its CUDA 13 build"
        " with the nvidia-* wheels), onnx export, and the CPU onnxruntime used to check"
        " an export.",
    ),
    Image(
        "worker-cpu.txt",
        ("train", "cpu"),
        forbidden=("onnxruntime-gpu", "torch", "triton"),
        cpu_torch=True,
        note="fine-tune worker, CPU (target worker-cpu): everything of worker.txt but torch and"
        " its CUDA wheels; the Dockerfile first installs torch==<worker.txt pin>+cpu from"
        " the PyTorch CPU index with --no-deps.",
    ),
]

# Requirements of the CUDA torch wheel that its +cpu build does not have.
CUDA_ONLY = re.compile(r"^(nvidia-|cuda-|triton$)")

# Hard pins the compiler must honour (the newest release is not always the right one).
HINTS = {
    # onnxruntime-gpu 1.31.1: CUDA 13 / cuDNN 9 build, matched by the nvidia/cuda base image.
    "onnxruntime-gpu": "==1.31.1",
    # torch 2.13.0: the release the project documents (README: CPU machines install 2.13.0);
    # on PyPI its Linux wheel is the CUDA 13 build (cuDNN 9, NCCL) with nvidia-* wheels, so
    # the GPU worker needs no CUDA base image. worker-cpu takes 2.13.0+cpu from the PyTorch
    # CPU index instead (same Requires-Dist minus the CUDA wheels).
    "torch": "==2.13.0",
}


class PinError(Exception):
    pass


# --------------------------------------------------------------------------- index access

_CTX = ssl.create_default_context(
    cafile=os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE") or None
)


def _get(url: str, headers: dict[str, str] | None = None, tries: int = 3) -> bytes:
    last: Exception | None = None
    for attempt in range(tries):
        try:
            req = urllib.request.Request(
                url, headers={"User-Agent": "raman-pins/1", **(headers or {})}
            )
            with urllib.request.urlopen(req, timeout=60, context=_CTX) as resp:
                return resp.read()
        except urllib.error.HTTPError as exc:
            if exc.code in (404, 410):
                raise
            last = exc
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            last = exc
        time.sleep(1.5 * (attempt + 1))
    raise PinError(f"GET {url} failed: {last}")


def _cache_path(kind: str, key: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._+-]", "_", key)
    return CACHE / kind / safe


_project_memo: dict[str, dict] = {}


def project_files(name: str, max_age_s: float = 6 * 3600) -> dict:
    """PEP 691 JSON page of a project, cached for a few hours."""
    norm = canonicalize_name(name)
    if norm in _project_memo:
        return _project_memo[norm]
    path = _cache_path("simple", norm + ".json")
    if path.exists() and time.time() - path.stat().st_mtime < max_age_s:
        data = json.loads(path.read_text())
    else:
        try:
            raw = _get(f"{INDEX}/{norm}/", {"Accept": "application/vnd.pypi.simple.v1+json"})
        except urllib.error.HTTPError as exc:
            raise PinError(f"{name}: not on the index ({exc.code})") from None
        data = json.loads(raw)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data))
    _project_memo[norm] = data
    return data


def wheel_rank(filename: str) -> int | None:
    """Position of the wheel's best tag in the target's preference order (None: unusable)."""
    try:
        _, _, _, wtags = parse_wheel_filename(filename)
    except Exception:
        return None
    ranks = [TAG_RANK[t] for t in wtags if t in TAG_RANK]
    return min(ranks) if ranks else None


def release_wheels(name: str) -> dict[Version, dict]:
    """Best installable wheel per release (not yanked, requires-python allows 3.12)."""
    best: dict[Version, tuple[int, dict]] = {}
    for f in project_files(name)["files"]:
        fn = f["filename"]
        if not fn.endswith(".whl") or f.get("yanked"):
            continue
        rp = f.get("requires-python")
        if rp:
            try:
                if not SpecifierSet(rp).contains("3.12.3", prereleases=True):
                    continue
            except Exception:
                pass
        rank = wheel_rank(fn)
        if rank is None:
            continue
        try:
            ver = parse_wheel_filename(fn)[1]
        except Exception:
            continue
        if ver not in best or rank < best[ver][0]:
            best[ver] = (rank, f)
    return {v: f for v, (_, f) in best.items()}


class RangeFile(io.RawIOBase):
    """Seekable read-only view of a remote file through HTTP range requests (64 KiB blocks)."""

    BLOCK = 1 << 16

    def __init__(self, url: str) -> None:
        self.url = url
        self.pos = 0
        self.blocks: dict[int, bytes] = {}
        head = self._range(0, 0, want_size=True)
        self.size = head

    def _range(self, start: int, end: int, want_size: bool = False):
        req = urllib.request.Request(
            self.url, headers={"Range": f"bytes={start}-{end}", "User-Agent": "raman-pins/1"}
        )
        for attempt in range(3):
            try:
                with urllib.request.urlopen(req, timeout=60, context=_CTX) as resp:
                    if resp.status != 206:
                        raise PinError(f"{self.url}: server ignores range requests")
                    body = resp.read()
                    if want_size:
                        return int(resp.headers["Content-Range"].rsplit("/", 1)[1])
                    return body
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                last = exc
                time.sleep(1.5 * (attempt + 1))
        raise PinError(f"range GET {self.url} failed: {last}")

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def tell(self) -> int:
        return self.pos

    def _block(self, index: int) -> bytes:
        if index not in self.blocks:
            start = index * self.BLOCK
            end = min(self.size, start + self.BLOCK) - 1
            self.blocks[index] = self._range(start, end)
        return self.blocks[index]

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self.size - self.pos
        n = min(n, self.size - self.pos)
        out = bytearray()
        while n > 0:
            index, offset = divmod(self.pos, self.BLOCK)
            chunk = self._block(index)[offset : offset + n]
            if not chunk:
                break
            out += chunk
            self.pos += len(chunk)
            n -= len(chunk)
        return bytes(out)

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


def wheel_metadata(name: str, version: Version) -> tuple[str, list[str]]:
    """(wheel filename, Requires-Dist lines) of the wheel the image would install."""
    wheels = release_wheels(name)
    if version not in wheels:
        raise PinError(
            f"{name}=={version}: no wheel for CPython 3.12 manylinux x86_64 on the index "
            "(the images install with --only-binary=:all:)"
        )
    f = wheels[version]
    fn = f["filename"]
    path = _cache_path("metadata", fn + ".METADATA")
    if path.exists():
        text = path.read_text(encoding="utf-8")
    else:
        url = f["url"]
        if f.get("core-metadata") or f.get("data-dist-info-metadata"):
            raw = _get(url.split("#", 1)[0] + ".metadata")
        else:
            with zipfile.ZipFile(io.BufferedReader(RangeFile(url.split("#", 1)[0]), 1 << 16)) as zf:
                names = [n for n in zf.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
                if len(names) != 1:
                    raise PinError(f"{fn}: cannot find its METADATA")
                raw = zf.read(names[0])
        text = raw.decode("utf-8", "replace")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    msg = email.parser.Parser().parsestr(text, headersonly=True)
    return fn, msg.get_all("Requires-Dist") or []


# --------------------------------------------------------------------------- graph walk


def project_roots(extras: Iterable[str]) -> tuple[list[Requirement], dict]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    proj = data["project"]
    reqs = [Requirement(r) for r in proj.get("dependencies", [])]
    opt = proj.get("optional-dependencies", {})
    for extra in extras:
        if extra not in opt:
            raise PinError(f"pyproject.toml has no extra [{extra}]")
        reqs += [Requirement(r) for r in opt[extra]]
    return [
        r for r in reqs if r.marker is None or r.marker.evaluate(dict(MARKER_ENV, extra=""))
    ], proj


def applies(req: Requirement, extras: set[str]) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate(dict(MARKER_ENV, extra=e)) for e in ({""} | extras))


@dataclass
class Walk:
    chosen: dict[str, Version]
    needed_by: dict[str, list[str]] = field(default_factory=dict)
    wheel: dict[str, str] = field(default_factory=dict)


def walk(
    roots: list[Requirement],
    pins: dict[str, Version] | None,
    constraints: dict[str, SpecifierSet] | None = None,
    provided: dict[str, Version] | None = None,
) -> Walk:
    """Walk the graph. With `pins`, verify; without, choose versions (greedy).

    `provided` names packages installed apart from the file (the +cpu torch): their version is
    given, and requirements that only the CUDA build has are dropped from theirs.
    """
    provided = provided or {}
    chosen: dict[str, Version] = dict(pins or {})
    chosen.update(provided)
    compiling = pins is None
    constraints = constraints if constraints is not None else {}
    result = Walk(chosen)
    extras_of: dict[str, set[str]] = {}
    queue: list[tuple[Requirement, str]] = [(r, "pyproject.toml") for r in roots]
    done: set[tuple[str, frozenset[str]]] = set()
    errors: list[str] = []
    while queue:
        req, parent = queue.pop(0)
        name = canonicalize_name(req.name)
        result.needed_by.setdefault(name, []).append(f"{parent} ({req})")
        spec = req.specifier
        if compiling:
            constraints[name] = constraints.get(name, SpecifierSet()) & spec
            if name not in chosen:
                chosen[name] = pick(name, constraints[name])
        if name not in chosen:
            errors.append(f"{name}: required by {parent} as '{req}' but not pinned")
            continue
        if not spec.contains(chosen[name], prereleases=True):
            if compiling:
                raise Restart(name, constraints[name])
            errors.append(f"{name}=={chosen[name]} does not satisfy '{req}' (required by {parent})")
        extras_of.setdefault(name, set()).update(canonicalize_name(e) for e in req.extras)
        key = (name, frozenset(extras_of[name]))
        if key in done:
            continue
        done.add(key)
        try:
            fn, requires = wheel_metadata(name, chosen[name])
        except PinError as exc:
            errors.append(str(exc))
            continue
        result.wheel[name] = fn
        for line in requires:
            child = Requirement(line)
            if name in provided and CUDA_ONLY.match(canonicalize_name(child.name)):
                continue
            if applies(child, extras_of[name]):
                queue.append((child, f"{name}=={chosen[name]}"))
    if errors:
        raise PinError("\n".join(sorted(set(errors))))
    return result


class Restart(Exception):
    def __init__(self, name: str, spec: SpecifierSet) -> None:
        super().__init__(name)
        self.name, self.spec = name, spec


def pick(name: str, spec: SpecifierSet) -> Version:
    if name in HINTS:
        spec = spec & SpecifierSet(HINTS[name])
    releases = [v for v in release_wheels(name) if spec.contains(v, prereleases=True)]
    # like pip: a pre-release only when no final release fits
    candidates = sorted((v for v in releases if not v.is_prerelease), reverse=True) or sorted(
        releases, reverse=True
    )
    if not candidates:
        raise PinError(f"{name}: no release with a cp312 manylinux x86_64 wheel satisfies '{spec}'")
    return candidates[0]


def provided_for(image: Image) -> dict[str, Version]:
    """The +cpu torch of worker-cpu has the version worker.txt pins (or the hint)."""
    if not image.cpu_torch:
        return {}
    gpu_file = REQ_DIR / "worker.txt"
    if gpu_file.exists() and "torch" in read_pins(gpu_file):
        return {"torch": read_pins(gpu_file)["torch"]}
    return {"torch": Version(HINTS["torch"].lstrip("="))}


def compile_image(image: Image) -> Walk:
    roots, _ = project_roots(image.extras)
    constraints: dict[str, SpecifierSet] = {}
    for _ in range(50):
        try:
            result = walk(roots, None, constraints, provided_for(image))
            for name in provided_for(image):
                result.chosen.pop(name, None)
            return result
        except Restart:
            # keep the accumulated constraints; the next pass chooses again under them
            continue
    raise PinError(f"{image.file}: no consistent set after 50 passes")


# --------------------------------------------------------------------------- files

PIN_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)\s*(?:#.*)?$")


def read_pins(path: Path) -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = PIN_RE.match(line)
        if not m:
            raise PinError(f"{path.name}:{lineno}: not a 'name==version' pin: {raw!r}")
        name = canonicalize_name(m.group(1))
        if name in pins:
            raise PinError(f"{path.name}:{lineno}: {name} pinned twice")
        try:
            pins[name] = Version(m.group(2))
        except InvalidVersion:
            raise PinError(f"{path.name}:{lineno}: bad version {m.group(2)!r}") from None
    return pins


def write_pins(image: Image, result: Walk) -> None:
    lines = [
        f"# {image.file}: exact pins for the {image.note}",
        "# Generated by `python deploy/tools/pins.py compile` from pyproject.toml "
        f"(dependencies + extras {', '.join(image.extras)}).",
        "# Target: CPython 3.12, manylinux x86_64 (glibc >= 2.36);"
        " installed with --only-binary=:all:.",
        "# Checked by `python deploy/tools/pins.py check` (run from deploy/validate.sh)."
        " Do not edit by hand.",
        "",
    ]
    for name, version in provided_for(image).items():
        lines.insert(
            4, f"# {name}=={version}+cpu: installed before this file, from the PyTorch CPU index."
        )
    for name in sorted(result.chosen):
        why = sorted({p.split(" (")[0] for p in result.needed_by.get(name, [])})
        lines.append(f"{name}=={result.chosen[name]}  # via {', '.join(why)}")
    (REQ_DIR / image.file).write_text("\n".join(lines) + "\n")


def check_image(image: Image) -> list[str]:
    path = REQ_DIR / image.file
    if not path.exists():
        return [f"{image.file}: missing (run: python deploy/tools/pins.py compile)"]
    problems: list[str] = []
    try:
        pins = read_pins(path)
        roots, _ = project_roots(image.extras)
        result = walk(roots, pins, provided=provided_for(image))
    except PinError as exc:
        return [f"{image.file}: {line}" for line in str(exc).splitlines()]
    stale = sorted(set(pins) - set(result.needed_by) - set(provided_for(image)))
    for name in stale:
        problems.append(
            f"{image.file}: {name}=={pins[name]} is pinned but nothing requires it (stale)"
        )
    for name in image.forbidden:
        if canonicalize_name(name) in pins:
            problems.append(f"{image.file}: {name} must not be in this image")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["check", "compile"])
    ap.add_argument("--only", help="one requirements file name, e.g. api-cpu.txt")
    args = ap.parse_args(argv)
    images = [i for i in IMAGES if args.only in (None, i.file)]
    rc = 0
    for image in images:
        t0 = time.monotonic()
        if args.command == "compile":
            result = compile_image(image)
            write_pins(image, result)
            print(f"wrote {image.file}: {len(result.chosen)} pins ({time.monotonic() - t0:.1f}s)")
            continue
        problems = check_image(image)
        if problems:
            rc = 1
            for p in problems:
                print(f"  {p}", file=sys.stderr)
            print(f"FAIL pins {image.file}")
        else:
            n = len(read_pins(REQ_DIR / image.file))
            print(
                f"ok   pins {image.file}: {n} pins, closed and installable"
                " on cp312 manylinux x86_64 "
                f"({time.monotonic() - t0:.1f}s)"
            )
    return rc


if __name__ == "__main__":
    sys.exit(main())
