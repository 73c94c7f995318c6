"""The model store on disk: `<store>/<name>/<version>/`, plus `<store>/<name>/ACTIVE`.

Names and versions arriving in requests are validated against `NAME_PATTERN` and every path is
resolved and checked to lie inside the store, so no request can reach outside it. The active
version of a name is the content of its `ACTIVE` file (written atomically) or, without one, the
highest version (numeric versions sort numerically, after any non-numeric ones).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from service.errors import ModelNotFound
from spectra import card
from spectra.card import write_active

log = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ACTIVE_FILE = card.ACTIVE_FILE

FileState = tuple[tuple[str, int, int], ...]
"""(file name, size, mtime in ns) of each file of a version directory."""


def check_name(value: str, what: str = "model name") -> str:
    """Return `value` if it is a safe store component; otherwise 404 (it cannot exist)."""
    if not NAME_PATTERN.fullmatch(value):
        raise ModelNotFound(
            f"invalid {what} {value[:80]!r}: expected 1-64 characters of letters, digits, "
            "'.', '_' or '-', starting with a letter or digit"
        )
    return value


def version_key(version: str) -> tuple[int, int, str]:
    """Sort key: non-numeric versions first (by name), then numeric ones by value."""
    return (1, int(version), "") if version.isdigit() else (0, 0, version)


class ModelStore:
    """Read-mostly view of the store directory; the only writer is `set_active`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def exists(self) -> bool:
        """Whether the store directory exists at all."""
        return self.root.is_dir()

    def names(self) -> list[str]:
        """Model names present in the store: directories with a valid name that hold a version
        (a fine-tune export that failed into a new name leaves a directory with only its lock
        file, which is no model)."""
        if not self.exists():
            return []
        models = (p for p in self.root.iterdir() if self._is_entry(p))
        return sorted(p.name for p in models if any(self._is_entry(v) for v in p.iterdir()))

    def versions(self, name: str) -> list[str]:
        """The versions of `name`, oldest first; 404 if the model does not exist."""
        model_dir = self._inside(check_name(name))
        if not model_dir.is_dir():
            raise ModelNotFound(f"model {name!r} is not in the model store")
        found = [p.name for p in model_dir.iterdir() if self._is_entry(p)]
        return sorted(found, key=version_key)

    def version_dir(self, name: str, version: str) -> Path:
        """Directory of one version; 404 for unknown names or versions."""
        if check_name(version, "version") not in self.versions(name):
            raise ModelNotFound(f"model {name!r} has no version {version!r}")
        return self._inside(name, version)

    def file_state(self, name: str, version: str) -> FileState:
        """The state of a version's files: it changes whenever one of them does."""
        directory = self.version_dir(name, version)
        stats = [(p.name, p.stat()) for p in sorted(directory.iterdir()) if p.is_file()]
        return tuple((n, st.st_size, st.st_mtime_ns) for n, st in stats)

    def active_version(self, name: str) -> str:
        """The persisted active version, else the highest one; 404 if the model has none."""
        versions = self.versions(name)
        chosen = self._read_active(name)
        if chosen in versions:
            return chosen
        if chosen is not None:
            log.warning("model %s: ACTIVE names missing version %r; using highest", name, chosen)
        if not versions:
            raise ModelNotFound(f"model {name!r} has no versions")
        return versions[-1]

    def set_active(self, name: str, version: str) -> None:
        """Persist `version` as active: write a temporary file, then rename it over ACTIVE."""
        write_active(self.version_dir(name, version).parent, version)

    def _read_active(self, name: str) -> str | None:
        path = self._inside(name, ACTIVE_FILE)
        try:
            text = path.read_text().strip()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return text if NAME_PATTERN.fullmatch(text) else None

    def _inside(self, *parts: str) -> Path:
        # Defence in depth behind NAME_PATTERN: a symlink must not lead out of the store either.
        path = self.root.joinpath(*parts).resolve()
        if not path.is_relative_to(self.root):
            raise ModelNotFound(f"{'/'.join(parts)!r} is outside the model store")
        return path

    def _is_entry(self, path: Path) -> bool:
        # A directory with a valid name whose real location is inside the store.
        return (
            NAME_PATTERN.fullmatch(path.name) is not None
            and path.is_dir()
            and path.resolve().is_relative_to(self.root)
        )
