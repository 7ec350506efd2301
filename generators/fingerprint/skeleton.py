"""Vectorised Zhang-Suen thinning and the crossing number of a binary ridge image.

Zhang and Suen, "A fast parallel algorithm for thinning digital patterns", CACM 1984.
Each sub-iteration deletes, all at once, the border pixels whose 8-neighbourhood passes the
sub-iteration's test; the test depends only on the 8 neighbours, so it is a 256-entry lookup
table indexed by the neighbourhood code (no Python loop over pixels).
"""
from __future__ import annotations

import cv2
import numpy as np

# neighbour order P2..P9 of Zhang-Suen: N, NE, E, SE, S, SW, W, NW as (dy, dx)
_NEIGHBOURS = ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))


def _bits(code: int) -> list[int]:
    return [(code >> i) & 1 for i in range(8)]


def _build_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    first = np.zeros(256, dtype=bool)
    second = np.zeros(256, dtype=bool)
    crossing = np.zeros(256, dtype=np.uint8)
    for code in range(256):
        p = _bits(code)                       # p[0] = P2 ... p[7] = P9
        b = sum(p)
        a = sum(1 for i in range(8) if p[i] == 0 and p[(i + 1) % 8] == 1)
        p2, p3, p4, p5, p6, p7, p8, p9 = p
        base = 2 <= b <= 6 and a == 1
        first[code] = base and p2 * p4 * p6 == 0 and p4 * p6 * p8 == 0
        second[code] = base and p2 * p4 * p8 == 0 and p2 * p6 * p8 == 0
        # crossing number (Rutovitz): half the number of 0/1 changes around the pixel
        crossing[code] = sum(abs(p[i] - p[(i + 1) % 8]) for i in range(8)) // 2
    return first, second, crossing


_FIRST, _SECOND, CROSSING_NUMBER = _build_tables()
_FIRST_U8, _SECOND_U8 = _FIRST.astype(np.uint8), _SECOND.astype(np.uint8)   # for cv2.LUT


# correlation kernel whose response at a pixel is its neighbourhood code (bit i <-> P(i+2))
_CODE_KERNEL = np.zeros((3, 3), dtype=np.float32)
for _bit, (_dy, _dx) in enumerate(_NEIGHBOURS):
    _CODE_KERNEL[1 + _dy, 1 + _dx] = float(1 << _bit)


def neighbour_code(img: np.ndarray) -> np.ndarray:
    """8-neighbourhood code [H, W] uint8 of a 0/1 uint8 image (bit i = neighbour P(i+2)).

    One 3x3 correlation with powers of two (exact in 8 bits: the largest code is 255);
    pixels outside the image count as 0."""
    return cv2.filter2D(np.ascontiguousarray(img, dtype=np.uint8), cv2.CV_8U, _CODE_KERNEL,
                        borderType=cv2.BORDER_CONSTANT)


def thin(binary: np.ndarray, max_iterations: int = 30) -> np.ndarray:
    """One-pixel-wide skeleton [H, W] uint8 (0/1) of a boolean/0-1 ridge image."""
    img = (np.asarray(binary) > 0).astype(np.uint8)
    for _ in range(max_iterations):
        changed = False
        for table in (_FIRST_U8, _SECOND_U8):
            delete = cv2.LUT(neighbour_code(img), table) & img
            if delete.any():
                img -= delete
                changed = True
        if not changed:
            break
    return img
