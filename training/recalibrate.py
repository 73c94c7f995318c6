"""Publish a new version of an exported network with the current calibration code, no training.

A version's card records how its data set was built (the RRUFF file, the subset rule and grid)
and split; `weights.pt` holds the network. Given the same RRUFF file, `recalibrate_version`
rebuilds that data set and split, refuses if they differ from the card's, and publishes the
network again through `training.pipeline.publish`: the mix, the no-match rule and the test
metrics are fitted and measured afresh (e.g. after a change of the library search the mix
takes), on the same validation and test parts the base version was exported with. The new
version's ONNX graph is exported from the float16 weights, so its logits may differ from the
base's in the fourth significant digit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spectra.card import ModelCard
from spectra.grid import Grid
from training.datasets import Dataset, SubsetRule, build_dataset
from training.export import WEIGHTS_FILE, load_weights
from training.pipeline import Provenance, publish
from training.splits import make_split


class RecalibrateError(ValueError):
    """The base version cannot be recalibrated from the data given."""


def recalibrate_version(
    base_dir: Path,
    rruff: Path,
    store: Path,
    name: str | None = None,
    version: str | None = None,
    max_false_accept: float | None = None,
) -> Path:
    """Publish the network of the version in `base_dir`, recalibrated on its own split of the
    data set rebuilt from `rruff`, as `<store>/<name>/<version>` (default: the base's name,
    the next version); returns its directory."""
    base_dir = Path(base_dir)
    card = ModelCard.load(base_dir)
    try:  # before the data set is rebuilt (tens of seconds): a card without a split is refused
        kind, seed = str(card.data["split"]), int(card.data["split_seed"])
    except KeyError as exc:
        raise RecalibrateError(f"{base_dir}: the card records no split ({exc})") from None
    ds = rebuild_dataset(card, rruff)
    split = make_split(kind, ds.y, ds.groups, seed)
    model = load_weights(base_dir / WEIGHTS_FILE)
    origin = Provenance(
        source=Path(rruff).name,
        split=kind,
        split_seed=seed,
        architecture=card.architecture,
        training=_training_record(card, base_dir),
    )
    return publish(model, ds, split, origin, store, name or card.name, version, max_false_accept)


def rebuild_dataset(card: ModelCard, rruff: Path) -> Dataset:
    """The data set the card was exported from, rebuilt from `rruff`; RecalibrateError unless
    it has the card's classes, grid and spectrum count."""
    rule = card.data.get("rule") or {}
    if not rule:
        raise RecalibrateError("the card records no subset rule (not built from RRUFF?)")
    subset = SubsetRule(
        rule["name"],
        int(rule["min_per_class"]),
        rule.get("max_per_class"),
        Grid.from_dict(rule["grid"]),
        rule.get("top_up_to"),
    )
    ds, _ = build_dataset(Path(rruff), subset)
    ds.info["source"] = str(rruff)
    want = card.data.get("counts", {}).get("spectra")
    if ds.classes != card.classes or ds.grid != card.grid or len(ds.y) != want:
        raise RecalibrateError(
            f"{rruff} rebuilds {len(ds.classes)} classes / {len(ds.y)} spectra on "
            f"{ds.grid.points} points; the card's data set has {len(card.classes)} / {want} on "
            f"{card.grid.points}: not the file this version was built from"
        )
    return ds


def _training_record(card: ModelCard, base_dir: Path) -> dict[str, Any]:
    kept = {k: card.metrics[k] for k in ("best_val_acc", "best_epoch") if k in card.metrics}
    return kept | {"recalibrated_from": f"{card.name}/{base_dir.name}"}
