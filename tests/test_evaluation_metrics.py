"""Metrics against hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pytest

from evaluation.metrics import (class_centres, d_prime, eer, error_curves, fmr, fnmr,
                                fnmr_at_fmr, intra_class_consistency, look_alike_rate,
                                score_summary, threshold_at_fmr, uniqueness)


def test_fmr_fnmr_by_hand():
    g = [0.4, 0.6, 0.7, 0.8, 0.9]
    i = [0.1, 0.2, 0.3, 0.5, 0.65]
    assert fmr(i, 0.5) == pytest.approx(2 / 5)      # 0.5 and 0.65 accepted
    assert fnmr(g, 0.5) == pytest.approx(1 / 5)     # 0.4 rejected
    assert fmr(i, 0.6) == pytest.approx(1 / 5)
    assert fnmr(g, 0.6) == pytest.approx(1 / 5)


def test_perfect_separation_gives_eer_zero():
    assert eer([5, 6, 7], [1, 2, 3]) == 0.0
    assert fnmr_at_fmr([5, 6, 7], [1, 2, 3], 0.001) == 0.0


def test_complete_overlap_reversed_gives_eer_one():
    assert eer([1, 2], [5, 6]) == 1.0


def test_eer_at_an_exact_crossing():
    # t = 0.6: FMR = 1/5 (0.65), FNMR = 1/5 (0.4)
    assert eer([0.4, 0.6, 0.7, 0.8, 0.9], [0.1, 0.2, 0.3, 0.5, 0.65]) == pytest.approx(0.2)


def test_eer_interpolated_between_steps():
    # g = [0.2, 0.6, 0.9], i = [0.1, 0.5]
    # t=0.5: FMR 1/2, FNMR 1/3 (FMR above);  t=0.6: FMR 0, FNMR 1/3 (FNMR above)
    # lines meet at alpha = (1/6) / (1/6 + 1/3) = 1/3  ->  EER = 1/2 - 1/3 * 1/2 = 1/3
    assert eer([0.2, 0.6, 0.9], [0.1, 0.5]) == pytest.approx(1 / 3)


def test_error_curves_are_monotone_and_end_at_zero_fmr():
    rng = np.random.default_rng(0)
    t, f_m, f_n = error_curves(rng.normal(2, 1, 300), rng.normal(0, 1, 300))
    assert (np.diff(t) > 0).all() and (np.diff(f_m) <= 0).all() and (np.diff(f_n) >= 0).all()
    assert f_m[0] == 1.0 and f_m[-1] == 0.0 and f_n[0] == 0.0


def test_d_prime_by_hand():
    # g: mean 3, var 2/3 ; i: mean 1, var 2/3  ->  d' = 2 / sqrt(2/3)
    assert d_prime([2, 3, 4], [0, 1, 2]) == pytest.approx(2 / math.sqrt(2 / 3))


def test_threshold_and_fnmr_at_fmr():
    i = np.arange(100.0)                  # FMR(t) = (100 - t) / 100 for integer t
    g = np.arange(50.0, 150.0)
    assert threshold_at_fmr(i, 0.01) == 99.0
    assert fnmr_at_fmr(g, i, 0.01) == pytest.approx(49 / 100)     # 50..98 rejected
    assert threshold_at_fmr(i, 0.001) > 99.0                       # zero false matches


def test_score_summary_keys_and_operating_point():
    s = score_summary([50, 60, 70, 30], [5, 10, 45, 0], thresholds={"bozorth3_40": 40})
    assert s["n_genuine"] == 4 and s["n_impostor"] == 4
    assert s["fmr_at_bozorth3_40"] == pytest.approx(0.25)
    assert s["fnmr_at_bozorth3_40"] == pytest.approx(0.25)
    assert s["genuine_mean"] == pytest.approx(52.5)
    assert s["eer"] == pytest.approx(0.25)


def _unit_angle(deg):
    a = np.deg2rad(deg)
    return np.stack([np.cos(a), np.sin(a)], axis=-1)


def test_uniqueness_greedy_packing_by_hand():
    # cosine distance 1 - cos(angle): 0 deg, 20 deg (d=0.060), 90 deg, 100 deg (d to 90 = 0.015)
    centres = _unit_angle(np.array([0.0, 20.0, 90.0, 100.0, 180.0]))
    assert uniqueness(centres, r=0.3) == pytest.approx(3 / 5)   # keeps 0, 90, 180
    assert uniqueness(centres, r=0.01) == pytest.approx(1.0)


def test_class_centres_and_consistency_by_hand():
    emb = _unit_angle(np.array([-10.0, 10.0, 0.0, 80.0, 100.0, 170.0]))
    labels = [0, 0, 0, 1, 1, 1]
    classes, centres = class_centres(emb, labels)
    np.testing.assert_allclose(centres[0], [1.0, 0.0], atol=1e-12)
    # class 0: all within d = 1 - cos(10) = 0.015. class 1 centre ~ at 116.8 deg:
    # 80 -> d = 1 - cos(36.8) = 0.20 (in), 100 -> 0.04 (in), 170 -> 1 - cos(53.2) = 0.40 (out)
    assert intra_class_consistency(emb, labels, r=0.3) == pytest.approx((1 + 2 / 3) / 2)


def test_look_alike_rate_by_hand():
    synth = _unit_angle(np.array([0.0, 45.0, 90.0, 180.0]))
    gallery = _unit_angle(np.array([5.0, 100.0]))
    # best cos: 0.996, cos40 = 0.766, cos10 = 0.985, cos80 = 0.174
    assert look_alike_rate(synth, gallery, 0.9) == pytest.approx(2 / 4)
