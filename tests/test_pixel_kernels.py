"""The fused C kernels compute the generator's per-pixel formulas to the bit, as numpy and torch
do (generators/fingerprint/pixel_kernels.py), for every branch; whole masters and impressions
are the same bytes with either backend; and bad planes are refused before C reads them."""
from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import pytest
import torch

from generators.fingerprint import (FingerprintSettings, make_impression, make_master, make_rolled_impression,
                                    make_slap, with_difficulty)
from generators.fingerprint import pixel_kernels as pk

H, W = 61, 47          # odd sizes: vector loops' remainders are exercised
native_only = pytest.mark.skipif(os.environ.get("BIOMINT_PIXEL_KERNELS") == "numpy",
                                 reason="BIOMINT_PIXEL_KERNELS=numpy asks for the numpy formulas")


def _planes(rng, n, lo=-1.5, hi=1.5, shape=(H, W)):
    return [rng.uniform(lo, hi, shape).astype(np.float32) for _ in range(n)]


def _both(fn, make_args):
    """fn's results with the C kernel and with the numpy formula, each on fresh copies of the
    same inputs (the functions consume some of theirs)."""
    native = fn(*make_args())
    with pk.numpy_backend():
        reference = fn(*make_args())
    return native, reference


def _same(a, b):
    a, b = (a if isinstance(a, tuple) else (a,)), (b if isinstance(b, tuple) else (b,))
    assert len(a) == len(b)
    for x, y in zip(a, b):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert np.array_equal(x, y), f"{np.count_nonzero(x != y)} of {x.size} values differ"


@native_only
def test_make_install_builds_the_kernels_and_they_load():
    assert pk.LIBRARY.exists(), "run `make install`: it builds native/libpixel_kernels.so"
    assert pk.backend() == "native"
    with pk.numpy_backend():
        assert pk.backend() == "numpy"
    assert pk.backend() == "native"


@native_only
@pytest.mark.parametrize("dry_gain", [None, 0.41])
def test_ink_core_equals_its_numpy_formula_on_cropped_planes(dry_gain):
    rng = np.random.default_rng(1)
    wide = _planes(rng, 3, shape=(H + 16, W + 16))            # rim, finger, drift: row crops, as dense() gives
    contiguous = _planes(rng, 4)

    def args():
        tn, field, fine, rough = (p.copy() for p in contiguous)
        rim, finger, drift = (p[8:8 + H, 8:8 + W] for p in wide)
        return tn, rim, finger, drift, field, fine, rough, 0.18 - 0.45 * 0.3, 0.27, dry_gain, 1.0 / 0.35

    native, reference = _both(pk.ink_core, args)
    _same(native, reference)
    touch, fade, ink = native
    assert 0.0 < ink.mean() < 1.0 and 0.0 < fade.mean() < 1.0 and ink.min() == 0.0 and ink.max() == 1.0


@native_only
@pytest.mark.parametrize("wet, spots, smear", [(False, False, False), (True, False, False), (False, True, False),
                                               (False, True, True), (True, True, True)])
def test_ink_finish_equals_its_numpy_formula_for_every_layer_combination(wet, spots, smear):
    rng = np.random.default_rng(2)
    ink, fade, spread, bridges, lost, smeared = _planes(rng, 6, 0.0, 1.2)

    def args():
        return (ink.copy(), fade.copy(), spread.copy() if wet else None, bridges.copy() if wet else None, 0.37,
                lost.copy() if spots else None, smeared.copy() if smear else None)

    _same(*_both(pk.ink_finish, args))


def test_ink_finish_refuses_a_smear_without_its_spots_and_a_spread_without_bridges():
    ink, fade, other = _planes(np.random.default_rng(3), 3, 0.0, 1.0)
    with pytest.raises(ValueError, match="smear comes with the lost-ink layer"):
        pk.ink_finish(ink, fade, None, None, 0.0, None, other)
    with pytest.raises(ValueError, match="spread and bridge_noise come together"):
        pk.ink_finish(ink, fade, other, None, 0.0, None, None)


@native_only
def test_optical_grey_equals_its_numpy_formula():
    rng = np.random.default_rng(4)
    texture, ink, shade, residue = _planes(rng, 4, -2.0, 2.0)
    grain = rng.integers(0, 256, (H, W), dtype=np.uint8)

    def args():
        return texture.copy(), 0.33, ink, shade, grain, residue.copy(), 1.1, 7.5, 241.3, 217.9, 9.4

    native, reference = _both(pk.optical_grey, args)
    _same(native, reference)
    assert native.std() > 1.0


@native_only
@pytest.mark.parametrize("dy, dx", [(30, 15), (0, 15), (30, 0), (0, 0), (1, W - 1), (H - 1, 1)])
def test_the_rolled_camera_grain_and_rounding_equal_numpy_for_any_shift(dy, dx):
    rng = np.random.default_rng(5)
    grey = rng.uniform(-20.0, 280.0, (H, W)).astype(np.float32)
    grain = rng.integers(0, 256, (H, W), dtype=np.uint8)
    native, reference = _both(pk.add_rolled_grain_to_bytes, lambda: (grey.copy(), grain, 3.7, dy, dx))
    _same(native, reference)
    with pytest.raises(ValueError, match="outside"):
        pk.add_rolled_grain_to_bytes(grey.copy(), grain, 1.0, H, 0)


@native_only
def test_the_camera_grain_is_rounded_half_to_even_and_saturated_as_numpy():
    ties = np.array([-3.0, -0.5, 0.5, 1.5, 2.5, 127.5, 128.5, 254.5, 255.5, 300.0, 0.49999997, 253.50002],
                    dtype=np.float32)
    grey = np.resize(ties, (H, W)).astype(np.float32)
    zero = np.full((H, W), 128, np.uint8)       # grain (128 - 127.5) / 73.9, scaled to ~0
    native, reference = _both(pk.add_rolled_grain_to_bytes, lambda: (grey.copy(), zero, 1e-9, 0, 0))
    _same(native, reference)
    assert list(native.ravel()[:10]) == [0, 0, 0, 2, 2, 128, 128, 254, 255, 255]


@native_only
@pytest.mark.parametrize("count_changes", [False, True])
def test_the_growth_step_equals_torch_on_a_real_tiling(count_changes):
    from generators.fingerprint.ridge_growth import tile_pairs

    rng = np.random.default_rng(6)
    b, h, w, n_channels, tile = 2, 45, 38, 12, 16
    index = torch.from_numpy(rng.integers(0, n_channels, (b, 4, h, w)))
    weights = torch.from_numpy(rng.uniform(0.0, 1.0, (b, 4, h, w)).astype(np.float32))
    previous = torch.from_numpy(rng.uniform(-1.0, 1.0, (b, 1, h, w)).astype(np.float32))
    pair_tile, _, flat = tile_pairs(index, n_channels, (tile, tile))
    responses = torch.from_numpy(rng.uniform(-0.8, 0.8, (1, len(pair_tile), tile, tile)).astype(np.float32))
    native, reference = _both(pk.growth_step, lambda: (responses, flat, weights, 2.0, 0.07, previous, count_changes))
    assert torch.equal(native[0], reference[0])
    if count_changes:
        assert torch.equal(native[1], reference[1]) and 0.1 < float(native[1].min()) < 0.9
    else:
        assert native[1] is None and reference[1] is None


def test_planes_of_the_wrong_type_shape_or_layout_are_refused_before_c_reads_them():
    f = np.zeros((H, W), np.float32)
    with pytest.raises(ValueError, match="float32 plane with contiguous rows.*float64"):
        pk._address(np.zeros((H, W)), np.float32, H, W)
    with pytest.raises(ValueError, match=r"\[61, 47\].*\(61, 46\)"):
        pk._address(f[:, :-1], np.float32, H, W)
    with pytest.raises(ValueError, match="contiguous rows"):
        pk._address(np.zeros((H, 2 * W), np.float32)[:, ::2], np.float32, H, W)
    with pytest.raises(ValueError, match="contiguous"):
        pk._contiguous(np.zeros((H + 4, W + 4), np.float32)[2:-2, 2:-2], np.float32, H, W)
    assert pk._address(np.zeros((H + 4, W + 4), np.float32)[2:-2, 2:-2], np.float32, H, W)[1] == W + 4


def test_a_library_that_does_not_load_or_a_misspelt_choice_is_said_in_a_warning(monkeypatch, tmp_path):
    broken = tmp_path / "libpixel_kernels.so"
    broken.write_bytes(b"not an ELF file")
    monkeypatch.delenv("BIOMINT_PIXEL_KERNELS", raising=False)
    monkeypatch.setattr(pk, "LIBRARY", broken)
    with pytest.warns(RuntimeWarning, match="does not load.*run `make install` on this machine"):
        assert pk._load() is None
    monkeypatch.setattr(pk, "LIBRARY", tmp_path / "absent.so")
    monkeypatch.setenv("BIOMINT_PIXEL_KERNELS", "nummpy")
    with pytest.warns(RuntimeWarning, match="'nummpy' is neither 'native' nor 'numpy'"):
        pk._load()


def test_a_library_of_another_version_is_not_used(monkeypatch):
    if not pk.LIBRARY.exists():
        pytest.skip("the library is not built")
    monkeypatch.delenv("BIOMINT_PIXEL_KERNELS", raising=False)
    monkeypatch.setattr(pk, "KERNELS_VERSION", pk.KERNELS_VERSION + 1)
    with pytest.warns(RuntimeWarning, match="another version of pixel_kernels.c; run `make install`"):
        assert pk._load() is None


@native_only
def test_whole_masters_and_impressions_are_the_same_bytes_with_either_backend():
    """Every sensor and impression type, with the wet, dry, spotted and smeared branches seen."""
    base = with_difficulty(FingerprintSettings(), 0.8)

    def mint():
        masters = {p: make_master(base, p, np.random.default_rng(40 + p)) for p in (2, 3, 4, 5)}
        out = [m.surface for m in masters.values()]
        params = []
        for sensor in ("optical", "capacitive", "ink"):
            s = replace(base, sensor=sensor)
            for k in range(8):
                easy_or_hard = with_difficulty(s, 0.8 if k % 2 else 0.0)
                imp = make_impression(masters[2 + k % 4], easy_or_hard, np.random.default_rng(k))
                out += [imp.image, imp.contact, imp.minutiae]
                params.append(imp.params)
            out.append(make_rolled_impression(masters[2], s, np.random.default_rng(9)).image)
            out.append(make_slap(masters, 13, s, np.random.default_rng(10)).image)
        return out, params

    native, params = mint()
    with pk.numpy_backend():
        reference, _ = mint()
    assert len(native) == len(reference)
    for a, b in zip(native, reference):
        assert a.tobytes() == b.tobytes()
    wet = [p["moisture"] + 0.3 * p["pressure"] > 0.35 for p in params]
    dry = [p["moisture"] < 0.0 for p in params]
    spots = [p["n_blobs"] + p["n_scratches"] > 0 for p in params]
    assert any(wet) and any(dry) and any(spots) and not all(spots)
