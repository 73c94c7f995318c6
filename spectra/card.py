"""The model card (`model.json`): the schema both sides of the artifact contract agree on.

A model version is a directory holding `model.onnx`, `model.json` and `references.npz`.
Training writes the card; the service validates it against the graph before serving anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from spectra.grid import Grid
from spectra.library import METRICS, SEARCHES

CARD_FILE = "model.json"
ONNX_FILE = "model.onnx"
REFERENCES_FILE = "references.npz"
ACTIVE_FILE = "ACTIVE"
"""`<store>/<name>/ACTIVE` holds the version that name serves (default: the highest)."""
SCHEMA_VERSION = 1


class CardError(ValueError):
    """The card is missing, unreadable or inconsistent."""


@dataclass(frozen=True)
class Calibration:
    """How logits become the returned probabilities, and the rule that flags "no confident match".

    The probabilities are `spectra.scoring.combined_probabilities`: the softmax of logits /
    `temperature`, mixed with weight `library_weight` with a softmax over the query's scores of
    the library search `search` for each class's best-matching reference spectrum (divided by
    `library_temperature`). A prediction is a confident match when its top-1 probability is at
    least `min_probability` AND the query's `similarity` (an HQI in [-1, 1], also shown with each
    hit) to that class's closest reference is at least `min_similarity`. All are chosen on
    validation at export; the defaults (cosine, weight 0) are the plain softmax of older cards,
    and an empty `search` (cards before version 5) mixes the `similarity` metric itself.
    """

    temperature: float = 1.0
    min_probability: float = 0.5
    min_similarity: float = 0.0
    similarity: str = "cosine"  # a spectra.library METRICS name
    library_weight: float = 0.0
    library_temperature: float = 1.0
    search: str = ""  # a spectra.library SEARCHES name; "" = the similarity metric

    @property
    def ranking_search(self) -> str:
        """The library search whose scores are mixed with the network's probabilities."""
        return self.search or self.similarity

    @property
    def rule(self) -> str:
        """The rejection rule in words, returned with every answer."""
        return (
            f"match when top-1 probability >= {self.min_probability:.3g} and {self.similarity} "
            f"similarity to its closest reference >= {self.min_similarity:.3g}"
        )

    def validate(self) -> None:
        """Raise CardError unless every field is in range."""
        if not self.temperature > 0 or not self.library_temperature > 0:
            raise CardError("calibration temperatures must be positive")
        if not 0.0 <= self.library_weight <= 1.0:
            raise CardError("calibration library_weight must lie in [0, 1]")
        if self.similarity not in METRICS:
            raise CardError(f"calibration similarity must be one of {', '.join(METRICS)}")
        if self.search and self.search not in SEARCHES:
            raise CardError(f"calibration search must be one of {', '.join(SEARCHES)}")


@dataclass(frozen=True)
class ModelCard:
    """Everything a consumer needs to know about one exported model version."""

    name: str
    version: str
    classes: list[str]
    grid: Grid
    created_at: str = ""
    architecture: dict[str, Any] = field(default_factory=dict)
    preprocessing: list[dict[str, Any]] = field(default_factory=list)
    calibration: Calibration = field(default_factory=Calibration)
    data: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    onnx_sha256: str = ""
    code_version: str = ""
    input_name: str = "spectra"
    output_name: str = "logits"
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the grid and calibration as nested objects)."""
        out = asdict(self)
        out["grid"] = self.grid.to_dict()
        return out

    def save(self, directory: Path) -> Path:
        """Write `model.json` into `directory`."""
        path = Path(directory) / CARD_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        """Build and validate a card from parsed JSON; raises `CardError` with the reason."""
        try:
            card = cls(
                **{k: v for k, v in data.items() if k not in ("grid", "calibration")},
                grid=Grid.from_dict(data["grid"]),
                calibration=Calibration(**data.get("calibration", {})),
            )
            card.validate()  # in the try: a mistyped field ("temperature": "1") raises TypeError
        except CardError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise CardError(f"invalid model card: {exc!s}") from None
        return card

    @classmethod
    def load(cls, directory: Path) -> ModelCard:
        """Read `model.json` from a model version directory."""
        path = Path(directory) / CARD_FILE
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CardError(f"cannot read {path}: {exc}") from None
        if not isinstance(data, dict):
            raise CardError(f"{path}: expected a JSON object")
        return cls.from_dict(data)

    def validate(self) -> None:
        """Check internal consistency (not the graph: see the service's loader for that)."""
        if not self.name or not self.version:
            raise CardError("card has no name or version")
        if not isinstance(self.classes, list) or not all(isinstance(c, str) for c in self.classes):
            raise CardError("card classes must be a list of strings")
        if len(self.classes) < 2:
            raise CardError(f"card lists {len(self.classes)} classes; need at least 2")
        if len(set(self.classes)) != len(self.classes):
            raise CardError("card lists a class twice")
        self.calibration.validate()


def write_active(model_dir: Path, version: str) -> None:
    """Persist `version` as the active one of `model_dir` (`<store>/<name>`): write a temporary
    file, fsync, rename over ACTIVE, so a reader never sees a half-written marker."""
    fd, tmp = tempfile.mkstemp(prefix=".ACTIVE.", dir=model_dir)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(version + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, Path(model_dir) / ACTIVE_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, streamed (model files can be hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
