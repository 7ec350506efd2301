"""``evaluate_dataset``: quality, distinctness and report for a minted dataset root."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.dataset import (FINGERPRINT_MODALITIES, all_pairs, read_manifest, read_pairs,
                                subsample_nonmated)
from evaluation.errors import DatasetNotFoundError, EvaluationInputError
from evaluation.face_distinctness import evaluate_faces
from evaluation.fingerprint_matching import FINGERPRINT_MATCHERS, native_available, score_pair_chunk
from evaluation.fingerprint_quality import QUALITY_BACKENDS, FEEDBACK, assess_chunk, minutiae_chunk
from evaluation.face_embedding import FACE_EMBEDDERS
from evaluation.metrics import score_summary
from evaluation.parallel import chunked, map_chunks
from evaluation.report import format_summary, write_report
from evaluation.settings import QUALITY_LABEL, EvaluationSettings, bin_labels

__all__ = ["evaluate_dataset", "EvaluationSettings", "format_summary"]


def _check_settings(s: EvaluationSettings) -> None:
    for value, registry, what in ((s.quality_backend, QUALITY_BACKENDS, "quality_backend"),
                                  (s.fingerprint_matcher, FINGERPRINT_MATCHERS, "fingerprint_matcher"),
                                  (s.face_embedder, FACE_EMBEDDERS, "face_embedder")):
        if value not in registry:
            raise EvaluationInputError(f"Unknown {what} {value!r}: choose one of {sorted(registry)}.")


def _identity(samples: pd.DataFrame) -> pd.DataFrame:
    """Fingerprint identity = (owner, finger position): a subject's ten fingers differ."""
    samples = samples.copy()
    if "finger_position" in samples.columns:
        pos = samples["finger_position"].fillna(0).astype(np.int64)
        samples["subject_id"] = samples["subject_id"].astype(np.int64) * 16 + pos
    return samples


def _fingerprints(root: Path, fp: pd.DataFrame, pairs: pd.DataFrame,
                  s: EvaluationSettings, client) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Quality of plain prints, minutiae of every print, Bozorth3 over the pairs."""
    ppi = (fp["dpi"].fillna(500).astype(int) if "dpi" in fp.columns
           else pd.Series(500, index=fp.index))
    plain = fp["modality"] == "fingerprint"
    items = list(zip(fp.loc[plain, "sample_id"], fp.loc[plain, "path"], ppi[plain]))
    t0 = time.perf_counter()
    out = map_chunks(assess_chunk, [(str(root), c, s.quality_backend, s.quality_bin_edges)
                                    for c in chunked(items, s.chunk_size)],
                     client=client, workers=s.workers, desc=f"{QUALITY_LABEL} quality",
                     progress=s.progress)
    quality_seconds = time.perf_counter() - t0
    quality = pd.DataFrame([row for row, _, _ in out])
    templates = {row["sample_id"]: (m, hw) for row, m, hw in out}
    others = list(zip(fp.loc[~plain, "sample_id"], fp.loc[~plain, "path"], ppi[~plain]))
    if others:
        extra = map_chunks(minutiae_chunk, [(str(root), c) for c in chunked(others, s.chunk_size)],
                           client=client, workers=s.workers, desc="latent minutiae",
                           progress=s.progress)
        templates.update({sid: t for (sid, _, _), t in zip(others, extra)})
    summary: dict = {"n_images": int(len(fp))}
    if not quality.empty:
        scores = quality["quality_score"].dropna()
        counts = quality["quality_bin"].value_counts()
        summary["quality"] = {
            "label": QUALITY_LABEL, "backend": s.quality_backend, "n_images": int(len(quality)),
            "median": float(scores.median()) if len(scores) else float("nan"),
            "mean": float(scores.mean()) if len(scores) else float("nan"),
            "bins": {b: int(counts.get(b, 0)) for b in bin_labels(s.quality_bin_edges)},
            "flags": {c.removeprefix("flag_"): int(quality[c].sum()) for c in FEEDBACK},
            "images_per_second": len(quality) / max(quality_seconds, 1e-9)}
    if pairs.empty:
        pairs = all_pairs(fp, "fingerprint", s.max_nonmated_pairs, s.seed)
    listed_nonmated = int((~pairs["mated"]).sum())
    pairs = subsample_nonmated(pairs, s.max_nonmated_pairs, s.seed)
    tasks = []
    for c in chunked(list(zip(pairs["pair_id"], pairs["a_sample_id"], pairs["b_sample_id"])),
                     s.chunk_size * 16):
        used = {sid for _, a, b in c for sid in (a, b)}
        tasks.append((s.fingerprint_matcher, {sid: templates[sid] for sid in used}, c))
    t0 = time.perf_counter()
    scored = dict(map_chunks(score_pair_chunk, tasks, client=client, workers=s.workers,
                             desc="Bozorth3 pairs", progress=s.progress))
    match_seconds = time.perf_counter() - t0
    pairs = pairs.copy()
    pairs["score"] = pairs["pair_id"].map(scored).astype(float)
    pairs["matcher"] = s.fingerprint_matcher
    g = pairs.loc[pairs["mated"], "score"]
    i = pairs.loc[~pairs["mated"], "score"]
    op = f"bozorth3_{s.bozorth3_threshold:g}"
    summary["matching"] = {"matcher": s.fingerprint_matcher, "native": native_available(),
                           "threshold": s.bozorth3_threshold,
                           "nonmated_pairs_listed": listed_nonmated,   # before the seeded cap
                           "pairs_per_second": len(pairs) / max(match_seconds, 1e-9),
                           **score_summary(g, i, thresholds={op: s.bozorth3_threshold})}
    return quality, pairs, summary


def _write(table: pd.DataFrame, path: Path) -> None:
    tmp = path.with_suffix(".parquet.tmp")
    table.to_parquet(tmp, index=False)
    tmp.replace(path)


def evaluate_dataset(dataset_root: Path, settings: EvaluationSettings | None = None,
                     client=None) -> dict:
    """Evaluate a dataset root (CONVENTIONS §3): writes ``eval/*.parquet``, ``eval/summary.json``
    and ``report/index.html``; returns the summary dict (``format_summary`` prints it).

    Raises DatasetNotFoundError (no manifest), UnreadableImageError, ModelFileNotFoundError
    (missing ONNX path) or EvaluationInputError — all ValueError / FileNotFoundError.
    """
    s = settings or EvaluationSettings()
    _check_settings(s)
    root = Path(dataset_root)
    if not root.is_dir():
        raise DatasetNotFoundError(f"Dataset folder {root} does not exist.")
    manifest = read_manifest(root, s.stages)
    pairs = read_pairs(root, pd.Index(manifest["sample_id"]))
    modality = dict(zip(manifest["sample_id"], manifest["modality"]))
    pair_modality = pairs["a_sample_id"].map(modality)
    eval_dir = root / "eval"
    eval_dir.mkdir(exist_ok=True)
    summary: dict = {"dataset": str(root), "eval_dir": str(eval_dir), "report": None,
                     "quality_label": QUALITY_LABEL, "n_samples": int(len(manifest))}
    t_start = time.perf_counter()
    quality = fp_pairs = face_table = face_pairs = None

    fp = _identity(manifest[manifest["modality"].isin(FINGERPRINT_MODALITIES)])
    if len(fp):
        quality, fp_pairs, summary["fingerprint"] = _fingerprints(
            root, fp.reset_index(drop=True),
            pairs[pair_modality.isin(FINGERPRINT_MODALITIES)].reset_index(drop=True), s, client)
        if not quality.empty:
            keys = [c for c in ("sample_id", "subject_id", "finger_position") if c in manifest]
            quality = manifest[keys].merge(quality, on="sample_id", how="right")
            _write(quality, eval_dir / "fingerprint_quality.parquet")
        _write(fp_pairs, eval_dir / "fingerprint_pairs.parquet")

    faces = manifest[manifest["modality"] == "face"].reset_index(drop=True)
    if len(faces):
        face_table, face_pairs, identities, summary["face"] = evaluate_faces(
            root, faces, pairs[pair_modality == "face"].reset_index(drop=True), s, client)
        _write(face_table, eval_dir / "face_samples.parquet")
        _write(face_pairs, eval_dir / "face_pairs.parquet")
        _write(identities, eval_dir / "face_identities.parquet")

    summary["seconds"] = time.perf_counter() - t_start
    if s.write_report:
        summary["report"] = str(write_report(
            root / "report" / "index.html", root, summary, manifest, quality, fp_pairs,
            face_table, face_pairs, s.quality_bin_edges, s.grid_per_bin))
    (eval_dir / "summary.json").write_text(json.dumps(_strict_json(summary), indent=2))
    return summary


def _strict_json(value):
    """NaN/inf → null and numpy scalars → Python, so summary.json is standard JSON."""
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    return value
