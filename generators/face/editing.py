"""Latent edits: move w along boundary normals (W, or W+ on a layer range) and style mixing.

Conventions: `ws` is [L, w_dim] for one face or [B, L, w_dim] for a batch (L = num_ws);
a direction is [w_dim]; magnitudes are in units of the (unit-length) normal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EditRange:
    """Allowed magnitude range of one attribute edit and the layers it applies to."""

    low: float
    high: float
    first_layer: int = 0            # W+ edit: only layers [first_layer, last_layer)
    last_layer: int | None = None   # None = up to the last layer (a plain W edit when first=0)

    def __post_init__(self) -> None:
        if self.low > self.high:
            raise ValueError(f"edit range low {self.low} is above high {self.high}")


def sample_magnitudes(rng: np.random.Generator, ranges: dict[str, EditRange]) -> dict[str, float]:
    """One uniform magnitude per attribute, drawn in sorted-name order (reproducible)."""
    return {name: float(rng.uniform(ranges[name].low, ranges[name].high)) for name in sorted(ranges)}


def apply_edits(ws: np.ndarray, directions: dict[str, np.ndarray], magnitudes: dict[str, float],
                ranges: dict[str, EditRange] | None = None) -> np.ndarray:
    """ws + sum_a magnitude_a * direction_a on each attribute's layer range. Returns a copy."""
    out = np.array(ws, dtype=np.float32, copy=True)
    for name, alpha in magnitudes.items():
        if alpha == 0:
            continue
        d = np.asarray(directions[name], dtype=np.float32)
        if d.shape != (out.shape[-1],):
            raise ValueError(f"direction {name!r} has shape {d.shape}, expected ({out.shape[-1]},)")
        r = ranges.get(name) if ranges else None
        first, last = (r.first_layer, r.last_layer) if r else (0, None)
        out[..., first:last, :] += alpha * d
    return out


def mix_styles(ws: np.ndarray, source_ws: np.ndarray, from_layer: int, strength: float = 1.0) -> np.ndarray:
    """Style mixing (Karras et al. 2019, section 3.1) on the fine layers only.

    Layers >= from_layer move `strength` of the way from `ws` to `source_ws` (1 = replace):
    fine layers carry colour and micro-texture, so identity (coarse/middle layers) is kept.
    """
    if ws.shape != source_ws.shape:
        raise ValueError(f"ws {ws.shape} and source_ws {source_ws.shape} differ in shape")
    out = np.array(ws, dtype=np.float32, copy=True)
    src = np.asarray(source_ws, dtype=np.float32)[..., from_layer:, :]
    # (1 - s) * a + s * b, not a + s * (b - a): exact copies at s = 1.
    out[..., from_layer:, :] = (1.0 - strength) * out[..., from_layer:, :] + strength * src
    return out
