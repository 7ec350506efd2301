"""Slap segment boxes (``params.segments``): crops for matching and sanity checks.

A four-finger slap (ANSI/NIST-ITL finger codes 13, 14, 15) carries one box per finger
(position, x0, y0, x1, y1; x0/y0 inclusive, x1/y1 exclusive, slap pixels, as Type-14 field
14.021 holds). The checks answer "are the boxes usable?" from the image alone:

- every box lies inside the image;
- boxes of one slap hardly overlap (max intersection over union between two boxes);
- the boxes hold the slap's ink: the fraction of foreground pixels of the whole slap that
  fall in some box, and per box the share of the slap's foreground it holds and how much of
  the box is foreground. Foreground is a plain block-variance segmentation (grey-level std
  of 16×16 blocks above a fraction of the image's high block std), the classic
  fingerprint-segmentation baseline (Mehtre et al., 1987).
"""
from __future__ import annotations

import base64

import cv2
import numpy as np

Box = tuple[int, int, int, int, int]   # position, x0, y0, x1, y1

FOREGROUND_BLOCK = 16          # px at 500 ppi: about two ridge periods
FOREGROUND_MIN_STD = 12.0      # block std threshold never below this (grey levels)
MIN_CROP = 32                  # px: smaller crops get no minutiae (MINDTCT needs blocks)
BOX_COLUMNS = ["sample_id", "segment_position", "x0", "y0", "x1", "y1", "box_inside",
               "box_foreground", "foreground_share"]


def crop(image: np.ndarray, box: Box) -> np.ndarray:
    """The box's pixels, clipped to the image: uint8 [y1 - y0, x1 - x0] (may be empty)."""
    _, x0, y0, x1, y1 = box
    h, w = image.shape[:2]
    return image[max(0, y0):min(h, y1), max(0, x0):min(w, x1)]


def foreground_mask(image: np.ndarray, block: int = FOREGROUND_BLOCK) -> np.ndarray:
    """bool [H, W]: pixels of blocks whose grey-level std marks ridges (block variance)."""
    img = image.astype(np.float32)
    h, w = img.shape
    hb, wb = -(-h // block), -(-w // block)
    padded = np.full((hb * block, wb * block), float(np.median(img)), np.float32)
    padded[:h, :w] = img
    blocks = padded.reshape(hb, block, wb, block)
    std = blocks.std(axis=(1, 3))
    top = max(float(std.max()), 1e-6)
    otsu, _ = cv2.threshold(np.round(std * 255 / top).astype(np.uint8), 0, 255,
                            cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    threshold = max(FOREGROUND_MIN_STD, float(otsu) * top / 255)
    mask = np.repeat(np.repeat(std > threshold, block, 0), block, 1)
    return mask[:h, :w]


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (0 when they do not meet)."""
    ix = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    iy = max(0, min(a[4], b[4]) - max(a[2], b[2]))
    inter = ix * iy
    union = (a[3] - a[1]) * (a[4] - a[2]) + (b[3] - b[1]) * (b[4] - b[2]) - inter
    return inter / union if union > 0 else 0.0


def check_segments(sample_id: str, image: np.ndarray, boxes: list[Box]
                   ) -> tuple[dict, list[dict]]:
    """(one row for the slap, one row per box) of the checks in the module docstring."""
    h, w = image.shape[:2]
    fg = foreground_mask(image)
    in_any = np.zeros_like(fg)
    per_box = []
    total = max(int(fg.sum()), 1)
    for box in boxes:
        pos, x0, y0, x1, y1 = box
        inside = 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        sub = fg[max(0, y0):min(h, y1), max(0, x0):min(w, x1)]
        in_any[max(0, y0):min(h, y1), max(0, x0):min(w, x1)] = True
        per_box.append({"sample_id": sample_id, "segment_position": pos, "x0": x0, "y0": y0,
                        "x1": x1, "y1": y1, "box_inside": inside,
                        "box_foreground": float(sub.mean()) if sub.size else 0.0,
                        "foreground_share": float(sub.sum()) / total})
    ious = [box_iou(a, b) for k, a in enumerate(boxes) for b in boxes[k + 1:]]
    slap = {"sample_id": sample_id, "width": w, "height": h, "n_segments": len(boxes),
            "positions": ",".join(str(b[0]) for b in boxes),
            "boxes_inside": all(r["box_inside"] for r in per_box),
            "max_iou": max(ious) if ious else 0.0,
            "foreground_pixels": int(fg.sum()),
            "foreground_in_boxes": float((fg & in_any).sum()) / total if fg.any() else float("nan")}
    return slap, per_box


def slap_thumbnail(image: np.ndarray, boxes: list[Box], height: int = 200) -> str:
    """Base64 PNG of the slap, scaled to ``height``, its boxes drawn and labelled."""
    colour = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    scale = height / image.shape[0]
    small = cv2.resize(colour, (max(1, round(image.shape[1] * scale)), height),
                       interpolation=cv2.INTER_AREA)
    for pos, x0, y0, x1, y1 in boxes:
        p0 = (int(round(x0 * scale)), int(round(y0 * scale)))
        p1 = (int(round(x1 * scale)) - 1, int(round(y1 * scale)) - 1)
        cv2.rectangle(small, p0, p1, (40, 40, 220), 2)
        cv2.putText(small, str(pos), (p0[0] + 4, p0[1] + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                    (40, 40, 220), 2, cv2.LINE_AA)
    ok, buf = cv2.imencode(".png", small)
    return base64.b64encode(buf.tobytes()).decode("ascii") if ok else ""
