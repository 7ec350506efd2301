"""The visible region of a latent: an irregular, often concave polygon.

Open procedural degraders draw the visible area as a concave polygon of 16k-32k px^2 at
500 ppi (REFERENCE.md, latent prints); here its area is a fraction of the whole finger's
surface chosen per value class. The outline is a star-shaped polygon whose radius follows a
few random harmonics (lobes and bays), so regions range from blobs to crescents.
"""
from __future__ import annotations

import cv2
import numpy as np


def polygon_area(points: np.ndarray) -> float:
    """Shoelace area of a closed polygon [N, 2]."""
    x, y = points[:, 0], points[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def visible_polygon(rng: np.random.Generator, centre: tuple[float, float], area: float,
                    elongation: float, concavity: float) -> np.ndarray:
    """[N, 2] vertices (x, y) of a star-shaped polygon of about `area` px^2 around `centre`;
    `elongation` >= 1 stretches it along a random axis, `concavity` in [0, 1] deepens its bays."""
    n = int(rng.integers(16, 29))
    theta = np.sort(rng.uniform(0.0, 2.0 * np.pi, n))
    radius = np.ones(n)
    for k in (2, 3, 5):
        radius += concavity * rng.uniform(0.1, 0.35) * np.cos(k * theta + rng.uniform(0.0, 2.0 * np.pi))
    radius *= np.exp(0.08 * rng.standard_normal(n))
    radius = np.clip(radius, 0.25, None)
    axis = rng.uniform(0.0, np.pi)
    x = radius * np.cos(theta) * np.sqrt(elongation)
    y = radius * np.sin(theta) / np.sqrt(elongation)
    c, s = np.cos(axis), np.sin(axis)
    pts = np.stack([c * x - s * y, s * x + c * y], 1)
    pts *= np.sqrt(area / max(polygon_area(pts), 1e-9))
    return pts + np.asarray(centre, dtype=np.float64)


def rasterise(points: np.ndarray, h: int, w: int) -> np.ndarray:
    """Mask [h, w] bool of the polygon (sub-pixel vertices, anti-aliased edges thresholded)."""
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [np.rint(points * 16).astype(np.int32)], 255, lineType=cv2.LINE_AA, shift=4)
    return mask >= 128


def feathered(mask: np.ndarray, width: float) -> np.ndarray:
    """A soft version [h, w] float32 of `mask`: residue thins out over `width` px at the edge."""
    inside = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    return np.clip(inside / max(width, 1e-6), 0.0, 1.0).astype(np.float32)
