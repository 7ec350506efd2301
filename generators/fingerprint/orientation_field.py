"""Ridge orientation of a master print from its singular points.

Zero-pole model (Sherlock and Monro, Pattern Recognition 1993):
    theta(z) = 1/2 [ sum_i g_ci(arg(z - c_i)) - sum_j g_dj(arg(z - d_j)) ]
with the Vizcaya-Gerhardt correction (Pattern Recognition 1996): each singular point k has
a piecewise-linear g_k through L control angles alpha_i = -pi + 2 pi i / L with
g_k(alpha_i) = alpha_i + Delta_ki. g_k(alpha + 2 pi) = g_k(alpha) + 2 pi, so the Poincare
index of every core stays +1/2 and of every delta -1/2 whatever the corrections are.
Arches have no singular point; their field is the slope of hump-shaped ridge lines.

Convention: theta is measured counter-clockwise from +x with y pointing UP (the ISO/IEC
19794-2 angle convention), in [0, pi). Points are given in image pixels (y down).
"""
from __future__ import annotations

import numpy as np

from .singularities import N_CONTROL, SingularLayout


def _corrected_arg(dx: np.ndarray, dy_up: np.ndarray, corrections: np.ndarray) -> np.ndarray:
    """g_k(arg(z - p)) with the Vizcaya-Gerhardt piecewise-linear correction."""
    alpha = np.arctan2(dy_up, dx)                                   # [-pi, pi]
    pos = (alpha + np.pi) * (N_CONTROL / (2.0 * np.pi))             # in [0, L]
    i0 = np.minimum(np.floor(pos).astype(np.int64), N_CONTROL - 1)
    frac = pos - i0
    delta = np.append(corrections, corrections[0])                  # periodic: Delta_L = Delta_0
    return alpha + (1.0 - frac) * delta[i0] + frac * delta[i0 + 1]


def orientation_at(layout: SingularLayout, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Ridge orientation in radians [0, pi) at image points (x, y) (any matching shapes)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if layout.finger_class == "arch":
        x0, y0 = layout.centre
        u = (x - x0) / layout.arch_width
        # hump strength: strongest a little below the reference point, flatter toward the
        # fingertip and the crease (arches flatten out at both ends)
        strength = layout.arch_amplitude * np.exp(-(((y - y0 - 20.0) / 150.0) ** 2))
        slope = -strength * u * np.exp(0.5 - 0.5 * u * u)   # max |slope| = strength at |u| = 1
        return np.mod(np.arctan(slope), np.pi)
    theta = np.zeros(np.broadcast(x, y).shape)
    for (px, py), corr in zip(layout.cores, layout.core_corrections):
        theta += _corrected_arg(x - px, py - y, corr)
    for (px, py), corr in zip(layout.deltas, layout.delta_corrections):
        theta -= _corrected_arg(x - px, py - y, corr)
    return np.mod(0.5 * theta, np.pi)


def orientation_grid(layout: SingularLayout, height: int, width: int, step: float) -> np.ndarray:
    """Orientation [height, width] float32 sampled at pixel centres of a grid with spacing
    `step` master pixels (cell (i, j) covers master pixels [step*j, step*(j+1)))."""
    ys = (np.arange(height) + 0.5) * step - 0.5
    xs = (np.arange(width) + 0.5) * step - 0.5
    return orientation_at(layout, xs[None, :], ys[:, None]).astype(np.float32)


def poincare_index(theta: np.ndarray, x: float, y: float, radius: float,
                   layout: SingularLayout | None = None, samples: int = 64) -> float:
    """Poincare index of an orientation field around a circle (1/2 core, -1/2 delta, 0 neither).

    `theta` is either a callable-free grid [H, W] sampled at integer pixels (nearest sample),
    or ignored when `layout` is given (the analytic field is evaluated on the circle)."""
    a = np.linspace(0.0, 2.0 * np.pi, samples, endpoint=False)
    px, py = x + radius * np.cos(a), y - radius * np.sin(a)
    if layout is not None:
        t = orientation_at(layout, px, py)
    else:
        h, w = theta.shape
        t = theta[np.clip(np.round(py).astype(int), 0, h - 1), np.clip(np.round(px).astype(int), 0, w - 1)]
    d = np.diff(np.append(t, t[0]))
    d = (d + np.pi / 2) % np.pi - np.pi / 2   # orientation differences wrapped to (-pi/2, pi/2]
    return float(d.sum() / (2.0 * np.pi))
