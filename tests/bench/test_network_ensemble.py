"""bench/network_ensemble.py: networks trained on the same split, averaged at their own
temperatures and scored by the same rules as one network."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import mix_rules
from mix_rules import Parts
from network_ensemble import (
    ENSEMBLE,
    calibration,
    ensemble,
    find_members,
    load_members,
    markdown,
    smaller_ensembles,
    split_record,
)

from spectra.scoring import softmax
from training.calibration import fit_temperature
from training.datasets import Dataset
from training.metrics import classification_report
from training.splits import Split, make_split

N_CLASSES = 8


def _member(y: np.ndarray, knows: np.ndarray, seed: int, scale: float = 1.0) -> np.ndarray:
    """Logits right (with a margin) on the samples whose class is in `knows`, noise elsewhere."""
    z = np.random.default_rng(seed).normal(size=(len(y), N_CLASSES))
    z[np.isin(y, knows), :] *= 0.3
    rows = np.flatnonzero(np.isin(y, knows))
    z[rows, y[rows]] += 3.0
    return scale * z


def _halves(y_val: np.ndarray, y_test: np.ndarray, scale: float = 1.0) -> list[Parts]:
    """Two members, each knowing half of the classes."""
    lo, hi = np.arange(N_CLASSES // 2), np.arange(N_CLASSES // 2, N_CLASSES)
    return [
        {"val": _member(y_val, k, 10 * i, s), "test": _member(y_test, k, 10 * i + 1, s)}
        for i, (k, s) in enumerate(((lo, scale), (hi, 1.0)))
    ]


def _labels(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, N_CLASSES, n)


def _top1(logits: np.ndarray, y: np.ndarray) -> float:
    return float((logits.argmax(1) == y).mean())


CALIBRATION = {
    "temperature": 1.5, "temperature_test": 1.4, "ece_before": 0.05, "ece_after": 0.06,
    "nll_before": 0.9, "nll_after": 0.7, "confidence_after": 0.8, "accuracy": 0.85,
}  # fmt: skip


def test_complementary_members_make_a_better_ensemble() -> None:
    y_val, y_test = _labels(0, 400), _labels(1, 400)
    members = _halves(y_val, y_test)
    ens = ensemble(members, y_val)
    assert _top1(ens["test"], y_test) > max(_top1(m["test"], y_test) for m in members) + 0.2
    assert np.allclose(np.exp(ens["test"]).sum(1), 1.0, atol=1e-6)


def test_an_overconfident_member_does_not_outvote_the_other() -> None:
    """Member 0 is scaled 20x (over-confident): averaged raw, its noise would decide the classes
    it does not know; at their own temperatures both count."""
    y_val, y_test = _labels(2, 400), _labels(3, 400)
    members = _halves(y_val, y_test, scale=20.0)
    raw = np.log(np.mean([softmax(m["test"]) for m in members], 0))
    ens = ensemble(members, y_val)["test"]
    assert _top1(ens, y_test) > _top1(raw, y_test) + 0.1


def test_one_member_ensemble_ranks_as_that_member() -> None:
    y_val, y_test = _labels(4, 100), _labels(5, 100)
    member = _halves(y_val, y_test)[0]
    ens = ensemble([member], y_val)
    assert (ens["test"].argmax(1) == member["test"].argmax(1)).all()


@pytest.fixture(scope="module")
def data(noisy_peaks_split: tuple[Dataset, Split]) -> tuple[Dataset, Split]:
    assert len(noisy_peaks_split[0].classes) == N_CLASSES
    return noisy_peaks_split


def test_calibration_tells_a_test_set_unlike_validation_from_a_model_one_temperature_fits() -> None:
    y_val, y_test = _labels(0, 400), _labels(1, 400)
    knows = np.arange(6)  # right on 3/4 of the classes, with a wide margin: over-confident
    alike = {"val": _member(y_val, knows, 1, 4.0), "test": _member(y_test, knows, 2, 4.0)}
    c = calibration(alike, y_val, y_test)
    assert c["temperature"] > 1.5 and c["nll_after"] < c["nll_before"]
    assert c["ece_after"] < c["ece_before"]
    assert c["temperature_test"] == pytest.approx(c["temperature"], rel=0.15)
    assert c["accuracy"] == _top1(alike["test"], y_test)
    probs = softmax(alike["test"], c["temperature"]).max(axis=1)
    assert c["confidence_after"] == pytest.approx(float(probs.mean()))
    # a test set three times as sharp as validation: the test's own temperature says so
    sharper = {**alike, "test": 3 * alike["test"]}
    d = calibration(sharper, y_val, y_test)
    assert d["temperature"] == c["temperature"]
    assert d["temperature_test"] == pytest.approx(fit_temperature(sharper["test"], y_test))
    assert d["temperature_test"] == pytest.approx(3 * c["temperature_test"], rel=1e-3)


def test_split_record_scores_members_and_ensemble_alike(data: tuple[Dataset, Split]) -> None:
    ds, split = data
    y_val, y_test = ds.y[split.val], ds.y[split.test]
    members = dict(zip(("a", "b"), _halves(y_val, y_test), strict=True))
    rec = split_record(ds, split, members, mix_rules.library_parts(ds, split, ["derivative"]))
    assert list(rec) == ["a", "b", ENSEMBLE]
    ens = ensemble(list(members.values()), y_val)["test"]
    assert rec[ENSEMBLE]["rules"][0] == {
        "rule": "network",
        "metrics": classification_report(ens, y_test, N_CLASSES),
    }
    rules = [r["rule"] for r in rec["a"]["rules"]]
    assert rules[:3] == ["network", "derivative", "linear 0.5 derivative"]
    # the library alone is one search, the same for every network
    assert rec["a"]["rules"][1] == rec[ENSEMBLE]["rules"][1]
    assert sum(n for _, n in rec["b"]["top1_by_support"].values()) == len(y_test)
    assert rec[ENSEMBLE]["calibration"]["temperature"] > 0


def test_every_smaller_ensemble_is_scored_by_the_same_rules(data: tuple[Dataset, Split]) -> None:
    ds, split = data
    y_val, y_test = ds.y[split.val], ds.y[split.test]
    halves = _halves(y_val, y_test)
    third = {"val": _member(y_val, np.arange(3), 7), "test": _member(y_test, np.arange(3), 8)}
    members = {"a": halves[0], "b": halves[1], "c": third}
    libs = mix_rules.library_parts(ds, split, ["derivative"])
    assert smaller_ensembles(ds, split, {"a": halves[0], "b": halves[1]}, libs) == []
    got = smaller_ensembles(ds, split, members, libs)
    assert [g["members"] for g in got] == [["a", "b"], ["a", "c"], ["b", "c"]]
    for g in got:
        expected = mix_rules.rules(
            ds, split, ensemble([members[m] for m in g["members"]], y_val), libs
        )
        assert g["top1"] == {r["rule"]: r["metrics"]["top1"] for r in expected}
    # the pair that knows every class between them beats the pairs that overlap
    assert got[0]["top1"]["network"] > max(g["top1"]["network"] for g in got[1:])


def test_members_are_grouped_by_split_and_labelled_by_tag(tmp_path: Path) -> None:
    for d, tag, folders in (
        ("one", "@e60", ("dataset_2_1024_random0/drcnn_rs", "dataset_2_1024_random1/drcnn_rs")),
        ("two", "@i1000", ("dataset_2_1024_random0/drcnn_rs",)),
    ):
        (tmp_path / d).mkdir()
        (tmp_path / d / "results.json").write_text(json.dumps({"options": {"tag": tag}}))
        for f in folders:
            (tmp_path / d / "work" / f).mkdir(parents=True)
            (tmp_path / d / "work" / f / "logits.npz").write_bytes(b"")
    found = find_members([tmp_path / "one", tmp_path / "two"])
    assert {k: sorted(v) for k, v in found.items()} == {
        ("dataset_2", "random", 0): ["drcnn_rs@e60", "drcnn_rs@i1000"],
        ("dataset_2", "random", 1): ["drcnn_rs@e60"],
    }
    with pytest.raises(SystemExit, match="give it a --tag"):
        find_members([tmp_path / "one", tmp_path / "one"])


def test_report_compares_the_ensemble_with_its_members() -> None:
    def run(seed: int, a: float, b: float, e: float) -> dict[str, object]:
        def net(top1: float) -> dict[str, object]:
            rules = [("network", top1), ("adapted", 0.8)]
            return {
                "rules": [{"rule": r, "metrics": {"top1": t, "top5": 1.0}} for r, t in rules],
                "top1_by_support": {"1": [1, 4]},
                "calibration": CALIBRATION,
            }

        return {
            "subset": "d",
            "split": "random",
            "seed": seed,
            "networks": {"a": net(a), "b": net(b), ENSEMBLE: net(e)},
        }

    report = markdown([run(0, 0.80, 0.70, 0.85), run(1, 0.80, 0.90, 0.86)])
    # +10 and +1 points over the members' means 0.75 and 0.85; above the better one once
    row = "| network | ensemble | 0.8500 / 0.8600 | 0.8550 | 1.0000 | 0.250 | +5.50 (1 of 2) |"
    assert row in report
    assert report.count("| adapted |") == 1  # a library alone is listed once
    assert "ensemble's size" not in report  # two members: no smaller ensembles to show
    # calibration: one row per network and split
    assert "| 1 | b | 1.50 (1.40) | 0.050 -> 0.060 | 0.900 -> 0.700 | 0.800 / 0.850 |" in report
    assert report.count("| 1.50 (1.40) |") == 6


def test_report_shows_top1_against_the_ensembles_size() -> None:
    def net(top1: float, mixed: float) -> dict[str, object]:
        rules = [("network", top1), ("adapted", 0.8), ("linear fitted adapted", mixed)]
        return {
            "rules": [{"rule": r, "metrics": {"top1": t, "top5": 1.0}} for r, t in rules],
            "calibration": CALIBRATION,
        }

    pairs = [(["a", "b"], 0.84, 0.88), (["a", "c"], 0.82, 0.87), (["b", "c"], 0.83, 0.89)]
    run = {
        "subset": "d",
        "split": "random",
        "seed": 0,
        "networks": {
            "a": {**net(0.80, 0.86), "top1_by_support": {}},
            "b": {**net(0.81, 0.87), "top1_by_support": {}},
            "c": {**net(0.79, 0.88), "top1_by_support": {}},
            ENSEMBLE: {**net(0.85, 0.885), "top1_by_support": {}},
        },
        "smaller_ensembles": [
            {"members": m, "top1": {"network": t, "adapted": 0.8, "linear fitted adapted": f}}
            for m, t, f in pairs
        ],
    }
    report = markdown([run])
    assert "| rule | 1 network | 2 networks | 3 networks |" in report
    assert (
        "| network | 0.8000 (0.7900-0.8100) | 0.8300 (0.8200-0.8400) | 0.8500 (0.8500-0.8500) |"
        in report
    )
    assert "| linear fitted adapted | 0.8700 (0.8600-0.8800) | 0.8800 (0.8700-0.8900) |" in report
    assert "| adapted | 0.8000" not in report  # the library alone does not depend on the size


def test_members_must_be_trainings_of_the_same_data_and_split(
    data: tuple[Dataset, Split], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Members are loaded against the split their first member's run built; one of another
    RRUFF copy or class count, other rows or other classes is refused, not silently mixed."""
    ds = data[0]
    monkeypatch.setattr(mix_rules, "subset_dataset", lambda *_: ds)
    split = make_split("random", ds.y, ds.groups, 0)
    opts = {"rruff": "r.zip", "cache": "c", "grid_points": 128, "max_classes": None}

    def member(name: str, rows: Split = split, n_classes: int = N_CLASSES) -> Path:
        path = tmp_path / f"{name}.npz"
        val, test = (np.zeros((len(r), n_classes)) for r in (rows.val, rows.test))
        np.savez(path, val_rows=rows.val, test_rows=rows.test, val_logits=val, test_logits=test)
        return path

    key = ("toy", "random", 0)
    a, b = (opts, member("a")), ({**opts, "grid_points": 64}, member("b"))
    got_ds, got_split, parts = load_members(key, {"a": a, "b": b})  # another grid is fine
    assert got_ds is ds and np.array_equal(got_split.test, split.test)
    assert list(parts) == ["a", "b"] and parts["b"]["test"].shape == (len(split.test), N_CLASSES)
    other_split = make_split("random", ds.y, ds.groups, 1)
    refused = {
        "another rruff": ({**opts, "rruff": "other.zip"}, member("c")),
        "fewer classes": ({**opts, "max_classes": 4}, member("d")),
        "other rows": (opts, member("e", rows=other_split)),
        "other classes": (opts, member("f", n_classes=N_CLASSES - 1)),
    }
    for why, bad in refused.items():
        with pytest.raises(SystemExit):
            load_members(key, {"a": a, why: bad})
