"""Ground-truth minutiae of a clean master print: skeleton, crossing number, cleaning, angle.

Classic extraction (Handbook of Fingerprint Recognition, sec. 3.7): binarise the clean ridge
pattern, thin it, mark skeleton pixels with crossing number 1 (ridge ending) or 3
(bifurcation), then remove the spurious ones: minutiae near the fingertip border (ridges
cut by the silhouette, not real endings) and close pairs that are artefacts of thinning or
of tiny gaps/bridges (Xiao and Raafat, Pattern Recognition 1991 - style distance rules).

Angles follow ISO/IEC 19794-2 and NBIS: counter-clockwise from +x with y up. A bifurcation
points from the fork into the valley between its two branches (away from the stem); a ridge
ending is the bifurcation of the valley around it, so it points from the end into the ridge's
body. Both therefore point toward the side with more skeleton (checked against NBIS MINDTCT
in tests/test_fingerprint_nbis.py).
"""
from __future__ import annotations

import cv2
import numpy as np

from .skeleton import CROSSING_NUMBER, neighbour_code, thin

ENDING, BIFURCATION = 0, 1


def _drop_close_pairs(points: np.ndarray, kinds: np.ndarray, limits: dict[tuple[int, int], float]) -> np.ndarray:
    """Keep-mask [N]: both members of every pair closer than limits[(kind_a, kind_b)] go."""
    keep = np.ones(len(points), dtype=bool)
    if len(points) < 2:
        return keep
    # every pair at once: a master has a few hundred candidates, so the N^2 / 2 distances are
    # cheaper than building a k-d tree (and spare each worker scipy.spatial's import)
    a, b = np.triu_indices(len(points), 1)
    dist = np.linalg.norm(points[a] - points[b], axis=1)
    lim = np.zeros(len(a))
    for (ka, kb), v in limits.items():
        sel = ((kinds[a] == ka) & (kinds[b] == kb)) | ((kinds[a] == kb) & (kinds[b] == ka))
        lim[sel] = v
    close = dist < lim
    keep[a[close]] = False
    keep[b[close]] = False
    return keep


def _pointing_sign(skel: np.ndarray, xs: np.ndarray, ys: np.ndarray, direction: np.ndarray,
                   radius: int = 7) -> np.ndarray:
    """+1 where the skeleton mass around each point lies along `direction` ([N, 2], image
    coords), -1 otherwise. For an ending that mass is the ridge body; for a bifurcation the
    two branches outweigh the stem."""
    h, w = skel.shape
    off = np.arange(-radius, radius + 1)
    oy, ox = np.meshgrid(off, off, indexing="ij")
    inside = (ox ** 2 + oy ** 2 <= radius ** 2).ravel()
    ox, oy = ox.ravel()[inside], oy.ravel()[inside]
    py = np.clip(ys[:, None] + oy[None, :], 0, h - 1)
    px = np.clip(xs[:, None] + ox[None, :], 0, w - 1)
    mass = skel[py, px].astype(np.float64)                        # [N, P]
    proj = ox[None, :] * direction[:, 0:1] + oy[None, :] * direction[:, 1:2]
    return np.where((mass * proj).sum(1) >= 0, 1.0, -1.0)


def extract_minutiae(ridges: np.ndarray, valid: np.ndarray, orientation) -> np.ndarray:
    """Minutiae [N, 4] float32 (x, y, angle, type) of a clean ridge field.

    ridges [H, W] float (> 0 on ridges), valid [H, W] bool (where minutiae may be kept),
    orientation: callable (x [N], y [N]) -> ridge orientation [N] in [0, pi) (ISO convention).
    """
    skel = thin(ridges > 0)
    cn = CROSSING_NUMBER[neighbour_code(skel)]
    is_min = (skel == 1) & ((cn == 1) | (cn == 3)) & valid
    ys, xs = np.nonzero(is_min)
    kinds = np.where(cn[ys, xs] == 1, ENDING, BIFURCATION)
    pts = np.stack([xs, ys], 1).astype(np.float64)
    keep = _drop_close_pairs(pts, kinds, {(ENDING, ENDING): 9.0, (BIFURCATION, BIFURCATION): 9.0,
                                          (ENDING, BIFURCATION): 9.0})
    xs, ys, kinds = xs[keep], ys[keep], kinds[keep]
    theta = np.asarray(orientation(xs.astype(np.float64), ys.astype(np.float64)), dtype=np.float64)
    direction = np.stack([np.cos(theta), -np.sin(theta)], 1)      # image coords (y down)
    sign = _pointing_sign(skel, xs, ys, direction)
    angle = np.mod(np.where(sign > 0, theta, theta + np.pi), 2.0 * np.pi)
    out = np.stack([xs, ys, angle, kinds], 1).astype(np.float32)
    return out[np.lexsort((out[:, 0], out[:, 1]))]


def valid_region(mask: np.ndarray, margin: float) -> np.ndarray:
    """Pixels at least `margin` px inside the soft silhouette `mask` [H, W]."""
    inside = (mask > 0.5).astype(np.uint8)
    dist = cv2.distanceTransform(np.pad(inside, 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
    return dist >= margin
