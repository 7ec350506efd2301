"""Surfaces a latent is left on, as grey images [H, W] float32 (0 black .. 255 white).

Paper (fibres, printed text, ruled lines, handwriting), glass (dark, with soft reflections),
plastic (smooth, scratched), wood (grain), brushed metal. Each is built from cheap smooth
noise and OpenCV drawing, never from pixel loops.
"""
from __future__ import annotations

import string

import cv2
import numpy as np

from generators.fingerprint.smooth_noise import smooth_noise


def _paper(rng, h, w):
    grey = rng.uniform(215.0, 245.0) + 3.0 * smooth_noise(rng, h, w, cell=2.5) + 4.0 * smooth_noise(rng, h, w, cell=60.0)
    ink = np.zeros((h, w), np.uint8)
    if rng.uniform() < 0.6:          # ruled lines
        step = int(rng.integers(28, 42))
        for y in range(int(rng.integers(5, step)), h, step):
            cv2.line(ink, (0, y), (w, y), int(rng.integers(60, 110)), 1)
    if rng.uniform() < 0.5:          # printed text
        scale, thick = rng.uniform(0.5, 1.1), int(rng.integers(1, 3))
        y = int(rng.integers(15, 40))
        while y < h:
            word = "".join(rng.choice(list(string.ascii_letters + "     "), size=int(rng.integers(12, 40))))
            cv2.putText(ink, word, (int(rng.integers(-20, 20)), y), cv2.FONT_HERSHEY_SIMPLEX, scale,
                        int(rng.integers(150, 230)), thick, cv2.LINE_AA)
            y += int(30 * scale + rng.integers(15, 60))
    for _ in range(int(rng.poisson(1.5))):   # handwriting: smooth pen strokes
        t = np.linspace(0.0, 1.0, 60)[:, None]
        ctrl = rng.uniform([0, 0], [w, h], size=(4, 2))
        curve = ((1 - t) ** 3 * ctrl[0] + 3 * (1 - t) ** 2 * t * ctrl[1] + 3 * (1 - t) * t ** 2 * ctrl[2]
                 + t ** 3 * ctrl[3])
        curve[:, 1] += 8.0 * np.sin(np.linspace(0, rng.uniform(10, 30), 60))
        cv2.polylines(ink, [np.rint(curve).astype(np.int32)], False, int(rng.integers(120, 220)),
                      int(rng.integers(2, 4)), cv2.LINE_AA)
    return grey - 0.8 * ink.astype(np.float32)


def _glass(rng, h, w):
    grey = rng.uniform(55.0, 105.0) + 6.0 * smooth_noise(rng, h, w, cell=90.0)
    return grey + 45.0 * np.clip(smooth_noise(rng, h, w, cell=140.0) - 0.8, 0.0, None)


def _plastic(rng, h, w):
    grey = rng.uniform(110.0, 200.0) + 5.0 * smooth_noise(rng, h, w, cell=50.0)
    marks = np.zeros((h, w), np.float32)
    for _ in range(int(rng.poisson(6))):
        p0 = rng.uniform([0, 0], [w, h])
        ang, length = rng.uniform(0, np.pi), rng.uniform(30, 250)
        p1 = p0 + length * np.array([np.cos(ang), np.sin(ang)])
        cv2.line(marks, tuple(int(v) for v in p0), tuple(int(v) for v in p1), float(rng.uniform(10, 35)), 1, cv2.LINE_AA)
    return grey + marks


def _wood(rng, h, w):
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    ang = rng.uniform(-0.3, 0.3)
    u = x * np.sin(ang) + y * np.cos(ang) + 25.0 * smooth_noise(rng, h, w, cell=120.0)
    period = rng.uniform(9.0, 22.0)
    grain = np.sin(2.0 * np.pi * u / period) + 0.4 * np.sin(2.0 * np.pi * u / (2.7 * period))
    return rng.uniform(110.0, 160.0) + 18.0 * grain + 6.0 * smooth_noise(rng, h, w, cell=4.0)


def _metal(rng, h, w):
    streaks = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), sigmaX=25.0, sigmaY=0.7)
    return rng.uniform(140.0, 195.0) + 60.0 * streaks + 10.0 * smooth_noise(rng, h, w, cell=150.0)


SURFACE_MAKERS = {"paper": _paper, "glass": _glass, "plastic": _plastic, "wood": _wood, "metal": _metal}


def make_surface(name: str, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """The surface `name` as grey [h, w] float32."""
    if name not in SURFACE_MAKERS:
        raise ValueError(f"unknown surface {name!r}; use one of {sorted(SURFACE_MAKERS)}")
    return np.asarray(SURFACE_MAKERS[name](rng, h, w), dtype=np.float32)
