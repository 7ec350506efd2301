"""Issue 9's acceptance, through the real commands: mint latents with the shipped diffusion
checkpoint, then `biomint evaluate`'s latent search (NBIS MINDTCT + BOZORTH3, 1:N against
every rolled print).

Run:  .venv/bin/python -m pytest -m bench tests/bench/bench_latent_acceptance.py -s
BIOMINT_LATENT_FINGERS fingers (default 200) x 2 latents, 1 plain + 1 rolled print each; the
same as

    biomint output_dir=DIR fingerprint.fingers=200 fingerprint.impressions=1 latent.per_finger=2 \\
            latent.fingers=200 pairs.non_mated=2000
    biomint evaluate DIR

(BIOMINT_LATENT_ROOT=DIR keeps the dataset there and reuses it if it is complete). Writes
tests/bench/results/latent_acceptance.json and latent_sheet_<class>.png: per value class,
latents beside their procedural start and their rolled mate.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

pytestmark = pytest.mark.bench

RESULTS = Path(__file__).parent / "results"
FINGERS = int(os.environ.get("BIOMINT_LATENT_FINGERS", "200"))
SHEET_ROWS = 4


def _mint(root: Path) -> dict:
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1]))
    from conftest import compose_overrides

    from pipeline.runner import run

    return run(compose_overrides(f"output_dir={root}", f"fingerprint.fingers={FINGERS}", "fingerprint.impressions=1",
                                 "latent.per_finger=2", f"latent.fingers={FINGERS}", "pairs.non_mated=2000",
                                 "dataset.shard_size=2"))


def _procedural_start(root: Path, row: dict) -> np.ndarray:
    """The procedural latent the diffusion sampler started from (the same seed sequence)."""
    import dataclasses

    from pipeline.manifest import load_dataset_json
    from pipeline.stages import StageContext
    from pipeline.stages import latent as stage
    from pipeline.validate import stage_config_from

    meta = load_dataset_json(root)
    config = dataclasses.replace(stage_config_from(meta, stage), sampler="procedural")
    context = StageContext(root=root, seed=int(meta["seed"]))
    subject, position = int(row["subject_id"]), int(row["finger_position"])
    masters = stage._masters(config, context, subject, stage._needed_positions(config, subject), "cpu")
    return stage._make(config, context, masters, subject, position, int(row["impression"])).image


def _sheets(root: Path, latents: list[dict], rolled: dict) -> list[str]:
    written = []
    for cls in ("good", "bad", "ugly"):
        rows = [r for r in latents if r["params"]["value_class"] == cls][:SHEET_ROWS]
        tiles = []
        for r in rows:
            latent = cv2.imread(str(root / r["path"]), cv2.IMREAD_GRAYSCALE)
            mate = cv2.imread(str(root / rolled[(r["subject_id"], r["finger_position"])]), cv2.IMREAD_GRAYSCALE)
            start = _procedural_start(root, r)
            tile = np.hstack([cv2.resize(start, (320, 320)), cv2.resize(latent, (320, 320)),
                              cv2.resize(mate, (340, 320))])
            cv2.putText(tile, f"{r['sample_id']} {cls}: procedural start | diffusion latent | rolled mate",
                        (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.45, 0, 1)
            tiles.append(np.pad(tile, 3, constant_values=255))
        if tiles:
            path = RESULTS / f"latent_sheet_{cls}.png"
            cv2.imwrite(str(path), np.vstack(tiles))
            written.append(path.name)
    return written


def test_latent_search_ranks_and_areas_per_value_class():
    from evaluation import EvaluationSettings
    from evaluation.runner import evaluate_dataset
    from pipeline.manifest import load_dataset_json, read_manifest

    keep = os.environ.get("BIOMINT_LATENT_ROOT")
    root = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="latent-acceptance-")) / "ds"
    t0 = time.perf_counter()
    meta = load_dataset_json(root) if (root / "dataset.json").is_file() else {}
    if meta.get("status") != "complete":
        meta = _mint(root)
    mint_seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    summary = evaluate_dataset(root, EvaluationSettings(progress=False, workers=os.cpu_count() or 1))
    eval_seconds = time.perf_counter() - t1

    search = summary["latent_search"]
    stats = [json.loads(p.read_text()) for p in sorted((root / "manifest" / "latent" / "_stats").glob("*.json"))]
    dropped = sum(len(s["dropped"]) for s in stats)
    latents = read_manifest(root, "latent").to_pylist()
    prints = read_manifest(root, "fingerprint").to_pylist()
    rolled = {(r["subject_id"], r["finger_position"]): r["path"] for r in prints if r["impression_type"] == "rolled"}
    mad = [r["params"]["mean_abs_difference"] for r in latents if r["params"]["mean_abs_difference"] is not None]
    timing = meta["stages"]["latent"].get("last_run", {})
    by_class = {cls: {k: search["by_class"][cls].get(k) for k in
                      ("count", "rank_1", "rank_20", "median_visible_fraction_of_mate", "median_nbis_minutiae_in_mask",
                       "median_n_visible_minutiae", "median_mate_score")}
                for cls in search["classes"]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {
        "fingers": FINGERS, "latents_per_finger": 2, "latents": len(latents), "dropped_by_gate": dropped,
        "gallery": search["gallery"], "gallery_size": search["gallery_size"], "tie_rule": search["tie_rule"],
        "by_class": by_class, "overall": {k: search["overall"].get(k) for k in ("rank_1", "rank_20")},
        "median_visible_fraction_of_mate": search["overall"].get("median_visible_fraction_of_mate"),
        "mean_abs_difference_from_procedural_start": {"mean": float(np.mean(mad)) if mad else None,
                                                      "min": float(np.min(mad)) if mad else None},
        "latent_stage": {"samples": timing.get("samples"), "wall_seconds": timing.get("seconds"),
                         "cpu_seconds": timing.get("cpu_seconds"),
                         "latents_per_cpu_second": (timing["samples"] / timing["cpu_seconds"]
                                                    if timing.get("cpu_seconds") else None)},
        "mint_seconds": round(mint_seconds, 1), "evaluate_seconds": round(eval_seconds, 1), "root": str(root),
    }
    result["contact_sheets"] = _sheets(root, latents, rolled)
    (RESULTS / "latent_acceptance.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    assert set(by_class) <= {"good", "bad", "ugly"} and result["latents"] + dropped == 2 * FINGERS
