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


# once a sub-iteration deletes fewer than this fraction of the pixels, thinning goes sparse
SPARSE_BELOW = 0.02


def thin(binary: np.ndarray, max_iterations: int = 30) -> np.ndarray:
    """One-pixel-wide skeleton [H, W] uint8 (0/1) of a boolean/0-1 ridge image.

    The first iterations delete most border pixels everywhere and run on the whole image;
    after them a few pixels go per sub-iteration for a dozen more (a ridge's last staircase
    steps), and a pixel's test depends only on its 8 neighbours: the same test on the same
    neighbourhood gives the same answer. So from then on only the pixels next to a deletion
    since that sub-iteration's test last ran are tested again. The skeleton is the one the
    whole-image iteration gives, pixel for pixel (tests/test_skeleton.py); on a 600x600
    master it costs a fifth of it."""
    img = (np.asarray(binary) > 0).astype(np.uint8)
    sparse_below = SPARSE_BELOW * img.size
    for done in range(max_iterations):
        deleted = []           # this iteration's deletion masks, first and second sub-iteration
        for table in (_FIRST_U8, _SECOND_U8):
            delete = cv2.LUT(neighbour_code(img), table) & img
            img -= delete
            deleted.append(delete)
        counts = [np.count_nonzero(mask) for mask in deleted]
        if not any(counts):
            return img
        if max(counts) < sparse_below:
            return _thin_sparse(img, deleted, max_iterations - done - 1)
    return img


def _thin_sparse(img: np.ndarray, last: list[np.ndarray], iterations: int) -> np.ndarray:
    """Continue Zhang-Suen on `img` for at most `iterations` iterations, testing only the
    neighbours of recent deletions. `last` holds the deletion masks of the last first and
    second sub-iterations, in that order."""
    h, w = img.shape
    stride = w + 4
    # two pixels of zeros around the image: candidates are within one pixel of the image and
    # their neighbours within two, so every gather stays inside; padding is never deleted
    padded = np.zeros((h + 4, stride), dtype=np.uint8)
    padded[2:-2, 2:-2] = img
    flat = padded.reshape(-1)
    bit_offsets = np.array([dy * stride + dx for dy, dx in _NEIGHBOURS], dtype=np.int64)
    block = np.array([dy * stride + dx for dy in (-1, 0, 1) for dx in (-1, 0, 1)], dtype=np.int64)

    def padded_index(mask: np.ndarray) -> np.ndarray:
        # flat index y w + x -> (y + 2) stride + x + 2; the 0/1 bytes seen as bool: numpy's
        # nonzero is 20x faster on bool than on uint8
        at = np.flatnonzero(mask.view(bool)).astype(np.int64)
        return at + (at // w) * 4 + 2 * stride + 2

    # changes since each table's test last ran: both previous sub-iterations' deletions
    history = [padded_index(last[0]), padded_index(last[1])]
    weights = (1 << np.arange(8, dtype=np.int64))[None, :]
    for _ in range(iterations):
        changed = False
        for table in (_FIRST, _SECOND):
            since = np.concatenate(history)
            if not len(since):
                return padded[2:-2, 2:-2].copy()
            candidates = np.unique((since[:, None] + block[None, :]).ravel())
            candidates = candidates[flat[candidates] == 1]
            codes = (flat[candidates[:, None] + bit_offsets[None, :]].astype(np.int64) * weights).sum(1)
            gone = candidates[table[codes]]
            flat[gone] = 0           # all at once, after every test: Zhang-Suen's parallel step
            history = [history[1], gone]
            changed |= len(gone) > 0
        if not changed:
            break
    return padded[2:-2, 2:-2].copy()
