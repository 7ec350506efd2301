"""``evaluate_dataset``: quality, distinctness and report for a minted dataset root."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.dataset import manifest_sample_ids, read_manifest, read_pairs
from evaluation.errors import DatasetNotFoundError, EvaluationInputError
from evaluation.face_distinctness import evaluate_faces
from evaluation.face_embedding import FACE_EMBEDDERS
from evaluation.fingerprint_evaluation import evaluate_fingerprints
from evaluation.fingerprint_matching import FINGERPRINT_MATCHERS
from evaluation.fingerprint_quality import QUALITY_BACKENDS
from evaluation.latent_search import evaluate_latents
from evaluation.protocol_search import PROTOCOL_STAGE, evaluate_protocol, has_protocol
from evaluation.report import format_summary, write_report
from evaluation.settings import QUALITY_LABEL, EvaluationSettings

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


def sample_subjects(manifest: pd.DataFrame, wanted: int, seed: int) -> tuple[pd.DataFrame, dict]:
    """The rows of whole subjects, taken in a seeded random order until at least `wanted`
    samples are in (every mated pair of a kept subject stays whole), and what was kept.
    Deterministic: the same manifest, `wanted` and seed keep the same subjects."""
    counts = manifest.groupby("subject_id", sort=True).size()
    order = np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(0x5A4D,))).permutation(len(counts))
    taken = np.cumsum(counts.to_numpy()[order])
    n_subjects = int(min(np.searchsorted(taken, wanted, side="left") + 1, len(counts)))
    keep = set(counts.index[order[:n_subjects]].tolist())
    kept = manifest[manifest["subject_id"].isin(keep)].reset_index(drop=True)
    return kept, {"wanted": int(wanted), "samples": int(len(kept)), "of_samples": int(len(manifest)),
                  "subjects": n_subjects, "of_subjects": int(len(counts)), "seed": int(seed)}


def _write(table: pd.DataFrame, path: Path) -> None:
    from pipeline.manifest import atomic_path

    with atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)


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
    dpi = dict(zip(manifest["sample_id"], manifest["dpi"])) if "dpi" in manifest else {}
    if s.stages is None:     # distractors (manifest/protocol) are searched in the 1:N protocol only
        manifest = manifest[manifest["stage"] != PROTOCOL_STAGE].reset_index(drop=True)
    sampled = None
    if s.sample is not None:
        manifest, sampled = sample_subjects(manifest, s.sample, s.seed)
    # with some stages only (or a sample), pairs that name a sample left out are left out
    pairs = read_pairs(root, pd.Index(manifest["sample_id"]),
                       manifest_sample_ids(root) if s.stages is not None or sampled else None)
    modality = dict(zip(manifest["sample_id"], manifest["modality"]))
    pair_modality = pairs["a_sample_id"].map(modality)
    # latents (and their pairs) go to the latent search, so the prints' figures are the ones a
    # dataset without latents gets
    latent_pair = (pair_modality == "latent_fingerprint") | (
        pairs["b_sample_id"].map(modality) == "latent_fingerprint")
    eval_dir = root / "eval"
    eval_dir.mkdir(exist_ok=True)
    summary: dict = {"dataset": str(root), "eval_dir": str(eval_dir), "report": None,
                     "quality_label": QUALITY_LABEL, "n_samples": int(len(manifest))}
    if sampled:
        summary["sample"] = sampled
    t_start = time.perf_counter()
    fp_tables: dict = {}
    fp_pairs = face_table = face_pairs = latent_table = None

    regular = manifest.iloc[0:0] if s.protocol_only else manifest
    prints = regular[regular["modality"] == "fingerprint"].reset_index(drop=True)
    if len(prints):
        fp_tables, fp_pairs, summary["fingerprint"] = evaluate_fingerprints(
            root, _identity(prints),
            pairs[(pair_modality == "fingerprint") & ~latent_pair].reset_index(drop=True), s, client)
        # the manifest's subject_id, not the finger identity used for pairing
        owner = dict(zip(manifest["sample_id"], manifest["subject_id"]))
        for name in ("quality", "slap_segments", "slaps"):
            table = fp_tables[name]
            if not table.empty:
                if "subject_id" in table:
                    table["subject_id"] = table["sample_id"].map(owner)
                _write(table, eval_dir / f"fingerprint_{name}.parquet")

    latents = regular[regular["modality"] == "latent_fingerprint"].reset_index(drop=True)
    if len(latents):
        latent_table, latent_pairs, summary["latent_search"] = evaluate_latents(
            root, latents, prints, pairs[latent_pair].reset_index(drop=True),
            fp_tables.get("templates", {}), s, client)
        _write(latent_table, eval_dir / "latent_search.parquet")
        if len(latent_pairs):   # scored like the other kinds, in the same pairs table
            fp_pairs = pd.concat([p for p in (fp_pairs, latent_pairs) if p is not None],
                                 ignore_index=True)
    if fp_pairs is not None:
        _write(fp_pairs, eval_dir / "fingerprint_pairs.parquet")

    protocol_table = None
    if s.protocol_search and has_protocol(root):
        protocol_table, summary["protocol"] = evaluate_protocol(root, fp_tables.get("templates", {}), s, client,
                                                                dpi=dpi)
        _write(protocol_table, eval_dir / "protocol_search.parquet")

    faces = regular[regular["modality"] == "face"].reset_index(drop=True)
    if len(faces):
        face_table, face_pairs, identities, summary["face"] = evaluate_faces(
            root, faces, pairs[pair_modality == "face"].reset_index(drop=True), s, client)
        _write(face_table, eval_dir / "face_samples.parquet")
        _write(face_pairs, eval_dir / "face_pairs.parquet")
        _write(identities, eval_dir / "face_identities.parquet")

    summary["seconds"] = time.perf_counter() - t_start
    if s.write_report:
        summary["report"] = str(write_report(
            root / "report" / "index.html", root, summary, manifest, fp_tables.get("quality"),
            fp_pairs, face_table, face_pairs, s.quality_bin_edges, s.grid_per_bin,
            slap_segments=fp_tables.get("slap_segments"), slaps=fp_tables.get("slaps"),
            latent_search=latent_table, protocol_search=protocol_table))
    from pipeline.manifest import write_bytes_atomic

    write_bytes_atomic(eval_dir / "summary.json", json.dumps(_strict_json(summary), indent=2).encode())
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
