"""Procedural latent fingerprints: exact identity, exact ground truth, the diffusion model's pairs.

A latent is a finger's touch on an object, left unseen and made visible later. From the
finger's master print: placement and plastic distortion of the touch (stronger than on a
sensor), an irregular visible region where the pad pressed, partial ridge transfer (residue and pressure vary over
the touch), smudge and slip (directional blur and an elastic warp), an occasional double tap
and an overlapping non-mated print, the surface (paper with text and ruled lines, glass,
plastic, wood, metal), the development technique (powder grains clumping on ridges,
ninhydrin's diffuse stain, cyanoacrylate's light ridges), uneven lighting, noise,
resampling and JPEG.

Each latent draws a target value class from `class_mix` and the severity of every
degradation from that class; its value class is then *measured* from what it shows (mate
minutiae inside the visible region and the clarity of its ridges) and the visible region is
redrawn until the two agree (at most `class_attempts` times; the measured class is recorded).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from generators.fingerprint.distortion import ImpressionGeometry
from generators.fingerprint.impression import _coarse_map, _minutiae_to_canvas, _orientation_blocks, ink_layer
from generators.fingerprint.master import MasterPrint
from generators.fingerprint.smooth_noise import smooth_noise

from .region import feathered, rasterise, visible_polygon
from .settings import (GOOD_MIN_CLARITY, GOOD_MIN_MINUTIAE, REGION_CENTRE_SD, SURFACE_TECHNIQUES, SURFACES,
                       UGLY_MAX_CLARITY, UGLY_MAX_MINUTIAE, VALUE_CLASSES, LatentSettings)
from .surfaces import make_surface

# Severity of each degradation per target class: (low, high) ranges drawn uniformly.
# - area (of the finger): with the region centred on the pad (settings.REGION_CENTRE_SD) less
#   of it falls off the finger than when its centre was anywhere on the silhouette, so the
#   ranges are ~0.75-0.9x those drawn then, set so that each class shows as many mate
#   minutiae as it did (medians of 120 latents, then -> now: good 41 -> 42, bad 21 -> 21,
#   ugly 10 -> 11; SD27's bins are good > 21, bad 14-21, ugly <= 13).
# - skin: the touch's moisture sd and ridge-edge roughness (ink_layer's break_amount) at
#   difficulty 0; _SKIN_PER_DIFFICULTY adds to both. A latent is residue that the ridges
#   leave, and how much they leave is the transfer's job, so a good latent's touch prints
#   firm, unbroken ridges (moisture sd 0.15, roughness 0.1-0.17 at the default difficulty
#   0.3). Bad and ugly touches keep the clean impression profile's skin (moisture sd 0.3,
#   roughness 0.3-0.43 at 0.3). With that skin on good latents too, one touch in ten was
#   drier than -0.4, its ridges beaded into dots: those found their mate at rank 1 among 60
#   rolled prints 55 % of the time (78 % the rest), and NBIS found 46 % of the mate minutiae
#   of ninhydrin-developed good latents (its stain blurs thin, broken ridges away).
_SEVERITY = {
    "good": {"area": (0.25, 0.42), "transfer": (0.75, 1.0), "noise": (2.0, 6.0), "smudge": 0.1, "double": 0.05,
             "overlap": 0.05, "moisture_sd": 0.0, "roughness": (0.0, 0.06)},
    "bad": {"area": (0.135, 0.24), "transfer": (0.5, 0.8), "noise": (5.0, 12.0), "smudge": 0.3, "double": 0.1,
            "overlap": 0.15, "moisture_sd": 0.15, "roughness": (0.2, 0.32)},
    "ugly": {"area": (0.06, 0.17), "transfer": (0.3, 0.6), "noise": (8.0, 18.0), "smudge": 0.5, "double": 0.2,
             "overlap": 0.3, "moisture_sd": 0.15, "roughness": (0.2, 0.32)},
}
# per unit of make_latent's difficulty: added to the moisture sd and to the roughness (the
# clean profile's rates)
_SKIN_PER_DIFFICULTY = {"moisture_sd": 0.5, "roughness": 0.35}
MINUTIA_MARGIN = 8.0      # px: mate minutiae this close to the region's edge are not "visible"


@dataclass(frozen=True)
class Latent:
    image: np.ndarray        # [H, W] uint8
    mask: np.ndarray         # [H, W] bool: the visible region
    minutiae: np.ndarray     # [N, 4] float32 mate minutiae inside the visible region (x, y, angle rad ISO, type)
    orientation: np.ndarray  # [H // 8, W // 8] float32 ridge orientation of the mate (rad, ISO, [0, pi))
    ridges: np.ndarray       # [H, W] float32 in [0, 1]: the clean ridge map of the whole touch
    residue: np.ndarray      # [H, W] float32 in [0, 1]: what the skin left (visible region, transfer,
                             # smudge, double tap, overlap) before development: the diffusion condition
    value_class: str         # measured: good, bad or ugly
    params: dict             # flat JSON-able scalars


def measure_value_class(n_visible: int, clarity: float) -> str:
    """SD27-style value class from what a latent shows."""
    if n_visible <= UGLY_MAX_MINUTIAE or clarity < UGLY_MAX_CLARITY:
        return "ugly"
    if n_visible >= GOOD_MIN_MINUTIAE and clarity >= GOOD_MIN_CLARITY:
        return "good"
    return "bad"


def _touch_geometry(settings: LatentSettings, master: MasterPrint, rng: np.random.Generator) -> ImpressionGeometry:
    cx, cy = master.centre
    t = settings.max_translation
    rot = np.deg2rad(rng.uniform(-settings.max_rotation, settings.max_rotation))
    ang, mag = rng.uniform(0.0, 2.0 * np.pi), 15.0 * np.sqrt(rng.uniform())
    return ImpressionGeometry(
        canvas_cx=settings.width / 2.0 + rng.uniform(-t, t), canvas_cy=settings.height / 2.0 + rng.uniform(-t, t),
        finger_x=cx + rng.normal(0.0, 25.0), finger_y=cy + rng.normal(0.0, 35.0), rotation=float(rot),
        contact_x=cx + rng.normal(0.0, 20.0), contact_y=cy + rng.normal(0.0, 20.0),
        core_radius=rng.uniform(40.0, 70.0), transition=rng.uniform(80.0, 130.0),
        distortion_rotation=float(np.deg2rad(rng.uniform(-6.0, 6.0))),
        distortion_dx=float(mag * np.cos(ang)), distortion_dy=float(mag * np.sin(ang)))


def _touch_skin(rng: np.random.Generator, difficulty: float, sev: dict) -> dict:
    """The skin of a latent's touch as ink_layer reads it (moisture, pressure, ridge-edge
    roughness; no blobs or scratches): its spread and roughness come from the class (sev)."""
    d = float(difficulty)
    moisture_sd = sev["moisture_sd"] + _SKIN_PER_DIFFICULTY["moisture_sd"] * d
    roughness = rng.uniform(*sev["roughness"]) + _SKIN_PER_DIFFICULTY["roughness"] * d
    return {"moisture": float(np.clip(rng.normal(0.0, moisture_sd), -1.0, 1.0)),
            "pressure": float(np.clip(rng.normal(0.0, 0.3), -1.0, 1.0)),
            "break_amount": float(roughness), "n_blobs": 0, "n_scratches": 0}


def _clean_touch(master: MasterPrint, geo: ImpressionGeometry, rng: np.random.Generator, h: int, w: int,
                 difficulty: float, sev: dict) -> tuple[np.ndarray, np.ndarray, dict, tuple]:
    """Ridge ink [h, w] of a full touch (the class's skin), the finger's silhouette on the
    canvas, the skin conditions, and the coarse map (for orientation)."""
    coarse_x, coarse_y = _coarse_map(geo, h, w)
    cond = _touch_skin(rng, difficulty, sev)
    full = np.full(coarse_x.shape, 4.0, np.float32)          # contact everywhere the finger is
    layer = ink_layer(master, coarse_x, coarse_y, full, cond, rng, h, w)
    return layer.ink, layer.touch, cond, (coarse_x, coarse_y)


def _smudge(rng: np.random.Generator, residue: np.ndarray) -> tuple[np.ndarray, dict]:
    """Slip: a directional (motion) blur along the slip and a smooth elastic warp."""
    h, w = residue.shape
    length = int(rng.integers(5, 16))
    angle = rng.uniform(0.0, 180.0)
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1.0
    rot = cv2.getRotationMatrix2D(((length - 1) / 2.0, (length - 1) / 2.0), angle, 1.0)
    kernel = cv2.warpAffine(kernel, rot, (length, length))
    kernel /= max(kernel.sum(), 1e-6)
    blurred = cv2.filter2D(residue, -1, kernel, borderType=cv2.BORDER_CONSTANT)
    # only part of the touch slides: blend the blur in over a smooth random zone
    zone = np.clip(smooth_noise(rng, h, w, cell=120.0) + 0.3, 0.0, 1.0)
    out = residue + zone * (blurred - residue)
    amp = rng.uniform(1.5, 4.0)
    dx = amp * smooth_noise(rng, h, w, cell=90.0)
    dy = amp * smooth_noise(rng, h, w, cell=90.0)
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    out = cv2.remap(out, gx + dx, gy + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    return out, {"smudge_length_px": float(length), "smudge_angle_deg": float(angle), "warp_px": float(amp)}


def _shifted_copy(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """The same touch again, a few px and degrees away (a double tap)."""
    h, w = image.shape
    m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), rng.uniform(-6.0, 6.0), 1.0)
    m[:, 2] += rng.uniform(-15.0, 15.0, size=2)
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=0.0)


def _develop(rng: np.random.Generator, surface: np.ndarray, residue: np.ndarray, technique: str,
             surface_name: str) -> np.ndarray:
    """Grey [h, w] float32 of the developed latent on its surface."""
    h, w = residue.shape
    dark_surface = surface_name == "glass" or float(surface.mean()) < 110.0
    if technique == "powder":
        # grains stick to the residue and clump: a speckle field thresholded where residue is
        grains = rng.uniform(0.0, 1.0, (h, w)).astype(np.float32)
        clumps = cv2.GaussianBlur(grains, (0, 0), 1.2) * 1.8 - 0.3
        powder = np.clip(residue * (0.55 + 0.9 * clumps), 0.0, 1.0)
        colour = rng.uniform(225.0, 250.0) if dark_surface else rng.uniform(15.0, 60.0)   # white or black powder
        return surface + powder * (colour - surface)
    if technique == "ninhydrin":
        stain = cv2.GaussianBlur(residue, (0, 0), rng.uniform(1.0, 1.8))
        return surface - rng.uniform(90.0, 140.0) * stain
    # cyanoacrylate: a white polymer grows on the ridges; it shows against dark surfaces, and on
    # light ones it is dyed (e.g. basic yellow or rhodamine) so that the ridges come out dark
    polymer = np.clip(residue * rng.uniform(0.8, 1.1), 0.0, 1.0)
    if dark_surface:
        return surface + polymer * (rng.uniform(215.0, 245.0) - surface)
    return surface - polymer * rng.uniform(90.0, 130.0)


def _camera(rng: np.random.Generator, grey: np.ndarray, noise: float, jpeg_probability: float) -> tuple[np.ndarray, dict]:
    """Uneven lighting, sensor noise, resampling and JPEG of the photographed latent."""
    h, w = grey.shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    gx, gy = rng.uniform(-1.0, 1.0, 2)
    light = 1.0 + 0.18 * (gx * (x / w - 0.5) + gy * (y / h - 0.5)) + 0.08 * smooth_noise(rng, h, w, cell=200.0)
    vignette = 1.0 - rng.uniform(0.0, 0.25) * (((x / w - 0.5) ** 2 + (y / h - 0.5) ** 2) * 2.0)
    grey = grey * light * vignette + noise * rng.standard_normal((h, w), dtype=np.float32)
    image = np.clip(np.rint(cv2.GaussianBlur(grey, (0, 0), rng.uniform(0.5, 1.0))), 0, 255).astype(np.uint8)
    scale = float(rng.uniform(0.6, 1.0))
    if scale < 0.97:
        small = cv2.resize(image, (max(8, int(w * scale)), max(8, int(h * scale))), interpolation=cv2.INTER_AREA)
        image = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    quality = 0
    if rng.uniform() < jpeg_probability:
        quality = int(rng.integers(35, 91))
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        image = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)
    return image, {"resample_scale": scale, "jpeg_quality": quality}


def make_latent(master: MasterPrint, settings: LatentSettings, rng: np.random.Generator,
                overlap: MasterPrint | None = None, difficulty: float = 0.3) -> Latent:
    """One latent of `master` [settings.height, settings.width]; `overlap` (another finger's
    master) is the non-mated print that may overlap it."""
    h, w = settings.height, settings.width
    mix = np.asarray(settings.class_mix, float)
    target = VALUE_CLASSES[int(rng.choice(len(VALUE_CLASSES), p=mix / mix.sum()))]
    sev = _SEVERITY[target]
    geo = _touch_geometry(settings, master, rng)
    ink, touch, cond, (coarse_x, coarse_y) = _clean_touch(master, geo, rng, h, w, difficulty, sev)
    finger_area = float(master.mask.sum())
    transfer = float(rng.uniform(*sev["transfer"]))
    noise = float(rng.uniform(*sev["noise"]))
    # clarity: how well ridges print and read, 1 = perfect residue on a quiet image
    clarity = float(np.clip(transfer * (1.0 - noise / 30.0), 0.0, 1.0))
    on_finger = touch > 0.5
    ys, xs = np.nonzero(on_finger)
    # where the pad pressed: the region's centre is a finger pixel drawn with a Gaussian weight
    # around the touch's contact centre (cumulative weights, searched with one uniform draw)
    px, py = geo.to_canvas(np.array([geo.contact_x]), np.array([geo.contact_y]))
    sd = REGION_CENTRE_SD * master.shape.half_width
    pad = np.cumsum(np.exp(-0.5 * ((xs - px[0]) ** 2 + (ys - py[0]) ** 2) / sd ** 2))
    all_minutiae = _minutiae_to_canvas(master, geo, on_finger)

    # the visible region: redrawn until the latent shows its target class
    for attempt in range(settings.class_attempts):
        area = float(rng.uniform(*sev["area"])) * finger_area
        k = min(int(np.searchsorted(pad, rng.uniform() * pad[-1])), len(xs) - 1) if len(xs) else 0
        centre = (float(xs[k]), float(ys[k])) if len(xs) else (w / 2.0, h / 2.0)
        polygon = visible_polygon(rng, centre, area, elongation=rng.uniform(1.0, 2.5), concavity=rng.uniform(0.2, 1.0))
        mask = rasterise(polygon, h, w) & on_finger
        inner = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5) >= MINUTIA_MARGIN
        if len(all_minutiae):
            xi = np.clip(np.rint(all_minutiae[:, 0]).astype(int), 0, w - 1)
            yi = np.clip(np.rint(all_minutiae[:, 1]).astype(int), 0, h - 1)
            visible = all_minutiae[inner[yi, xi]]
        else:
            visible = all_minutiae
        measured = measure_value_class(len(visible), clarity)
        if measured == target:
            break

    # residue: what the skin left, patchy, thinning at the region's edge
    patchy = np.clip(0.65 + 0.45 * smooth_noise(rng, h, w, cell=30.0), 0.0, 1.0)
    residue = ink * transfer * patchy * feathered(mask, rng.uniform(4.0, 12.0))
    extra = {"smudge_length_px": 0.0, "smudge_angle_deg": 0.0, "warp_px": 0.0}
    if rng.uniform() < sev["smudge"]:
        residue, extra = _smudge(rng, residue)
    double_tap = bool(rng.uniform() < sev["double"])
    if double_tap:
        residue = np.maximum(residue, 0.7 * _shifted_copy(rng, residue))
    overlapped = bool(overlap is not None and rng.uniform() < sev["overlap"])
    if overlapped:
        other_geo = _touch_geometry(settings, overlap, rng)
        other_ink, other_touch, _, _ = _clean_touch(overlap, other_geo, rng, h, w, difficulty, sev)
        other_centre = (w * rng.uniform(0.3, 0.7), h * rng.uniform(0.3, 0.7))
        other = rasterise(visible_polygon(rng, other_centre, 0.25 * finger_area, 1.5, 0.6), h, w)
        other_patchy = np.clip(0.65 + 0.45 * smooth_noise(rng, h, w, cell=30.0), 0.0, 1.0)
        residue = np.maximum(residue, other_ink * rng.uniform(0.3, 0.8) * other_patchy
                             * feathered(other & (other_touch > 0.5), 8.0))

    weights = np.asarray(settings.surface_weights, float)
    surface_name = SURFACES[int(rng.choice(len(SURFACES), p=weights / weights.sum()))]
    techniques = SURFACE_TECHNIQUES[surface_name]
    technique = techniques[int(rng.integers(len(techniques)))]
    surface = make_surface(surface_name, rng, h, w)
    grey = _develop(rng, surface, residue.astype(np.float32), technique, surface_name)
    image, cam = _camera(rng, grey, noise, settings.jpeg_probability)

    orientation = _orientation_blocks(master, coarse_x, coarse_y, h, w)
    params = {
        "finger_class": master.finger_class,
        "value_class": measured, "target_class": target, "class_attempts": attempt + 1,
        "surface": surface_name, "technique": technique,
        "visible_area_px": int(mask.sum()), "visible_fraction_of_finger": float(mask.sum() / finger_area),
        "n_visible_minutiae": int(len(visible)), "clarity": clarity, "transfer": transfer, "noise_sigma": noise,
        "rotation_deg": float(np.rad2deg(geo.rotation)), "double_tap": double_tap, "overlap": overlapped,
        "moisture": cond["moisture"], "pressure": cond["pressure"],
        **extra, **cam,
    }
    return Latent(image, mask, visible.astype(np.float32), orientation, (ink * on_finger).astype(np.float32),
                  np.clip(residue, 0.0, 1.0).astype(np.float32), measured, params)
