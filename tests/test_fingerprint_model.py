"""Specification of the finger model: class priors, singular points, orientation and period."""
from __future__ import annotations

import numpy as np
import pytest

from generators.fingerprint import FINGER_CLASSES, NATURAL_CLASS_PRIORS
from generators.fingerprint.orientation_field import orientation_at, orientation_grid, poincare_index
from generators.fingerprint.ridge_frequency import ridge_period_grid
from generators.fingerprint.singularities import (class_probabilities, draw_class, place_singularities,
                                                  position_priors)


def test_classes_are_drawn_with_the_natural_priors_by_default():
    rng = np.random.default_rng(0)
    n = 20000
    drawn = [draw_class(rng, NATURAL_CLASS_PRIORS, int(rng.integers(1, 11)), False) for _ in range(n)]
    freq = np.array([drawn.count(c) for c in FINGER_CLASSES]) / n
    assert np.max(np.abs(freq - np.asarray(NATURAL_CLASS_PRIORS))) < 0.01


def test_position_adjusted_priors_pool_back_to_the_natural_priors():
    table = np.stack([position_priors(p) for p in range(1, 11)])
    assert np.all(table > 0)
    assert np.allclose(table.sum(1), 1.0)
    assert np.allclose(table.mean(0), NATURAL_CLASS_PRIORS, atol=1e-12)
    whorl = FINGER_CLASSES.index("whorl")
    assert table[0, whorl] > table[1, whorl] and table[3, whorl] > table[2, whorl]  # thumb > index, ring > middle
    left, right = FINGER_CLASSES.index("left_loop"), FINGER_CLASSES.index("right_loop")
    assert table[:5, right].mean() > table[:5, left].mean()                            # right hand
    assert table[5:, left].mean() > table[5:, right].mean()                            # left hand


def test_custom_priors_are_followed_and_normalised():
    p = class_probabilities((0, 0, 1, 1, 2), 3, False)
    assert np.allclose(p, [0, 0, 0.25, 0.25, 0.5])
    rng = np.random.default_rng(1)
    assert {draw_class(rng, (0, 0, 0, 0, 1), 1, True) for _ in range(50)} == {"whorl"}


@pytest.mark.parametrize("finger_class, n_cores, n_deltas",
                         [("arch", 0, 0), ("tented_arch", 1, 1), ("left_loop", 1, 1), ("right_loop", 1, 1),
                          ("whorl", 2, 2)])
def test_each_class_has_its_singular_points(finger_class, n_cores, n_deltas):
    layout = place_singularities(np.random.default_rng(2), finger_class, 480, 600)
    assert layout.cores.shape == (n_cores, 2) and layout.deltas.shape == (n_deltas, 2)


@pytest.mark.parametrize("finger_class", FINGER_CLASSES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_orientation_field_has_index_half_at_cores_and_minus_half_at_deltas(finger_class, seed):
    """Poincare index of the (Vizcaya-Gerhardt corrected) zero-pole field, both analytically on a
    small circle and on the sampled half-resolution grid the ridges grow from."""
    layout = place_singularities(np.random.default_rng(seed), finger_class, 480, 600)
    grid = orientation_grid(layout, 300, 240, 2.0)
    every = np.concatenate([layout.cores, layout.deltas])
    for pts, expected in ((layout.cores, 0.5), (layout.deltas, -0.5)):
        for x, y in pts:
            others = np.hypot(every[:, 0] - x, every[:, 1] - y)
            gap = np.min(others[others > 0], initial=1e9)
            radius = min(12.0, 0.45 * gap)          # full px; the circle holds one singular point
            assert poincare_index(None, x, y, radius, layout=layout) == pytest.approx(expected, abs=1e-6)
            assert poincare_index(grid, (x - 0.5) / 2, (y - 0.5) / 2, radius / 2) == pytest.approx(expected, abs=1e-6)
    # far from every singular point the index is 0
    assert poincare_index(None, 40.0, 560.0, 8.0, layout=layout) == pytest.approx(0.0, abs=1e-6)


def test_loop_orientation_is_roughly_horizontal_at_the_top_of_the_finger():
    for cls in ("left_loop", "right_loop", "whorl", "arch"):
        layout = place_singularities(np.random.default_rng(3), cls, 480, 600)
        theta = float(orientation_at(layout, np.array([240.0]), np.array([20.0]))[0])
        assert min(theta, np.pi - theta) < np.deg2rad(30), cls


def test_left_loop_has_its_delta_right_of_the_core_and_right_loop_left():
    left = place_singularities(np.random.default_rng(4), "left_loop", 480, 600)
    right = place_singularities(np.random.default_rng(4), "right_loop", 480, 600)
    assert left.deltas[0, 0] > left.cores[0, 0]
    assert right.deltas[0, 0] < right.cores[0, 0]


def test_ridge_period_is_9_to_11_px_and_longer_above_the_core():
    layout = place_singularities(np.random.default_rng(5), "left_loop", 480, 600)
    period = ridge_period_grid(np.random.default_rng(5), layout, 300, 240, 2.0, (9.0, 11.0))
    assert 8.0 < np.median(period) < 12.0
    cx, cy = layout.cores[0]
    above = period[int((cy - 140) / 2), int(cx / 2)]
    beside = period[int(cy / 2), int(cx / 2)]
    assert above > beside


def test_a_masters_class_is_the_first_draw_of_its_rng():
    """So class statistics can be measured over many fingers without rendering them."""
    from generators.fingerprint import FingerprintSettings, make_master

    settings = FingerprintSettings()
    for seed in range(3):
        expected = draw_class(np.random.default_rng(seed), settings.class_priors, 4, False)
        assert make_master(settings, 4, np.random.default_rng(seed)).finger_class == expected
