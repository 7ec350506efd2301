"""Specification of generators.latent.refine: the diffusion refinement of a procedural latent
(seeded, same size, changes the image) and the gate's identity measure."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from generators.latent.refine import recovered_fraction


def minutiae(*rows):
    return np.array(rows, dtype=np.float64).reshape(-1, 3)


def test_a_minutia_counts_when_one_is_found_near_it_pointing_the_same_way():
    truth = minutiae((100, 100, 0.0), (200, 200, np.pi / 2), (300, 300, np.pi))
    found = minutiae((104, 97, 0.3), (200, 215, np.pi / 2), (300, 300, 0.0))
    # first: 5 px, 17 deg -> found; second: 15 px away -> not; third: opposite direction -> not
    assert recovered_fraction(truth, found) == pytest.approx(1 / 3)
    assert recovered_fraction(truth, found, radius=16) == pytest.approx(2 / 3)


def test_directions_wrap_around_and_each_found_minutia_serves_once():
    truth = minutiae((50, 50, 0.05), (52, 50, 0.1))
    assert recovered_fraction(truth, minutiae((51, 50, 2 * np.pi - 0.05))) == pytest.approx(0.5)
    assert recovered_fraction(truth, minutiae((51, 50, 0.0), (51, 51, 0.1))) == 1.0


def test_nothing_to_find_is_nan_and_nothing_found_is_zero():
    assert np.isnan(recovered_fraction(np.zeros((0, 3)), minutiae((1, 1, 0))))
    assert recovered_fraction(minutiae((1, 1, 0)), np.zeros((0, 3))) == 0.0


def test_refinement_is_seeded_keeps_the_size_and_changes_the_procedural_image():
    from generators.fingerprint import FingerprintSettings, make_master
    from generators.latent import LatentSettings, make_latent
    from generators.latent.diffusion import UNet, UNetConfig
    from generators.latent.refine import refine_latent

    settings = FingerprintSettings(width=160, height=192, master_width=240, master_height=224)
    latent = make_latent(make_master(settings, 2, np.random.default_rng(0)), LatentSettings(width=128, height=128),
                         np.random.default_rng(1))
    torch.manual_seed(0)
    model = UNet(UNetConfig(channels=(8, 16)))
    for p in model.out.parameters():
        torch.nn.init.normal_(p, std=0.05)
    a = refine_latent(model, latent, 3, 0.5, seed=7)
    b = refine_latent(model, latent, 3, 0.5, seed=7)
    c = refine_latent(model, latent, 3, 0.5, seed=8)
    assert a.dtype == np.uint8 and a.shape == latent.image.shape
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.abs(a.astype(int) - latent.image).mean() > 1.0
