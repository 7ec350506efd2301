"""Specification of the fingerprint generator's public interface (generators.fingerprint)."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from generators.fingerprint import (FINGER_CLASSES, FingerprintSettings, make_impression, make_master,
                                    make_masters, with_difficulty)
from generators.fingerprint.distortion import ImpressionGeometry
from generators.fingerprint.orientation_field import poincare_index
from generators.fingerprint.skeleton import CROSSING_NUMBER, neighbour_code, thin

SETTINGS = FingerprintSettings()


@pytest.fixture(scope="module")
def master():
    return make_master(SETTINGS, 2, np.random.default_rng(7))


def test_same_seed_gives_the_same_master_and_impression_bytes(master):
    again = make_master(SETTINGS, 2, np.random.default_rng(7))
    assert again.ridges.tobytes() == master.ridges.tobytes()
    assert again.minutiae.tobytes() == master.minutiae.tobytes()
    a = make_impression(master, SETTINGS, np.random.default_rng(11))
    b = make_impression(again, SETTINGS, np.random.default_rng(11))
    assert a.image.tobytes() == b.image.tobytes()
    assert a.minutiae.tobytes() == b.minutiae.tobytes()
    assert a.params == b.params


def test_different_seeds_give_different_fingers(master):
    other = make_master(SETTINGS, 2, np.random.default_rng(8))
    assert other.ridges.tobytes() != master.ridges.tobytes()


def test_make_masters_on_cpu_is_byte_identical_to_make_master_one_by_one():
    positions, seeds = [1, 6], (21, 22)
    batch = make_masters(SETTINGS, positions, [np.random.default_rng(s) for s in seeds])
    for master, pos, seed in zip(batch, positions, seeds):
        single = make_master(SETTINGS, pos, np.random.default_rng(seed))
        assert master.finger_class == single.finger_class
        assert master.ridges.tobytes() == single.ridges.tobytes()
        assert master.minutiae.tobytes() == single.minutiae.tobytes()


def test_master_has_the_documented_shapes_and_a_realistic_ridge_pattern(master):
    hm, wm = SETTINGS.master_height, SETTINGS.master_width
    assert master.ridges.shape == (hm, wm) and master.ridges.dtype == np.float32
    assert master.mask.shape == (hm, wm)
    assert master.finger_class in FINGER_CLASSES
    inside = master.mask > 0.99
    ridge_fraction = (master.ridges[inside] > 0).mean()
    assert 0.35 < ridge_fraction < 0.65, "ridges and valleys should be about equally wide"
    assert 30 <= len(master.minutiae) <= 250
    assert set(np.unique(master.minutiae[:, 3])) <= {0.0, 1.0}


def test_impression_has_the_contract_shapes_and_the_same_param_keys_every_time(master):
    imps = [make_impression(master, with_difficulty(SETTINGS, d), np.random.default_rng(s))
            for s, d in ((1, 0.0), (2, 0.5), (3, 1.0))]
    keys = set(imps[0].params)
    for imp in imps:
        assert imp.image.shape == (SETTINGS.height, SETTINGS.width) and imp.image.dtype == np.uint8
        assert imp.minutiae.dtype == np.float32 and imp.minutiae.shape[1] == 4
        assert imp.orientation.shape == (SETTINGS.height // 8, SETTINGS.width // 8)
        assert imp.orientation.dtype == np.float32
        assert np.all((imp.orientation >= 0) & (imp.orientation < np.pi))
        assert set(imp.params) == keys
        assert all(isinstance(v, (int, float, str, bool)) for v in imp.params.values())
        json.dumps(imp.params)
        assert set(imp.singularities) == {"cores", "deltas"}
        assert np.all((imp.minutiae[:, 2] >= 0) & (imp.minutiae[:, 2] < 2 * np.pi))
    for name in ("finger_class", "rotation_deg", "dx", "dy", "distortion_rotation_deg", "moisture", "pressure"):
        assert name in keys


def test_custom_canvas_size_is_respected(master):
    small = FingerprintSettings(width=288, height=384)
    imp = make_impression(master, small, np.random.default_rng(3))
    assert imp.image.shape == (384, 288)
    assert imp.orientation.shape == (48, 36)


def test_higher_difficulty_gives_a_noisier_image(master):
    clean = make_impression(master, with_difficulty(SETTINGS, 0.0), np.random.default_rng(5))
    hard = make_impression(master, with_difficulty(SETTINGS, 1.0), np.random.default_rng(5))
    assert hard.params["noise_sigma"] > clean.params["noise_sigma"]
    contact = clean.contact & hard.contact
    # ridge/valley contrast inside the contact area drops as difficulty grows
    assert np.std(hard.image[contact]) < np.std(clean.image[contact])


def test_bad_settings_raise_value_error():
    with pytest.raises(ValueError):
        FingerprintSettings(difficulty=1.5)
    with pytest.raises(ValueError):
        FingerprintSettings(class_priors=(1.0, 0.0))
    with pytest.raises(ValueError):
        make_master(SETTINGS, 11, np.random.default_rng(0))
    with pytest.raises(ValueError):
        with_difficulty(SETTINGS, "legendary")


def test_impression_geometry_inverse_maps_canvas_points_back():
    geo = ImpressionGeometry(200.0, 250.0, 240.0, 300.0, np.deg2rad(12.0), 250.0, 290.0, 70.0, 110.0,
                             np.deg2rad(-3.5), 8.0, -5.0)
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 400, 200), rng.uniform(0, 500, 200)
    mx, my = geo.to_master(x, y)
    bx, by = geo.to_canvas(mx, my)
    assert np.max(np.hypot(bx - x, by - y)) < 1e-3


def test_newton_inversion_gives_the_bits_of_one_map_call_per_offset_at_any_shape():
    """invert_map evaluates the point and its two finite-difference offsets in one call; the
    map is elementwise, so the result is that of three calls per step, to the bit."""
    from generators.fingerprint.distortion import invert_map

    geo = ImpressionGeometry(200.0, 250.0, 240.0, 300.0, np.deg2rad(12.0), 250.0, 290.0, 70.0, 110.0,
                             np.deg2rad(-3.5), 8.0, -5.0)

    def three_calls(vx, vy, iterations=3, h=0.5):
        x, y = geo.rigid_to_canvas(vx, vy)
        for _ in range(iterations):
            (fx, fy), (ax, ay), (bx, by) = geo.to_master(x, y), geo.to_master(x + h, y), geo.to_master(x, y + h)
            j11, j21, j12, j22 = (ax - fx) / h, (ay - fy) / h, (bx - fx) / h, (by - fy) / h
            det, ex, ey = j11 * j22 - j12 * j21, fx - vx, fy - vy
            x, y = x - (j22 * ex - j12 * ey) / det, y - (-j21 * ex + j11 * ey) / det
        return x, y

    rng = np.random.default_rng(3)
    for shape in [(1,), (97,), (6, 5), ()]:
        vx, vy = rng.uniform(0, 400, shape), rng.uniform(0, 500, shape)
        got = invert_map(geo.to_master, geo.rigid_to_canvas, vx, vy, 3)
        want = three_calls(vx, vy)
        assert got[0].shape == shape and got[0].tobytes() == want[0].tobytes() and got[1].tobytes() == want[1].tobytes()


@pytest.mark.parametrize("h, w", [(500, 400), (750, 800), (97, 203)])
def test_block_orientation_is_np_gradient_of_the_map_to_the_bit(master, h, w):
    """_orientation_blocks writes out np.gradient's central differences over the image's
    blocks only; the angles are those of the whole-grid np.gradient formulation, cropped."""
    from generators.fingerprint.impression import ORIENTATION_BLOCK, _coarse_map, _orientation_blocks
    from generators.fingerprint.orientation_field import orientation_at

    b = ORIENTATION_BLOCK
    geo = ImpressionGeometry(w / 2, h / 2, 300.0, 300.0, np.deg2rad(9.0), 310.0, 290.0, 70.0, 110.0,
                             np.deg2rad(2.5), 6.0, -4.0)
    cx, cy = _coarse_map(geo, h, w)
    jxx, jxy = np.gradient(cx, b, axis=1), np.gradient(cx, b, axis=0)
    jyx, jyy = np.gradient(cy, b, axis=1), np.gradient(cy, b, axis=0)
    theta = orientation_at(master.layout, cx.astype(np.float64), cy.astype(np.float64))
    dx, dy = np.cos(theta), -np.sin(theta)
    det = jxx * jyy - jxy * jyx
    want = np.mod(np.arctan2(-(-jyx * dx + jxx * dy) / det, (jyy * dx - jxy * dy) / det), np.pi).astype(np.float32)
    got = _orientation_blocks(master, cx, cy, h, w)
    assert got.shape == (h // b, w // b) and got.flags.c_contiguous
    assert got.tobytes() == want[1:1 + h // b, 1:1 + w // b].tobytes()


def test_the_contact_fraction_is_the_masks_mean_to_the_last_bit():
    from generators.fingerprint.impression import true_fraction

    rng = np.random.default_rng(5)
    for shape in [(500, 400), (750, 800), (1000, 1600), (3, 7)]:
        for p in (0.0, 1e-4, 0.3, 0.77, 1.0):
            mask = rng.uniform(size=shape) < p
            assert true_fraction(mask) == float(mask.mean()) and isinstance(true_fraction(mask), float)


def test_plastic_distortion_leaves_the_contact_core_rigid_and_moves_the_outside_by_t():
    geo = ImpressionGeometry(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 50.0, 100.0, 0.0, 10.0, 0.0)
    x = np.array([0.0, 30.0, 200.0])
    mx, my = geo.to_master(x, np.zeros(3))
    assert np.allclose(mx[:2], x[:2]) and np.allclose(my, 0.0)      # inside U: identity
    assert np.isclose(mx[2], 210.0)                                  # outer region: rigid T


def _skeleton_minutiae_image(image: np.ndarray) -> np.ndarray:
    """Crossing-number minutiae of the image binarised against its local mean."""
    skel = thin(image < cv2.GaussianBlur(image, (0, 0), 8.0))
    cn = CROSSING_NUMBER[neighbour_code(skel)]
    return (skel == 1) & ((cn == 1) | (cn == 3))


def test_ground_truth_minutiae_follow_the_impression_transform(master):
    """A GT minutia moved by the impression's transform sits on a ridge ending/bifurcation of the
    impression's own skeleton. Even a clean impression has skin texture (ridge-edge breaks and
    bridges) that moves or removes some skeleton minutiae, so most, not all, must agree; a wrong
    transform would put the typical GT minutia half a ridge period (5 px) or more away (a GT
    set shifted by (7, -5) px scores a median of ~8.5 px and ~20 % within 6 px)."""
    imp = make_impression(master, with_difficulty(SETTINGS, 0.0), np.random.default_rng(4))
    assert len(imp.minutiae) >= 20
    xi = np.rint(imp.minutiae[:, 0]).astype(int)
    yi = np.rint(imp.minutiae[:, 1]).astype(int)
    assert np.all(imp.contact[yi, xi]), "GT minutiae outside the contact region must be dropped"
    found = _skeleton_minutiae_image(imp.image)
    ys, xs = np.nonzero(found)
    d = np.hypot(xs[None, :] - imp.minutiae[:, :1], ys[None, :] - imp.minutiae[:, 1:2]).min(1)
    assert np.median(d) <= 3.0
    assert np.mean(d <= 6.0) >= 0.65


def test_singular_points_follow_the_impression_transform():
    """The impression's core lands where the impression's own orientation field has a
    Poincare index of +1/2 (the field and the point are transformed independently)."""
    loops_only = FingerprintSettings(class_priors=(0.0, 0.0, 1.0, 0.0, 0.0))
    m = make_master(loops_only, 7, np.random.default_rng(3))
    imp = make_impression(m, with_difficulty(loops_only, 0.0), np.random.default_rng(9))
    assert len(imp.singularities["cores"]) == 1
    x, y = imp.singularities["cores"][0]
    bx, by = (x - 3.5) / 8.0, (y - 3.5) / 8.0           # block (i, j) is centred at 8 j + 3.5
    assert poincare_index(imp.orientation, bx, by, radius=3.0) == pytest.approx(0.5, abs=0.05)
    assert poincare_index(imp.orientation, bx - 12.0, by - 15.0, radius=3.0) == pytest.approx(0.0, abs=0.05)


@pytest.mark.gpu
def test_cuda_batch_matches_cpu_within_tolerance():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    seeds, positions = (31, 32, 33, 34), [1, 2, 3, 4]
    gpu = make_masters(SETTINGS, positions, [np.random.default_rng(s) for s in seeds], device="cuda")
    for m, pos, seed in zip(gpu, positions, seeds):
        cpu = make_master(SETTINGS, pos, np.random.default_rng(seed))
        assert m.finger_class == cpu.finger_class
        same_sign = np.mean((m.ridges > 0) == (cpu.ridges > 0))
        assert same_sign > 0.98


def test_rotation_turns_prints_and_minutia_angles_counter_clockwise_on_screen():
    rot = np.deg2rad(10.0)
    geo = ImpressionGeometry(200.0, 250.0, 240.0, 300.0, rot, 240.0, 300.0, 50.0, 100.0, 0.0, 0.0, 0.0)
    # a master point 100 px right of the centre, pointing along +x (ISO angle 0)
    x, y, a = geo.pose_to_canvas(np.array([340.0]), np.array([300.0]), np.array([0.0]))
    assert a[0] == pytest.approx(rot, abs=1e-6)
    assert x[0] == pytest.approx(200.0 + 100.0 * np.cos(rot), abs=1e-6)
    assert y[0] == pytest.approx(250.0 - 100.0 * np.sin(rot), abs=1e-6)   # y down: ccw moves it up


def test_bytes_do_not_depend_on_the_number_of_threads():
    """Dask workers may run with any torch/OpenCV thread count; the bytes must not change."""
    torch = pytest.importorskip("torch")
    threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    outputs = []
    try:
        for n in (1, 3):
            torch.set_num_threads(n)
            cv2.setNumThreads(n)
            m = make_master(SETTINGS, 5, np.random.default_rng(99))
            outputs.append((m.ridges.tobytes(), make_impression(m, SETTINGS, np.random.default_rng(98)).image.tobytes()))
    finally:
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv_threads)
    assert outputs[0] == outputs[1]


def test_points_riding_along_in_the_minutiae_solve_land_where_their_own_solve_puts_them():
    geo = ImpressionGeometry(canvas_cx=200.0, canvas_cy=250.0, finger_x=300.0, finger_y=310.0, rotation=0.3,
                             contact_x=290.0, contact_y=300.0, core_radius=60.0, transition=90.0,
                             distortion_rotation=0.12, distortion_dx=14.0, distortion_dy=-9.0)
    rng = np.random.default_rng(3)
    mx, my, angle = rng.uniform(100, 500, 40), rng.uniform(100, 500, 40), rng.uniform(0, 2 * np.pi, 40)
    points = rng.uniform(150, 450, (3, 2))
    x, y, a, mapped = geo.pose_to_canvas(mx, my, angle, points=points)
    alone = geo.pose_to_canvas(mx, my, angle)
    px, py = geo.to_canvas(points[:, 0], points[:, 1])
    assert np.array_equal(x, alone[0]) and np.array_equal(y, alone[1]) and np.array_equal(a, alone[2])
    assert np.array_equal(mapped, np.stack([px, py], 1))


def test_growth_by_tiles_gives_the_whole_bank_convolution_to_the_bit():
    """Each pixel needs 4 of the bank's filters, so growth filters each tile only with the
    filters its pixels use; the pattern must be the one the whole-bank convolution grows."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    from generators.fingerprint.ridge_growth import filter_weights, gabor_bank, grow_ridges

    rng = np.random.default_rng(5)
    h, w = 70, 93                                  # not a multiple of any tile size
    yy, xx = np.mgrid[0:h, 0:w]
    theta = np.mod(0.04 * xx + 0.03 * yy + 0.3 * np.sin(0.05 * yy), np.pi)
    period = 4.5 + 0.8 * (xx / w)
    periods = np.array([4.2, 5.4])
    bank = gabor_bank(8, periods, 11, 2.0)
    index, weights = (torch.from_numpy(a[None]) for a in filter_weights(theta, period, 8, periods))
    init = torch.from_numpy(rng.standard_normal((1, 1, h, w)).astype(np.float32))

    x = init
    for _ in range(4):                              # the definition, with the whole bank
        responses = F.conv2d(x, bank, padding=5)
        chosen = torch.gather(responses, 1, index)
        x = ((chosen * weights).sum(1, keepdim=True) * 2.0 - 0.1).clamp(-1.0, 1.0)
    for tile in (8, 16, 32, 128, None):             # None: tiles fitted to the image, 24 x 31
        grown, used = grow_ridges(init, index, weights, bank, min_iterations=4, max_iterations=4,
                                  tolerance=0.0, bias=0.1, tile=tile)
        assert int(used[0]) == 4
        assert torch.equal(grown, x), f"tile {tile}"


def test_fitted_tiles_cut_the_image_into_as_many_tiles_with_the_least_padding():
    from generators.fingerprint.ridge_growth import fitted_tile

    assert fitted_tile(300) == 30                   # 10 tiles, as 32 would need, none padded
    assert fitted_tile(320) == 32 and fitted_tile(20) == 20
    assert (fitted_tile(70), fitted_tile(93)) == (24, 31)
    for size in range(1, 400):
        t = fitted_tile(size)
        assert -(-size // t) == -(-size // 32) and t <= 32 and -(-size // t) * t - size < -(-size // t)
    with pytest.raises(ValueError, match="positive"):
        fitted_tile(0)


def test_the_master_is_the_grown_pattern_upsampled_bicubically():
    """The half-resolution growth comes back to full size by bicubic interpolation (OpenCV's,
    which is torch's align_corners=False bicubic to float rounding), clipped to [-1, 1]."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    import generators.fingerprint.master as master_module

    plan = master_module._plan(SETTINGS, 2, np.random.default_rng(11))
    half, used = master_module._grow(SETTINGS, [plan], "cpu")
    assert half.shape[-2:] == (SETTINGS.master_height // 2, SETTINGS.master_width // 2)
    made = master_module._finish(plan, half[0], int(used[0]))
    reference = F.interpolate(half, scale_factor=2, mode="bicubic", align_corners=False).clamp(-1.0, 1.0)
    assert made.ridges.shape == (SETTINGS.master_height, SETTINGS.master_width)
    np.testing.assert_allclose(made.ridges, reference[0, 0].numpy(), rtol=0, atol=2e-6)
    assert made.ridges.min() >= -1.0 and made.ridges.max() <= 1.0


@pytest.mark.parametrize("height,width,cell", [(500, 400, 18.0), (500, 400, 160.0), (800, 750, 40.0),
                                               (75, 80, 60.0), (37, 1000, 25.0),
                                               (800, 750, 18.0), (500, 400, 7.0)])   # these two: cv2.resize
def test_a_smooth_field_is_the_bicubic_upsampling_of_its_coarse_noise(height, width, cell):
    """Whichever way it is computed (OpenCV's resize or the two weight products), a smooth
    field is OpenCV's INTER_CUBIC upsampling of the coarse Gaussian grid drawn from the rng."""
    from generators.fingerprint.smooth_noise import coarse_shape, smooth_noise

    field = smooth_noise(np.random.default_rng(3), height, width, cell)
    coarse = np.random.default_rng(3).standard_normal(coarse_shape(height, width, cell)).astype(np.float32)
    reference = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    assert field.shape == (height, width) and field.dtype == np.float32 and field.flags["C_CONTIGUOUS"]
    # rounding only (a wrong weight would be off by ~0.1): OpenCV's own vector path for very
    # wide rows strays up to 1e-5 from its exact weights; the products stay within 6e-7 of them
    np.testing.assert_allclose(field, reference, rtol=0, atol=2e-5)
    assert 0.3 < float(field.std()) < 1.2          # roughly unit variance, not a constant
