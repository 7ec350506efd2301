"""Smooth random fields: Gaussian noise on a coarse grid, upsampled bicubically.

Used wherever a parameter must vary slowly over the finger (ridge period, skin dryness,
pressure, background). A coarse grid is far cheaper than filtering full-resolution noise.
"""
from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

# OpenCV's cubic resize gets slower as the scale factor grows (500 x 400 px, one thread:
# 0.33 ms at a 16 px cell, 0.64 ms at 40, 1.2 ms at 160), two dense matrix products cost about
# their multiply-adds (0.28, 0.22, 0.17 ms): the products are used where they need at most
# this many multiply-adds per output pixel (measured break-even 28-30, on 75x80 to 1000x1600)
MATMUL_MACS_PER_PIXEL = 28


@lru_cache(maxsize=64)
def _cubic_weights(n_in: int, n_out: int):
    """[n_out, n_in] float32: OpenCV's own 1-D INTER_CUBIC weights (a = -0.75, half-pixel
    centres, edges replicated), read off by resizing the identity, so the product equals
    cv2.resize to float rounding (7e-7 on unit-variance noise at the canvas sizes, 1e-5
    relative at worst)."""
    import torch        # here, not at the top: the CLI and the settings import without torch

    eye = np.eye(n_in, dtype=np.float32)
    return torch.from_numpy(cv2.resize(eye, (n_in, n_out), interpolation=cv2.INTER_CUBIC))


def _product_costs(gh: int, gw: int, height: int, width: int) -> tuple[int, int]:
    """Multiply-adds of (wy c) wx^T and of wy (c wx^T)."""
    return height * gw * (gh + width), gh * width * (gw + height)


def _cubic_resize(coarse: np.ndarray, height: int, width: int, rows_first: bool) -> np.ndarray:
    """cv2.resize(coarse, (width, height), INTER_CUBIC) as wy @ coarse @ wx^T: cubic
    interpolation is separable and linear, so it is exactly these products (torch: one thread
    in workers, where numpy's BLAS may start its own)."""
    import torch

    gh, gw = coarse.shape
    wy, wx = _cubic_weights(gh, height), _cubic_weights(gw, width)
    c = torch.from_numpy(coarse)
    if rows_first:
        return torch.mm(torch.mm(wy, c), wx.T).numpy()
    return torch.mm(wy, torch.mm(c, wx.T)).numpy()


def coarse_shape(height: int, width: int, cell: float) -> tuple[int, int]:
    """The coarse grid [gh, gw] a field of `cell` px is drawn on: one node per cell, plus one."""
    return max(2, int(np.ceil(height / cell)) + 1), max(2, int(np.ceil(width / cell)) + 1)


def smooth_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """Zero-mean, roughly unit-variance field [height, width] float32 varying over ~`cell` px."""
    gh, gw = coarse_shape(height, width, cell)
    coarse = rng.standard_normal((gh, gw)).astype(np.float32)
    if cell <= 4.0:
        # below ~4 px the field is grain: linear interpolation looks the same and costs 2/3
        return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)
    rows_first, columns_first = _product_costs(gh, gw, height, width)
    if min(rows_first, columns_first) <= MATMUL_MACS_PER_PIXEL * height * width:
        return _cubic_resize(coarse, height, width, rows_first <= columns_first)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
