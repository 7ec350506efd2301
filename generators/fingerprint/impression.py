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
from .pixel_kernels import ink_core, ink_finish
from .quality_mix import resolve_difficulty
from .profiles import ImpressionProfile, profile_named
from .sensors import PLAIN_IMPRESSION_CODES, sensor_image
from .settings import FingerprintSettings
from .smooth_noise import smooth_noise

ORIENTATION_BLOCK = 8   # Impression.orientation has one value per 8x8 block
EDGE_MARGIN = 6         # px: ground-truth minutiae closer to the image border are dropped


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
    prof = profile_named(settings.profile)
    cx, cy = master.centre
    t = prof.max_translation
    rot = np.deg2rad(np.clip(rng.normal(0.0, prof.max_rotation / 2.5), -prof.max_rotation, prof.max_rotation))
    dx = float(np.clip(rng.normal(0.0, t / 2.5), -t, t))
    dy = float(np.clip(rng.normal(0.0, t / 2.5), -t, t))
    partial = rng.uniform() < prof.partial_probability
    ang, mag = rng.uniform(0.0, 2.0 * np.pi), rng.uniform(*prof.partial_offset)
    px = mag * settings.width * np.cos(ang) if partial else 0.0
    py = mag * settings.height * np.sin(ang) if partial else 0.0
    drot = np.deg2rad(rng.uniform(-1.0, 1.0) * prof.distortion_max_rotation)
    dmag = prof.distortion_max_translation * np.sqrt(rng.uniform())
    dang = rng.uniform(0.0, 2.0 * np.pi)
    return ImpressionGeometry(
        canvas_cx=settings.width / 2.0, canvas_cy=settings.height / 2.0,
        finger_x=cx + dx + px, finger_y=cy + dy + py, rotation=float(rot),
        contact_x=cx + dx + rng.normal(0.0, 10.0), contact_y=cy + dy + rng.normal(0.0, 10.0),
        core_radius=rng.uniform(*prof.distortion_core_radius), transition=rng.uniform(*prof.distortion_transition),
        distortion_rotation=float(drot), distortion_dx=float(dmag * np.cos(dang)),
        distortion_dy=float(dmag * np.sin(dang)),
    )


def _contact_ellipse(rng, settings: FingerprintSettings, geo: ImpressionGeometry, pressure: float) -> dict:
    """Elliptical contact area on the sensor, centred where the finger's contact core lands;
    more pressure, more area."""
    w, h = settings.width, settings.height
    lo, hi = profile_named(settings.profile).contact_size
    ex, ey = geo.to_canvas(np.array([geo.contact_x]), np.array([geo.contact_y]))
    size = rng.uniform(lo, hi)
    return {"contact_cx": float(ex[0] + rng.normal(0.0, 0.03 * w)),
            "contact_cy": float(ey[0] + rng.normal(0.0, 0.03 * h)),
            "contact_rx": float(w * size * rng.uniform(0.95, 1.05) * (1.0 + 0.12 * pressure)),
            "contact_ry": float(h * (size + 0.02) * rng.uniform(0.95, 1.05) * (1.0 + 0.12 * pressure))}


def _skin_conditions(rng, difficulty: float, profile: ImpressionProfile) -> dict:
    """Moisture (-1 dry .. +1 wet), pressure, ridge-edge roughness and the noise budget.

    The profile sets how far moisture and pressure stray (dry and wet skin at every quality
    level); difficulty lowers contrast, raises blur and sensor noise, roughens and breaks
    ridges more, and adds blobs and scratches (the factors the NFIQ 2 features respond to
    most). Ridge edges are rough at every level because real ridges are never smooth.
    """
    d = float(difficulty)
    return {
        "moisture": float(np.clip(rng.normal(0.0, profile.moisture_sd + profile.moisture_sd_per_difficulty * d), -1.0, 1.0)),
        "pressure": float(np.clip(rng.normal(0.0, profile.pressure_sd), -1.0, 1.0)),
        "contrast": float(rng.uniform(205.0, 235.0) * (1.0 - 0.5 * d)),
        "background": float(rng.uniform(228.0, 250.0)),
        "blur_sigma": float(rng.uniform(0.5, 0.8) + 1.1 * d * rng.uniform(0.5, 1.0)),
        "noise_sigma": float(rng.uniform(1.5, 3.0) + 16.0 * d * rng.uniform(0.6, 1.0)),
        "break_amount": float(rng.uniform(0.2, 0.32) + 0.35 * d),
        "n_blobs": int(rng.poisson(0.5 + 6.0 * d)),
        "n_scratches": int(rng.poisson(0.2 + 3.0 * d)),
    }


def _blobs_and_scratches(rng, h: int, w: int, n_blobs: int, n_scratches: int
                         ) -> tuple[np.ndarray, np.ndarray | None]:
    """Ink lost [H, W] (dry or greasy spots without contact, scratches on the platen) and ink
    added (wet smears), both in [0, 1]. Spots are ragged, not ellipses: each is an ellipse
    cut by a fine noise field; scratches are thin, sharp, slightly bent lines. The smear is
    None when no spot is a smear (it would be zero everywhere)."""
    lost = np.zeros((h, w), dtype=np.float32)
    smear = np.zeros((h, w), dtype=np.float32)
    drawn = {"lost": [], "smear": []}        # each layer's spots: (x, y, largest semi-axis)
    for _ in range(n_blobs):
        centre = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        axes = (int(rng.uniform(6, 35)), int(rng.uniform(6, 35)))
        kind = "smear" if rng.uniform() < 0.35 else "lost"
        target = smear if kind == "smear" else lost
        drawn[kind].append((*centre, max(axes)))
        cv2.ellipse(target, centre, axes, float(rng.uniform(0, 180)), 0, 360, float(rng.uniform(0.5, 1.0)), -1)
    if n_blobs:
        ragged = (smooth_noise(rng, h, w, cell=6.0) > -0.4).astype(np.float32)
        # a layer no spot was drawn into stays exactly zero: its blur is skipped, not its draw
        _blur_spots(lost, ragged, drawn["lost"], 1.2)
        _blur_spots(smear, ragged, drawn["smear"], 2.0)
    for _ in range(n_scratches):
        p0 = np.array([rng.uniform(0, w), rng.uniform(0, h)])
        ang, length, bow = rng.uniform(0, np.pi), rng.uniform(40, 220), rng.normal(0.0, 0.08)
        t = np.linspace(0.0, 1.0, 12)[:, None]
        u, n = np.array([np.cos(ang), np.sin(ang)]), np.array([-np.sin(ang), np.cos(ang)])
        pts = p0 + t * length * u + (bow * length * t * (1.0 - t)) * n
        cv2.polylines(lost, [pts.round().astype(np.int32)[:, None, :]], False, float(rng.uniform(0.7, 1.0)),
                      int(rng.integers(1, 3)), cv2.LINE_AA)
    np.clip(lost, 0.0, 1.0, out=lost)
    if not drawn["smear"]:
        return lost, None
    np.clip(smear, 0.0, 1.0, out=smear)
    return lost, smear


def _blur_spots(layer: np.ndarray, ragged: np.ndarray, spots: list, sigma: float) -> None:
    """layer <- GaussianBlur(layer * ragged, sigma), in place, computed only over the box the
    spots cover plus the kernel's reach: outside it the layer is zero before and after. A
    spot covers a few hundred pixels of a rolled print's 600 000, and the whole-canvas blur
    was a seventh of a rolled impression's time. (The box's blur equals the whole canvas'
    to ~1e-9: OpenCV's vector loops split the rows differently.)"""
    if not spots:
        return
    h, w = layer.shape
    reach = int(np.ceil(4.0 * sigma)) + 2          # OpenCV's float kernel: radius round(4 sigma)
    xs, ys, rs = (np.array(v) for v in zip(*spots))
    x0, x1 = max(int((xs - rs).min()) - reach, 0), min(int((xs + rs).max()) + 1 + reach, w)
    y0, y1 = max(int((ys - rs).min()) - reach, 0), min(int((ys + rs).max()) + 1 + reach, h)
    if x0 >= x1 or y0 >= y1:
        return
    box = layer[y0:y1, x0:x1]
    box *= ragged[y0:y1, x0:x1]
    layer[y0:y1, x0:x1] = cv2.GaussianBlur(np.ascontiguousarray(box), (0, 0), sigma)


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
    """Remap the master's ridges and skin features through the impression map and turn them
    into ink.

    coarse_x/coarse_y/coarse_rim are sampled on the 8x8 block grid with one extra ring (see
    _coarse_map); coarse_rim is the contact strength before clipping (> 1 inside, 0.5 at the
    contact rim). Smooth quantities are interpolated together with one resize: the map, the
    rim, the finger silhouette, a slow ridge-thickness drift and the background's shading.
    `field_of(maps) -> field [H, W]` replaces the plain remap of the printing surface (rolled
    prints use it for slip smear)."""
    b = ORIENTATION_BLOCK
    ny, nx = coarse_x.shape
    finger = cv2.remap(master.mask, coarse_x, coarse_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    drift = 0.15 * smooth_noise(rng, ny, nx, cell=60.0 / b)
    shade = 6.0 * smooth_noise(rng, ny, nx, cell=120.0 / b)
    grid = (nx * b, ny * b)

    def dense(coarse: np.ndarray) -> np.ndarray:
        # one field at a time, not one multi-channel resize: the same values to the bit, and
        # each comes out contiguous along its rows (arithmetic on one channel of an
        # interleaved 4-channel array was 8x slower than on a plane); the resized grid has
        # one block more on every side
        return cv2.resize(coarse, grid, interpolation=cv2.INTER_LINEAR)[b:b + h, b:b + w]

    # the map as one two-channel field (OpenCV's two-channel resize rounds differently from two
    # one-channel ones); remap reads the cropped view as it is, without a contiguous copy
    maps = dense(np.dstack([coarse_x, coarse_y]))
    if field_of is None:
        field = cv2.remap(master.surface, maps, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=-1.0)
    else:
        field = field_of(maps)
    # The per-pixel arithmetic runs fused (pixel_kernels: the same float32 operations in one
    # pass, or numpy's when the C library is not built); the model it computes:
    # - the contact rim is not a clean ellipse: it wanders on the scale of a few ridges
    #   (touch = 0.25 noise(18 px) + rim, inside the finger), and ridges fade in over it;
    # - ridge thickness: ridges are where the ridge field exceeds a threshold (the threshold
    #   form of SFinGe's erosion/dilation). Wet skin or high pressure lowers it (thick ridges,
    #   valleys merge); dry skin raises it and makes it vary quickly in space (thin, broken,
    #   beaded ridges). Edge roughness acts at two scales: the ridge's ragged edge (~2.5 px)
    #   and its uneven width along its length (~7 px);
    # - dry skin: the threshold rises in grains, so ridges break into beads and dots;
    # - toward the rim of the contact area only the ridge tops still touch: ridges thin out
    #   and break before they vanish (+ 1.2 (1 - fade)).
    touch_noise = smooth_noise(rng, h, w, cell=18.0)
    rim = dense(coarse_rim.astype(np.float32))
    moisture = cond["moisture"]
    wet = moisture + 0.3 * cond["pressure"]
    fine = smooth_noise(rng, h, w, cell=2.5)
    rough = smooth_noise(rng, h, w, cell=7.0)
    touch, fade, ink = ink_core(touch_noise, rim, dense(finger), dense(drift), field, fine, rough,
                                thr0=0.18 - 0.45 * wet, break_amount=cond["break_amount"],
                                dry_gain=-0.9 * moisture if moisture < 0.0 else None, inv_width=1.0 / 0.35)
    spread = bridge_noise = None
    if wet > 0.35:
        # wet skin: sweat bridges the valleys between neighbouring ridges in patches
        bridge_noise = smooth_noise(rng, h, w, cell=10.0)
        spread = cv2.GaussianBlur(ink, (0, 0), 1.6)
    lost = smear = None
    if cond["n_blobs"] or cond["n_scratches"]:
        lost, smear = _blobs_and_scratches(rng, h, w, cond["n_blobs"], cond["n_scratches"])
    # ink = max(ink, 1.4 spread bridges) sqrt(fade), spots' ink lost, smears' ink added
    ink = ink_finish(ink, fade, spread, bridge_noise, (wet - 0.35) * 2.5, lost, smear)
    return InkLayer(ink.astype(np.float32, copy=False), touch, np.ascontiguousarray(dense(shade)), coarse_x, coarse_y)


def make_impression(master: MasterPrint, settings: FingerprintSettings, rng: np.random.Generator) -> Impression:
    """One impression [settings.height, settings.width] uint8 of `master`, and its ground truth."""
    settings = resolve_difficulty(settings, rng)     # quality_mix: this impression's difficulty
    h, w = settings.height, settings.width
    profile = profile_named(settings.profile)
    geo = _draw_geometry(settings, master, rng)
    cond = _skin_conditions(rng, settings.difficulty, profile)
    ell = _contact_ellipse(rng, settings, geo, cond["pressure"])
    layer = plain_ink(master, geo, ell, cond, rng, h, w)
    image = sensor_image(settings.sensor, layer.ink, layer.touch, layer.shade, cond, rng, settings.difficulty)
    contact_mask = layer.touch > 0.5
    minutiae, sing = _truth_to_canvas(master, geo, contact_mask)
    orientation = _orientation_blocks(master, layer.coarse_x, layer.coarse_y, h, w)
    params = {
        "finger_class": master.finger_class,
        "finger_position": int(master.finger_position),
        "difficulty": float(settings.difficulty),
        **_geometry_params(master, geo),
        **ell,
        "contact_fraction": true_fraction(contact_mask),
        **cond,
        "n_minutiae": int(len(minutiae)),
        "n_cores": len(sing["cores"]),
        "n_deltas": len(sing["deltas"]),
        "n_creases": master.skin.n_creases,
        "n_scars": master.skin.n_scars,
        "rendering": settings.sensor,
        "profile": settings.profile,
        "ansi_nist_impression_code": PLAIN_IMPRESSION_CODES[settings.sensor],
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


def bounding_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the True pixels of `mask`, (0, 0, 0, 0) when there are none; from
    its row and column projections (np.nonzero of a 600 000-pixel mask costs ten times more)."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(rows):
        return (0, 0, 0, 0)
    return (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


def true_fraction(mask: np.ndarray) -> float:
    """mask.mean() of a bool array, the same float: the count over the size, both exact (the
    mean sums the mask as float64, 90 against 8 us for a 500 x 400 mask)."""
    return np.count_nonzero(mask) / mask.size


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
    return _truth_to_canvas(master, geo, contact, with_singularities=False)[0]


def _truth_to_canvas(master: MasterPrint, geo, contact: np.ndarray, with_singularities: bool = True
                     ) -> tuple[np.ndarray, dict]:
    """The master's minutiae [N, 4] on the canvas (those inside its margin and the contact)
    and its singular points {"cores": [(x, y)], "deltas": [...]} on the canvas, in one Newton
    solve: each solve costs ~0.4 ms of numpy calls whatever its size."""
    m = master.minutiae
    h, w = contact.shape
    cores = np.asarray(master.cores, dtype=np.float64).reshape(-1, 2)
    deltas = np.asarray(master.deltas, dtype=np.float64).reshape(-1, 2)
    points = np.concatenate([cores, deltas]) if with_singularities else None
    if len(m) == 0 and points is None:
        return np.zeros((0, 4), dtype=np.float32), {}
    mapped = geo.pose_to_canvas(m[:, 0].astype(np.float64), m[:, 1].astype(np.float64), m[:, 2].astype(np.float64),
                                points=points)
    x, y, a = mapped[:3]
    inside = (x >= EDGE_MARGIN) & (x < w - EDGE_MARGIN) & (y >= EDGE_MARGIN) & (y < h - EDGE_MARGIN)
    xi = np.clip(np.rint(x).astype(int), 0, w - 1)
    yi = np.clip(np.rint(y).astype(int), 0, h - 1)
    inside &= contact[yi, xi]
    minutiae = np.stack([x, y, a, m[:, 3].astype(np.float64)], 1)[inside].astype(np.float32)
    if points is None:
        return minutiae, {}
    on_canvas = [(float(px), float(py)) for px, py in mapped[3]]
    keep = [0 <= px < w and 0 <= py < h for px, py in on_canvas]
    sing = {"cores": [p for p, k in zip(on_canvas[:len(cores)], keep[:len(cores)]) if k],
            "deltas": [p for p, k in zip(on_canvas[len(cores):], keep[len(cores):]) if k]}
    return minutiae, sing


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
    ny, nx = h // b, w // b
    # only the blocks of the image, not the map's extra ring: each derivative is np.gradient's
    # central difference (f[i + 1] - f[i - 1]) / (2 b) there, written out (four np.gradient
    # calls over the whole grid and the ring's angles were a quarter of the time, 399 -> 293
    # us per impression; the same bits)
    inner = (slice(1, 1 + ny), slice(1, 1 + nx))
    jxx = (coarse_x[1:1 + ny, 2:2 + nx] - coarse_x[1:1 + ny, :nx]) / (2.0 * b)   # d master_x / d canvas_x
    jxy = (coarse_x[2:2 + ny, 1:1 + nx] - coarse_x[:ny, 1:1 + nx]) / (2.0 * b)   # d master_x / d canvas_y
    jyx = (coarse_y[1:1 + ny, 2:2 + nx] - coarse_y[1:1 + ny, :nx]) / (2.0 * b)
    jyy = (coarse_y[2:2 + ny, 1:1 + nx] - coarse_y[:ny, 1:1 + nx]) / (2.0 * b)
    theta = orientation_at(master.layout, coarse_x[inner].astype(np.float64), coarse_y[inner].astype(np.float64))
    dx, dy = np.cos(theta), -np.sin(theta)                        # master direction, image coords
    det = jxx * jyy - jxy * jyx
    cx = (jyy * dx - jxy * dy) / det                              # J^-1 d: canvas direction
    cy = (-jyx * dx + jxx * dy) / det
    return np.mod(np.arctan2(-cy, cx), np.pi).astype(np.float32)
