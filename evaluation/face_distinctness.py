"""Face identity distinctness: embeddings, per-pair cosine scores, per-identity centres.

Works on a dataset manifest (via ``evaluation.runner``) or on any folder of face images
(``evaluate_face_folder``: one identity per sub-folder, or one per file in a flat folder).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.dataset import all_pairs, folder_samples, read_image
from evaluation.errors import DatasetNotFoundError
from evaluation.metrics import (class_centres, intra_class_consistency, look_alike_rate,
                                score_summary, uniqueness)
from evaluation.parallel import chunked, map_chunks
from evaluation.settings import EvaluationSettings

_EMBEDDERS: dict[tuple[str, str | None], object] = {}


def _embedder(name: str, onnx_path: str | None):
    from evaluation.face_embedding import make_face_embedder

    key = (name, onnx_path)
    if key not in _EMBEDDERS:   # one per process: model loading costs ~0.1 s
        _EMBEDDERS[key] = make_face_embedder(name, onnx_path=onnx_path)
    return _EMBEDDERS[key]


def embed_chunk(task: tuple[str, list[tuple[str, str]], str, str | None]
                ) -> list[tuple[bool, np.ndarray]]:
    """Worker: (root, [(sample_id, rel_path)], embedder, onnx path) → [(found, embedding)]."""
    root, items, name, onnx_path = task
    emb = _embedder(name, onnx_path)
    images = [read_image(Path(root), rel, sid, grey=False) for sid, rel in items]
    r = emb.embed(images)
    return [(bool(f), e) for f, e in zip(r.found, r.embeddings)]


def embed_samples(root: Path, samples: pd.DataFrame, settings: EvaluationSettings,
                  client=None, desc: str = "face embeddings") -> tuple[np.ndarray, np.ndarray]:
    """Embed every row of ``samples`` → (found bool [N], embeddings float32 [N, D])."""
    # Fail in the caller's process (one clear sentence) before any worker starts.
    _embedder(settings.face_embedder, settings.face_onnx_path)
    items = list(zip(samples["sample_id"], samples["path"]))
    tasks = [(str(root), c, settings.face_embedder, settings.face_onnx_path)
             for c in chunked(items, settings.chunk_size)]
    out = map_chunks(embed_chunk, tasks, client=client, workers=settings.workers,
                     desc=desc, progress=settings.progress)
    found = np.array([f for f, _ in out], bool)
    emb = np.stack([e for _, e in out]).astype(np.float32) if out else np.zeros((0, 128), np.float32)
    return found, emb


def pair_scores(pairs: pd.DataFrame, sample_ids: pd.Series, found: np.ndarray,
                emb: np.ndarray) -> np.ndarray:
    """Cosine score per pair; NaN where either face was not found (failure to acquire)."""
    index = pd.Index(sample_ids)
    a = index.get_indexer(pairs["a_sample_id"])
    b = index.get_indexer(pairs["b_sample_id"])
    scores = (emb[a] * emb[b]).sum(1).astype(np.float64)
    scores[~(found[a] & found[b])] = np.nan
    return scores


def identity_table(samples: pd.DataFrame, found: np.ndarray, emb: np.ndarray,
                   r: float, gallery: np.ndarray | None) -> tuple[pd.DataFrame, dict]:
    """Per identity: samples, faces found, fraction within cosine distance r of its centre,
    nearest other centre, best real-gallery match; plus the dataset-level figures."""
    labels = samples["subject_id"].to_numpy()[found]
    e = emb[found]
    if len(e) == 0:
        return pd.DataFrame(), {"n_identities": 0}
    classes, centres = class_centres(e, labels)
    inverse = np.searchsorted(classes, labels)
    within = (1.0 - (e * centres[inverse]).sum(1)) <= r
    sims = centres @ centres.T
    np.fill_diagonal(sims, -np.inf)
    table = pd.DataFrame({
        "subject_id": classes.astype(np.int64),
        "n_found": np.bincount(inverse, minlength=len(classes)),
        "consistency": np.bincount(inverse, weights=within, minlength=len(classes))
        / np.bincount(inverse, minlength=len(classes)),
        "nearest_other_cosine": sims.max(1) if len(classes) > 1 else np.nan,
        "centre": list(centres.astype(np.float32)),
    })
    n_all = samples.groupby("subject_id").size()
    table.insert(1, "n_samples", n_all.reindex(table["subject_id"]).to_numpy())
    figures = {"n_identities": int(len(classes)),
               "uniqueness": uniqueness(centres, r),
               "intra_class_consistency": intra_class_consistency(e, labels, r),
               "uniqueness_radius": r}
    if gallery is not None and len(gallery):
        table["best_gallery_cosine"] = (centres @ gallery.T).max(1)
    return table, figures


def gallery_embeddings(folder: str | None, settings: EvaluationSettings,
                       client=None) -> np.ndarray | None:
    """Embeddings of the faces found in a real gallery folder (None when no folder)."""
    if folder is None:
        return None
    gal = folder_samples(Path(folder))
    found, emb = embed_samples(Path(folder), gal, settings, client, desc="real gallery")
    if not found.any():
        raise DatasetNotFoundError(f"No face was found in the real gallery folder {folder}.")
    return emb[found]


def evaluate_faces(root: Path, samples: pd.DataFrame, pairs: pd.DataFrame,
                   settings: EvaluationSettings, client=None
                   ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict]:
    """Embed, score and summarise faces → (samples table, pairs table, identities, summary)."""
    samples = samples.reset_index(drop=True)
    found, emb = embed_samples(root, samples, settings, client)
    if pairs.empty:
        pairs = all_pairs(samples, "face-face", settings.max_nonmated_pairs, settings.seed)
    pairs = pairs.copy()
    pairs["score"] = pair_scores(pairs, samples["sample_id"], found, emb)
    pairs["embedder"] = settings.face_embedder
    gallery = gallery_embeddings(settings.real_gallery, settings, client)
    identities, figures = identity_table(samples, found, emb, settings.uniqueness_radius, gallery)
    if gallery is not None and not identities.empty:
        figures["look_alike_rate"] = look_alike_rate(
            np.stack(identities["centre"]), gallery, settings.look_alike)
        figures["look_alike_threshold"] = settings.look_alike
        figures["n_gallery_faces"] = int(len(gallery))
    table = pd.DataFrame({"sample_id": samples["sample_id"],
                          "subject_id": samples["subject_id"].astype(np.int64),
                          "face_found": found,
                          "embedder": settings.face_embedder,
                          "embedding": list(emb)})
    if not identities.empty:
        centre = dict(zip(identities["subject_id"], identities["centre"]))
        table["cosine_to_centre"] = [float(e @ centre[s]) if f else np.nan for e, s, f in
                                     zip(emb, table["subject_id"], found)]
    scored = pairs["score"].notna()
    verification = score_summary(
        pairs.loc[scored & pairs["mated"], "score"], pairs.loc[scored & ~pairs["mated"], "score"],
        thresholds={f"{settings.face_embedder}_{settings.face_threshold:g}": settings.face_threshold})
    summary = {"n_images": int(len(samples)), "n_found": int(found.sum()),
               "embedder": settings.face_embedder, "threshold": settings.face_threshold,
               "n_pairs_failed_to_acquire": int((~scored).sum()),
               "verification": verification, **figures}
    return table, pairs, identities, summary


def evaluate_face_folder(folder: Path, settings: EvaluationSettings | None = None,
                         client=None, out_dir: Path | None = None) -> dict:
    """Face distinctness of any folder of images; writes the tables to ``out_dir`` if given."""
    settings = settings or EvaluationSettings()
    samples = folder_samples(Path(folder))
    table, pairs, identities, summary = evaluate_faces(
        Path(folder), samples, pairs=pd.DataFrame(), settings=settings, client=client)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        table.to_parquet(out / "face_samples.parquet", index=False)
        pairs.to_parquet(out / "face_pairs.parquet", index=False)
        identities.to_parquet(out / "face_identities.parquet", index=False)
    return summary
