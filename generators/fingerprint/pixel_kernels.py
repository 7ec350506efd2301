"""The generator's per-pixel arithmetic: each formula in numpy (or torch), and the same formula
fused in C.

An impression's ink and the optical sensor's grey levels are ~40 float32 operations per
pixel, and each iteration of ridge growth gathers, weighs and sums four filter responses per
pixel. numpy and torch run each operation as a pass over the whole canvas (800 KB a plane at
500 x 400): this arithmetic took 1.25 ms of a ~5 ms plain impression and ~6 ms of a ~50 ms
master; `native/pixel_kernels.c` does each formula in one pass, in 0.56 and ~4.5 ms (one
core, warm allocations, 2026-12-03). Both give the same
bits: the C code evaluates the expressions operation by operation in float32, without fused
multiply-adds (tests/test_pixel_kernels.py checks every function and every branch, and whole
masters and impressions with either backend).

The C library is built by `make install` (gcc, no Python headers needed) into
`native/libpixel_kernels.so` and loaded with ctypes. Without it, or with
BIOMINT_PIXEL_KERNELS=numpy, the numpy formulas run: the same images, only slower.
`backend()` says which one runs.

The formulas are the model's (impression.ink_layer, sensors.optical_image and
ridge_growth.grow_ridges, where the comments explain them); the functions here take planes
and constants only.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import warnings
from pathlib import Path

import numpy as np

LIBRARY = Path(__file__).with_name("native") / "libpixel_kernels.so"
KERNELS_VERSION = 1          # bm_kernels_version() of the C file this module was written for
GRAIN_SCALE = 1.0 / 73.9     # sd of a uniform byte: sqrt((256^2 - 1) / 12) (sensors._grain)

_f32, _ptr, _int, _size = ctypes.c_float, ctypes.c_void_p, ctypes.c_int, ctypes.c_ssize_t
_SIGNATURES = {
    "bm_ink_core": [_int, _int, _ptr, _ptr, _size, _ptr, _size, _ptr, _size, _ptr, _ptr, _ptr,
                    _f32, _f32, _int, _f32, _f32, _ptr],
    "bm_ink_finish": [_size, _ptr, _ptr, _ptr, _ptr, _f32, _ptr, _ptr],
    "bm_optical_grey": [_size, _ptr, _f32, _ptr, _ptr, _ptr, _f32, _ptr, _f32, _f32, _f32, _f32, _f32, _ptr],
    "bm_add_rolled_grain_to_bytes": [_int, _int, _ptr, _ptr, _f32, _f32, _int, _int, _ptr],
    "bm_growth_step": [_int, _size, _ptr, _ptr, _ptr, _f32, _f32, _ptr, _ptr, _ptr],
}


def _load() -> ctypes.CDLL | None:
    choice = os.environ.get("BIOMINT_PIXEL_KERNELS", "native")
    if choice not in ("native", "numpy"):
        warnings.warn(f"BIOMINT_PIXEL_KERNELS={choice!r} is neither 'native' nor 'numpy'; using 'native'",
                      RuntimeWarning, stacklevel=2)
    if choice == "numpy" or not LIBRARY.exists():
        return None
    try:
        lib = ctypes.CDLL(str(LIBRARY))
    except OSError as error:       # e.g. built on another architecture, on a shared file system
        warnings.warn(f"{LIBRARY} does not load ({error}); run `make install` on this machine "
                      "(the numpy formulas run meanwhile: same images, slower)", RuntimeWarning, stacklevel=2)
        return None
    lib.bm_kernels_version.restype = ctypes.c_int
    if lib.bm_kernels_version() != KERNELS_VERSION:
        warnings.warn(f"{LIBRARY} is from another version of pixel_kernels.c; run `make install` to rebuild it "
                      "(the numpy formulas run meanwhile: same images, slower)", RuntimeWarning, stacklevel=2)
        return None
    for name, argtypes in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = argtypes, None
    return lib


_LIB = _load()
_use_native = _LIB is not None


def backend() -> str:
    """"native" when the C kernels run, "numpy" otherwise."""
    return "native" if _use_native else "numpy"


@contextlib.contextmanager
def numpy_backend(enabled: bool = True):
    """Run the numpy formulas inside the block (the reference the C kernels are tested against);
    with enabled=False the block keeps the backend it has (for alternating comparisons)."""
    global _use_native
    before = _use_native
    _use_native = before and not enabled
    try:
        yield
    finally:
        _use_native = before


def _address(a: np.ndarray, dtype, h: int, w: int) -> tuple[int, int]:
    """The plane's address and row stride in elements, after checking what C will read: the
    dtype, the shape and unit steps along rows (a crop of a wider plane is fine)."""
    if a.dtype != dtype or a.shape != (h, w) or (w > 1 and a.strides[1] != a.itemsize):
        raise ValueError(f"expected a [{h}, {w}] {np.dtype(dtype).name} plane with contiguous rows, "
                         f"got {a.dtype} {a.shape} strides {a.strides}")
    return a.ctypes.data, a.strides[0] // a.itemsize


def _contiguous(a: np.ndarray | None, dtype, h: int, w: int) -> int | None:
    if a is None:
        return None
    address, stride = _address(a, dtype, h, w)
    if stride != w:
        raise ValueError(f"expected a contiguous [{h}, {w}] plane, got strides {a.strides}")
    return address


def ink_core(touch_noise: np.ndarray, rim: np.ndarray, finger: np.ndarray, drift: np.ndarray, field: np.ndarray,
             fine: np.ndarray, rough: np.ndarray, thr0: float, break_amount: float, dry_gain: float | None,
             inv_width: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(touch, fade, ink) [H, W] float32 of impression.ink_layer, before sweat bridges:

        touch = clip(0.25 touch_noise + rim, 0, 1) clip(finger, 0, 1)
        fade  = clip(1.6 touch - 0.2, 0, 1)
        threshold = (drift + thr0) + break_amount (0.8 rough + 0.6 fine)
                    [+ dry_gain |fine| unless dry_gain is None] + 1.2 (1 - fade)
        ink   = clip((field - threshold) inv_width + 0.5, 0, 1)

    touch_noise, field, fine and rough must be contiguous and are consumed (touch is
    touch_noise's array, ink is field's); rim, finger and drift may be row crops."""
    if not _use_native:
        return _ink_core_numpy(touch_noise, rim, finger, drift, field, fine, rough, thr0, break_amount, dry_gain,
                               inv_width)
    h, w = field.shape
    f32 = np.float32
    rim_p, rim_s = _address(rim, f32, h, w)
    finger_p, finger_s = _address(finger, f32, h, w)
    drift_p, drift_s = _address(drift, f32, h, w)
    fade = np.empty((h, w), dtype=f32)
    tn, fd = _contiguous(touch_noise, f32, h, w), _contiguous(field, f32, h, w)
    _LIB.bm_ink_core(h, w, tn, rim_p, rim_s, finger_p, finger_s, drift_p, drift_s, fd,
                     _contiguous(fine, f32, h, w), _contiguous(rough, f32, h, w), thr0, break_amount,
                     int(dry_gain is not None), 0.0 if dry_gain is None else dry_gain, inv_width, fade.ctypes.data)
    return touch_noise, fade, field


def _ink_core_numpy(touch_noise, rim, finger, drift, field, fine, rough, thr0, break_amount, dry_gain, inv_width):
    # in place throughout: the same float32 operations without a temporary array each
    touch = touch_noise
    touch *= 0.25
    touch += rim
    np.clip(touch, 0.0, 1.0, out=touch)
    touch *= np.clip(finger, 0.0, 1.0)
    fade = touch * 1.6
    fade -= 0.2
    np.clip(fade, 0.0, 1.0, out=fade)
    rough *= 0.8
    rough += 0.6 * fine
    rough *= break_amount
    # a contiguous array from here on: in-place arithmetic on the cropped view ran numpy's
    # strided loop, twice the time per operation (same bits either way)
    threshold = np.add(drift, thr0)
    threshold += rough
    if dry_gain is not None:
        grains = np.abs(fine)
        grains *= dry_gain
        threshold += grains
    rim_thinning = np.subtract(1.0, fade, dtype=np.float32)
    rim_thinning *= 1.2
    threshold += rim_thinning
    ink = np.subtract(field, threshold, out=field)
    ink *= inv_width
    ink += 0.5
    np.clip(ink, 0.0, 1.0, out=ink)
    return touch, fade, ink


def ink_finish(ink: np.ndarray, fade: np.ndarray, spread: np.ndarray | None, bridge_noise: np.ndarray | None,
               bridge0: float, lost: np.ndarray | None, smear: np.ndarray | None) -> np.ndarray:
    """impression.ink_layer's ink after sweat bridges and spots, in place on `ink` (returned):

        [spread]  ink = max(ink, 1.4 spread clip(bridge_noise + bridge0 - 1, 0, 1))
                  ink = ink sqrt(fade)
        [lost]    ink = ink (1 - lost)
        [smear]   ink = max(ink, 0.85 smear fade)      (only with lost)
                  ink = clip(ink, 0, 1)

    bridge_noise, lost and smear are consumed; all planes contiguous."""
    if smear is not None and lost is None:
        raise ValueError("a smear comes with the lost-ink layer of the same spots")
    if (spread is None) != (bridge_noise is None):
        raise ValueError("spread and bridge_noise come together")
    if not _use_native:
        return _ink_finish_numpy(ink, fade, spread, bridge_noise, bridge0, lost, smear)
    h, w = ink.shape
    f32 = np.float32
    _LIB.bm_ink_finish(ink.size, _contiguous(ink, f32, h, w), _contiguous(fade, f32, h, w),
                       _contiguous(spread, f32, h, w), _contiguous(bridge_noise, f32, h, w), bridge0,
                       _contiguous(lost, f32, h, w), _contiguous(smear, f32, h, w))
    return ink


def _ink_finish_numpy(ink, fade, spread, bridge_noise, bridge0, lost, smear):
    if spread is not None:
        bridges = bridge_noise
        bridges += bridge0
        bridges -= 1.0
        np.clip(bridges, 0.0, 1.0, out=bridges)
        spread = spread * bridges
        spread *= 1.4
        np.maximum(ink, spread, out=ink)
    ink *= np.sqrt(fade)
    if lost is not None:
        kept = np.subtract(1.0, lost, out=lost)
        ink *= kept
        if smear is not None:
            smear *= fade
            smear *= 0.85
            np.maximum(ink, smear, out=ink)
    np.clip(ink, 0.0, 1.0, out=ink)
    return ink


def grain_field(grain_bytes: np.ndarray) -> np.ndarray:
    """Zero-mean, unit-variance float32 white noise from uniform bytes (sensors._grain)."""
    grain = grain_bytes.astype(np.float32)
    grain -= 127.5
    grain *= GRAIN_SCALE
    return grain


def optical_grey(texture_noise: np.ndarray, texture_amount: float, ink: np.ndarray, shade: np.ndarray,
                 grain_bytes: np.ndarray, residue_noise: np.ndarray, residue0: float, residue_gain: float,
                 background: float, contrast: float, grain_gain: float) -> np.ndarray:
    """sensors.optical_image's grey levels [H, W] float32 before the lens blur:

        contact = clip((texture_amount texture_noise + 1) ink, 0, 1) (1.8 - 0.8 contact)
        grey    = (shade + background) - residue_gain max(residue_noise - residue0, 0)
                  - contrast contact - grain_gain contact grain_field(grain_bytes)

    texture_noise and residue_noise are consumed; all planes contiguous."""
    if not _use_native:
        return _optical_grey_numpy(texture_noise, texture_amount, ink, shade, grain_bytes, residue_noise, residue0,
                                   residue_gain, background, contrast, grain_gain)
    h, w = ink.shape
    f32 = np.float32
    grey = np.empty((h, w), dtype=f32)
    _LIB.bm_optical_grey(ink.size, _contiguous(texture_noise, f32, h, w), texture_amount,
                         _contiguous(ink, f32, h, w), _contiguous(shade, f32, h, w),
                         _contiguous(grain_bytes, np.uint8, h, w), GRAIN_SCALE,
                         _contiguous(residue_noise, f32, h, w), residue0, residue_gain, background, contrast,
                         grain_gain, grey.ctypes.data)
    return grey


def _optical_grey_numpy(texture_noise, texture_amount, ink, shade, grain_bytes, residue_noise, residue0,
                        residue_gain, background, contrast, grain_gain):
    contact = texture_noise
    contact *= texture_amount
    contact += 1.0
    contact *= ink
    np.clip(contact, 0.0, 1.0, out=contact)
    lift = contact * 0.8
    np.subtract(1.8, lift, out=lift)
    contact *= lift
    grey = shade + background
    residue = residue_noise
    residue -= residue0
    np.maximum(residue, 0.0, out=residue)
    residue *= residue_gain
    grey -= residue
    np.multiply(contact, contrast, out=lift)
    grey -= lift
    np.multiply(contact, grain_gain, out=lift)
    lift *= grain_field(grain_bytes)
    grey -= lift
    return grey


def add_rolled_grain_to_bytes(grey: np.ndarray, grain_bytes: np.ndarray, noise_scale: float, dy: int, dx: int
                              ) -> np.ndarray:
    """to_bytes(grey + noise_scale np.roll(grain_field(grain_bytes), (dy, dx), axis=(0, 1))), uint8
    [H, W]; grey (contiguous) is consumed."""
    h, w = grey.shape
    if not (0 <= dy < h and 0 <= dx < w):
        raise ValueError(f"shift ({dy}, {dx}) outside the [{h}, {w}] canvas")
    if not _use_native:
        _add_shifted(grey, grain_field(grain_bytes), noise_scale, dy, dx)
        return to_bytes(grey)
    out = np.empty((h, w), dtype=np.uint8)
    _LIB.bm_add_rolled_grain_to_bytes(h, w, _contiguous(grey, np.float32, h, w),
                                      _contiguous(grain_bytes, np.uint8, h, w), GRAIN_SCALE, noise_scale, dy, dx,
                                      out.ctypes.data)
    return out


def _add_shifted(grey: np.ndarray, field: np.ndarray, scale: float, dy: int, dx: int) -> None:
    """grey += scale * np.roll(field, (dy, dx), axis=(0, 1)), in place and by quadrants: the
    same float32 products and sums without the rolled copy. The quadrants are added by
    OpenCV, which runs its vector loop along each row of a strided view (numpy's strided
    loop cost 2.4x: 153 against 65 us a 500 x 400 canvas, measured); the float32 sums are the
    same to the bit."""
    import cv2

    h, w = field.shape
    scaled = np.multiply(field, scale, dtype=np.float32)
    for (gy, fy) in ((slice(dy, h), slice(0, h - dy)), (slice(0, dy), slice(h - dy, h))):
        for (gx, fx) in ((slice(dx, w), slice(0, w - dx)), (slice(0, dx), slice(w - dx, w))):
            quadrant = grey[gy, gx]
            if quadrant.size:
                cv2.add(quadrant, scaled[fy, fx], dst=quadrant)


def to_bytes(grey: np.ndarray) -> np.ndarray:
    """clip(rint(grey), 0, 255) as uint8 (rounding half to even); grey is consumed. (numpy
    only: a C pass measured no faster, 48 against 43 us at 500 x 400, as it is all memory.)"""
    np.rint(grey, out=grey)
    np.clip(grey, 0.0, 255.0, out=grey)
    return grey.astype(np.uint8)


def growth_step(responses, flat, weights, gain: float, bias: float, previous, count_changes: bool):
    """One iteration of ridge_growth.grow_ridges after its convolution (torch tensors):

        new = clip(gain sum_k responses[flat[:, k]] weights[:, k] - bias, -1, 1)   [B, 1, H, W]

    the four weighted responses summed in order, and, when count_changes, the fraction [B] of
    each sample's pixels whose sign differs from `previous`'s. The C kernel runs for
    contiguous float32 tensors on the CPU; others (CUDA) run the torch formula."""
    import torch

    b, _, h, w = weights.shape
    if not (_use_native and responses.device.type == "cpu" and previous.device.type == "cpu"
            and responses.dtype == weights.dtype == previous.dtype == torch.float32 and flat.dtype == torch.int64
            and flat.numel() == weights.numel() and tuple(previous.shape) == (b, 1, h, w)
            and responses.is_contiguous() and flat.is_contiguous() and weights.is_contiguous()
            and previous.is_contiguous()):
        chosen = responses.view(-1).index_select(0, flat).view(b, 4, h, w).mul_(weights)
        # the four weighted responses summed in order, as sum(1) adds them (same bits), without
        # its strided reduction
        new = chosen[:, 0:1] + chosen[:, 1:2]
        new += chosen[:, 2:3]
        new += chosen[:, 3:4]
        new.mul_(gain).sub_(bias).clamp_(-1.0, 1.0)
        changed = ((new > 0) != (previous > 0)).float().mean(dim=(1, 2, 3)) if count_changes else None
        return new, changed
    new = torch.empty_like(previous)
    counts = torch.zeros(b, dtype=torch.int64) if count_changes else None
    _LIB.bm_growth_step(b, h * w, responses.data_ptr(), flat.data_ptr(), weights.data_ptr(), gain, bias,
                        previous.data_ptr(), new.data_ptr(), None if counts is None else counts.data_ptr())
    # torch's mean of the 0/1 floats: their sum is exact (fewer than 2^24 pixels), then divided
    return new, None if counts is None else counts.float().div_(h * w)

