"""Registering a fine-tuned version: allocate the next integer version under a lock, and switch
the model's `ACTIVE` marker (the file `service.registry.ModelStore` reads).

Two workers finishing at once must never pick the same version: the allocation and the export
(which refuses an existing directory) happen under an exclusive `flock` on
`<store>/<name>/.version.lock`. The name starts with a dot, so the registry never lists it.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from spectra import card

ACTIVE_FILE = card.ACTIVE_FILE
"""Must equal `service.registry.ACTIVE_FILE` (a test checks)."""
LOCK_FILE = ".version.lock"


@contextmanager
def version_lock(store: Path, name: str) -> Iterator[None]:
    """Hold the model's version-allocation lock (blocks while another process holds it)."""
    model_dir = Path(store) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    with open(model_dir / LOCK_FILE, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def write_active(store: Path, name: str, version: str) -> None:
    """Persist `version` as the model's active one: temporary file, fsync, rename."""
    model_dir = Path(store) / name
    if not (model_dir / version).is_dir():
        raise FileNotFoundError(f"{model_dir / version} does not exist")
    card.write_active(model_dir, version)
