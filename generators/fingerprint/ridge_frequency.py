"""Ridge-period map of a master print.

SFinGe (Handbook of Fingerprint Recognition, ch. 6) draws a smooth density map: ridges are
sparser (longer period) above the northernmost core and below the deltas, denser elsewhere.
Here: a random mean period in `ridge_period` (9-11 px at 500 dpi), a slow random variation of
+-4 %, and two smooth bumps, above the upper core and below each delta.
"""
from __future__ import annotations

import numpy as np

from .singularities import SingularLayout
from .smooth_noise import smooth_noise


def ridge_period_grid(rng: np.random.Generator, layout: SingularLayout, height: int, width: int,
                      step: float, period_range: tuple[float, float]) -> np.ndarray:
    """Ridge period (master px) [height, width] float32 on a grid of spacing `step` master px."""
    base = rng.uniform(*period_range)
    period = base * (1.0 + 0.04 * smooth_noise(rng, height, width, cell=160.0 / step))
    ys = ((np.arange(height) + 0.5) * step - 0.5)[:, None]
    xs = ((np.arange(width) + 0.5) * step - 0.5)[None, :]
    if len(layout.cores):
        top = layout.cores[np.argmin(layout.cores[:, 1])]
        above = np.clip((top[1] - ys) / 120.0, 0.0, 1.0)          # ramps up over 120 px above the core
        near_x = np.exp(-0.5 * ((xs - top[0]) / 150.0) ** 2)
        period = period * (1.0 + 0.10 * above * near_x)
    for dx, dy in layout.deltas:
        below = np.clip((ys - dy) / 100.0, 0.0, 1.0)
        near_x = np.exp(-0.5 * ((xs - dx) / 110.0) ** 2)
        period = period * (1.0 + 0.08 * below * near_x)
    lo, hi = period_range
    return np.clip(period, 0.9 * lo, 1.15 * hi).astype(np.float32)
