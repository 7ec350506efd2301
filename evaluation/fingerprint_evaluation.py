"""Fingerprints of a dataset: NFIQ 2-style quality per impression type, slap segment checks,
NBIS minutiae and Bozorth3 scores per pair kind.

Impression types (manifest ``impression_type``; plain where a dataset predates the column):

``plain``, ``rolled``  one quality row and one minutiae template per image;
``slap``               one quality row and one template per segment crop (``params.segments``),
                       template key ``(sample_id, finger position)``, plus the segment checks
                       of ``evaluation.slap_segments``;
anything else          (latents, slaps without boxes) minutiae of the whole image only.

(``evaluate_dataset`` hands latents and their pairs to ``evaluation.latent_search`` instead,
so these figures are the prints' alone.)

A pair whose side is a slap compares the crop whose position equals the other side's
``finger_position`` (the spec of ``slap-plain`` pairs); it stays unscored (NaN) when the slap
has no such segment.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.confidence import bootstrap_error_rates
from evaluation.dataset import all_pairs, subsample_nonmated
from evaluation.fingerprint_matching import native_available, score_pair_chunk
from evaluation.fingerprint_quality import FEEDBACK, assess_chunk, minutiae_chunk
from evaluation.metrics import score_summary
from evaluation.parallel import chunked, map_chunks
from evaluation.settings import (FINGERPRINT_PAIR_KINDS, QUALITY_LABEL, QUALITY_NOTES,
                                 EvaluationSettings, bin_labels, quality_bin)
from evaluation.slap_segments import BOX_COLUMNS
from generators.fingerprint.quality_mix import MIX_EDGES

QUALITY_TYPES = ("plain", "rolled")
# The NFIQ 2 bins of the generator's `fingerprint.quality_mix` (fixed, whatever
# quality_bin_edges the evaluation reports with): the generator's own definition.
QUALITY_MIX_EDGES = MIX_EDGES
# pair kind "<a>-<b>" of two impression types: the rarer capture type first (rolled-plain)
_KIND_RANK = {"latent": 0, "slap": 1, "rolled": 2, "plain": 3}


def pair_kind(type_a: str, type_b: str) -> str:
    a, b = sorted((type_a, type_b), key=lambda t: (_KIND_RANK.get(t, -1), t))
    return f"{a}-{b}"


def ordered_kinds(kinds) -> list[str]:
    kinds = set(kinds)
    return [k for k in FINGERPRINT_PAIR_KINDS if k in kinds] + sorted(kinds - set(FINGERPRINT_PAIR_KINDS))


def quality_figures(rows: pd.DataFrame, edges: tuple[int, ...]) -> dict:
    """n, median, mean, bin counts and feedback flags of some quality rows."""
    scores = rows["quality_score"].dropna() if len(rows) else pd.Series(dtype=float)
    counts = rows["quality_bin"].value_counts() if len(rows) else pd.Series(dtype=int)
    return {"n_images": int(len(rows)),
            "median": float(scores.median()) if len(scores) else float("nan"),
            "mean": float(scores.mean()) if len(scores) else float("nan"),
            "bins": {b: int(counts.get(b, 0)) for b in bin_labels(edges)},
            "flags": {c.removeprefix("flag_"): int(rows[c].fillna(False).astype(bool).sum())
                      if c in rows else 0 for c in FEEDBACK}}


def _quality_summary(quality: pd.DataFrame, segments: pd.DataFrame, s: EvaluationSettings,
                     seconds: float) -> dict:
    """Top-level figures are the plain prints' (what NFIQ 2 is for; every print when there
    is no plain one); ``by_type`` has each impression type, rolled and slaps with their note."""
    by_type = {}
    for t in QUALITY_TYPES:
        rows = quality[quality["impression_type"] == t] if len(quality) else quality
        if len(rows):
            by_type[t] = {"label": QUALITY_LABEL, **({"note": QUALITY_NOTES[t]} if t in QUALITY_NOTES else {}),
                          **quality_figures(rows, s.quality_bin_edges)}
    if len(segments):
        by_type["slap"] = {"label": QUALITY_LABEL, "note": QUALITY_NOTES["slap"],
                           "n_slaps": int(segments["sample_id"].nunique()),
                           **quality_figures(segments, s.quality_bin_edges)}
    top_type = "plain" if "plain" in by_type else "all"
    top = quality[quality["impression_type"] == "plain"] if top_type == "plain" else quality
    n_assessed = len(quality) + len(segments)
    return {"label": QUALITY_LABEL, "backend": s.quality_backend, "impression_type": top_type,
            **quality_figures(top, s.quality_bin_edges),
            "images_per_second": n_assessed / max(seconds, 1e-9), "by_type": by_type}


def wanted_quality_mix(root: Path) -> list[float] | None:
    """``fingerprint.quality_mix`` of the config in ``root/dataset.json`` (None when the
    dataset has no such file, no such key, or an empty mix: a plain difficulty)."""
    try:
        config = json.loads((Path(root) / "dataset.json").read_text()).get("config") or {}
        mix = [float(v) for v in (config.get("fingerprint") or {}).get("quality_mix") or []]
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    return mix or None


def quality_mix_check(quality: pd.DataFrame, wanted: list[float]) -> dict:
    """Wanted vs achieved share of plain impressions per NFIQ 2 bin, and the largest
    difference in percentage points (what quality_mix promises, measured)."""
    plain = quality[quality["impression_type"] == "plain"] if len(quality) else quality
    scores = plain["quality_score"].dropna() if len(plain) else pd.Series(dtype=float)
    labels = bin_labels(QUALITY_MIX_EDGES)
    counts = pd.Series([quality_bin(v, QUALITY_MIX_EDGES) for v in scores], dtype=object).value_counts()
    achieved = [float(counts.get(b, 0)) / len(scores) if len(scores) else float("nan") for b in labels]
    return {"bins": labels, "wanted": [float(v) for v in wanted], "achieved": achieved,
            "n_images": int(len(scores)), "n_unscored": int(len(plain) - len(scores)),
            "max_deviation_points": max(100.0 * abs(w - a) for w, a in zip(wanted, achieved))
            if len(scores) else float("nan")}


def _slap_summary(slaps: pd.DataFrame, boxes: pd.DataFrame) -> dict:
    fg = slaps["foreground_in_boxes"].dropna()
    return {"n_slaps": int(len(slaps)), "n_segments": int(len(boxes)),
            "boxes_outside": int((~boxes["box_inside"]).sum()),
            "slaps_with_box_outside": int((~slaps["boxes_inside"]).sum()),
            "max_iou": float(slaps["max_iou"].max()),
            "median_max_iou": float(slaps["max_iou"].median()),
            "foreground_in_boxes_min": float(fg.min()) if len(fg) else float("nan"),
            "foreground_in_boxes_median": float(fg.median()) if len(fg) else float("nan"),
            "box_foreground_min": float(boxes["box_foreground"].min()) if len(boxes) else float("nan"),
            "box_foreground_median": float(boxes["box_foreground"].median()) if len(boxes) else float("nan")}


def _template_keys(pairs: pd.DataFrame, fp: pd.DataFrame) -> tuple[list, list, pd.Series]:
    """Template key of each pair side, and the slap segment a pair compares (else <NA>)."""
    types = dict(zip(fp["sample_id"], fp["impression_type"]))
    position = dict(zip(fp["sample_id"], fp["finger_position"]))
    keys_a, keys_b, segment = [], [], []
    for a, b in zip(pairs["a_sample_id"], pairs["b_sample_id"]):
        ka, kb, seg = a, b, None
        if types.get(a) == "slap" and types.get(b) != "slap":
            seg = position.get(b)
            ka = (a, int(seg)) if seg == seg and seg is not None else (a, -1)
        elif types.get(b) == "slap" and types.get(a) != "slap":
            seg = position.get(a)
            kb = (b, int(seg)) if seg == seg and seg is not None else (b, -1)
        keys_a.append(ka)
        keys_b.append(kb)
        segment.append(seg)
    return keys_a, keys_b, pd.Series(segment, index=pairs.index, dtype="Int8")


def score_pairs(pairs: pd.DataFrame, fp: pd.DataFrame, templates: dict, s: EvaluationSettings,
                client=None) -> tuple[pd.DataFrame, float]:
    """The pairs with ``segment_position``, ``score`` (NaN where a side has no template) and
    ``matcher`` columns, and the seconds matching took. ``templates``: {template key:
    (minutiae [N, 5], (height, width))}, keys as ``_template_keys`` makes them."""
    keys_a, keys_b, segment = _template_keys(pairs, fp)
    todo = [(pid, a, b) for pid, a, b in zip(pairs["pair_id"], keys_a, keys_b)
            if a in templates and b in templates]
    tasks = []
    for c in chunked(todo, s.chunk_size * 16):
        used = {k for _, a, b in c for k in (a, b)}
        tasks.append((s.fingerprint_matcher, {k: templates[k] for k in used}, c))
    t0 = time.perf_counter()
    scored = dict(map_chunks(score_pair_chunk, tasks, client=client, workers=s.workers,
                             desc="Bozorth3 pairs", progress=s.progress))
    pairs = pairs.copy()
    pairs["segment_position"] = segment
    pairs["score"] = pairs["pair_id"].map(scored).astype(float)
    pairs["matcher"] = s.fingerprint_matcher
    return pairs, time.perf_counter() - t0


def confidence_intervals(pairs: pd.DataFrame, person: dict, thresholds: dict, s: EvaluationSettings) -> dict:
    """Subject-bootstrap intervals on every error rate of `pairs` (evaluation.confidence). The
    unit is the person (a finger's owner), so a person's ten fingers, and the mated and non-
    mated pairs that share them, are drawn together."""
    if s.confidence_replicates <= 0 or pairs.empty or not person or "a_sample_id" not in pairs:
        return {}
    a, b = pairs["a_sample_id"].map(person), pairs["b_sample_id"].map(person)
    known = (a.notna() & b.notna()).to_numpy()          # pairs whose people are known
    pairs, a, b = pairs[known], a[known].to_numpy(), b[known].to_numpy()
    units = len(set(a.tolist()) | set(b.tolist()))
    if units < 2:     # one person: every replicate is the data itself, an interval of width 0 says nothing
        return {}
    mated, score = pairs["mated"].to_numpy(bool), pairs["score"].to_numpy(np.float64)
    figures = bootstrap_error_rates(score[mated], a[mated], score[~mated], a[~mated], b[~mated],
                                    thresholds=thresholds, replicates=s.confidence_replicates,
                                    level=s.confidence_level, seed=s.seed)
    return {"level": s.confidence_level, "unit": "person", "units": units,
            "replicates": s.confidence_replicates, **figures} if figures else {}


def _matching_summary(pairs: pd.DataFrame, listed: dict[str, int], s: EvaluationSettings,
                      seconds: float, person: dict | None = None) -> dict:
    op = {f"bozorth3_{s.bozorth3_threshold:g}": s.bozorth3_threshold}
    person = person or {}
    by_kind = {}
    for kind in ordered_kinds(pairs["kind"].unique()):
        p = pairs[pairs["kind"] == kind]
        by_kind[kind] = {"n_pairs": int(len(p)), "unscored_pairs": int(p["score"].isna().sum()),
                         "nonmated_pairs_listed": listed.get(kind, 0),
                         **score_summary(p.loc[p["mated"], "score"], p.loc[~p["mated"], "score"],
                                         thresholds=op),
                         "intervals": confidence_intervals(p, person, op, s)}
    return {"matcher": s.fingerprint_matcher, "native": native_available(),
            "threshold": s.bozorth3_threshold,
            "nonmated_pairs_listed": sum(listed.values()),   # before the seeded cap
            "pairs_per_second": len(pairs) / max(seconds, 1e-9),
            **score_summary(pairs.loc[pairs["mated"], "score"],
                            pairs.loc[~pairs["mated"], "score"], thresholds=op),
            "intervals": confidence_intervals(pairs, person, op, s),
            "kinds": list(by_kind), "by_kind": by_kind}


def _fallback_pairs(fp: pd.DataFrame, s: EvaluationSettings) -> pd.DataFrame:
    """No pairs tables: every two prints of a finger, first prints of two fingers; slaps
    (several fingers each) are left out. The kind follows the two impression types."""
    prints = fp[fp["impression_type"] != "slap"]
    pairs = all_pairs(prints, "fingerprint", s.max_nonmated_pairs, s.seed)
    types = dict(zip(prints["sample_id"], prints["impression_type"].fillna("plain")))
    pairs["kind"] = [pair_kind(types[a], types[b])
                     for a, b in zip(pairs["a_sample_id"], pairs["b_sample_id"])]
    return pairs


def evaluate_fingerprints(root: Path, fp: pd.DataFrame, pairs: pd.DataFrame,
                          s: EvaluationSettings, client=None) -> tuple[dict, pd.DataFrame, dict]:
    """→ (tables {"quality", "slap_segments", "slaps"} plus "templates" — every NBIS template
    made, {sample_id or (slap id, position): (minutiae [N, 5], (height, width))}, for the
    latent search to reuse —, scored pairs, summary).

    ``fp``: manifest rows of the fingerprint modalities (with ``impression_type`` and
    ``segments`` as ``evaluation.dataset.read_manifest`` gives them); ``subject_id`` already
    the finger identity."""
    ppi = (fp["dpi"].fillna(500).astype(int) if "dpi" in fp.columns
           else pd.Series(500, index=fp.index))
    segs = fp["segments"] if "segments" in fp.columns else pd.Series(None, index=fp.index)
    is_slap = (fp["impression_type"] == "slap") & segs.notna()
    assessed = (fp["modality"] == "fingerprint") & (fp["impression_type"].isin(QUALITY_TYPES) | is_slap)
    items = [(sid, path, int(dpi), seg if slap else None) for sid, path, dpi, seg, slap in zip(
        fp.loc[assessed, "sample_id"], fp.loc[assessed, "path"], ppi[assessed],
        segs[assessed], is_slap[assessed])]
    t0 = time.perf_counter()
    out = map_chunks(assess_chunk, [(str(root), c, s.quality_backend, s.quality_bin_edges)
                                    for c in chunked(items, s.chunk_size)],
                     client=client, workers=s.workers, desc=f"{QUALITY_LABEL} quality",
                     progress=s.progress)
    quality_seconds = time.perf_counter() - t0
    templates = {key: (mins, hw) for _, temps, _, _ in out for key, mins, hw in temps}
    rows = [r for rs, _, slap, _ in out if slap is None for r in rs]
    seg_rows = [r for rs, _, slap, _ in out if slap is not None for r in rs]
    slaps = pd.DataFrame([slap for _, _, slap, _ in out if slap is not None])
    boxes = pd.DataFrame([b for _, _, _, bs in out for b in bs], columns=BOX_COLUMNS)
    others = list(zip(fp.loc[~assessed, "sample_id"], fp.loc[~assessed, "path"], ppi[~assessed]))
    if others:
        extra = map_chunks(minutiae_chunk, [(str(root), c) for c in chunked(others, s.chunk_size)],
                           client=client, workers=s.workers, desc="minutiae (no quality)",
                           progress=s.progress)
        templates.update({sid: t for (sid, _, _), t in zip(others, extra)})

    keys = [c for c in ("sample_id", "subject_id", "finger_position", "impression_type")
            if c in fp.columns]
    quality = pd.DataFrame(rows)
    if not quality.empty:
        quality = fp[keys].merge(quality, on="sample_id", how="right")
    segments = pd.DataFrame(seg_rows)
    if not segments.empty:
        segments = fp[keys].merge(segments, on="sample_id", how="right").merge(
            boxes, on=["sample_id", "segment_position"], how="left")
    if not slaps.empty:
        slaps = fp[keys].merge(slaps, on="sample_id", how="right")
    summary: dict = {"n_images": int(len(fp)),
                     "impression_types": {str(k): int(v) for k, v in
                                          fp["impression_type"].value_counts().items()}}
    if len(quality) or len(segments):
        summary["quality"] = _quality_summary(quality, segments, s, quality_seconds)
        wanted = wanted_quality_mix(root)
        if wanted and len(quality):
            summary["quality"]["quality_mix"] = quality_mix_check(quality, wanted)
    if len(slaps):
        summary["slaps"] = _slap_summary(slaps, boxes)

    if pairs.empty:
        pairs = _fallback_pairs(fp, s)
    listed, parts = {}, []
    for kind, p in pairs.groupby("kind", sort=False):
        listed[kind] = int((~p["mated"]).sum())
        parts.append(subsample_nonmated(p.reset_index(drop=True), s.max_nonmated_pairs, s.seed))
    pairs = pd.concat(parts, ignore_index=True) if parts else pairs
    pairs, match_seconds = score_pairs(pairs, fp, templates, s, client)
    # the person behind each print: the finger identity is owner * 16 + position (runner._identity)
    person = dict(zip(fp["sample_id"], fp["subject_id"].astype(np.int64) // 16)) \
        if "finger_position" in fp.columns else dict(zip(fp["sample_id"], fp["subject_id"]))
    summary["matching"] = _matching_summary(pairs, listed, s, match_seconds, person)
    return ({"quality": quality, "slap_segments": segments, "slaps": slaps, "templates": templates},
            pairs, summary)
