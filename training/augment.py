"""On-the-fly augmentation of min-max normalised spectra (batch tensors [B, 1, L]).

The paper augments its organics library by shifting wavenumbers and adding Gaussian noise; we
add a smooth baseline, a smooth multiplicative gain (the band-height changes between laser
wavelengths and instruments) and intensity scaling as options (`bench/` measures each one), and
mixup (Zhang et al., ICLR 2018: convex mixtures of two spectra trained towards the same mixture
of their labels). Every augmented spectrum is re-normalised to [0, 1] so it matches what the
service feeds the model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F


@dataclass
class AugmentConfig:
    """Strengths; 0 disables a transform. `shift` is in grid points (uniform in +-shift); `gain`
    bounds the linear and quadratic coefficients of the log gain over the grid (uniform in
    +-gain each), so 1.0 (about the size of the real change, `bench/band_gain.py`) reweights one
    end against the other by up to a factor of e^2."""

    shift: float = 0.0
    gain: float = 0.0
    noise: float = 0.0
    baseline: float = 0.0
    scale: float = 0.0
    p: float = 1.0

    @property
    def enabled(self) -> bool:
        """Whether any transform is on."""
        return self.p > 0 and any((self.shift, self.gain, self.noise, self.baseline, self.scale))

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)


def augment(
    x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator | None = None
) -> torch.Tensor:
    """Return an augmented copy of `x` ([B, 1, L], values in [0, 1])."""
    if not cfg.enabled:
        return x
    b, _, n = x.shape
    dev = x.device
    rand = lambda *s: torch.rand(*s, generator=gen, device=dev)  # noqa: E731
    t = torch.linspace(-1, 1, n, device=dev).view(1, 1, n)  # position along the grid
    out = x
    if cfg.shift:
        out = _shift(out, (rand(b) * 2 - 1) * cfg.shift)
    if cfg.gain:
        # the same sample at another laser wavelength or on another instrument: bands keep
        # their positions but their heights change smoothly along the spectrum
        c = (rand(b, 2, 1) * 2 - 1) * cfg.gain
        out = out * torch.exp(c[:, :1] * t + c[:, 1:2] * t**2)
    if cfg.scale:
        out = out * (1 + (rand(b, 1, 1) * 2 - 1) * cfg.scale)
    if cfg.baseline:
        c = (rand(b, 3, 1) * 2 - 1) * cfg.baseline
        out = out + c[:, :1] + c[:, 1:2] * t + c[:, 2:3] * t**2
    if cfg.noise:
        out = out + torch.randn(out.shape, generator=gen, device=dev) * cfg.noise
    keep = rand(b, 1, 1) >= cfg.p
    return torch.where(keep, x, _renormalise(out))


def mixup(
    x: torch.Tensor, alpha: float, gen: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Mix each spectrum of `x` ([B, 1, L]) with another of the batch: returns the re-normalised
    mixtures, the partner of each row and the weight `lam` of the row itself.

    `lam` is drawn once per batch from Beta(alpha, alpha) and folded to [0.5, 1], so the row's
    own label stays the larger part of its target (what training accuracy is counted against).
    """
    # Beta from a numpy generator seeded by `gen`: torch's Beta sampler takes no generator, and
    # a training run must replay the same mixtures when it is resumed or repeated
    seed = int(torch.randint(2**31 - 1, (1,), generator=gen))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    lam = max(lam, 1.0 - lam)
    partner = torch.randperm(x.shape[0], generator=gen).to(x.device)
    return _renormalise(lam * x + (1 - lam) * x[partner]), partner, lam


def _shift(x: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Shift each spectrum by a fractional number of grid points (linear interpolation,
    zero fill), i.e. a wavenumber calibration offset."""
    b, _, n = x.shape
    pos = torch.arange(n, device=x.device).view(1, n) - points.view(b, 1)
    grid = (pos / (n - 1) * 2 - 1).view(b, 1, n, 1)
    grid = torch.cat([grid, torch.zeros_like(grid)], dim=-1)
    return F.grid_sample(x.unsqueeze(2), grid, align_corners=True, padding_mode="zeros").view(
        b, 1, n
    )


def _renormalise(x: torch.Tensor) -> torch.Tensor:
    lo = x.amin(dim=-1, keepdim=True)
    hi = x.amax(dim=-1, keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(1e-8)
