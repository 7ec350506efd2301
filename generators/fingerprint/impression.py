"""One impression of a master print on a 500-dpi sensor, with its transformed ground truth.

SFinGe's impression chain (Handbook of Fingerprint Recognition, ch. 6): contact region,
ridge thickness from skin moisture/pressure, plastic distortion, noise, global
translation/rotation, background. The difficulty knob (settings.difficulty in [0, 1])
widens the moisture spread and raises noise, blur, blobs and scratches; the geometry
(contact area, distortion, placement) changes little with it, so that mated impressions
stay comparable at every quality level.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .distortion import ImpressionGeometry
from .master import MasterPrint
from .orientation_field import orientation_at
from .settings import FingerprintSettings
from .smooth_noise import smooth_noise

ORIENTATION_BLOCK = 8   # Impression.orientation has one value per 8x8 block
EDGE_MARGIN = 6         # px: ground-truth minutiae closer to the image border are dropped
PLAIN_IMPRESSION_CODE = 0  # ANSI/NIST-ITL 1-2011 Table 7: live-scan plain


@dataclass(frozen=True)
class Impression:
    image: np.ndarray          # [H, W] uint8, 500 dpi, dark ridges on a light background
    params: dict               # flat JSON-able scalars, same keys for every impression
    minutiae: np.ndarray       # [N, 4] float32 x, y, angle (rad, ISO), type (0 ending, 1 bifurcation)
    orientation: np.ndarray    # [H // 8, W // 8] float32 ridge orientation (rad, ISO, [0, pi))
    singularities: dict        # {"cores": [(x, y), ...], "deltas": [(x, y), ...]} in image px
    contact: np.ndarray        # [H, W] bool: where the finger touches the sensor


def _draw_geometry(settings: FingerprintSettings, master: MasterPrint, rng: np.random.Generator) -> ImpressionGeometry:
    """Placement on the sensor and plastic distortion of one impression.

    The finger is shifted by up to `max_translation` px and rotated by up to `max_rotation`
    degrees; with probability `partial_probability` it also lands off-centre by 12-22 % of the
    canvas (partial placement: part of the fingertip leaves the sensor). The close-contact
    region of the distortion model sits where the finger touches, not at the canvas centre."""
    cx, cy = master.centre
    t = settings.max_translation
    rot = np.deg2rad(np.clip(rng.normal(0.0, settings.max_rotation / 2.5), -settings.max_rotation, settings.max_rotation))
    dx = float(np.clip(rng.normal(0.0, t / 2.5), -t, t))
    dy = float(np.clip(rng.normal(0.0, t / 2.5), -t, t))
    partial = rng.uniform() < settings.partial_probability
    ang, mag = rng.uniform(0.0, 2.0 * np.pi), rng.uniform(0.12, 0.22)
    px = mag * settings.width * np.cos(ang) if partial else 0.0
    py = mag * settings.height * np.sin(ang) if partial else 0.0
    drot = np.deg2rad(rng.uniform(-1.0, 1.0) * settings.distortion_max_rotation)
    dmag = settings.distortion_max_translation * np.sqrt(rng.uniform())
    dang = rng.uniform(0.0, 2.0 * np.pi)
    return ImpressionGeometry(
        canvas_cx=settings.width / 2.0, canvas_cy=settings.height / 2.0,
        finger_x=cx + dx + px, finger_y=cy + dy + py, rotation=float(rot),
        contact_x=cx + dx + rng.normal(0.0, 10.0), contact_y=cy + dy + rng.normal(0.0, 10.0),
        core_radius=rng.uniform(55.0, 85.0), transition=rng.uniform(90.0, 140.0),
        distortion_rotation=float(drot), distortion_dx=float(dmag * np.cos(dang)),
        distortion_dy=float(dmag * np.sin(dang)),
    )


def _contact_ellipse(rng, settings: FingerprintSettings, geo: ImpressionGeometry, pressure: float) -> dict:
    """Elliptical contact area on the sensor, centred where the finger's contact core lands;
    more pressure, more area."""
    w, h = settings.width, settings.height
    ex, ey = geo.to_canvas(np.array([geo.contact_x]), np.array([geo.contact_y]))
    return {"contact_cx": float(ex[0] + rng.normal(0.0, 0.03 * w)),
            "contact_cy": float(ey[0] + rng.normal(0.0, 0.03 * h)),
            "contact_rx": float(w * rng.uniform(0.36, 0.44) * (1.0 + 0.08 * pressure)),
            "contact_ry": float(h * rng.uniform(0.38, 0.46) * (1.0 + 0.08 * pressure))}


def _skin_conditions(rng, difficulty: float) -> dict:
    """Moisture (-1 dry .. +1 wet), pressure, ridge-edge irregularity and the noise budget.

    Difficulty lowers the ridge/valley contrast and raises sensor noise and blur (the
    factors the NFIQ 2 features respond to most), widens the moisture spread (more very dry
    and very wet skin) and adds blobs and scratches. Ridge-edge irregularity (skin texture,
    incipient breaks, pores) is present at every level because real ridges are never smooth.
    """
    d = float(difficulty)
    return {
        "moisture": float(np.clip(rng.normal(0.0, 0.2 + 0.5 * d), -1.0, 1.0)),
        "pressure": float(np.clip(rng.normal(0.0, 0.4), -1.0, 1.0)),
        "contrast": float(rng.uniform(150.0, 180.0) * (1.0 - 0.66 * d)),
        "background": float(rng.uniform(225.0, 250.0)),
        "blur_sigma": float(rng.uniform(0.8, 1.0) + 1.2 * d * rng.uniform(0.5, 1.0)),
        "noise_sigma": float(rng.uniform(3.0, 5.0) + 22.0 * d * rng.uniform(0.6, 1.0)),
        "break_amount": float(rng.uniform(0.48, 0.6)),
        "n_blobs": int(rng.poisson(1.0 + 8.0 * d)),
        "n_scratches": int(rng.poisson(0.3 + 4.0 * d)),
    }


def _blobs_and_scratches(rng, h: int, w: int, n_blobs: int, n_scratches: int) -> np.ndarray:
    """Multiplicative ink loss [H, W] in [0, 1]: light blobs (no contact/grease) and scratches."""
    loss = np.zeros((h, w), dtype=np.float32)
    for _ in range(n_blobs):
        centre = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        axes = (int(rng.uniform(6, 35)), int(rng.uniform(6, 35)))
        cv2.ellipse(loss, centre, axes, float(rng.uniform(0, 180)), 0, 360, float(rng.uniform(0.4, 1.0)), -1)
    for _ in range(n_scratches):
        p0 = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        ang, length = rng.uniform(0, np.pi), rng.uniform(40, 200)
        p1 = (int(p0[0] + length * np.cos(ang)), int(p0[1] + length * np.sin(ang)))
        cv2.line(loss, p0, p1, float(rng.uniform(0.6, 1.0)), int(rng.integers(1, 4)))
    if n_blobs or n_scratches:
        loss = cv2.GaussianBlur(loss, (0, 0), 2.0)
    return 1.0 - np.clip(loss, 0.0, 1.0)


@dataclass(frozen=True)
class InkLayer:
    """Ridge ink of one finger on a canvas, before the sensor: what every impression type shares."""

    ink: np.ndarray        # [H, W] float32 in [0, 1]: 1 where a ridge prints fully
    touch: np.ndarray      # [H, W] float32 in [0, 1]: contact (pressure) of the finger
    shade: np.ndarray      # [H, W] float32 slow background shading (grey levels)
    coarse_x: np.ndarray   # [H/8 + 2, W/8 + 2] canvas -> master map on the block grid (one ring more)
    coarse_y: np.ndarray


def ink_layer(master: MasterPrint, coarse_x: np.ndarray, coarse_y: np.ndarray, coarse_rim: np.ndarray,
              cond: dict, rng: np.random.Generator, h: int, w: int, field_of=None) -> InkLayer:
    """Remap the master's ridges through the impression map and turn them into ink.

    coarse_x/coarse_y/coarse_rim are sampled on the 8x8 block grid with one extra ring (see
    _coarse_map); coarse_rim is the contact strength before clipping (> 1 inside, 0.5 at the
    contact rim). Smooth quantities are interpolated together with one resize: the map, the
    rim, the finger silhouette, a slow ridge-thickness drift and the background's shading.
    `field_of(maps) -> field [H, W]` replaces the plain remap of the ridges (rolled prints use
    it for slip smear)."""
    b = ORIENTATION_BLOCK
    ny, nx = coarse_x.shape
    finger = cv2.remap(master.mask, coarse_x, coarse_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    drift = 0.15 * smooth_noise(rng, ny, nx, cell=60.0 / b)
    shade = 6.0 * smooth_noise(rng, ny, nx, cell=120.0 / b)
    coarse = np.dstack([coarse_x, coarse_y, coarse_rim.astype(np.float32), finger, drift, shade])
    dense = cv2.resize(coarse, (nx * b, ny * b), interpolation=cv2.INTER_LINEAR)[b:b + h, b:b + w]
    maps = np.ascontiguousarray(dense[..., :2])
    if field_of is None:
        field = cv2.remap(master.ridges, maps, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=-1.0)
    else:
        field = field_of(maps)
    touch = np.clip(dense[..., 2], 0.0, 1.0) * np.clip(dense[..., 3], 0.0, 1.0)

    # Ridge thickness: ridges are where the ridge field exceeds a threshold. Wet skin or high
    # pressure lowers it (thick ridges, valleys merge), dry skin raises it and makes it vary
    # quickly in space (thin, broken ridges) - the threshold form of SFinGe's erosion/dilation.
    wet = cond["moisture"] + 0.3 * cond["pressure"]
    threshold = dense[..., 4] + (-0.45 * wet) + cond["break_amount"] * smooth_noise(rng, h, w, cell=7.0)
    if cond["moisture"] < 0.0:
        threshold += (-0.5 * cond["moisture"]) * np.abs(smooth_noise(rng, h, w, cell=4.0))
    ink = np.clip((field - threshold) * (1.0 / 0.35) + 0.5, 0.0, 1.0)
    # less pressure toward the rim of the contact area: ridges fade out
    ink *= np.clip(touch * 1.6 - 0.2, 0.0, 1.0)
    if cond["n_blobs"] or cond["n_scratches"]:
        ink *= _blobs_and_scratches(rng, h, w, cond["n_blobs"], cond["n_scratches"])
    return InkLayer(ink.astype(np.float32, copy=False), touch, np.ascontiguousarray(dense[..., 5]), coarse_x, coarse_y)


def live_scan_image(ink: np.ndarray, shade: np.ndarray, cond: dict, rng: np.random.Generator) -> np.ndarray:
    """A live-scan sensor's view [H, W] uint8 of the ink: shaded background, dark ridges, optics
    blur and sensor noise."""
    h, w = ink.shape
    grey = (cond["background"] + shade) - cond["contrast"] * ink
    grey = cv2.GaussianBlur(grey, (0, 0), cond["blur_sigma"])
    grey += cond["noise_sigma"] * rng.standard_normal((h, w), dtype=np.float32)
    return np.clip(np.rint(grey), 0, 255).astype(np.uint8)


def make_impression(master: MasterPrint, settings: FingerprintSettings, rng: np.random.Generator) -> Impression:
    """One impression [settings.height, settings.width] uint8 of `master`, and its ground truth."""
    h, w = settings.height, settings.width
    geo = _draw_geometry(settings, master, rng)
    cond = _skin_conditions(rng, settings.difficulty)
    ell = _contact_ellipse(rng, settings, geo, cond["pressure"])
    layer = plain_ink(master, geo, ell, cond, rng, h, w)
    image = live_scan_image(layer.ink, layer.shade, cond, rng)
    contact_mask = layer.touch > 0.5
    minutiae = _minutiae_to_canvas(master, geo, contact_mask)
    orientation = _orientation_blocks(master, layer.coarse_x, layer.coarse_y, h, w)
    sing = {name: _points_to_canvas(pts, geo, h, w) for name, pts in (("cores", master.cores), ("deltas", master.deltas))}
    params = {
        "finger_class": master.finger_class,
        "finger_position": int(master.finger_position),
        "difficulty": float(settings.difficulty),
        **_geometry_params(master, geo),
        **ell,
        "contact_fraction": float(contact_mask.mean()),
        **cond,
        "n_minutiae": int(len(minutiae)),
        "n_cores": len(sing["cores"]),
        "n_deltas": len(sing["deltas"]),
        "rendering": "live_scan",
        "ansi_nist_impression_code": PLAIN_IMPRESSION_CODE,
    }
    return Impression(image, params, minutiae, orientation, sing, contact_mask)


def plain_ink(master: MasterPrint, geo: ImpressionGeometry, ell: dict, cond: dict, rng: np.random.Generator,
              h: int, w: int) -> InkLayer:
    """The ink of a plain (flat) touch: an elliptical contact area with an irregular rim."""
    b = ORIENTATION_BLOCK
    coarse_x, coarse_y = _coarse_map(geo, h, w)
    ny, nx = coarse_x.shape
    gx = ((np.arange(nx) - 1) * b + (b - 1) / 2.0)[None, :]
    gy = ((np.arange(ny) - 1) * b + (b - 1) / 2.0)[:, None]
    radius = np.sqrt(((gx - ell["contact_cx"]) / ell["contact_rx"]) ** 2 + ((gy - ell["contact_cy"]) / ell["contact_ry"]) ** 2)
    radius = radius + 0.035 * smooth_noise(rng, ny, nx, cell=80.0 / b)
    rim = (1.0 - radius) * (min(ell["contact_rx"], ell["contact_ry"]) / 6.0) + 0.5
    return ink_layer(master, coarse_x, coarse_y, rim, cond, rng, h, w)


def _geometry_params(master: MasterPrint, geo: ImpressionGeometry) -> dict:
    return {
        "rotation_deg": float(np.rad2deg(geo.rotation)),
        "dx": float(geo.finger_x - master.centre[0]),
        "dy": float(geo.finger_y - master.centre[1]),
        "distortion_rotation_deg": float(np.rad2deg(geo.distortion_rotation)),
        "distortion_dx": geo.distortion_dx,
        "distortion_dy": geo.distortion_dy,
        "distortion_core_radius": float(geo.core_radius),
        "distortion_transition": float(geo.transition),
    }


def _minutiae_to_canvas(master: MasterPrint, geo, contact: np.ndarray) -> np.ndarray:
    m = master.minutiae
    if len(m) == 0:
        return np.zeros((0, 4), dtype=np.float32)
    x, y, a = geo.pose_to_canvas(m[:, 0].astype(np.float64), m[:, 1].astype(np.float64), m[:, 2].astype(np.float64))
    h, w = contact.shape
    inside = (x >= EDGE_MARGIN) & (x < w - EDGE_MARGIN) & (y >= EDGE_MARGIN) & (y < h - EDGE_MARGIN)
    xi = np.clip(np.rint(x).astype(int), 0, w - 1)
    yi = np.clip(np.rint(y).astype(int), 0, h - 1)
    inside &= contact[yi, xi]
    out = np.stack([x, y, a, m[:, 3]], 1)[inside].astype(np.float32)
    return out


def _points_to_canvas(points: np.ndarray, geo, h: int, w: int) -> list[tuple[float, float]]:
    if len(points) == 0:
        return []
    x, y = geo.to_canvas(points[:, 0], points[:, 1])
    return [(float(a), float(b)) for a, b in zip(x, y) if 0 <= a < w and 0 <= b < h]


def _coarse_map(geo, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """to_master sampled at the 8x8 block centres (8 j + 3.5), with one extra ring of blocks.

    The map is smooth on the scale of a block (the elastic transition is ~100 px wide), so
    sampling it coarsely and interpolating costs ~1/64 of evaluating it per pixel."""
    b = ORIENTATION_BLOCK
    nx, ny = -(-w // b) + 2, -(-h // b) + 2
    xs = (np.arange(nx) - 1) * b + (b - 1) / 2.0
    ys = (np.arange(ny) - 1) * b + (b - 1) / 2.0
    mx, my = geo.to_master(xs[None, :], ys[:, None])
    return np.ascontiguousarray(mx, dtype=np.float32), np.ascontiguousarray(my, dtype=np.float32)


def _orientation_blocks(master: MasterPrint, coarse_x: np.ndarray, coarse_y: np.ndarray, h: int, w: int) -> np.ndarray:
    """Ridge orientation at each 8x8 block centre, carried through the local Jacobian of the
    impression map (so it follows the distortion's local rotation, not just the global one)."""
    b = ORIENTATION_BLOCK
    jxx = np.gradient(coarse_x, b, axis=1)   # d master_x / d canvas_x
    jxy = np.gradient(coarse_x, b, axis=0)   # d master_x / d canvas_y
    jyx = np.gradient(coarse_y, b, axis=1)
    jyy = np.gradient(coarse_y, b, axis=0)
    theta = orientation_at(master.layout, coarse_x.astype(np.float64), coarse_y.astype(np.float64))
    dx, dy = np.cos(theta), -np.sin(theta)                        # master direction, image coords
    det = jxx * jyy - jxy * jyx
    cx = (jyy * dx - jxy * dy) / det                              # J^-1 d: canvas direction
    cy = (-jyx * dx + jxx * dy) / det
    ang = np.mod(np.arctan2(-cy, cx), np.pi).astype(np.float32)
    return np.ascontiguousarray(ang[1:1 + h // b, 1:1 + w // b])
