"""What makes the prints look and behave like real ones: profiles, sensors, skin features and
skin moisture. (Matcher difficulty per profile is measured by tests/bench/bench_fingerprint_realism.py.)"""
from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from generators.fingerprint import FingerprintSettings, make_impression, make_master, with_difficulty
from generators.fingerprint.impression import _coarse_map, _draw_geometry, _skin_conditions, ink_layer
from generators.fingerprint.minutiae import ENDING
from generators.fingerprint.profiles import PROFILES
from generators.fingerprint.sensors import SENSORS, sensor_image

SETTINGS = FingerprintSettings()


@pytest.fixture(scope="module")
def masters():
    return [make_master(SETTINGS, 1 + f, np.random.default_rng(70 + f)) for f in range(3)]


def test_unknown_profile_or_sensor_is_refused_in_one_sentence():
    with pytest.raises(ValueError, match="unknown profile 'fvc2002'.*clean"):
        FingerprintSettings(profile="fvc2002")
    with pytest.raises(ValueError, match="unknown sensor 'thermal'.*optical"):
        FingerprintSettings(sensor="thermal")


def test_harder_profiles_move_and_distort_the_finger_more(masters):
    spread = {}
    for name in ("clean", "default", "fvc2004"):
        s = replace(SETTINGS, profile=name)
        geos = [_draw_geometry(s, masters[0], np.random.default_rng(k)) for k in range(300)]
        shift = np.hypot([g.finger_x - masters[0].centre[0] for g in geos], [g.finger_y - masters[0].centre[1] for g in geos])
        distortion = np.hypot([g.distortion_dx for g in geos], [g.distortion_dy for g in geos])
        spread[name] = (np.percentile(shift, 90), np.std([g.rotation for g in geos]), np.mean(distortion))
    for easy, hard in (("clean", "default"), ("default", "fvc2004")):
        assert all(h > 1.05 * e for e, h in zip(spread[easy], spread[hard])), spread
    # the clean profile never lands off-centre; the others do, as live-scan users do
    assert spread["clean"][0] < PROFILES["clean"].max_translation * 1.5


def test_real_fingers_have_more_ridge_endings_than_bifurcations(masters):
    kinds = np.concatenate([m.minutiae[:, 3] for m in masters])
    share = float(np.mean(kinds == ENDING))
    # Gutierrez-Redomero et al. 2011: endings outnumber bifurcations about 2:1
    assert 0.6 <= share <= 0.9, share


def test_skin_features_are_in_the_printing_surface_not_in_the_ground_truth(masters):
    for m in masters:
        differs = np.abs(m.surface - m.ridges) > 0.2
        assert 0.002 < differs.mean() < 0.2          # pores, creases, incipient ridges: a small part
        # pores and creases dig into ridges; incipient ridges lift valleys
        dug, lifted = m.surface < m.ridges - 0.2, m.surface > m.ridges + 0.2
        assert np.mean(m.ridges[dug] > 0.0) > 0.7 and np.mean(m.ridges[lifted] < 0.0) > 0.7
    assert sum(m.skin.n_pores for m in masters) > 300
    assert sum(m.skin.n_creases for m in masters) >= 1


def _ink(master, moisture: float, seed: int = 0) -> np.ndarray:
    s = with_difficulty(SETTINGS, 0.0)
    geo = _draw_geometry(replace(s, profile="clean"), master, np.random.default_rng(seed))
    cond = dict(_skin_conditions(np.random.default_rng(seed), 0.0, PROFILES["clean"]),
                moisture=moisture, pressure=0.0, n_blobs=0, n_scratches=0)
    cx, cy = _coarse_map(geo, s.height, s.width)
    full = np.full(cx.shape, 4.0, np.float32)
    return ink_layer(master, cx, cy, full, cond, np.random.default_rng(seed), s.height, s.width).ink


def test_dry_skin_breaks_ridges_and_wet_skin_merges_them(masters):
    for m in masters:
        dry, normal, wet = (_ink(m, v) for v in (-0.9, 0.0, 0.9))
        inside = normal > -1   # whole canvas: the finger covers it with full contact
        share = [float((x > 0.5)[inside].mean()) for x in (dry, normal, wet)]
        assert share[0] < share[1] < share[2], share
        pieces = [cv2.connectedComponents((x > 0.5).astype(np.uint8))[0] for x in (dry, normal, wet)]
        assert pieces[0] > 1.5 * pieces[1], pieces        # broken into beads and dots
        assert pieces[2] < pieces[1], pieces              # bridged into fewer, larger ridges


@pytest.mark.parametrize("sensor", SENSORS)
def test_each_sensor_prints_dark_ridges_and_keeps_its_noise_on_the_skin(masters, sensor):
    s = replace(SETTINGS, sensor=sensor, difficulty=0.2)
    imp = make_impression(masters[1], s, np.random.default_rng(5))
    img = imp.image.astype(np.float32)
    assert imp.image.dtype == np.uint8 and imp.image.shape == (s.height, s.width)
    assert imp.params["rendering"] == sensor and imp.params["profile"] == "default"
    finger = cv2.erode(imp.contact.astype(np.uint8), np.ones((15, 15), np.uint8)) > 0
    away = cv2.dilate(imp.contact.astype(np.uint8), np.ones((41, 41), np.uint8)) == 0
    assert finger.mean() > 0.1 and away.mean() > 0.02
    assert np.percentile(img[finger], 5) < 90                     # ridges come out dark
    assert img[finger].std() >= 50                                # real live-scans: 72-80
    # high-pass residual: the grain is on the skin, the background is nearly flat
    residual = np.abs(img - cv2.GaussianBlur(img, (0, 0), 2.0))
    assert np.median(residual[away]) < 0.5 * np.median(residual[finger])


@pytest.mark.parametrize("dy, dx", [(250, 133), (0, 133), (250, 0), (0, 0), (1, 399)])
def test_the_camera_noise_is_the_grain_rolled_to_the_bit(dy, dx):
    """_add_shifted adds by quadrants, without the rolled copy: the float32 sums of
    grey + scale * np.roll(field, (dy, dx)), the same bits, for any shift."""
    from generators.fingerprint.pixel_kernels import _add_shifted

    rng = np.random.default_rng(0)
    grey = rng.uniform(0, 255, (500, 400)).astype(np.float32)
    field = rng.standard_normal((500, 400)).astype(np.float32)
    want = grey + np.float32(3.7) * np.roll(field, (dy, dx), axis=(0, 1))
    _add_shifted(grey, field, 3.7, dy, dx)
    assert grey.tobytes() == want.tobytes()


def test_the_optical_background_is_bright_and_the_capacitive_one_grey_with_column_stripes(masters):
    s = with_difficulty(SETTINGS, 0.2)
    grey = {}
    for sensor in ("optical", "capacitive"):
        imp = make_impression(masters[2], replace(s, sensor=sensor), np.random.default_rng(8))
        away = cv2.dilate(imp.contact.astype(np.uint8), np.ones((41, 41), np.uint8)) == 0
        grey[sensor] = float(np.median(imp.image[away]))
        if sensor == "capacitive":
            cols = np.where(away, imp.image, np.nan).astype(np.float64)
            col_means = np.nanmean(cols[:, np.isfinite(cols).sum(0) > 20], axis=0)
            # fixed-pattern noise: neighbouring columns differ by more than pixel noise averages out to
            assert np.std(np.diff(col_means)) > 0.8
    assert grey["optical"] > grey["capacitive"] + 5


def test_an_unknown_sensor_fails_in_one_sentence():
    with pytest.raises(ValueError, match="unknown sensor 'sonar'"):
        sensor_image("sonar", np.zeros((8, 8), np.float32), np.zeros((8, 8), np.float32),
                     np.zeros((8, 8), np.float32), {}, np.random.default_rng(0), 0.0)
