"""Copy the model versions baked into the image into the model store, never overwriting.

Source: $RAMAN_DEFAULT_MODELS (default /opt/raman/default-models), laid out like the store:
`<name>/<version>/{model.onnx,model.json,references.npz}`. Target: $RAMAN_MODEL_STORE.

A version directory is immutable: one that exists in the store is left alone. A missing one is
copied to a hidden temporary directory next to its final place and renamed into place, so a
reader (or another replica seeding at the same time) never sees a half-copied version. Files
directly under `<name>/` (registry state such as an activation marker, if the image has one)
are copied only when absent, so an operator's choice in the store always wins.

Exit status is 0 unless the store exists and is unusable; problems are logged to stderr.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def log(message: str) -> None:
    print(f"seed-models: {message}", file=sys.stderr, flush=True)


def seed(src: Path, dst: Path) -> int:
    if not src.is_dir():
        log(f"no default models in {src}; nothing to seed")
        return 0
    try:
        dst.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log(f"cannot create the model store {dst}: {exc}")
        return 1
    if not os.access(dst, os.W_OK):
        log(f"model store {dst} is read-only; not seeding")
        return 0
    for name_dir in sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith(".")):
        target_name = dst / name_dir.name
        target_name.mkdir(exist_ok=True)
        for item in sorted(name_dir.iterdir()):
            if item.name.startswith("."):
                continue
            target = target_name / item.name
            if target.exists():
                continue
            if item.is_file():
                tmp = target_name / f".{item.name}.seed-{os.getpid()}"
                shutil.copy2(item, tmp)
                try:
                    os.link(tmp, target)  # fails if another seeder won the race
                except FileExistsError:
                    pass
                finally:
                    tmp.unlink()
                continue
            tmp = target_name / f".{item.name}.seed-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(item, tmp)
            try:
                os.rename(tmp, target)
                log(f"seeded {name_dir.name}/{item.name}")
            except OSError:  # another replica renamed its copy first
                shutil.rmtree(tmp, ignore_errors=True)
    return 0


def main() -> int:
    src = Path(os.environ.get("RAMAN_DEFAULT_MODELS", "/opt/raman/default-models"))
    dst = Path(os.environ.get("RAMAN_MODEL_STORE", "/data/models"))
    try:
        return seed(src, dst)
    except OSError as exc:
        log(f"seeding {dst} from {src} failed: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
