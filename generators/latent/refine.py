"""From a procedural latent to a diffusion latent, and how much of its identity survives.

`refine_latent` runs the conditional diffusion model on one procedural latent: the ridge map
and the visible mask are the conditions, and the chain starts from the procedural image
noised to t0 (SDEdit, Meng et al. 2022), so the model redraws surface, residue and noise
texture while the procedural start keeps the touch where its ground truth says it is.

`recovered_fraction` is the identity measure of the stage's gate: the share of ground-truth
minutiae that an extractor's minutiae reproduce (position within `radius` px and direction
within `max_angle` degrees, each extracted minutia used once). The gate compares a diffusion
latent with its procedural start, so it checks the model, not the severity the value class
asked for.
"""
from __future__ import annotations

import numpy as np
import torch

from .diffusion import UNet, ddim_sample
from .simulator import Latent

MATCH_RADIUS = 12.0       # px at 500 ppi: about one ridge period and a half
MATCH_ANGLE = 45.0        # degrees


CONDITIONS = ("residue", "ridges")


def conditions(latent: Latent, condition: str = "residue") -> np.ndarray:
    """[2, H, W] float32: the model's condition map (residue or clean ridges) and the mask.
    The residue carries the identity as the latent shows it -- only the ridges that
    transferred, with their smudge and double taps -- so the model redraws development,
    surface and noise around ridges it is told, instead of guessing which ridges printed."""
    if condition not in CONDITIONS:
        raise ValueError(f"condition must be one of {CONDITIONS}, got {condition!r}")
    first = latent.residue if condition == "residue" else latent.ridges
    return np.stack([first.astype(np.float32), latent.mask.astype(np.float32)])


def refine_latent(model: UNet, latent: Latent, steps: int, t0: float, seed: int, device: str = "cpu",
                  spacing: str = "quadratic") -> np.ndarray:
    """The diffusion latent [H, W] uint8 of one procedural latent; seeded by `seed` (the noise
    is drawn on the CPU, so CPU and CUDA start from the same numbers)."""
    cond = conditions(latent, model.config.condition)[None]
    start = (latent.image.astype(np.float32) / 127.5 - 1.0)[None, None]
    generator = torch.Generator().manual_seed(int(seed) % (2**63))
    with torch.no_grad():
        x = ddim_sample(model, torch.from_numpy(cond).to(device), steps, generator,
                        start=torch.from_numpy(start).to(device), t0=t0, spacing=spacing)
    out = (x[0, 0].float().cpu().numpy() + 1.0) * 127.5
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def recovered_fraction(truth: np.ndarray, found: np.ndarray, radius: float = MATCH_RADIUS,
                       max_angle: float = MATCH_ANGLE) -> float:
    """Share of `truth` minutiae [N, >=3] (x, y, angle rad) matched one-to-one by `found`
    [M, >=3] (same convention: ISO/NBIS, counter-clockwise from +x); nan when N = 0."""
    if len(truth) == 0:
        return float("nan")
    if len(found) == 0:
        return 0.0
    truth, found = np.asarray(truth, np.float64), np.asarray(found, np.float64)
    dist = np.hypot(truth[:, None, 0] - found[None, :, 0], truth[:, None, 1] - found[None, :, 1])
    turn = np.abs(np.angle(np.exp(1j * (truth[:, None, 2] - found[None, :, 2]))))
    cost = np.where((dist <= radius) & (turn <= np.deg2rad(max_angle)), dist, np.inf)
    # greedy one-to-one assignment, closest pairs first (N, M are tens: the [N, M] sort is cheap)
    order = np.argsort(cost, axis=None)
    used_t, used_f = np.zeros(len(truth), bool), np.zeros(len(found), bool)
    matched = 0
    for flat in order[: int(np.isfinite(cost).sum())]:
        i, j = divmod(int(flat), len(found))
        if not used_t[i] and not used_f[j]:
            used_t[i] = used_f[j] = True
            matched += 1
    return matched / len(truth)
