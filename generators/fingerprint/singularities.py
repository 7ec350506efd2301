"""Fingerprint class and singular points (cores, deltas) of a master print.

Classes follow Henry/SFinGe: arch (no singularity), tented arch (core above a close delta),
left loop, right loop (one core, one delta on the side opposite the loop's opening) and
whorl (two cores, two deltas). Positions in master-canvas pixels (x right, y down).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .settings import FINGER_CLASSES, NATURAL_CLASS_PRIORS

N_CONTROL = 8  # L, the number of Vizcaya-Gerhardt control values per singular point

# Finger-position adjustment of the natural priors (ISO/IEC 19794 codes: 1-5 right thumb..little,
# 6-10 left thumb..little). Whorls are more frequent on thumbs and ring fingers, arches and
# tented arches on index fingers, loops on little/middle fingers, and loops slant toward the
# ulnar side, so right loops dominate on the right hand and left loops on the left hand
# (Henry's and the FBI's class statistics, summarised in the Handbook of Fingerprint
# Recognition, ch. 5). Rows are additive changes per finger (thumb, index, middle, ring,
# little); every column sums to zero and the loop-slant term flips sign between the hands, so
# averaging the ten positions gives the natural priors back exactly.
_DELTA_ARCH = np.array([-0.02, 0.03, 0.01, -0.01, -0.01])
_DELTA_TENTED = np.array([-0.01, 0.03, 0.00, -0.01, -0.01])
_DELTA_WHORL = np.array([0.10, -0.02, -0.06, 0.08, -0.10])
_LOOP_SLANT = 0.12


def position_priors(finger_position: int) -> np.ndarray:
    """Natural class frequencies [5] adjusted for one ISO finger position (1-10)."""
    if not 1 <= finger_position <= 10:
        raise ValueError(f"finger_position must be an ISO/IEC 19794 code 1-10, got {finger_position}")
    f = (finger_position - 1) % 5
    right_hand = finger_position <= 5
    a, t, w = _DELTA_ARCH[f], _DELTA_TENTED[f], _DELTA_WHORL[f]
    loops = -(a + t + w)
    slant = _LOOP_SLANT if right_hand else -_LOOP_SLANT
    delta = np.array([a, t, loops / 2 - slant, loops / 2 + slant, w])
    return np.asarray(NATURAL_CLASS_PRIORS) + delta


def class_probabilities(class_priors, finger_position: int, adjust_by_position: bool) -> np.ndarray:
    """Normalised class probabilities [5] for a finger; the position adjustment is applied as a
    ratio to the natural priors so that user priors keep their own overall balance."""
    p = np.asarray(class_priors, dtype=np.float64)
    if adjust_by_position:
        p = p * position_priors(finger_position) / np.asarray(NATURAL_CLASS_PRIORS)
    return p / p.sum()


def draw_class(rng: np.random.Generator, class_priors, finger_position: int, adjust_by_position: bool) -> str:
    p = class_probabilities(class_priors, finger_position, adjust_by_position)
    return FINGER_CLASSES[int(rng.choice(len(FINGER_CLASSES), p=p))]


@dataclass(frozen=True)
class SingularLayout:
    """Singular points and the per-point Vizcaya-Gerhardt corrections of one master print."""

    finger_class: str
    cores: np.ndarray              # [n, 2] x, y (px)
    deltas: np.ndarray             # [m, 2] x, y (px)
    core_corrections: np.ndarray   # [n, L] radians added to arg() at the L control angles
    delta_corrections: np.ndarray  # [m, L]
    centre: tuple[float, float]    # reference point where impressions are centred (px)
    arch_amplitude: float          # arch only: hump steepness of the ridges (0 otherwise)
    arch_width: float              # arch only: hump half-width (px)


def place_singularities(rng: np.random.Generator, finger_class: str, master_width: int,
                        master_height: int) -> SingularLayout:
    """Class-specific layout with jitter; distances are in pixels at 500 dpi."""
    if finger_class not in FINGER_CLASSES:
        raise ValueError(f"finger_class must be one of {FINGER_CLASSES}, got {finger_class!r}")
    cx = master_width * 0.5 + rng.normal(0.0, 12.0)
    cy = master_height * rng.uniform(0.40, 0.47)
    cores: list[tuple[float, float]] = []
    deltas: list[tuple[float, float]] = []
    amp, width = 0.0, 0.0
    if finger_class == "arch":
        amp, width = rng.uniform(0.8, 1.5), rng.uniform(60.0, 100.0)
    elif finger_class == "tented_arch":
        cores.append((cx, cy))
        deltas.append((cx + rng.normal(0.0, 6.0), cy + rng.uniform(55.0, 95.0)))
    elif finger_class in ("left_loop", "right_loop"):
        # the delta sits on the side opposite the loop's opening: a left loop opens to the
        # left of the image, so its delta is to the lower right of the core
        side = 1.0 if finger_class == "left_loop" else -1.0
        cores.append((cx - side * rng.uniform(0.0, 20.0), cy))
        deltas.append((cx + side * rng.uniform(70.0, 125.0), cy + rng.uniform(110.0, 170.0)))
    else:  # whorl: two cores around the centre, tilted, and two deltas below on either side
        d = rng.uniform(10.0, 40.0)
        tilt = rng.uniform(-0.6, 0.6) + np.pi / 2
        cores.append((cx - 0.5 * d * np.cos(tilt), cy - 0.5 * d * np.sin(tilt)))
        cores.append((cx + 0.5 * d * np.cos(tilt), cy + 0.5 * d * np.sin(tilt)))
        deltas.append((cx - rng.uniform(95.0, 140.0), cy + rng.uniform(110.0, 165.0)))
        deltas.append((cx + rng.uniform(95.0, 140.0), cy + rng.uniform(110.0, 165.0)))
    n, m = len(cores), len(deltas)
    return SingularLayout(
        finger_class=finger_class,
        cores=np.asarray(cores, dtype=np.float64).reshape(n, 2),
        deltas=np.asarray(deltas, dtype=np.float64).reshape(m, 2),
        core_corrections=rng.uniform(-0.15, 0.15, size=(n, N_CONTROL)),
        delta_corrections=rng.uniform(-0.15, 0.15, size=(m, N_CONTROL)),
        centre=(float(cx), float(cy + (30.0 if n else 0.0))),
        arch_amplitude=float(amp),
        arch_width=float(width),
    )
