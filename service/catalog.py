"""Descriptions of models and versions for `/v1/models` and `/v2/models` (read-only views).

Loaded versions are described from memory; other versions from their card on disk (cheap: no
session is built), with the reason when a card cannot be read.
"""

from __future__ import annotations

from typing import Any

from service.manager import ModelManager
from service.predictor import Predictor
from spectra.card import CardError, ModelCard


def loaded_version(manager: ModelManager, name: str, version: str) -> Predictor | None:
    """The predictor serving `name`/`version`, if that version is loaded."""
    active = manager.active.get(name)
    if active is not None and active.version == version:
        return active
    return manager.pinned.get((name, version))


def read_card(manager: ModelManager, name: str, version: str) -> ModelCard:
    """The card of a version: from memory when loaded, else from disk (CardError if bad)."""
    predictor = loaded_version(manager, name, version)
    if predictor is not None:
        return predictor.model.card
    return ModelCard.load(manager.store.version_dir(name, version))


def describe_version(manager: ModelManager, name: str, version: str) -> dict[str, Any]:
    """Summary of one version (classes count, grid, metrics, state)."""
    active = manager.active.get(name)
    entry: dict[str, Any] = {
        "version": version,
        "active": active is not None and active.version == version,
        "loaded": loaded_version(manager, name, version) is not None,
    }
    try:
        card = read_card(manager, name, version)
    except CardError as exc:
        return entry | {"error": str(exc)}
    return entry | {
        "created_at": card.created_at or None,
        "classes": len(card.classes),
        "grid": card.grid.to_dict(),
        "metrics": card.metrics,
    }


def describe_model(manager: ModelManager, name: str) -> dict[str, Any]:
    """Summary of one model: its active version's facts and every version on disk."""
    versions = [describe_version(manager, name, v) for v in manager.store.versions(name)]
    active = manager.active.get(name)
    current = next((v for v in versions if v["active"]), {})
    return {
        "name": name,
        "active_version": active.version if active else None,
        "provider": active.provider if active else None,
        "classes": current.get("classes"),
        "grid": current.get("grid"),
        "metrics": current.get("metrics", {}),
        "versions": versions,
    }


def version_detail(manager: ModelManager, name: str, version: str) -> dict[str, Any]:
    """Everything about one version, including its full card when readable."""
    entry = describe_version(manager, name, version)
    predictor = loaded_version(manager, name, version)
    card = None if "error" in entry else read_card(manager, name, version).to_dict()
    return entry | {
        "name": name,
        "provider": predictor.provider if predictor else None,
        "card": card,
    }
