"""Training-time augmentation: each transform does what its name says, output stays min-max."""

from __future__ import annotations

import torch

from training.augment import AugmentConfig, augment, mixup


def peaks(n: int = 64, batch: int = 8) -> torch.Tensor:
    """A batch of spectra with one band at point 30 on a low floor, min-max normalised."""
    x = torch.full((batch, 1, n), 0.0)
    x[:, :, 30] = 1.0
    x[:, :, 10] = 0.3
    return x


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_disabled_config_returns_the_input_itself() -> None:
    x = peaks()
    assert augment(x, AugmentConfig()) is x
    assert not AugmentConfig(shift=2.0, p=0.0).enabled


def test_every_transform_keeps_spectra_min_max_normalised() -> None:
    cfg = AugmentConfig(shift=2.0, gain=0.3, noise=0.01, baseline=0.1, scale=0.1)
    out = augment(peaks(), cfg, gen())
    assert out.shape == (8, 1, 64)
    assert torch.allclose(out.amin(-1), torch.zeros(8, 1), atol=1e-6)
    assert torch.allclose(out.amax(-1), torch.ones(8, 1), atol=1e-6)


def test_shift_moves_the_band_by_at_most_shift_points() -> None:
    out = augment(peaks(), AugmentConfig(shift=2.0), gen())
    centroid = (out[:, 0, 25:36] * torch.arange(25, 36)).sum(-1) / out[:, 0, 25:36].sum(-1)
    assert ((centroid - 30).abs() <= 2.0 + 1e-5).all()
    assert (centroid - 30).abs().max() > 0.1  # it did move them


def test_intensity_scale_alone_is_undone_by_the_min_max_normalisation() -> None:
    x = peaks()
    assert torch.allclose(augment(x, AugmentConfig(scale=0.3), gen()), x, atol=1e-6)


def test_gain_reweights_bands_in_place_within_its_bound_and_replays() -> None:
    x = peaks(batch=64)
    cfg = AugmentConfig(gain=0.3)
    out = augment(x, cfg, gen(5))
    assert torch.equal(out, augment(x, cfg, gen(5)))
    # bands stay where they were and nothing appears between them
    assert torch.equal(out != 0, x != 0)
    # the strongest band is renormalised to 1; the weaker one's height relative to it moves by
    # at most the largest log gain difference between points 10 and 30 of 64
    t = torch.linspace(-1, 1, 64)
    bound = 0.3 * ((t[30] - t[10]).abs() + (t[30] ** 2 - t[10] ** 2).abs())
    log_ratio = torch.log(out[:, 0, 10] / out[:, 0, 30]) - torch.log(torch.tensor(0.3))
    assert (log_ratio.abs() <= bound + 1e-5).all()
    assert log_ratio.abs().max() > 0.5 * bound  # it did reweight them


def test_noise_and_baseline_change_the_spectrum_and_are_reproducible() -> None:
    x = peaks()
    for cfg in (AugmentConfig(noise=0.01), AugmentConfig(baseline=0.1)):
        a, b = augment(x, cfg, gen(3)), augment(x, cfg, gen(3))
        assert torch.equal(a, b)
        assert (a - x).abs().max() > 1e-3


def test_probability_leaves_some_spectra_untouched() -> None:
    x = peaks(batch=200)
    out = augment(x, AugmentConfig(noise=0.05, p=0.5), gen())
    untouched = (out == x).all(-1).squeeze(1)
    assert 40 < int(untouched.sum()) < 160


def test_mixup_mixes_each_spectrum_with_a_partner_and_renormalises() -> None:
    x = torch.rand(8, 1, 64, generator=gen(3))
    out, partner, lam = mixup(x, 0.4, gen())
    assert sorted(partner.tolist()) == list(range(8))  # every row is someone's partner
    assert 0.5 <= lam <= 1.0  # folded: the row's own spectrum is the larger part
    mixed = lam * x + (1 - lam) * x[partner]
    lo, hi = mixed.amin(-1, keepdim=True), mixed.amax(-1, keepdim=True)
    assert torch.allclose(out, (mixed - lo) / (hi - lo), atol=1e-6)
    assert torch.allclose(out.amin(-1), torch.zeros(8, 1), atol=1e-6)
    assert torch.allclose(out.amax(-1), torch.ones(8, 1), atol=1e-6)


def test_mixup_replays_with_the_same_generator_and_varies_between_batches() -> None:
    x = torch.rand(8, 1, 64, generator=gen(3))
    first, again = mixup(x, 0.4, gen(1)), mixup(x, 0.4, gen(1))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    g = gen(1)
    weights = {mixup(x, 0.4, g)[2] for _ in range(20)}
    assert len(weights) == 20 and min(weights) < 0.9  # drawn per batch, and really mixing
