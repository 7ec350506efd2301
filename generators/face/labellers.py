"""Offline attribute labellers for boundary fitting: scores whose ranks follow an attribute.

Only ranks matter to `fit_boundary` (it keeps the extremes), so these are monotone proxies,
not calibrated angles. Landmarks come from the face detector in ArcFace order: image-left
eye, image-right eye, nose tip, image-left mouth corner, image-right mouth corner.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Callable

import numpy as np


def _rotate_upright(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotate [N, 5, 2] landmarks about the eye centre so the eye line is horizontal."""
    lm = np.asarray(landmarks, dtype=np.float64)
    eye_l, eye_r = lm[:, 0], lm[:, 1]
    d = eye_r - eye_l
    roll = np.arctan2(d[:, 1], d[:, 0])
    c, s = np.cos(-roll), np.sin(-roll)
    centre = (eye_l + eye_r) / 2
    rel = lm - centre[:, None]
    rot = np.stack([c[:, None] * rel[..., 0] - s[:, None] * rel[..., 1],
                    s[:, None] * rel[..., 0] + c[:, None] * rel[..., 1]], axis=-1)
    return rot, roll


def head_pose_scores(landmarks: np.ndarray) -> dict[str, np.ndarray]:
    """yaw, pitch, roll proxies [N] from five landmarks [N, 5, 2].

    roll  = angle of the eye line (radians, image coords: positive = clockwise on screen);
    yaw   = horizontal nose offset from the eye-mouth midline / inter-ocular distance
            (the nose tip swings towards the side the head turns to);
    pitch = nose height between eye line (0) and mouth line (1), centred on 0.5
            (looking up lifts the nose tip towards the eyes).
    """
    rot, roll = _rotate_upright(landmarks)
    iod = np.maximum(np.abs(rot[:, 1, 0] - rot[:, 0, 0]), 1e-6)
    mid_x = (rot[:, 0, 0] + rot[:, 1, 0] + rot[:, 3, 0] + rot[:, 4, 0]) / 4
    yaw = (rot[:, 2, 0] - mid_x) / iod
    mouth_y = (rot[:, 3, 1] + rot[:, 4, 1]) / 2
    pitch = 0.5 - rot[:, 2, 1] / np.maximum(mouth_y, 1e-6)
    return {"yaw": yaw, "pitch": pitch, "roll": roll}


def _luma(images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 3] RGB -> float [N, H, W] ITU-R BT.601 luma in [0, 1]."""
    x = np.asarray(images, dtype=np.float32) / 255.0
    return x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114


def brightness_scores(images: np.ndarray) -> np.ndarray:
    """Mean luma [N] of the central half of each image (the face region of aligned portraits)."""
    y = _luma(images)
    h, w = y.shape[1:]
    return y[:, h // 4: 3 * h // 4, w // 4: 3 * w // 4].mean(axis=(1, 2))


def illumination_scores(images: np.ndarray) -> np.ndarray:
    """Left/right light direction [N]: (right - left) / (right + left) mean luma of the central band.

    Positive = lit from the image right.
    """
    y = _luma(images)
    h, w = y.shape[1:]
    band = y[:, h // 4: 3 * h // 4]
    left = band[:, :, w // 8: w // 2].mean(axis=(1, 2))
    right = band[:, :, w // 2: 7 * w // 8].mean(axis=(1, 2))
    return (right - left) / np.maximum(right + left, 1e-6)


def contrast_scores(images: np.ndarray) -> np.ndarray:
    """Standard deviation [N] of luma over the central half (flat vs harsh lighting)."""
    y = _luma(images)
    h, w = y.shape[1:]
    return y[:, h // 4: 3 * h // 4, w // 4: 3 * w // 4].std(axis=(1, 2))


IMAGE_LABELLERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "brightness": brightness_scores,
    "illumination": illumination_scores,
    "contrast": contrast_scores,
}
LANDMARK_ATTRIBUTES = ("yaw", "pitch", "roll")


def csv_label_scores(path: str | Path, count: int, attributes: list[str]) -> dict[str, np.ndarray]:
    """Scores [count] per attribute from a user CSV with a column `index` (latent index 0..count-1)
    and one numeric column per attribute; latents without a row get NaN (left out of the fit)."""
    path = Path(path)
    out = {a: np.full(count, np.nan) for a in attributes}
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in ["index", *attributes] if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path} lacks columns {missing}; it needs 'index' and one column per "
                             f"attribute")
        for line, row in enumerate(reader, start=2):
            i = int(row["index"])
            if not 0 <= i < count:
                raise ValueError(f"{path}:{line}: index {i} is outside 0..{count - 1}")
            for a in attributes:
                if row[a].strip() != "":
                    out[a][i] = float(row[a])
    return out
