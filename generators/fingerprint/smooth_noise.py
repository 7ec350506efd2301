"""Smooth random fields: Gaussian noise on a coarse grid, upsampled bicubically.

Used wherever a parameter must vary slowly over the finger (ridge period, skin dryness,
pressure, background). A coarse grid is far cheaper than filtering full-resolution noise.
"""
from __future__ import annotations

import cv2
import numpy as np


def smooth_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """Zero-mean, roughly unit-variance field [height, width] float32 varying over ~`cell` px."""
    gh = max(2, int(np.ceil(height / cell)) + 1)
    gw = max(2, int(np.ceil(width / cell)) + 1)
    coarse = rng.standard_normal((gh, gw)).astype(np.float32)
    # below ~4 px the field is grain: linear interpolation looks the same and costs 2/3
    interpolation = cv2.INTER_LINEAR if cell <= 4.0 else cv2.INTER_CUBIC
    return cv2.resize(coarse, (width, height), interpolation=interpolation)
