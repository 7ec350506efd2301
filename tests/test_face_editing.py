"""InterFaceGAN boundaries, conditional projection, edits and offline labellers."""

from __future__ import annotations

import numpy as np
import pytest

from generators.face.boundaries import (BoundarySet, fit_boundary, load_boundaries,
                                        project_conditional, save_boundaries)
from generators.face.editing import EditRange, apply_edits, sample_magnitudes
from generators.face.labellers import (brightness_scores, csv_label_scores, head_pose_scores,
                                       illumination_scores)


def _unit(v):
    return v / np.linalg.norm(v)


@pytest.mark.parametrize("method", ["svm", "logistic"])
def test_fit_boundary_recovers_planted_direction(method):
    rng = np.random.default_rng(0)
    d = 64
    planted = _unit(rng.standard_normal(d))
    latents = rng.standard_normal((4000, d))
    # A noisy, non-linear (but monotone) attribute of the projection on the planted normal.
    scores = np.tanh(latents @ planted) + 0.05 * rng.standard_normal(4000)
    fitted = fit_boundary(latents, scores, fraction=0.1, method=method)
    assert float(fitted.normal @ planted) >= 0.95
    assert fitted.accuracy > 0.95 and fitted.count == 800
    assert np.isclose(np.linalg.norm(fitted.normal), 1.0, atol=1e-5)


def test_fit_boundary_ignores_unlabelled_and_checks_counts():
    rng = np.random.default_rng(1)
    latents = rng.standard_normal((300, 8))
    scores = latents[:, 0].copy()
    scores[::3] = np.nan
    fitted = fit_boundary(latents, scores, fraction=0.2)
    assert fitted.normal[0] > 0.9
    with pytest.raises(ValueError, match="too few"):
        fit_boundary(latents[:15], scores[:15], fraction=0.5, min_per_side=10)


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_conditional_projection_is_orthogonal_to_conditions(k):
    rng = np.random.default_rng(k)
    d = 32
    primal = _unit(rng.standard_normal(d))
    conds = np.stack([_unit(rng.standard_normal(d) + 0.8 * primal) for _ in range(k)])
    out = project_conditional(primal, conds)
    assert np.allclose(conds @ out, 0.0, atol=1e-5)
    assert np.isclose(np.linalg.norm(out), 1.0, atol=1e-5)
    assert out @ primal > 0.1  # still points the primal way


def test_two_condition_closed_form_equals_least_squares():
    rng = np.random.default_rng(9)
    primal, c1, c2 = (_unit(rng.standard_normal(16)) for _ in range(3))
    closed = project_conditional(primal, np.stack([c1, c2]))
    coef, *_ = np.linalg.lstsq(np.stack([c1, c2]).T, primal, rcond=None)
    ls = _unit(primal - np.stack([c1, c2]).T @ coef)
    assert np.allclose(closed, ls, atol=1e-5)
    with pytest.raises(ValueError, match="span"):
        project_conditional(c1, np.stack([c1, c2]))


def test_edits_on_layer_ranges_and_magnitudes():
    ws = np.zeros((6, 4), np.float32)
    dirs = {"yaw": np.array([1, 0, 0, 0], np.float32), "light": np.array([0, 1, 0, 0], np.float32)}
    ranges = {"yaw": EditRange(-2, 2), "light": EditRange(0.5, 1.0, first_layer=4)}
    mags = sample_magnitudes(np.random.default_rng(3), ranges)
    assert mags == sample_magnitudes(np.random.default_rng(3), ranges)
    assert -2 <= mags["yaw"] <= 2 and 0.5 <= mags["light"] <= 1.0
    out = apply_edits(ws, dirs, mags, ranges)
    assert np.allclose(out[:, 0], mags["yaw"])
    assert np.allclose(out[:4, 1], 0) and np.allclose(out[4:, 1], mags["light"])
    assert np.all(ws == 0)  # input untouched
    with pytest.raises(ValueError):
        EditRange(1.0, -1.0)


def test_boundary_file_round_trip_and_checkpoint_hash(tmp_path):
    bs = BoundarySet({"yaw": _unit(np.arange(1, 5, dtype=np.float32)),
                      "pitch": _unit(np.array([0, 1, 1, 0], np.float32))}, "ab" * 32,
                     info={"yaw": {"accuracy": 0.99}})
    path = save_boundaries(tmp_path / "b.npz", bs)
    back = load_boundaries(path, checkpoint_sha256="ab" * 32)
    assert sorted(back.normals) == ["pitch", "yaw"] and back.info == bs.info
    assert np.array_equal(back.normals["yaw"], bs.normals["yaw"])
    cond = back.conditioned("yaw", ["pitch"])
    assert abs(float(cond @ back.normals["pitch"])) < 1e-6
    with pytest.raises(ValueError, match="refit"):
        load_boundaries(path, checkpoint_sha256="cd" * 32)


def _face_landmarks(yaw=0.0, pitch=0.0, roll=0.0):
    """Canonical 5 points (ArcFace template) with the nose moved by yaw/pitch, then rolled."""
    lm = np.array([[38.3, 51.6], [73.5, 51.6], [56.0, 71.7], [41.5, 92.4], [70.7, 92.2]])
    lm[2, 0] += yaw * 10
    lm[2, 1] -= pitch * 10
    c, s = np.cos(roll), np.sin(roll)
    centre = lm[:2].mean(0)
    return (lm - centre) @ np.array([[c, s], [-s, c]]) + centre


def test_head_pose_scores_follow_landmarks():
    lms = np.stack([_face_landmarks(yaw=y, roll=0.3) for y in (-1, 0, 1)]
                   + [_face_landmarks(pitch=p) for p in (-1, 1)])
    s = head_pose_scores(lms)
    assert s["yaw"][0] < s["yaw"][1] < s["yaw"][2]  # invariant to the 0.3 rad roll
    assert np.allclose(s["roll"][:3], 0.3, atol=1e-6)
    assert s["pitch"][3] < s["pitch"][4]


def test_image_statistics_labellers():
    dark = np.full((1, 32, 32, 3), 40, np.uint8)
    bright = np.full((1, 32, 32, 3), 200, np.uint8)
    side = np.zeros((1, 32, 32, 3), np.uint8)
    side[:, :, 16:] = 200
    b = brightness_scores(np.concatenate([dark, bright]))
    assert b[0] < b[1]
    ill = illumination_scores(np.concatenate([dark, side, side[:, :, ::-1]]))
    assert abs(ill[0]) < 1e-6 and ill[1] > 0.9 and ill[2] < -0.9


def test_csv_labels(tmp_path):
    p = tmp_path / "labels.csv"
    p.write_text("index,age,smile\n0,31,0.2\n2,64,\n")
    got = csv_label_scores(p, 3, ["age", "smile"])
    assert got["age"][0] == 31 and np.isnan(got["age"][1]) and got["age"][2] == 64
    assert np.isnan(got["smile"][2])
    with pytest.raises(ValueError, match="lacks columns"):
        csv_label_scores(p, 3, ["glasses"])
