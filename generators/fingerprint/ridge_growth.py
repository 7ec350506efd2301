"""Ridge pattern grown by iterative space-variant Gabor filtering (SFinGe's master-print step).

Cappelli, Maio, Maltoni ("Synthetic fingerprint-image generation", ICPR 2000) start from a
few seeds and repeatedly filter the image with a Gabor filter tuned, at each pixel, to the
local ridge orientation and frequency, until fewer than ~1 % of the pixels change. Ridges
grow from the seeds and minutiae appear where growth fronts meet.

For speed we start from white noise instead of sparse seeds (the fronts then meet
everywhere at once: ~36 % of the pixels change sign in the first iteration, ~2 % by the
sixth and ~1 % by the twelfth, instead of hundreds of iterations from seeds) and run at half
resolution (period 9-11 px -> 4.5-5.5 px), where a 9x9 kernel covers two ridge periods.
"Space-variant" is realised as a filter bank over orientation x period followed by per-pixel
bilinear interpolation between the four nearest filters (orientation is circular). A pixel
needs only those four of the bank's 16 filters, and orientation varies slowly, so the image is
cut into tiles of about TILE x TILE and each tile is filtered only with the filters its pixels
use (one grouped convolution over all (tile, filter) pairs: ~550 pairs where the full bank would
be 100 tiles x 16, a third of the multiply-adds). The tiles are sized to divide the image (300
px -> 10 tiles of 30, not 10 of 32 of which the last is mostly padding: 11 % fewer
multiply-adds, 17 % less time). Each response is the same 11 x 11 dot
product the whole-image convolution computes, in the same order: the pattern is the same to
the bit on CPU. Everything is torch with a batch dimension: CPU or CUDA.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .pixel_kernels import growth_step

TILE = 32   # px at growth resolution: ~6 ridge periods; 24-48 cost the same, 16 more


def fitted_tile(size: int, tile: int = TILE) -> int:
    """The tile length that cuts `size` px into as many tiles as `tile` would, with the least
    padding: ceil(size / ceil(size / tile))."""
    if size < 1 or tile < 1:
        raise ValueError(f"size and tile must be positive, got {size} and {tile}")
    return -(-size // -(-size // tile))


def gabor_bank(n_orientations: int, periods: np.ndarray, size: int, anisotropy: float = 1.0) -> torch.Tensor:
    """Even-symmetric, zero-mean Gabor kernels [n_orientations * n_periods, 1, size, size].

    Channel c = k * n_periods + j holds orientation theta_k = k pi / n_orientations (radians,
    counter-clockwise from +x, y up) and period periods[j] (px). Each kernel answers 1 to a
    unit-amplitude sinusoid of its own orientation and period, and 0 to a constant.
    `anisotropy` stretches the envelope along the ridge: an elongated filter favours ridges
    that continue over ridges that end or fork, so growth from noise leaves fewer, longer
    ridges (SFinGe's seeded growth has the same effect, at hundreds of iterations).
    """
    r = size // 2
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1].astype(np.float64)
    kernels = []
    for k in range(n_orientations):
        t = k * math.pi / n_orientations
        # ridge direction in image coordinates (y down) is (cos t, -sin t); the wave runs
        # along the normal (sin t, cos t)
        s = xx * math.sin(t) + yy * math.cos(t)
        along = xx * math.cos(t) - yy * math.sin(t)
        for p in periods:
            sigma = 0.38 * p
            env = np.exp(-0.5 * (s * s + (along / anisotropy) ** 2) / (sigma * sigma))
            g = env * np.cos(2.0 * math.pi * s / p)
            g -= env * (g.sum() / env.sum())                       # no response to a constant
            g /= (g * np.cos(2.0 * math.pi * s / p)).sum()         # unit response when matched
            kernels.append(g)
    return torch.from_numpy(np.stack(kernels)[:, None].astype(np.float32))


def filter_weights(theta: np.ndarray, period: np.ndarray, n_orientations: int,
                   periods: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel choice of the bank's filters: (index [4, H, W] int64, weight [4, H, W] float32).

    theta [H, W] radians in [0, pi), period [H, W] px. Bilinear in (orientation, period) over
    the four nearest filters (orientation wraps around: theta_k + pi is theta_k), so growth
    gathers 4 responses per pixel instead of weighting all of the bank's channels.
    """
    n_p = len(periods)
    q = theta * (n_orientations / math.pi)
    k0 = np.floor(q).astype(np.int64)
    wk = (q - k0).astype(np.float32)
    k0 %= n_orientations
    k1 = (k0 + 1) % n_orientations
    if n_p > 1:
        rpos = np.clip((period - periods[0]) / (periods[1] - periods[0]), 0.0, n_p - 1.0)
    else:
        rpos = np.zeros_like(period)
    j0 = np.minimum(np.floor(rpos).astype(np.int64), n_p - 1)
    wj = (rpos - j0).astype(np.float32)
    j1 = np.minimum(j0 + 1, n_p - 1)
    index = np.stack([k0 * n_p + j0, k0 * n_p + j1, k1 * n_p + j0, k1 * n_p + j1])
    weight = np.stack([(1.0 - wk) * (1.0 - wj), (1.0 - wk) * wj, wk * (1.0 - wj), wk * wj]).astype(np.float32)
    return index, weight


def tile_pairs(index: torch.Tensor, n_channels: int, tile: tuple[int, int]
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The (tile, filter) pairs that growth must evaluate, and where each pixel finds its four
    responses.

    index [B, 4, H, W] (each pixel's filters, from filter_weights). Tiles are numbered
    row-major per sample, samples after one another. Returns pair_tile [N] (the tile of each
    pair), pair_channel [N] (its filter) and flat [B * 4 * H * W]: the offset of each pixel's
    response in the pairs' outputs [N, tile_h, tile_w], flattened; `tile` is (tile_h, tile_w).
    Bookkeeping in numpy int32 (a third of torch's time for these element-wise steps), once
    per growth.
    """
    b, _, h, w = index.shape
    th, tw = tile
    nty, ntx = -(-h // th), -(-w // tw)
    rows, cols = np.arange(h, dtype=np.int32), np.arange(w, dtype=np.int32)
    tile_of = ((np.arange(b, dtype=np.int32)[:, None, None] * nty + (rows // th)[None, :, None]) * ntx
               + (cols // tw)[None, None, :])
    key = index.cpu().numpy().astype(np.int32) + (tile_of * n_channels)[:, None]
    present = np.bincount(key.ravel(), minlength=b * nty * ntx * n_channels) > 0
    pairs = np.flatnonzero(present)
    pair_of = np.cumsum(present, dtype=np.int32) - 1        # pair number of each present key
    local = (rows % th)[:, None] * tw + (cols % tw)[None, :]
    flat = np.take(pair_of, key) * np.int32(th * tw) + local
    dev = index.device
    return (torch.from_numpy(pairs // n_channels).to(dev), torch.from_numpy(pairs % n_channels).to(dev),
            torch.from_numpy(flat.reshape(-1).astype(np.int64)).to(dev))


def grow_ridges(init: torch.Tensor, index: torch.Tensor, weights: torch.Tensor, bank: torch.Tensor, *,
                min_iterations: int, max_iterations: int, tolerance: float,
                gain: float = 2.0, bias: float = 0.0, tile: int | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Iterate x <- clip(gain * sum_c w_c (g_c * x) - bias, -1, 1) until it stops changing,
    the sum running over each pixel's four filters (index, weights [B, 4, H, W]).

    A positive `bias` makes ridges (x > 0) narrower than valleys. Thin ridges break more
    easily than wide valleys, so growth then ends more ridges than it forks: real fingers have
    more endings than bifurcations (roughly 2:1; Gutierrez-Redomero et al., Forensic Sci. Int.
    2011), which the symmetric iteration (about 1:1) does not give.

    init [B, 1, H, W] noise, bank [C, 1, k, k] (k odd; the image is zero-padded as a
    whole-image convolution pads it). `tile` is the tiles' side; None fits tiles of about
    TILE to the image (fitted_tile per axis). The tiling changes the time, not the result.
    Each sample stops on its own (fewer than `tolerance` of its pixels changed sign, after
    `min_iterations`), so a sample's result does not depend on the rest of the batch.
    Returns the pattern [B, 1, H, W] in [-1, 1] and the iterations used per sample [B].
    """
    x = init
    b, (h, w) = x.shape[0], x.shape[-2:]
    r = bank.shape[-1] // 2
    th, tw = (fitted_tile(h), fitted_tile(w)) if tile is None else (tile, tile)
    pair_tile, pair_channel, flat = tile_pairs(index, bank.shape[0], (th, tw))
    pair_bank = bank.index_select(0, pair_channel)                # [N, 1, k, k]
    n_pairs, span_h, span_w = len(pair_tile), th + 2 * r, tw + 2 * r
    nty, ntx = -(-h // th), -(-w // tw)
    pad = (r, r + ntx * tw - w, r, r + nty * th - h)
    active = torch.ones(b, dtype=torch.bool, device=x.device)
    used = torch.zeros(b, dtype=torch.int64, device=x.device)
    for it in range(max_iterations):
        # every tile with its halo, one row each (index_select on 2-D rows is a memcpy)
        tiles = F.pad(x, pad).unfold(2, span_h, th).unfold(3, span_w, tw).reshape(-1, span_h * span_w)
        inputs = tiles.index_select(0, pair_tile).view(1, n_pairs, span_h, span_w)
        responses = F.conv2d(inputs, pair_bank, groups=n_pairs)   # [1, N, th, tw]
        may_stop = it + 1 >= min_iterations       # the stopping test counts from min_iterations on
        # each pixel's four responses gathered, weighed, summed, clipped (fused in C on the CPU)
        new, changed = growth_step(responses, flat, weights, gain, bias, x, count_changes=may_stop)
        # a sample that has stopped keeps its pattern (no select while all still grow)
        x = new if bool(active.all()) else torch.where(active.view(-1, 1, 1, 1), new, x)
        used = used + active.long()
        if may_stop:
            active = active & (changed >= tolerance)
        if not bool(active.any()):
            break
    return x, used
