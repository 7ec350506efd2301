"""Zhang-Suen thinning: the sparse continuation gives the whole-image iteration's skeleton."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from generators.fingerprint import skeleton
from generators.fingerprint.skeleton import _FIRST_U8, _SECOND_U8, CROSSING_NUMBER, neighbour_code, thin


def whole_image_thin(binary: np.ndarray, max_iterations: int = 30) -> np.ndarray:
    """Zhang-Suen as the paper states it: every sub-iteration tests every pixel."""
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


def ridge_image(seed: int, shape=(300, 260), period: float = 9.0) -> np.ndarray:
    """Thresholded band-limited noise: ridge-like stripes with endings and forks, touching the border."""
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), period / 4.0)
    return noise > rng.uniform(-0.05, 0.05)


@pytest.mark.parametrize("seed", range(6))
def test_skeleton_equals_the_whole_image_iteration(seed):
    image = ridge_image(seed)
    assert np.array_equal(thin(image), whole_image_thin(image))


def test_the_sparse_phase_is_what_runs_and_it_still_agrees(monkeypatch):
    # sparse from the first iteration on: every later sub-iteration tests only the
    # neighbours of recent deletions, and thick blobs need many iterations
    image = np.zeros((120, 140), dtype=bool)
    cv2.circle(image.view(np.uint8), (40, 50), 25, 1, -1)
    cv2.rectangle(image.view(np.uint8), (80, 10), (130, 100), 1, -1)
    image |= ridge_image(7, shape=(120, 140))
    calls = []
    real = skeleton._thin_sparse
    monkeypatch.setattr(skeleton, "SPARSE_BELOW", 1.0)
    monkeypatch.setattr(skeleton, "_thin_sparse", lambda *a: calls.append(a[2]) or real(*a))
    assert np.array_equal(thin(image), whole_image_thin(image))
    assert calls == [29]


@pytest.mark.parametrize("cap", [1, 2, 3, 5])
def test_an_iteration_cap_stops_both_the_same(monkeypatch, cap):
    monkeypatch.setattr(skeleton, "SPARSE_BELOW", 1.0)
    image = np.zeros((80, 80), dtype=bool)
    image[10:70, 15:65] = True          # 50 px wide: ~25 iterations to thin
    capped = thin(image, max_iterations=cap)
    assert np.array_equal(capped, whole_image_thin(image, max_iterations=cap))
    assert capped.sum() > thin(image).sum()


def test_skeleton_is_one_pixel_wide_and_keeps_ridge_topology():
    image = ridge_image(11)
    skel = thin(image)
    assert skel.dtype == np.uint8 and set(np.unique(skel)) <= {0, 1}
    assert not (skel & ~image.astype(np.uint8)).any()           # only ridge pixels remain
    # no 2x2 block of skeleton: one pixel wide
    blocks = skel[:-1, :-1] & skel[1:, :-1] & skel[:-1, 1:] & skel[1:, 1:]
    assert not blocks.any()
    # every ridge keeps a skeleton (Zhang-Suen erases only specks: a 2x2 square goes whole)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(image.astype(np.uint8), connectivity=8)
    ridges = {k for k in range(1, n) if stats[k, cv2.CC_STAT_AREA] >= 12}
    assert len(ridges) > 20
    assert ridges <= set(np.unique(labels[skel == 1]))
    cn = CROSSING_NUMBER[neighbour_code(skel)][skel == 1]
    assert ((cn == 1) | (cn == 3)).sum() > 10                   # endings and forks are there


def test_empty_and_full_images():
    assert not thin(np.zeros((5, 7), dtype=bool)).any()
    full = np.ones((9, 9), dtype=bool)
    assert np.array_equal(thin(full), whole_image_thin(full))
