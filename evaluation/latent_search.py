"""Latent search: every latent's NBIS MINDTCT template searched 1:N with Bozorth3.

Gallery: every rolled print of the dataset. A dataset without rolled prints uses its plain
prints instead, one per finger (its lowest impression number); ``summary["gallery"]`` says
which. Each gallery template is made once: the fingerprint evaluation's templates are reused,
only prints it did not read get one here. A latent's mates are the gallery prints of its
finger (same ``subject_id`` and ``finger_position``).

Rank rule (ties counted against the mate):

    rank = 1 + #{non-mate gallery entries whose score >= the best mate score}

so a mate tied with an impostor at the top is rank 2, not 1, and a latent whose template
scores 0 against everything ranks last. Bozorth3 gives many tied low scores, which an
optimistic rule would count as hits. Other mates of the same finger never count ahead. A
latent whose finger has no gallery print gets no rank (``n_without_mate``).
CMC(k) = share of the ranked searches with rank <= k, k = 1 .. min(100, gallery size).

Visible area as a fraction of the mate: pixels of the truth visible region
(``<truth stem>.mask.png``, 255 inside; ``params.visible_area_px`` without it) over the
foreground pixels of the mate's gallery print, estimated from its image (16x16 block
variance with an Otsu threshold, ``slap_segments.foreground_mask``): the prints' truth holds
no foreground mask. Latents and prints are both 500 ppi, so the areas compare directly.
NBIS minutiae inside the mask: the latent's MINDTCT minutiae whose pixel is in the visible
region, i.e. found on the finger's residue rather than on the surface's text, grain and noise.

Latent pairs (``latent-rolled``, ``latent-plain``; a = latent) are scored like the other
pair kinds and summarised per kind under ``summary["pairs"]``.
"""
from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from evaluation.confidence import wilson_interval
from evaluation.dataset import imread, read_image, read_params, subsample_nonmated
from evaluation.fingerprint_evaluation import _matching_summary, score_pairs
from evaluation.fingerprint_matching import extract_minutiae, native_available, prepared_matcher
from evaluation.fingerprint_quality import minutiae_chunk
from evaluation.parallel import chunked, map_chunks
from evaluation.settings import EvaluationSettings
from evaluation.slap_segments import foreground_mask

VALUE_CLASSES = ("good", "bad", "ugly")      # SD27 order; other classes follow, sorted
LATENT_PARAMS = ("value_class", "target_class", "visible_area_px", "visible_fraction_of_finger",
                 "n_visible_minutiae", "clarity", "surface", "technique", "sampler", "recovered",
                 "mean_abs_difference")
RANKS = (1, 20)
CMC_MAX_RANK = 100
TIE_RULE = "rank = 1 + non-mate gallery entries scoring >= the best mate score (ties count against the mate)"
GALLERY_NOTES = {"rolled": "every rolled print of the dataset",
                 "plain": "no rolled prints in the dataset: the plain prints, one per finger "
                          "(lowest impression)"}


def gallery_prints(prints: pd.DataFrame) -> tuple[pd.DataFrame, str | None]:
    """(gallery rows sorted by sample_id, "rolled" | "plain" | None when there is no print)."""
    rolled = prints[prints["impression_type"] == "rolled"]
    if len(rolled):
        return rolled.sort_values("sample_id").reset_index(drop=True), "rolled"
    plain = prints[prints["impression_type"] == "plain"]
    if plain.empty:
        return plain.reset_index(drop=True), None
    order = [c for c in ("subject_id", "finger_position", "impression", "sample_id") if c in plain]
    first = plain.sort_values(order).groupby(["subject_id", "finger_position"], dropna=False).head(1)
    return first.sort_values("sample_id").reset_index(drop=True), "plain"


def mate_ranks(scores: np.ndarray, is_mate: np.ndarray) -> np.ndarray:
    """Rank of each search's best-scoring mate, ties counted against it (module docstring).

    scores [N, G] (higher = more alike), is_mate [N, G] bool → float [N], NaN where a row has
    no mate."""
    scores = np.asarray(scores, np.float64)
    is_mate = np.asarray(is_mate, bool)
    best = np.where(is_mate, scores, -np.inf).max(axis=1, initial=-np.inf)
    ahead = ((scores >= best[:, None]) & ~is_mate).sum(axis=1)
    return np.where(is_mate.any(axis=1), 1.0 + ahead, np.nan)


def cmc(ranks, max_rank: int) -> np.ndarray:
    """[max_rank] share of the ranked searches (finite ranks) with rank <= k, k = 1..max_rank."""
    r = np.asarray(ranks, np.float64)
    r = r[np.isfinite(r)]
    if r.size == 0:
        return np.full(max_rank, np.nan)
    return (r[None, :] <= np.arange(1, max_rank + 1)[:, None]).mean(axis=1)


def rank_figures(ranks, max_rank: int, ranks_reported=RANKS) -> dict:
    """rank_k (share of the ranked searches with their mate at rank <= k), its Wilson interval
    (each search one trial: a finger's few probes are nearly independent searches) and the
    CMC [max_rank], from the finite ranks of `ranks`."""
    r = np.asarray(ranks, np.float64)
    r = r[np.isfinite(r)]
    out: dict = {}
    for k in ranks_reported:
        out[f"rank_{k}"] = float((r <= k).mean()) if r.size else float("nan")
        out[f"rank_{k}_interval"] = wilson_interval(int((r <= k).sum()), int(r.size))
    out["cmc"] = cmc(r, max_rank).tolist()
    return out


def minutiae_in_mask(minutiae: np.ndarray, mask: np.ndarray) -> int:
    """How many minutiae [N, >=2] (x, y pixels, origin top-left) fall in the bool mask [H, W]."""
    if len(minutiae) == 0:
        return 0
    h, w = mask.shape
    x = np.clip(np.rint(minutiae[:, 0]).astype(int), 0, w - 1)
    y = np.clip(np.rint(minutiae[:, 1]).astype(int), 0, h - 1)
    return int(mask[y, x].sum())


def latent_features_chunk(task: tuple[str, list[tuple[str, str, int, str | None, str | None]]]
                          ) -> list[tuple]:
    """Worker: (dataset root, [(sample_id, image path, ppi, mask path, mate print path)]) →
    per latent (sample_id, minutiae [N, 5], (height, width), NBIS minutiae in the mask,
    mask pixels, mate foreground pixels); NaN where there is no mask or no mate."""
    root, items = task
    out = []
    for sample_id, rel_path, ppi, mask_path, mate_path in items:
        image = read_image(Path(root), rel_path, sample_id, grey=True)
        mins = extract_minutiae(image, ppi)
        inside = area = mate_fg = float("nan")
        mask = imread(Path(root) / mask_path, cv2.IMREAD_GRAYSCALE) if mask_path else None
        if mask is not None:
            mask = mask > 127
            inside, area = float(minutiae_in_mask(mins, mask)), float(mask.sum())
        if mate_path:
            mate = read_image(Path(root), mate_path, f"mate of {sample_id}", grey=True)
            mate_fg = float(foreground_mask(mate).sum())
        out.append((sample_id, mins, image.shape[:2], inside, area, mate_fg))
    return out


def search_chunk(task: tuple[str, list[tuple[str, np.ndarray, tuple[int, int]]],
                             list[tuple[np.ndarray, tuple[int, int]]]]
                 ) -> list[tuple[str, np.ndarray]]:
    """Worker: (matcher name, [(latent id, minutiae, (h, w))], gallery [(minutiae, (h, w))]) →
    [(latent id, scores float64 [G])], a = latent, b = gallery print as in the pairs."""
    name, probes, gallery = task
    matcher = prepared_matcher(name)
    entries = [matcher.prepare(gm, gh, gw) for gm, (gh, gw) in gallery]    # once, not once per probe
    out = []
    with matcher.session():
        for sid, m, (h, w) in probes:
            probe = matcher.prepare(m, h, w)
            out.append((sid, np.array([matcher.compare(probe, g) for g in entries], np.float64)))
    return out


def _mask_path(truth_path) -> str | None:
    if not isinstance(truth_path, str) or not truth_path:
        return None
    stem = truth_path[:-len(Path(truth_path).suffix)] if Path(truth_path).suffix else truth_path
    return f"{stem}.mask.png"


def _missing_templates(root: Path, rows: pd.DataFrame, templates: dict, s: EvaluationSettings,
                       client) -> dict:
    """Templates of the (non-slap) rows that ``templates`` lacks."""
    todo = rows[~rows["sample_id"].isin(list(templates)) & (rows["impression_type"] != "slap")]
    items = list(zip(todo["sample_id"], todo["path"], _ppi(todo)))
    made = map_chunks(minutiae_chunk, [(str(root), c) for c in chunked(items, s.chunk_size)],
                      client=client, workers=s.workers, desc="gallery minutiae", progress=s.progress)
    return {sid: t for (sid, _, _), t in zip(items, made)}


def _ppi(rows: pd.DataFrame) -> list[int]:
    dpi = rows["dpi"] if "dpi" in rows.columns else pd.Series(500, index=rows.index)
    return [int(v) for v in dpi.fillna(500)]


def _finger(rows: pd.DataFrame) -> np.ndarray:
    """int64 [N] finger identity: owner * 16 + ISO finger position (0 when unknown)."""
    if rows.empty:
        return np.zeros(0, np.int64)
    pos = rows["finger_position"].fillna(0).astype(np.int64).to_numpy()
    return rows["subject_id"].astype(np.int64).to_numpy() * 16 + pos


def _median(rows: pd.DataFrame, column: str) -> float:
    v = pd.to_numeric(rows[column], errors="coerce").dropna() if column in rows else ()
    return float(np.median(v)) if len(v) else float("nan")


def search_figures(rows: pd.DataFrame, max_rank: int) -> dict:
    """count, rank-1 / rank-20 (shares of the ranked searches), CMC [max_rank], medians."""
    ranked = rows["mate_rank"].dropna()
    out = {"count": int(len(rows)), "n_searches": int(len(ranked)), **rank_figures(ranked, max_rank, RANKS)}
    for col in ("mate_rank", "mate_score", "best_impostor_score", "nbis_minutiae",
                "nbis_minutiae_in_mask", "n_visible_minutiae", "visible_fraction_of_mate",
                "visible_fraction_of_finger"):
        out[f"median_{col}"] = _median(rows, col)
    return out


def ordered_classes(values) -> list[str]:
    present = set(values)
    return [c for c in VALUE_CLASSES if c in present] + sorted(present - set(VALUE_CLASSES))


def _search(latents: pd.DataFrame, templates: dict, gallery: pd.DataFrame, gallery_templates: list,
            s: EvaluationSettings, client) -> np.ndarray:
    """Bozorth3 scores [N latents, G gallery prints]."""
    probes = [(sid, *templates[sid]) for sid in latents["sample_id"]]
    tasks = [(s.fingerprint_matcher, c, gallery_templates) for c in chunked(probes, s.chunk_size)]
    rows = dict(map_chunks(search_chunk, tasks, client=client, workers=s.workers,
                           desc="latent search", progress=s.progress))
    return np.stack([rows[sid] for sid in latents["sample_id"]]) if len(latents) else \
        np.zeros((0, len(gallery)))


def _search_table(latents: pd.DataFrame, gallery: pd.DataFrame, gallery_type: str | None,
                  scores: np.ndarray | None, features: dict) -> pd.DataFrame:
    """One eval/latent_search.parquet row per latent."""
    keep = [c for c in ("sample_id", "subject_id", "finger_position", "impression", *LATENT_PARAMS)
            if c in latents]
    table = latents[keep].copy()
    if "value_class" not in table:
        table["value_class"] = "unknown"
    table["value_class"] = table["value_class"].fillna("unknown").astype(str)
    is_mate = _finger(latents)[:, None] == _finger(gallery)[None, :]      # [N, G]
    gallery_ids = gallery["sample_id"].to_numpy() if len(gallery) else np.array([], object)
    table["gallery"] = gallery_type
    table["gallery_size"] = len(gallery)
    table["n_mates"] = is_mate.sum(axis=1)
    nan = np.full(len(latents), np.nan)
    if scores is not None and len(gallery):
        mate_scores = np.where(is_mate, scores, -np.inf)
        imp_scores = np.where(is_mate, -np.inf, scores)
        has_mate, has_imp = is_mate.any(1), (~is_mate).any(1)
        table["mate_rank"] = mate_ranks(scores, is_mate)
        table["mate_sample_id"] = np.where(has_mate, gallery_ids[mate_scores.argmax(1)], None)
        table["mate_score"] = np.where(has_mate, mate_scores.max(1), np.nan)
        table["best_impostor_sample_id"] = np.where(has_imp, gallery_ids[imp_scores.argmax(1)], None)
        table["best_impostor_score"] = np.where(has_imp, imp_scores.max(1), np.nan)
    else:
        first = [gallery_ids[np.flatnonzero(r)[0]] if r.any() else None for r in is_mate]
        table["mate_rank"], table["mate_sample_id"], table["mate_score"] = nan, first, nan
        table["best_impostor_sample_id"], table["best_impostor_score"] = None, nan
    f = [features[sid] for sid in latents["sample_id"]]
    table["nbis_minutiae"] = [len(x[0]) for x in f]
    table["nbis_minutiae_in_mask"] = [x[2] for x in f]
    area = np.array([x[3] for x in f], np.float64)
    if "visible_area_px" in latents:     # no mask file: the generator's own count
        area = np.where(np.isnan(area), pd.to_numeric(latents["visible_area_px"]).to_numpy(float), area)
    table["visible_area_px"] = area
    table["mate_foreground_px"] = [x[4] for x in f]
    with np.errstate(divide="ignore", invalid="ignore"):
        table["visible_fraction_of_mate"] = area / table["mate_foreground_px"].to_numpy(float)
    return table.reset_index(drop=True)


def _score_latent_pairs(root, latents, prints, pairs, templates, s, client,
                        searched: tuple[pd.DataFrame, np.ndarray] | None = None):
    """Scored pairs (subsampled per kind as the prints' are) and their per-kind summary. A pair
    of a latent and a gallery print takes its score from the search (same matcher, same
    a = latent / b = print order); only the others are matched."""
    listed, parts = {}, []
    for kind, p in pairs.groupby("kind", sort=False):
        listed[kind] = int((~p["mated"]).sum())
        parts.append(subsample_nonmated(p.reset_index(drop=True), s.max_nonmated_pairs, s.seed))
    pairs = pd.concat(parts, ignore_index=True)
    known = pd.Series(False, index=pairs.index)
    if searched is not None:
        gallery, scores = searched
        a = pairs["a_sample_id"].map(dict(zip(latents["sample_id"], range(len(latents)))))
        b = pairs["b_sample_id"].map(dict(zip(gallery["sample_id"], range(len(gallery)))))
        known = a.notna() & b.notna()
    sides = pd.concat([latents, prints], ignore_index=True)
    rest = pairs[~known]
    named = set(rest["a_sample_id"]) | set(rest["b_sample_id"])
    used = prints[prints["sample_id"].isin(named)]
    templates = {**templates, **_missing_templates(root, used, templates, s, client)}
    scored, seconds = score_pairs(rest, sides, templates, s, client)
    if known.any():
        reused = pairs[known].assign(segment_position=pd.array([pd.NA] * int(known.sum()), "Int8"),
                                     score=scores[a[known].astype(int), b[known].astype(int)],
                                     matcher=s.fingerprint_matcher)
        scored = pd.concat([scored, reused]).sort_index()
    person = dict(zip(sides["sample_id"], sides["subject_id"])) if "subject_id" in sides else None
    return scored.reset_index(drop=True), _matching_summary(scored, listed, s, seconds, person)


def evaluate_latents(root: Path, latents: pd.DataFrame, prints: pd.DataFrame, pairs: pd.DataFrame,
                     templates: dict, s: EvaluationSettings, client=None
                     ) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """→ (eval/latent_search.parquet rows, scored latent pairs, summary["latent_search"]).

    ``latents`` / ``prints``: manifest rows (``read_manifest``) of modality
    latent_fingerprint / fingerprint, ``subject_id`` the finger's owner; ``pairs``: the pairs
    with a latent side; ``templates``: NBIS templates already made, by sample_id (the
    fingerprint evaluation's), reused for the gallery and the pairs."""
    t0 = time.perf_counter()
    root = Path(root)
    params = read_params(root, latents["stage"].unique() if "stage" in latents else (), LATENT_PARAMS)
    latents = latents.merge(params, on="sample_id", how="left").reset_index(drop=True)
    gallery, gallery_type = gallery_prints(prints)
    first_mate: dict[int, str] = {}
    for f, path in zip(_finger(gallery), gallery["path"] if len(gallery) else []):
        first_mate.setdefault(int(f), path)
    items = [(sid, path, ppi, _mask_path(truth), first_mate.get(f)) for sid, path, ppi, truth, f in zip(
        latents["sample_id"], latents["path"], _ppi(latents),
        latents["truth_path"] if "truth_path" in latents else [None] * len(latents),
        _finger(latents).tolist())]
    out = map_chunks(latent_features_chunk, [(str(root), c) for c in chunked(items, s.chunk_size)],
                     client=client, workers=s.workers, desc="latent minutiae", progress=s.progress)
    features = {sid: (mins, hw, inside, area, fg) for sid, mins, hw, inside, area, fg in out}
    latent_templates = {sid: (f[0], f[1]) for sid, f in features.items()}

    summary: dict = {"matcher": s.fingerprint_matcher, "native": native_available(),
                     "gallery": gallery_type, "gallery_note": GALLERY_NOTES.get(gallery_type,
                     "no rolled or plain prints were read: nothing to search"),
                     "gallery_size": int(len(gallery)), "n_latents": int(len(latents)),
                     "tie_rule": TIE_RULE,
                     "visible_area_reference": f"foreground of the mate's {gallery_type or 'gallery'} "
                                               "print (16x16 block-variance mask of its image)"}
    scores, search_seconds = None, 0.0
    if s.latent_search and len(gallery) and len(latents):
        gallery_templates = {**{k: templates[k] for k in gallery["sample_id"] if k in templates},
                             **_missing_templates(root, gallery, templates, s, client)}
        t1 = time.perf_counter()
        scores = _search(latents, latent_templates, gallery,
                         [gallery_templates[k] for k in gallery["sample_id"]], s, client)
        search_seconds = time.perf_counter() - t1
    table = _search_table(latents, gallery, gallery_type, scores, features)
    max_rank = max(1, min(CMC_MAX_RANK, len(gallery)))
    summary.update({"searched": scores is not None, "n_without_mate": int((table["n_mates"] == 0).sum()),
                    "cmc_max_rank": max_rank, "classes": ordered_classes(table["value_class"]),
                    "overall": search_figures(table, max_rank)})
    summary["by_class"] = {c: search_figures(table[table["value_class"] == c], max_rank)
                           for c in summary["classes"]}
    summary["comparisons_per_second"] = (scores.size / search_seconds if scores is not None
                                         and search_seconds > 0 else float("nan"))
    scored = pairs.iloc[0:0]
    if len(pairs):
        scored, summary["pairs"] = _score_latent_pairs(
            root, latents, prints, pairs, {**templates, **latent_templates}, s, client,
            searched=(gallery, scores) if scores is not None else None)
    summary["seconds"] = time.perf_counter() - t0
    return table, scored, summary
