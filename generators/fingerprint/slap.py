"""Four-finger slaps and the two-thumb slap: the 4-4-2 plain capture of a ten-print card.

Each finger is a plain (flat) impression of its own master print, placed with hand geometry:
the fingertips lie on an arc (the middle finger reaches highest, the little finger lowest),
each finger leans away from the hand's axis (the fingers fan out from the palm), and the
whole hand is rotated on the platen. The fingers share one sensor pass: one background, one
blur and one noise field over the whole slap, one set of skin conditions with a little
pressure variation between fingers. Ground truth per finger: its segment box (ANSI/NIST-ITL
Type-14 field 14.021: finger position and the box) and its minutiae in slap coordinates.

Image orientation follows ten-print cards (as if looking at the prints): on the right-hand
slap the index finger is leftmost, on the left-hand slap the little finger is leftmost, and
the two-thumb slap has the left thumb on the left.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .distortion import ImpressionGeometry
from .impression import (EDGE_MARGIN, ORIENTATION_BLOCK, _contact_ellipse, _skin_conditions, _truth_to_canvas,
                         bounding_box, plain_ink, true_fraction)
from .master import MasterPrint
from .profiles import profile_named
from .sensors import sensor_image
from .settings import FingerprintSettings
from .smooth_noise import smooth_noise

# Multi-finger position codes (ANSI/NIST-ITL Table 8, ISO/IEC 19794-4) and their fingers,
# left to right in the image.
SLAP_FINGERS: dict[int, tuple[int, ...]] = {13: (2, 3, 4, 5), 14: (10, 9, 8, 7), 15: (6, 1)}
SLAP_IMPRESSION_CODE = 0      # ANSI/NIST-ITL: live-scan plain
SEGMENT_MARGIN = 6            # px around a finger's contact area in its segment box

# Hand geometry per finger (index, middle, ring, little of the right hand; thumbs apart):
# fingertip drop below the highest tip (fraction of the plain canvas height) and lean
# (degrees counter-clockwise on screen).
_TIP_DROP = {2: 0.10, 3: 0.0, 4: 0.07, 5: 0.32}
_LEAN = {2: 8.0, 3: 2.0, 4: -4.0, 5: -11.0}


@dataclass(frozen=True)
class SlapSegment:
    position: int             # ISO finger code 1-10
    box: tuple[int, int, int, int]  # x0, y0 (inclusive), x1, y1 (exclusive) in slap px
    minutiae: np.ndarray      # [N, 4] float32 x, y, angle (rad, ISO), type, in slap px
    cores: list               # [(x, y)] in slap px
    deltas: list
    ink_in_box: float         # fraction of this finger's ink that its box holds


@dataclass(frozen=True)
class Slap:
    image: np.ndarray         # [H, W] uint8
    slap_position: int        # 13, 14 or 15
    segments: list            # [SlapSegment], left to right
    params: dict              # flat scalars (hand rotation, skin conditions, counts)
    contact: np.ndarray       # [H, W] bool: where any finger touches

    @property
    def minutiae(self) -> np.ndarray:
        parts = [s.minutiae for s in self.segments]
        return np.concatenate(parts) if parts else np.zeros((0, 4), np.float32)


def _finger_layout(slap_position: int, fingers: list[int], settings: FingerprintSettings,
                   rng: np.random.Generator) -> tuple[list[tuple[float, float, float]], float]:
    """(tile centre x, y, lean in rad) of each finger in slap px, and the hand rotation (rad)."""
    tw, th = settings.width, settings.height
    hand = np.deg2rad(rng.uniform(-8.0, 8.0))
    if slap_position == 15:
        spacing = tw * rng.uniform(1.15, 1.35)
        slots = {6: (-0.5, 0.0, -12.0), 1: (0.5, 0.0, 12.0)}
    else:
        spacing = tw * rng.uniform(0.9, 1.0)
        mirror = 1.0 if slap_position == 13 else -1.0
        order = SLAP_FINGERS[slap_position]
        slots = {}
        for i, finger in enumerate(order):
            base = finger if finger <= 5 else finger - 5
            slots[finger] = (i - 1.5, _TIP_DROP[base], mirror * _LEAN[base])
    cx = settings.slap_width / 2.0 + rng.normal(0.0, 0.02 * settings.slap_width)
    cy = settings.slap_height / 2.0 + rng.normal(0.0, 0.02 * settings.slap_height)
    lift = 0.5 * max(drop for _, drop, _ in slots.values()) * th   # centre the arc vertically
    c, s = np.cos(hand), np.sin(hand)
    out = []
    for finger in fingers:
        slot, drop, lean = slots[finger]
        ox = slot * spacing + rng.normal(0.0, 0.03 * tw)
        oy = drop * th - lift + rng.normal(0.0, 0.03 * th)
        # rotate the layout about the hand centre, counter-clockwise on screen (y down)
        px, py = cx + c * ox + s * oy, cy - s * ox + c * oy
        out.append([float(px), float(py), float(hand + np.deg2rad(lean + rng.normal(0.0, 3.0)))])
    # a capture device's guide keeps the hand on the platen: move the whole layout so that
    # every finger's tile lies on the canvas where the canvas is large enough
    for axis, half, size in ((0, tw / 2.0, settings.slap_width), (1, th / 2.0, settings.slap_height)):
        lo = min(f[axis] for f in out) - half
        hi = max(f[axis] for f in out) + half
        shift = -lo if lo < 0 else (size - hi if hi > size else 0.0)
        if hi - lo > size:
            shift = (size - (hi + lo)) / 2.0
        for f in out:
            f[axis] += shift
    return [tuple(f) for f in out], float(hand)


def make_slap(masters: dict[int, MasterPrint], slap_position: int, settings: FingerprintSettings,
              rng: np.random.Generator) -> Slap:
    """The slap `slap_position` (13, 14, 15) of the fingers in `masters` ({ISO position: master});
    fingers of the slap that have no master (amputated, bandaged, not minted) are left out."""
    if slap_position not in SLAP_FINGERS:
        raise ValueError(f"slap_position must be 13, 14 or 15, got {slap_position}")
    fingers = [f for f in SLAP_FINGERS[slap_position] if f in masters]
    if not fingers:
        raise ValueError(f"slap {slap_position} needs a master of one of fingers {SLAP_FINGERS[slap_position]}")
    H, W = settings.slap_height, settings.slap_width
    th, tw = settings.height, settings.width
    profile = profile_named(settings.profile)
    cond = _skin_conditions(rng, settings.difficulty, profile)
    layout, hand = _finger_layout(slap_position, fingers, settings, rng)
    ink = np.zeros((H, W), np.float32)
    touch = np.zeros((H, W), np.float32)
    placed = []
    for finger, (px, py, lean) in zip(fingers, layout):
        master = masters[finger]
        finger_cond = dict(cond, pressure=float(np.clip(cond["pressure"] + rng.normal(0.0, 0.2), -1.0, 1.0)),
                           n_blobs=int(rng.poisson(cond["n_blobs"] / len(fingers))),
                           n_scratches=int(rng.poisson(cond["n_scratches"] / len(fingers))))
        mx, my = master.centre
        geo = ImpressionGeometry(
            canvas_cx=tw / 2.0, canvas_cy=th / 2.0,
            finger_x=mx + rng.normal(0.0, 8.0), finger_y=my + rng.normal(0.0, 8.0), rotation=lean,
            contact_x=mx + rng.normal(0.0, 10.0), contact_y=my + rng.normal(0.0, 10.0),
            core_radius=rng.uniform(55.0, 85.0), transition=rng.uniform(90.0, 140.0),
            distortion_rotation=float(np.deg2rad(rng.uniform(-1.0, 1.0) * profile_named(settings.profile).distortion_max_rotation)),
            distortion_dx=float(profile_named(settings.profile).distortion_max_translation * rng.uniform(-1.0, 1.0) / np.sqrt(2)),
            distortion_dy=float(profile_named(settings.profile).distortion_max_translation * rng.uniform(-1.0, 1.0) / np.sqrt(2)),
        )
        ell = _contact_ellipse(rng, settings, geo, finger_cond["pressure"])
        layer = plain_ink(master, geo, ell, finger_cond, rng, th, tw)
        x0, y0 = int(round(px - tw / 2.0)), int(round(py - th / 2.0))
        # the part of the tile that lies on the slap canvas
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + tw, W), min(y0 + th, H)
        if sx1 <= sx0 or sy1 <= sy0:
            continue
        tile = (slice(sy0 - y0, sy1 - y0), slice(sx0 - x0, sx1 - x0))
        np.maximum(ink[sy0:sy1, sx0:sx1], layer.ink[tile], out=ink[sy0:sy1, sx0:sx1])
        np.maximum(touch[sy0:sy1, sx0:sx1], layer.touch[tile], out=touch[sy0:sy1, sx0:sx1])
        placed.append((finger, master, geo, layer, x0, y0))

    shade_coarse = 6.0 * smooth_noise(rng, H // ORIENTATION_BLOCK + 1, W // ORIENTATION_BLOCK + 1, cell=120.0 / ORIENTATION_BLOCK)
    shade = cv2.resize(shade_coarse, (W, H), interpolation=cv2.INTER_LINEAR)
    sensor = "optical" if settings.sensor == "ink" else settings.sensor   # slaps are live-scans
    image = sensor_image(sensor, ink, touch, shade, cond, rng, settings.difficulty)
    segments = [_segment(finger, master, geo, layer, x0, y0, W, H) for finger, master, geo, layer, x0, y0 in placed]
    params = {
        "finger_class": None,
        "difficulty": float(settings.difficulty),
        "rotation_deg": float(np.rad2deg(hand)),
        "contact_fraction": true_fraction(touch > 0.5),
        **cond,
        "n_minutiae": int(sum(len(s.minutiae) for s in segments)),
        "n_cores": int(sum(len(s.cores) for s in segments)),
        "n_deltas": int(sum(len(s.deltas) for s in segments)),
        "rendering": sensor,
        "profile": settings.profile,
        "ansi_nist_impression_code": SLAP_IMPRESSION_CODE,
    }
    return Slap(image, slap_position, segments, params, touch > 0.5)


def _segment(finger: int, master: MasterPrint, geo: ImpressionGeometry, layer, x0: int, y0: int,
             W: int, H: int) -> SlapSegment:
    """A finger's segment box (its contact area's bounding box plus a margin, on the canvas)
    and its ground truth moved from tile to slap coordinates."""
    th, tw = layer.touch.shape
    contact = layer.touch > 0.5
    cx0, cy0, cx1, cy1 = bounding_box(contact)
    bx0, by0, bx1, by1 = 0, 0, 0, 0
    if cx1 > cx0:                              # some contact: its box plus the margin, on the slap
        bx0, bx1 = (int(np.clip(v, 0, W)) for v in (cx0 + x0 - SEGMENT_MARGIN, cx1 + x0 + SEGMENT_MARGIN))
        by0, by1 = (int(np.clip(v, 0, H)) for v in (cy0 + y0 - SEGMENT_MARGIN, cy1 + y0 + SEGMENT_MARGIN))
    m, on_tile = _truth_to_canvas(master, geo, contact)
    if len(m):
        m = m.copy()
        m[:, 0] += x0
        m[:, 1] += y0
        on = (m[:, 0] >= EDGE_MARGIN) & (m[:, 0] < W - EDGE_MARGIN) & (m[:, 1] >= EDGE_MARGIN) & (m[:, 1] < H - EDGE_MARGIN)
        m = m[on]
    sing = {name: [(x + x0, y + y0) for x, y in pts if 0 <= x + x0 < W and 0 <= y + y0 < H]
            for name, pts in on_tile.items()}
    # how much of the finger's ink falls inside its box (the acceptance asks >= 95 %)
    total = float(layer.ink.sum())
    ty0, ty1 = max(by0 - y0, 0), max(by1 - y0, 0)
    tx0, tx1 = max(bx0 - x0, 0), max(bx1 - x0, 0)
    inside = float(layer.ink[ty0:ty1, tx0:tx1].sum())
    return SlapSegment(finger, (bx0, by0, bx1, by1), m.astype(np.float32), sing["cores"], sing["deltas"],
                       inside / total if total > 0 else 0.0)
