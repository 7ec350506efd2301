"""Acceptance figures of the fingerprint generator, measured with NIST NBIS (via afis).

Run:  .venv/bin/python -m pytest -m bench tests/bench/bench_fingerprint_acceptance.py -s
Writes tests/bench/results/fingerprint_acceptance.json. Sizes can be lowered for a quick
look with BIOMINT_FP_FINGERS (default 50) and BIOMINT_FP_SWEEP_FINGERS (default 12).

The near-perfect Bozorth3 separation (mated >= 40 for 97 %, non-mated >= 40 for <= 0.1 %) is
asserted on profile="clean", the only profile meant to be that easy; how hard the default
and fvc2004 profiles are is tests/bench/bench_fingerprint_realism.py's business. The other
figures (NFIQ 2-style median, the quality sweep, class frequencies, ground-truth recall) are
of the default settings, as before.
"""
from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from generators.fingerprint import (DIFFICULTY_PRESETS, FINGER_CLASSES, FingerprintSettings, make_impression,
                                    make_master, with_difficulty)
from generators.fingerprint.singularities import draw_class

pytestmark = pytest.mark.bench

RESULTS = Path(__file__).parent / "results" / "fingerprint_acceptance.json"
STAGE_ID = 2           # this script's own stage id in the seeding rule (CONVENTIONS.md section 2)
DATASET_SEED = 20261121
K = 8                  # impressions per finger
THRESHOLD = 40         # customary Bozorth3 decision threshold
NON_MATED_PER_FINGER_PAIR = 4  # random impression pairs per pair of fingers (50 fingers: 4,900 pairs)
BINS = ((0, 20), (21, 40), (41, 60), (61, 80), (81, 100))


def finger_rng(finger: int, sample: int) -> np.random.Generator:
    """sample 0 is the master; impressions are 1..K (spawn keys cannot be negative)."""
    return np.random.default_rng(np.random.SeedSequence(entropy=DATASET_SEED, spawn_key=(STAGE_ID, finger, sample)))


def nbis():
    loader = pytest.importorskip("afis._native.loader")
    if not loader.available():
        pytest.skip("afis' native NBIS library is not built")
    from afis import compute_nfiq2
    return loader, compute_nfiq2


def quality_bin(score: float) -> str:
    for lo, hi in BINS:
        if lo <= score <= hi:
            return f"{lo}-{hi}"
    raise ValueError(score)


def gt_recall(gt: np.ndarray, found: np.ndarray, max_dist: float = 15.0, max_angle_deg: float = 30.0) -> tuple[int, int]:
    """How many GT minutiae have an NBIS minutia within max_dist px and max_angle degrees."""
    if len(gt) == 0 or len(found) == 0:
        return 0, len(gt)
    dist = np.hypot(gt[:, None, 0] - found[None, :, 0], gt[:, None, 1] - found[None, :, 1])
    dang = np.abs((gt[:, None, 2] - found[None, :, 2] + np.pi) % (2 * np.pi) - np.pi)
    ok = np.any((dist <= max_dist) & (dang <= np.deg2rad(max_angle_deg)), axis=1)
    return int(ok.sum()), len(gt)


def test_fingerprint_acceptance():
    loader, compute_nfiq2 = nbis()
    torch.set_num_threads(1)
    n_fingers = int(os.environ.get("BIOMINT_FP_FINGERS", "50"))
    n_sweep = int(os.environ.get("BIOMINT_FP_SWEEP_FINGERS", "12"))
    settings = FingerprintSettings()
    separation = FingerprintSettings(profile="clean")      # where near-perfect separation holds
    h, w = settings.height, settings.width
    t0 = time.time()

    def match(a, b):
        return loader.bozorth3_match(a, b, height_a=h, height_b=h, width_a=w, width_b=w)

    # 1. n_fingers x K impressions: NBIS templates of the clean profile (separation), NFIQ
    # 2-style scores of the default settings (the default dataset's quality)
    masters, templates, nfiq, recall = [], [], [], [0, 0]
    clean = with_difficulty(settings, 0.0)
    for f in range(n_fingers):
        master = make_master(settings, 1 + f % 10, finger_rng(f, 0))
        masters.append(master)
        row = []
        for k in range(K):
            imp = make_impression(master, separation, finger_rng(f, 1 + k))
            row.append(loader.mindtct_extract(imp.image)[0])
            imp = make_impression(master, settings, finger_rng(f, 1 + k))
            nfiq.append(compute_nfiq2(imp.image, minutiae=loader.mindtct_extract(imp.image)[0]).score)
        templates.append(row)
        # ground truth vs NBIS on a clean impression of the same finger
        imp = make_impression(master, clean, finger_rng(f, 1 + K))
        hit, tot = gt_recall(imp.minutiae, loader.mindtct_extract(imp.image)[0])
        recall[0] += hit
        recall[1] += tot

    mated = [match(row[a], row[b]) for row in templates for a, b in itertools.combinations(range(K), 2)]
    pick = np.random.default_rng(1)
    non_mated = []
    for fa, fb in itertools.combinations(range(n_fingers), 2):
        for _ in range(NON_MATED_PER_FINGER_PAIR):
            non_mated.append(match(templates[fa][pick.integers(K)], templates[fb][pick.integers(K)]))
    mated, non_mated = np.asarray(mated), np.asarray(non_mated)

    # 2. the quality knob: NFIQ 2-style median per difficulty preset
    sweep = {}
    for name, d in DIFFICULTY_PRESETS.items():
        s = with_difficulty(settings, d)
        scores, pair_scores = [], []
        for f in range(n_sweep):
            tpls = []
            for k in range(2):
                imp = make_impression(masters[f], s, finger_rng(f, 100 + k))
                tpl = loader.mindtct_extract(imp.image)[0]
                tpls.append(tpl)
                scores.append(compute_nfiq2(imp.image, minutiae=tpl).score)
            pair_scores.append(match(tpls[0], tpls[1]))
        med = float(np.median(scores))
        sweep[name] = {"difficulty": d, "nfiq2_median": med, "bin": quality_bin(med),
                       "mated_match_rate": float(np.mean(np.asarray(pair_scores) >= THRESHOLD))}

    # 3. class frequencies over many fingers (the class is the master's first draw; no rendering)
    n_class = 10000
    prior_pct = {c: 100 * p for c, p in zip(FINGER_CLASSES, settings.class_priors)}

    def class_frequency(adjust: bool) -> dict[str, float]:
        counts = dict.fromkeys(FINGER_CLASSES, 0)
        for f in range(n_class):
            counts[draw_class(finger_rng(f, 0), settings.class_priors, 1 + f % 10, adjust)] += 1
        return {c: 100.0 * n / n_class for c, n in counts.items()}

    class_freq, class_freq_adjusted = class_frequency(False), class_frequency(True)
    max_class_dev = max(abs(class_freq[c] - prior_pct[c]) for c in FINGER_CLASSES)
    max_class_dev_adj = max(abs(class_freq_adjusted[c] - prior_pct[c]) for c in FINGER_CLASSES)

    bins_reached = sorted({v["bin"] for v in sweep.values()})
    result = {
        "fingers": n_fingers, "impressions_per_finger": K,
        "separation_profile": separation.profile, "nfiq2_profile": settings.profile,
        "mated_pairs": int(len(mated)), "non_mated_pairs": int(len(non_mated)),
        "mated_rate_ge_40": float(np.mean(mated >= THRESHOLD)),
        "non_mated_rate_ge_40": float(np.mean(non_mated >= THRESHOLD)),
        "mated_score_percentiles_1_5_50": [float(np.percentile(mated, q)) for q in (1, 5, 50)],
        "non_mated_score_max": int(non_mated.max()), "non_mated_score_p99_9": float(np.percentile(non_mated, 99.9)),
        "nfiq2_median_default": float(np.median(nfiq)),
        "nfiq2_bins_default": {f"{lo}-{hi}": int(np.sum((np.asarray(nfiq) >= lo) & (np.asarray(nfiq) <= hi)))
                               for lo, hi in BINS},
        "difficulty_sweep": sweep, "difficulty_bins_reached": bins_reached,
        "class_fingers": n_class, "class_frequency_pct": class_freq,
        "class_frequency_position_adjusted_pct": class_freq_adjusted,
        "class_max_abs_deviation_points": max_class_dev,
        "class_max_abs_deviation_points_position_adjusted": max_class_dev_adj,
        "gt_minutiae_recall_15px_30deg_clean": recall[0] / max(recall[1], 1), "gt_minutiae_total": recall[1],
        "seconds": time.time() - t0,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    # near-perfect separation: profile="clean" only (separation_profile)
    assert result["mated_rate_ge_40"] >= 0.97
    assert result["non_mated_rate_ge_40"] <= 0.001
    assert 45 <= result["nfiq2_median_default"] <= 70
    assert len(bins_reached) >= 3
    assert max_class_dev <= 3.0 and max_class_dev_adj <= 3.0
    assert result["gt_minutiae_recall_15px_30deg_clean"] >= 0.8
