"""How much band heights change between two spectra of one RRUFF sample at different lasers.

The `gain` augmentation (`training.augment`) multiplies a spectrum by a smooth random gain; this
measures the size of the real thing so the augmentation's strength is not a guess. For every
pair of spectra of the same RRUFF sample taken at two different laser wavelengths, both are
smoothed (Savitzky-Golay, 9 points) and the log ratio of their intensities is fitted, over the
points where both have a band (> 0.15 of their maximum), by a quadratic in the grid position
t in [-1, 1] (the form the augmentation draws). Reported: the range of that fitted log gain over
the bands, the rms of what the fit leaves (band-specific changes no smooth gain explains), and
the same range for gains drawn as the augmentation draws them, over the same band points.

    python bench/band_gain.py --out docs/band_gain.json   # after bench_accuracy --grid-points 1024
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from bench_accuracy import machine_info

from spectra.library import savgol_filter
from training.datasets import Dataset

CACHE = Path("bench/cache/excellent_unoriented_dataset_2_L1024_1024.npz")  # the trainings' grid
BAND = 0.15  # a point counts as band in a spectrum above this fraction of its maximum
MIN_POINTS = 20  # pairs sharing fewer band points say nothing about a gain along the grid
MIN_SPAN = 0.3  # nor do pairs whose shared bands span less than this of t's range of 2


def laser_nm(source: str) -> str:
    """The laser wavelength field of a RRUFF file name (Mineral__R0xxxxx__Raman__532__...)."""
    parts = source.split("__")
    return parts[3] if len(parts) > 3 else ""


def pair_gain(
    a: np.ndarray, b: np.ndarray, t: np.ndarray, drawn: np.ndarray
) -> tuple[float, float, float] | None:
    """(range of the fitted smooth log gain over shared bands, rms residual, range over the
    same points of a log gain with the coefficients `drawn`), or None for too few bands."""
    band = (a > BAND) & (b > BAND)
    if band.sum() < MIN_POINTS or np.ptp(t[band]) < MIN_SPAN:
        return None
    ratio = np.log(a[band] / b[band])
    design = np.stack([np.ones_like(t[band]), t[band], t[band] ** 2], axis=1)
    coef, *_ = np.linalg.lstsq(design, ratio, rcond=None)
    fit = design @ coef
    augmented = design[:, 1:] @ drawn
    return float(np.ptp(fit)), float(np.sqrt(np.mean((ratio - fit) ** 2))), float(np.ptp(augmented))


def quartiles(v: list[float]) -> dict[str, float]:
    """10th, 25th, 50th, 75th and 90th percentiles, rounded."""
    q = np.percentile(v, [10, 25, 50, 75, 90])
    names = ("p10", "p25", "median", "p75", "p90")
    return {k: round(float(p), 3) for k, p in zip(names, q, strict=True)}


def measure(ds: Dataset, gain: float, seed: int = 0) -> dict[str, object]:
    """Every same-sample, different-laser pair's fitted gain range and residual, summarised,
    beside the range the augmentation at `gain` draws over the same band points."""
    x = savgol_filter(ds.x, 9, 2)
    t = np.linspace(-1.0, 1.0, x.shape[1])
    lasers = np.array([laser_nm(s) for s in ds.sources])
    rng = np.random.default_rng(seed)
    ranges, residuals, drawn, per_sample = [], [], [], []
    by_sample: dict[str, list[int]] = defaultdict(list)
    for i, sample in enumerate(ds.groups):
        by_sample[str(sample)].append(i)
    for sample in sorted(by_sample):  # sorted: the same random draws for the same pairs
        members = by_sample[sample]
        per_sample.append(len(set(lasers[members])))
        for i, j in itertools.combinations(members, 2):
            if lasers[i] == lasers[j]:
                continue
            got = pair_gain(x[i], x[j], t, rng.uniform(-gain, gain, 2))
            if got is not None:
                ranges.append(got[0])
                residuals.append(got[1])
                drawn.append(got[2])
    return {
        "samples_by_number_of_lasers": {
            str(k): per_sample.count(k) for k in sorted(set(per_sample))
        },
        "pairs": len(ranges),
        "log_gain_range_over_bands": quartiles(ranges),
        "rms_residual": quartiles(residuals),
        "augmentation_gain": gain,
        "augmentation_log_gain_range_over_the_same_bands": quartiles(drawn),
    }


def main() -> None:
    """Measure and write JSON."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--cache", type=Path, default=CACHE, help="a subset built by bench_accuracy")
    ap.add_argument("--gain", type=float, default=1.0, help="augmentation strength to compare")
    ap.add_argument("--out", type=Path, default=None, help="JSON file (default: print only)")
    args = ap.parse_args()
    result = {
        "cache": args.cache.name,
        "machine": machine_info(),
        **measure(Dataset.load(args.cache), args.gain),
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
