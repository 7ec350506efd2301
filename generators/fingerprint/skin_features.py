"""Features of one finger's skin that every impression of it shows: pores, incipient ridges,
flexion creases and scars.

They belong to the finger, not to the capture, so they are drawn once on the master canvas
and carried through each impression's map like the ridges. They are kept apart from the
ridge field so that ground-truth minutiae stay those of the ridge pattern (a crease that cuts
ridges is not a set of minutiae to an examiner, although a matcher may see some there).

- Pores (level-3 detail): sweat pores sit on the ridge crests about 0.2-0.6 mm apart
  (Ashbaugh, "Quantitative-Qualitative Friction Ridge Analysis", 1999); at 500 ppi they are
  1-3 px bright dots in the ridges, seen where the skin is clean and not too wet.
- Incipient ridges: thin, immature ridges in some valleys (~45 % of people show them somewhere;
  Stücker et al., J. Invest. Dermatol. 2001); short faint strokes along valley centres.
- Flexion creases: white lines roughly across the finger, most near the distal crease at the
  bottom of the fingertip; secondary creases are shorter and run at any angle.
- Scars: rare; a wide, irregular white band with ridges broken on either side.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .smooth_noise import smooth_noise


# How the features enter the printing surface (the ridge field in [-1, 1] that impressions
# threshold): a pore or a crease digs the field down to a valley, an incipient ridge lifts a
# valley towards the threshold so that it prints faintly and only under pressure or moisture.
PORE_DEPTH = 2.0
MARK_DEPTH = 2.6
INCIPIENT_LIFT = 3.2


@dataclass(frozen=True)
class SkinFeatures:
    n_pores: int
    n_creases: int
    n_scars: int


def _curve(rng: np.random.Generator, x0: float, y0: float, angle: float, length: float, bend: float) -> np.ndarray:
    """Points [N, 1, 2] int32 of a gently bent line (quadratic bow) for cv2.polylines."""
    t = np.linspace(-0.5, 0.5, 24)
    ux, uy = np.cos(angle), np.sin(angle)
    bow = bend * (0.25 - t * t) * length
    x = x0 + t * length * ux - bow * uy
    y = y0 + t * length * uy + bow * ux
    # a crease wanders a little: low-frequency jitter across its direction
    jitter = np.cumsum(rng.normal(0.0, 0.6, t.size))
    x, y = x - jitter * uy, y + jitter * ux
    return np.stack([x, y], 1).round().astype(np.int32)[:, None, :]


def draw_skin_features(rng: np.random.Generator, ridges: np.ndarray, mask: np.ndarray, shape,
                       period: float) -> tuple[np.ndarray, SkinFeatures]:
    """The printing surface [Hm, Wm] float32 in [-1, 1] of one finger (its ridge field with the
    skin features in it) and their counts. ridges [Hm, Wm] in [-1, 1] (> 0 on ridges), mask
    the silhouette, shape its FingerShape (for the distal crease), period the mean ridge period.
    Thresholding carries them per impression: wet skin (a low threshold) fills the pores and
    prints incipient ridges, dry skin shows pores and drops incipient ridges."""
    hm, wm = ridges.shape
    # pores: sparse points on ridge crests (the field saturates at +1 inside a ridge, so its
    # blurred value peaks on the crest: above 0.4 is the middle third of a ridge), ~one per 1.2 periods of ridge length
    blurred = cv2.GaussianBlur(ridges, (0, 0), 0.2 * period)     # crests and valley centres
    crest = blurred > 0.4
    density = 1.0 / (1.2 * period * 0.35 * period)
    seeds = (rng.random((hm, wm), dtype=np.float32) < density) & crest & (mask > 0.5)
    pores = cv2.GaussianBlur(seeds.astype(np.float32), (0, 0), 0.75) * (2.0 * np.pi * 0.75 ** 2)
    pores = np.clip(pores * rng.uniform(0.7, 1.0), 0.0, 1.0)

    # incipient ridges: thin lines along valley centres, in a few patches of the finger
    valley_centre = blurred < -0.62
    patches = smooth_noise(rng, hm, wm, cell=90.0) > rng.uniform(0.9, 1.6)
    incipient = (valley_centre & patches & (mask > 0.5)).astype(np.float32)
    incipient = cv2.GaussianBlur(incipient, (0, 0), 0.6) * rng.uniform(0.35, 0.6)

    marks = np.zeros((hm, wm), np.float32)
    bottom = shape.cy + shape.rect_half_height + shape.bottom
    n_creases = int(rng.poisson(3.5))
    for i in range(n_creases):
        if i == 0:   # the main crease: near the distal flexion crease, across the finger
            y0 = bottom - rng.uniform(20.0, 110.0)
            angle, length = rng.normal(0.0, 0.12), rng.uniform(0.9, 1.6) * shape.half_width
        else:        # secondary creases: on the lower two thirds, mostly across the finger
            y0 = rng.uniform(shape.cy - 0.3 * shape.rect_half_height, bottom - 20.0)
            angle, length = rng.normal(0.0, 0.4), rng.uniform(40.0, 1.1 * shape.half_width)
        x0 = shape.cx + rng.normal(0.0, 0.25 * shape.half_width)
        cv2.polylines(marks, [_curve(rng, x0, y0, angle, length, rng.normal(0.0, 0.15))], False,
                      float(rng.uniform(0.7, 1.0)), int(rng.integers(2, 5)), cv2.LINE_AA)
    n_scars = int(rng.uniform() < 0.08)
    for _ in range(n_scars):
        x0, y0 = shape.cx + rng.normal(0.0, 0.3 * shape.half_width), shape.cy + rng.normal(0.0, 0.3 * shape.half_width)
        pts = _curve(rng, x0, y0, rng.uniform(0.0, np.pi), rng.uniform(60.0, 200.0), rng.normal(0.0, 0.3))
        cv2.polylines(marks, [pts], False, 1.0, int(rng.integers(5, 10)), cv2.LINE_AA)
    if n_creases or n_scars:
        # ragged edges: the skin folds unevenly, so the white line's width varies along it
        rough = np.clip(smooth_noise(rng, hm, wm, cell=5.0) * 0.35 + 0.85, 0.0, 1.0)
        marks = np.clip(cv2.GaussianBlur(marks, (0, 0), 0.8) * rough * 1.3, 0.0, 1.0)
    surface = ridges - PORE_DEPTH * pores - MARK_DEPTH * marks + INCIPIENT_LIFT * incipient
    surface = np.clip(surface, -1.0, 1.0).astype(np.float32)
    return surface, SkinFeatures(int(np.count_nonzero(seeds)), n_creases, n_scars)
