"""Loading one model version and refusing it unless card, graph, hash and references agree.

`load_model` trusts nothing on disk: every file must exist and parse, the ONNX file's sha256 must
equal the card's, the graph's input must be `[batch, 1, grid points]` and its output
`[batch, classes]` (checked on the declared shapes and again on a real run), and `references.npz`
must hold finite reference spectra labelled with the card's classes, at least one per class
(`spectra.references`). Any failure is `ModelInvalid` naming the version and the reason; the
caller keeps serving whatever it served before.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from onnxruntime.capi.onnxruntime_pybind11_state import Fail as OrtFail

from service.errors import ModelInvalid
from service.runtime import OnnxSession, RuntimeConfig
from spectra.card import CARD_FILE, ONNX_FILE, REFERENCES_FILE, CardError, ModelCard, sha256_file
from spectra.preprocess import Preprocessor
from spectra.references import read_references
from spectra.scoring import ServedSearch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """A validated, warmed-up model version, ready to serve."""

    name: str
    version: str
    directory: Path
    card: ModelCard
    session: OnnxSession
    preprocessor: Preprocessor
    references: np.ndarray
    """[C, L] float32 reference spectrum of each class (the mean of its rows), card order."""
    library: ServedSearch
    """The reference rows searched with the card's similarity metric and its ranking search: a
    query's score for a class is its best match among the class's rows."""

    index: dict[str, int]
    """Class label -> logit index."""

    @property
    def length(self) -> int:
        """Points on the model grid (L)."""
        return self.card.grid.points


def load_model(directory: Path, name: str, version: str, cfg: RuntimeConfig) -> LoadedModel:
    """Validate and load `<store>/<name>/<version>`; raise `ModelInvalid` with the reason."""
    where = f"model {name!r} version {version!r}"
    try:
        return _load(Path(directory), name, version, cfg)
    except ModelInvalid:
        raise
    except (CardError, ValueError, OSError, OrtFail) as exc:
        raise ModelInvalid(f"{where} refused: {exc}", model=name, version=version) from None


def _load(directory: Path, name: str, version: str, cfg: RuntimeConfig) -> LoadedModel:
    _require_files(directory)
    card = ModelCard.load(directory)
    if (card.name, card.version) != (name, version):
        log.warning(
            "%s/%s: card says %s/%s; the directory names are what the service reports",
            name,
            version,
            card.name,
            card.version,
        )
    _check_hash(directory / ONNX_FILE, card)
    refs = read_references(directory / REFERENCES_FILE, card.classes, card.grid.points)
    try:
        session = OnnxSession(directory / ONNX_FILE, cfg, card.input_name, card.output_name)
    except Exception as exc:  # onnxruntime raises several unrelated types for bad graphs
        raise ValueError(f"{ONNX_FILE} cannot be loaded by onnxruntime: {exc}") from None
    _check_graph(session, card)
    session.prepare(card.grid.points, len(card.classes))
    _check_run(session, card)
    session.warmup(card.grid.points)
    return LoadedModel(
        name,
        version,
        directory,
        card,
        session,
        Preprocessor(card.grid),
        refs.class_means(len(card.classes)),
        ServedSearch.build(refs.spectra, refs.classes, card.calibration),
        {c: i for i, c in enumerate(card.classes)},
    )


def _require_files(directory: Path) -> None:
    missing = [f for f in (CARD_FILE, ONNX_FILE, REFERENCES_FILE) if not (directory / f).is_file()]
    if missing:
        raise ValueError(f"missing file(s) {', '.join(missing)} in {directory.name}/")


def _check_hash(path: Path, card: ModelCard) -> None:
    if not card.onnx_sha256:
        raise ValueError("the card has no onnx_sha256; cannot verify model.onnx")
    actual = sha256_file(path)
    if actual != card.onnx_sha256.lower():
        raise ValueError(
            f"sha256 of {ONNX_FILE} is {actual[:16]}..., the card says {card.onnx_sha256[:16]}..."
        )


def _check_graph(session: OnnxSession, card: ModelCard) -> None:
    inputs, outputs = session.io_shapes()
    if card.input_name not in inputs or card.output_name not in outputs:
        raise ValueError(
            f"graph has inputs {sorted(inputs)} and outputs {sorted(outputs)}; the card names "
            f"input {card.input_name!r} and output {card.output_name!r}"
        )
    _expect_dims(inputs[card.input_name], [1, card.grid.points], "input", "grid points")
    _expect_dims(outputs[card.output_name], [len(card.classes)], "output", "classes")


def _expect_dims(shape: list[Any], tail: list[int], what: str, meaning: str) -> None:
    if len(shape) != len(tail) + 1:
        raise ValueError(f"graph {what} has rank {len(shape)}, expected {len(tail) + 1}")
    for declared, expected in zip(shape[1:], tail, strict=True):
        if isinstance(declared, int) and declared != expected:
            raise ValueError(
                f"graph {what} shape {shape} does not match the card ({expected} {meaning})"
            )


def _check_run(session: OnnxSession, card: ModelCard) -> None:
    # Symbolic dims pass `_check_graph`; a real run at two batch sizes settles them.
    for rows in (1, 2):
        out = session.run(np.zeros((rows, 1, card.grid.points), dtype=np.float32))
        if out.shape != (rows, len(card.classes)):
            raise ValueError(
                f"graph output for {rows} spectra has shape {out.shape}, "
                f"expected ({rows}, {len(card.classes)}) from the card's classes"
            )
