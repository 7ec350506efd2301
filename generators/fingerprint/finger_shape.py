"""Fingertip silhouette of the master print.

SFinGe's shape model (Cappelli, Maio, Maltoni, Handbook of Fingerprint Recognition, ch. 6):
a central rectangle closed by four elliptical quarters; the top quarters are taller
than the bottom ones because the fingertip is rounded while the bottom is cut by the crease.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FingerShape:
    cx: float          # centre of the central rectangle (px)
    cy: float
    half_width: float  # half width of the finger (px)
    top: float         # height of the top elliptical quarters (px)
    bottom: float      # height of the bottom elliptical quarters (px)
    rect_half_height: float  # half height of the central rectangle (px)


def draw_finger_shape(rng: np.random.Generator, master_width: int, master_height: int) -> FingerShape:
    """A fingertip that fills most of the master canvas: nail edge to nail edge, ~0.9-1.0 in
    of visible surface at 500 dpi with the default 600 px master."""
    half_width = master_width * rng.uniform(0.37, 0.43)
    top = master_height * rng.uniform(0.28, 0.34)
    bottom = master_height * rng.uniform(0.10, 0.16)
    rect_half = master_height * 0.5 - 0.5 * (top + bottom) - master_height * 0.02
    cy = master_height * 0.5 + 0.5 * (top - bottom)
    return FingerShape(master_width * 0.5, cy, half_width, top, bottom, max(rect_half, 8.0))


def silhouette(shape: FingerShape, height: int, width: int) -> np.ndarray:
    """Soft mask [height, width] float32 in [0, 1]: 1 inside the fingertip, 2-px ramp at the edge."""
    # the terms are separable: compute them on one row and one column and broadcast (the
    # same float32 operations per pixel, a 600 x 600 mask in a third of the time)
    y = np.arange(height, dtype=np.float32)[:, None]
    x = np.arange(width, dtype=np.float32)[None, :]
    dx = np.abs(x - shape.cx) / shape.half_width
    dy = y - shape.cy
    # vertical distance beyond the central rectangle, normalised by the quarter's height
    above = np.maximum(-dy - shape.rect_half_height, 0.0) / shape.top
    below = np.maximum(dy - shape.rect_half_height, 0.0) / shape.bottom
    r = np.sqrt(dx * dx + above * above + below * below)  # 1 on the boundary
    edge_px = (1.0 - r) * shape.half_width
    return np.clip(edge_px / 2.0 + 0.5, 0.0, 1.0).astype(np.float32)
