"""Rolled impressions: the finger rolled from one nail edge to the other (nail to nail).

A plain impression sees the flattened pad; a rolled one sees the whole surface between the
nail edges. The master print is taken as the finger pad seen from the front (a plan view),
so the sides of the finger are foreshortened in it. Rolling unwraps the finger's cylinder:
a master point at distance a from the finger axis lies at angle phi = asin(a / rho) around
it, and a roll without slip lays it down at arc length u = rho * phi. The horizontal stretch
du/da = 1 / sqrt(1 - (a / rho)^2) is 1 on the axis and grows towards the nail edges, as in
real rolled prints, whose sides look pulled apart next to a plain print of the same finger.
The radius follows from the largest roll angle phi_max reached at the silhouette's edge:
rho = half_width / sin(phi_max).

On top of the unwrap: the card or scanner's small rotation, the roll's own plastic
distortion (Cappelli-Maio-Maltoni, with a wider close-contact region than a flat touch),
pressure that falls off towards the nail edges, the fingertip and the first crease, an
occasional slip or double roll (a band at one side printed twice, a fraction of a ridge
period apart), and either live-scan or ink-on-card rendering. Ground truth goes through the
same map as the image, exactly as for plain impressions.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .distortion import invert_map, plastic_distortion, pose_to_canvas
from .impression import (ORIENTATION_BLOCK, Impression, _coarse_map, _orientation_blocks, _skin_conditions,
                         _truth_to_canvas, bounding_box, ink_layer, true_fraction)
from .master import MasterPrint
from .profiles import profile_named
from .sensors import sensor_image
from .settings import FingerprintSettings
from .smooth_noise import smooth_noise

# px: an operator centres the finger in the rolled box, whatever the plain-capture profile
ROLLED_MAX_TRANSLATION = 25.0

# ANSI/NIST-ITL 1-2011 Table 7 impression codes of the two renderings
# ANSI/NIST-ITL 1-2011 Table 7: live-scan rolled 1, nonlive-scan (ink card) rolled 3
ROLLED_IMPRESSION_CODES = {"optical": 1, "capacitive": 1, "ink": 3}


@dataclass(frozen=True)
class RollGeometry:
    canvas_cx: float           # canvas point where the finger axis crosses the roll's centre line
    canvas_cy: float
    axis_x: float              # master point on the finger axis that lands there
    axis_y: float
    radius: float              # rho: cylinder radius (master px)
    rotation: float            # in-plane rotation of the print on the card (rad, ccw on screen)
    contact_x: float           # plastic distortion (as ImpressionGeometry)
    contact_y: float
    core_radius: float
    transition: float
    distortion_rotation: float
    distortion_dx: float
    distortion_dy: float

    def _surface(self, x, y):
        """Canvas -> unrolled surface coordinates (u across the roll, v along the finger)."""
        c, s = np.cos(self.rotation), np.sin(self.rotation)
        ux, uy = x - self.canvas_cx, y - self.canvas_cy
        return c * ux - s * uy, s * ux + c * uy

    def to_master(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        u, v = self._surface(x, y)
        quarter = 0.5 * np.pi * self.radius
        # beyond a quarter turn the cylinder would fold back onto the pad: continue linearly
        # (those points lie outside the silhouette anyway) so that the map stays one-to-one
        a = np.where(np.abs(u) <= quarter, self.radius * np.sin(np.clip(u, -quarter, quarter) / self.radius),
                     np.sign(u) * (self.radius + np.abs(u) - quarter))
        return plastic_distortion(self.axis_x + a, self.axis_y + v, self.contact_x, self.contact_y,
                                  self.core_radius, self.transition, self.distortion_rotation,
                                  self.distortion_dx, self.distortion_dy)

    def _unwrap_to_canvas(self, vx, vy):
        """Inverse of to_master without the plastic part: Newton's starting point."""
        a = vx - self.axis_x
        u = np.where(np.abs(a) <= self.radius, self.radius * np.arcsin(np.clip(a / self.radius, -1.0, 1.0)),
                     np.sign(a) * (np.abs(a) - self.radius + 0.5 * np.pi * self.radius))
        v = vy - self.axis_y
        c, s = np.cos(self.rotation), np.sin(self.rotation)
        return c * u + s * v + self.canvas_cx, -s * u + c * v + self.canvas_cy

    def to_canvas(self, vx: np.ndarray, vy: np.ndarray, iterations: int = 6) -> tuple[np.ndarray, np.ndarray]:
        return invert_map(self.to_master, self._unwrap_to_canvas, vx, vy, iterations)

    def pose_to_canvas(self, mx, my, angle, step: float = 4.0, points=None):
        return pose_to_canvas(self.to_canvas, mx, my, angle, step, points)

    def stretch(self, a: np.ndarray) -> np.ndarray:
        """Horizontal stretch du/da of the unwrap at master offset a from the axis."""
        return 1.0 / np.sqrt(np.maximum(1.0 - (np.asarray(a) / self.radius) ** 2, 1e-6))


def _draw_roll(settings: FingerprintSettings, master: MasterPrint, rng: np.random.Generator) -> tuple[RollGeometry, dict]:
    shape = master.shape
    w, h = settings.rolled_width, settings.rolled_height
    lo, hi = settings.roll_angle
    phi_max = np.deg2rad(rng.uniform(lo, hi))
    radius = shape.half_width / np.sin(phi_max)
    top = shape.cy - shape.rect_half_height - shape.top          # silhouette's top (fingertip), master y
    bottom = shape.cy + shape.rect_half_height + shape.bottom    # first crease
    height = bottom - top
    # the roll stops short of the first crease; the fingertip's own rounded contour (the
    # silhouette) closes the print at the top
    bottom_cut = bottom - height * rng.uniform(0.16, 0.26)
    axis_y = 0.5 * (top + bottom_cut)
    t = ROLLED_MAX_TRANSLATION
    geo = RollGeometry(
        canvas_cx=w / 2.0 + float(np.clip(rng.normal(0.0, t / 2.5), -t, t)),
        canvas_cy=h / 2.0 + float(np.clip(rng.normal(0.0, t / 2.5), -t, t)),
        axis_x=float(shape.cx), axis_y=float(axis_y), radius=float(radius),
        rotation=float(np.deg2rad(np.clip(rng.normal(0.0, 2.0), -5.0, 5.0))),
        contact_x=float(master.centre[0] + rng.normal(0.0, 10.0)),
        contact_y=float(master.centre[1] + rng.normal(0.0, 10.0)),
        core_radius=float(rng.uniform(80.0, 120.0)), transition=float(rng.uniform(110.0, 170.0)),
        distortion_rotation=float(np.deg2rad(rng.uniform(-1.0, 1.0) * profile_named(settings.profile).distortion_max_rotation)),
        distortion_dx=float(profile_named(settings.profile).distortion_max_translation * rng.uniform(-1.0, 1.0)),
        distortion_dy=float(0.5 * profile_named(settings.profile).distortion_max_translation * rng.uniform(-1.0, 1.0)),
    )
    extent = {"bottom": float(bottom_cut), "phi_max": float(phi_max)}
    return geo, extent


def _roll_rim(geo: RollGeometry, master: MasterPrint, extent: dict, coarse_x: np.ndarray, coarse_y: np.ndarray,
              rng: np.random.Generator) -> np.ndarray:
    """Contact strength on the block grid (> 1 full, 0.5 at the rim): pressure falls off over
    the outer fifth towards each nail edge and over a few ridges at the tip and the crease."""
    shape = master.shape
    b = ORIENTATION_BLOCK
    ny, nx = coarse_x.shape
    across = np.abs(coarse_x - geo.axis_x) / shape.half_width
    # the nail edges: pressure is gone a little inside the silhouette, over ~40 master px
    side_rim = 0.5 + (0.93 - across) * (shape.half_width / 40.0)
    # the crease line is lower in the middle of the finger than at its sides
    crease = extent["bottom"] - 0.12 * shape.bottom * across ** 2
    bottom_rim = 0.5 + (crease - coarse_y) / 35.0
    rim = np.minimum(side_rim, bottom_rim)
    return rim + 0.25 * smooth_noise(rng, ny, nx, cell=70.0 / b)


def _slip(rng: np.random.Generator, settings: FingerprintSettings, geo: RollGeometry, master: MasterPrint) -> dict:
    """A slip or double roll: at the start or the end of the roll a band of the finger prints
    twice, shifted across the roll by a fraction of a ridge period."""
    if rng.uniform() >= settings.roll_slip_probability:
        return {"slip_shift_px": 0.0, "slip_band_start": 0.0, "slip_band_width": 0.0}
    side = 1.0 if rng.uniform() < 0.5 else -1.0
    period = float(np.median(master.period))
    edge = geo.radius * np.arcsin(min(master.shape.half_width / geo.radius, 1.0))   # canvas half-width of the roll
    width = rng.uniform(0.25, 0.45) * edge
    start = geo.canvas_cx + side * (edge - width)            # band [start, start + side * width]
    return {"slip_shift_px": float(side * rng.uniform(0.3, 0.7) * period),
            "slip_band_start": float(start), "slip_band_width": float(side * width)}


def _slip_field(master: MasterPrint, slip: dict, w: int):
    """field_of for ink_layer: inside the slip band the ridge field is the union of the print
    and its shifted copy (doubled, merging ridges), fading in over ~20 px."""
    lo = min(slip["slip_band_start"], slip["slip_band_start"] + slip["slip_band_width"])
    hi = max(slip["slip_band_start"], slip["slip_band_start"] + slip["slip_band_width"])
    x = np.arange(w, dtype=np.float32)
    weight = np.clip(np.minimum(x - lo, hi - x) / 20.0 + 0.5, 0.0, 1.0)[None, :]

    def field_of(maps: np.ndarray) -> np.ndarray:
        field = cv2.remap(master.surface, maps, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=-1.0)
        shifted_maps = maps.copy()
        shifted_maps[..., 0] += slip["slip_shift_px"]
        shifted = cv2.remap(master.surface, shifted_maps, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                            borderValue=-1.0)
        return field + weight * (np.maximum(field, shifted) - field)

    return field_of


def make_rolled_impression(master: MasterPrint, settings: FingerprintSettings, rng: np.random.Generator) -> Impression:
    """One rolled impression [settings.rolled_height, settings.rolled_width] uint8 of `master`."""
    h, w = settings.rolled_height, settings.rolled_width
    geo, extent = _draw_roll(settings, master, rng)
    profile = profile_named(settings.profile)
    cond = _skin_conditions(rng, settings.difficulty, profile)
    # an inked card, else the live-scan of the settings' sensor (a card when that is ink)
    rendering = "ink" if rng.uniform() < settings.rolled_ink_probability or settings.sensor == "ink" else settings.sensor
    slip = _slip(rng, settings, geo, master)
    coarse_x, coarse_y = _coarse_map(geo, h, w)
    rim = _roll_rim(geo, master, extent, coarse_x, coarse_y, rng)
    field_of = _slip_field(master, slip, w) if slip["slip_shift_px"] else None
    layer = ink_layer(master, coarse_x, coarse_y, rim, cond, rng, h, w, field_of=field_of)
    image = sensor_image(rendering, layer.ink, layer.touch, layer.shade, cond, rng, settings.difficulty)

    contact = layer.touch > 0.5
    minutiae, sing = _truth_to_canvas(master, geo, contact)
    orientation = _orientation_blocks(master, coarse_x, coarse_y, h, w)
    box = bounding_box(contact)
    params = {
        "finger_class": master.finger_class,
        "finger_position": int(master.finger_position),
        "difficulty": float(settings.difficulty),
        "rotation_deg": float(np.rad2deg(geo.rotation)),
        "dx": float(geo.canvas_cx - w / 2.0),
        "dy": float(geo.canvas_cy - h / 2.0),
        "distortion_rotation_deg": float(np.rad2deg(geo.distortion_rotation)),
        "distortion_dx": geo.distortion_dx,
        "distortion_dy": geo.distortion_dy,
        "distortion_core_radius": geo.core_radius,
        "distortion_transition": geo.transition,
        "contact_cx": float(0.5 * (box[0] + box[2])),
        "contact_cy": float(0.5 * (box[1] + box[3])),
        "contact_rx": float(0.5 * (box[2] - box[0])),
        "contact_ry": float(0.5 * (box[3] - box[1])),
        "contact_fraction": true_fraction(contact),
        **cond,
        "n_minutiae": int(len(minutiae)),
        "n_cores": len(sing["cores"]),
        "n_deltas": len(sing["deltas"]),
        "n_creases": master.skin.n_creases,
        "n_scars": master.skin.n_scars,
        "rendering": rendering,
        "profile": settings.profile,
        "ansi_nist_impression_code": ROLLED_IMPRESSION_CODES[rendering],
        "roll_angle_deg": float(np.rad2deg(extent["phi_max"])),
        "roll_radius": geo.radius,
        "roll_edge_stretch": float(geo.stretch(0.97 * master.shape.half_width)),
        **slip,
    }
    return Impression(image, params, minutiae, orientation, sing, contact)
