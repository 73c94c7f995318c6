#!/usr/bin/env python3
"""Static checks of the Dockerfile and .dockerignore beyond what hadolint knows.

* the four targets exist; every final stage runs as a non-root numeric user, has an entry
  point, and the API stages a HEALTHCHECK on the readiness endpoint;
* the CUDA base matches onnxruntime-gpu (CUDA 13, cuDNN, runtime flavour) and the torch
  version argument equals the worker.txt pin;
* no ENV/ARG carries something that looks like a secret;
* the build context that .dockerignore lets through contains every COPY source, every package
  of pyproject.toml and the default model, and none of .git, virtual environments, data,
  checkpoints or .env files (Docker's matching rules: last matching pattern wins, `!` re-includes);
* the entry point's model seeding works (run here on temporary directories: copy, idempotence,
  never overwriting an existing version).
"""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from common import REPO, Problems
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

TARGETS = {"api-cpu", "api-gpu", "worker-cpu", "worker-gpu"}


def stages(text: str) -> dict[str, list[str]]:
    """Stage name -> its instructions (continuation lines joined)."""
    joined = re.sub(r"\\\n", " ", text)
    out: dict[str, list[str]] = {}
    current = None
    for line in joined.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        m = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", s, flags=re.IGNORECASE)
        if m:
            current = m.group(2) or m.group(1)
            out[current] = [s]
        elif current:
            out[current].append(s)
    return out


def args_defaults(text: str) -> dict[str, str]:
    return dict(re.findall(r"^ARG\s+([A-Z_]+)=(\S+)", text, flags=re.MULTILINE))


def dockerignore_patterns() -> list[tuple[bool, str]]:
    rules = []
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        rules.append((negate, pattern.strip("/")))
    return rules


def _match(pattern: str, path: str) -> bool:
    # Docker (moby/patternmatcher): ** matches any number of directories; a pattern that
    # matches a directory matches everything below it.
    regex = (
        re.escape(pattern)
        .replace(r"\*\*/", "(.*/)?")
        .replace(r"\*\*", ".*")
        .replace(r"\*", "[^/]*")
    )
    regex = regex.replace(r"\?", "[^/]")
    parts = path.split("/")
    return any(
        re.fullmatch(regex, "/".join(parts[:i])) for i in range(1, len(parts) + 1)
    ) or fnmatch.fnmatch(path, pattern)


def included(path: str, rules: list[tuple[bool, str]]) -> bool:
    keep = True
    for negate, pattern in rules:
        if _match(pattern, path):
            keep = negate
    return keep


def check_dockerfile(p: Problems) -> None:
    text = (REPO / "Dockerfile").read_text()
    st = stages(text)
    defaults = args_defaults(text)
    for target in TARGETS:
        if not p.check(target in st, f"Dockerfile: target {target} missing"):
            continue
        body = st[target]
        users = [i.split(None, 1)[1] for i in body if i.upper().startswith("USER ")]
        p.check(
            users and re.match(r"^[1-9][0-9]*(:[1-9][0-9]*)?$", users[-1]),
            f"{target}: must end as a numeric non-root USER",
        )
        p.check(any(i.upper().startswith("ENTRYPOINT") for i in body), f"{target}: no ENTRYPOINT")
        health = [i for i in body if i.upper().startswith("HEALTHCHECK")]
        if target.startswith("api-"):
            p.check(
                health and "ready" in health[-1],
                f"{target}: HEALTHCHECK must probe /v2/health/ready",
            )
            p.check(any("EXPOSE 8000" in i for i in body), f"{target}: EXPOSE 8000")
        p.check(
            any(
                i.upper().startswith("VOLUME") and "/data/models" in i and "/data/jobs" in i
                for i in body
            ),
            f"{target}: models and jobs must be volumes",
        )
    cuda = defaults.get("CUDA_IMAGE", "")
    p.check(
        re.match(r"^nvidia/cuda:13\.\d+\.\d+-cudnn-runtime-ubuntu24\.04$", cuda),
        f"Dockerfile: CUDA_IMAGE {cuda!r} must be a CUDA 13 cuDNN runtime image"
        " (onnxruntime-gpu 1.31)",
    )
    p.check(
        defaults.get("PYTHON_IMAGE", "").startswith("python:3.12-"),
        "Dockerfile: PYTHON_IMAGE must be python 3.12",
    )
    worker = (REPO / "deploy/requirements/worker.txt").read_text()
    pin = re.search(r"^torch==(\S+)", worker, flags=re.MULTILINE)
    p.check(
        pin and defaults.get("TORCH_VERSION") == pin.group(1),
        f"Dockerfile: ARG TORCH_VERSION={defaults.get('TORCH_VERSION')} differs from"
        f" worker.txt torch=={pin and pin.group(1)}",
    )
    api_gpu = (REPO / "deploy/requirements/api-gpu.txt").read_text()
    p.check(
        re.search(r"^onnxruntime-gpu==1\.31\.", api_gpu, flags=re.MULTILINE),
        "api-gpu.txt must pin onnxruntime-gpu 1.31.x",
    )
    for name in re.findall(r"^(?:ENV|ARG)\s+([A-Z_]+)[= ]", text, flags=re.MULTILINE):
        if re.search(r"KEY|SECRET|PASSWORD|TOKEN", name):
            p.add(f"Dockerfile: {name} looks like a secret baked into the image")
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    p.check(
        "RAMAN_API_KEYS" not in code, "Dockerfile: API keys must come from the runtime environment"
    )
    # COPY sources
    rules = dockerignore_patterns()
    for m in re.finditer(
        r"^COPY\s+(?!--from)(.+)$", re.sub(r"\\\n\s*", " ", text), flags=re.MULTILINE
    ):
        parts = [x for x in m.group(1).split() if not x.startswith("--")]
        for src in parts[:-1]:
            if src == ".":
                continue
            src = src.rstrip("/")
            p.check(included(src, rules), f".dockerignore excludes COPY source {src}")
            if not (REPO / src).exists():
                if src == "models":
                    p.warn(
                        "models/ (the default model baked into the images) is not in the"
                        " repository yet; docker build needs it"
                    )
                else:
                    p.add(f"Dockerfile: COPY source {src} does not exist")


def check_build_backend(p: Problems) -> None:
    """deploy/requirements/build.txt satisfies pyproject.toml's [build-system] requires."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    pins = {}
    for line in (REPO / "deploy/requirements/build.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            pins[canonicalize_name(req.name)] = req
    for spec in pyproject.get("build-system", {}).get("requires", []):
        need = Requirement(spec)
        pin = pins.get(canonicalize_name(need.name))
        version = (
            next((s.version for s in pin.specifier if s.operator == "=="), None) if pin else None
        )
        p.check(
            version is not None and need.specifier.contains(version, prereleases=True),
            f"build.txt must pin {need.name} to a version satisfying '{spec}'",
        )


def check_context(p: Problems) -> None:
    rules = dockerignore_patterns()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    for name in ("pyproject.toml", "README.md"):
        p.check(
            included(name, rules), f".dockerignore excludes {name}, which the wheel build needs"
        )
    patterns = (
        pyproject.get("tool", {})
        .get("setuptools", {})
        .get("packages", {})
        .get("find", {})
        .get("include", [])
    )
    for d in sorted(x for x in REPO.iterdir() if x.is_dir() and (x / "__init__.py").exists()):
        if any(fnmatch.fnmatch(d.name, pat) for pat in patterns):
            p.check(
                included(f"{d.name}/__init__.py", rules),
                f".dockerignore leaves out package {d.name}/ of pyproject.toml",
            )
    for path in (
        ".git/HEAD",
        ".venv/bin/python",
        "build/x",
        "runs/x",
        "var/jobs/db.sqlite",
        ".env",
        "service/.env",
        "data/rruff.zip",
        "ckpt/model.pt",
        "tests/test_x.py",
        "bench/out/x",
        "spectra/__pycache__/x.pyc",
    ):
        p.check(not included(path, rules), f".dockerignore lets {path} into the build context")


def check_seeding(p: Problems) -> None:
    script = REPO / "deploy/docker/seed_models.py"
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp, "src"), Path(tmp, "store")
        (src / "m" / "1").mkdir(parents=True)
        (src / "m" / "1" / "model.onnx").write_bytes(b"onnx")
        (src / "m" / "ACTIVE").write_text("1")
        env = {**os.environ, "RAMAN_DEFAULT_MODELS": str(src), "RAMAN_MODEL_STORE": str(dst)}

        def run() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, str(script)], env=env, capture_output=True, text=True
            )

        r = run()
        p.check(
            r.returncode == 0 and (dst / "m/1/model.onnx").read_bytes() == b"onnx",
            f"seed_models: first seed failed: {r.stderr}",
        )
        (dst / "m/1/model.onnx").write_bytes(b"kept")
        (dst / "m/ACTIVE").write_text("2")
        r = run()
        p.check(
            r.returncode == 0 and (dst / "m/1/model.onnx").read_bytes() == b"kept",
            "seed_models: overwrote an existing version",
        )
        p.check(
            (dst / "m/ACTIVE").read_text() == "2",
            "seed_models: overwrote the store's registry state",
        )
        p.check(
            not [x for x in (dst / "m").iterdir() if x.name.startswith(".")],
            "seed_models: left temporary files",
        )
    r = subprocess.run(
        ["sh", "-n", str(REPO / "deploy/docker/entrypoint.sh")], capture_output=True, text=True
    )
    p.check(r.returncode == 0, f"entrypoint.sh: {r.stderr}")


def main() -> int:
    p = Problems("images")
    check_dockerfile(p)
    check_build_backend(p)
    check_context(p)
    check_seeding(p)
    return p.report()


if __name__ == "__main__":
    sys.exit(main())
