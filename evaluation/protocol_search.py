"""1:N identification on a dataset's protocol (protocol/gallery.parquet, protocol/probes.parquet).

Every search is a probe's NBIS MINDTCT template compared with Bozorth3 against each gallery
entry's template (a = probe, b = gallery print, as in the pairs). Small protocols are searched
in full. When probes x gallery exceeds ``protocol_max_comparisons``, a deterministic subset
(``settings.seed``) is searched instead, and ``summary["protocol"]`` says so with the counts:

- ``protocol_searches`` probes: half of them (at most all there are) drawn uniformly among the
  non-mated probes, so that FPIR is measured on more than a handful of searches, the rest among
  the mated ones;
- a gallery subset: the mates of the drawn probes, then entries drawn uniformly among the
  others (enrolled fingers and distractors alike) up to protocol_max_comparisons // searches
  entries. Every drawn probe is searched against that same subset, so the figures are those of
  a 1:N search with a gallery of that size (``gallery_searched``), not of the full gallery:
  rank-k rates fall and FPIR rises with gallery size.

Rank of a mated search: ``latent_search.mate_ranks`` (ties counted against the mate; a mate
that scores 0 like every other entry ranks last). CMC(k) = share of the mated searches with
rank <= k, k = 1 .. min(100, gallery searched). Chance rank-1 is 1 / gallery searched.

FNIR at FPIR (ISO/IEC 19795-1 identification errors, NIST FRVT/ELFT style, candidate list of
one): a non-mated search is a false positive at threshold T when its best gallery score is
>= T; a mated search is a miss at T unless its mate is rank 1 with a score >= T. For each
target FPIR the threshold is the lowest T whose measured FPIR is <= the target, and FNIR is
measured at it. The non-mated searches are the protocol's non-mated probes (open_set); a
protocol without any (closed_set) uses the mated searches with their mate left out, which
``fpir_source`` names.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.errors import EvaluationInputError
from evaluation.fingerprint_matching import native_available
from evaluation.fingerprint_quality import minutiae_chunk
from evaluation.latent_search import TIE_RULE, mate_ranks, rank_figures, search_chunk
from evaluation.parallel import chunked, map_chunks
from evaluation.settings import EvaluationSettings

PROTOCOL_STAGE = "protocol"      # manifest/protocol/: the distractor fingers
RANKS = (1, 5, 10, 20)
CMC_MAX_RANK = 100
FPIR_TARGETS = (0.001, 0.01, 0.1)
MISS_RULE = "a mated search is a miss at T unless its mate is rank 1 with score >= T"
PROBE_ORDER = ("plain", "rolled", "latent")


def has_protocol(root: Path) -> bool:
    return all((Path(root) / "protocol" / f"{name}.parquet").is_file() for name in ("gallery", "probes"))


def read_protocol(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(gallery, probes) as pandas; EvaluationInputError if they cannot be read."""
    import pyarrow.parquet as pq

    try:
        gallery = pq.read_table(Path(root) / "protocol" / "gallery.parquet",
                                columns=["gallery_id", "sample_id", "path", "distractor"]).to_pandas()
        probes = pq.read_table(Path(root) / "protocol" / "probes.parquet",
                               columns=["probe_id", "sample_id", "path", "impression_type", "mated",
                                        "mate_gallery_id"]).to_pandas()
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise EvaluationInputError(f"Cannot read the protocol files in {root}/protocol ({exc}); rerun the "
                                   "command that minted the dataset to rebuild them.") from None
    return gallery, probes


def select_searches(gallery: pd.DataFrame, probes: pd.DataFrame, s: EvaluationSettings
                    ) -> tuple[pd.DataFrame, pd.DataFrame, bool]:
    """(probes searched, gallery searched, sampled?): all of both, or the deterministic subset
    of the module docstring."""
    if len(probes) * len(gallery) <= s.protocol_max_comparisons:
        return probes, gallery, False
    rng = np.random.default_rng(np.random.SeedSequence(entropy=int(s.seed), spawn_key=(101, 1)))
    n_probes = max(1, min(len(probes), s.protocol_searches))
    mated, non_mated = np.flatnonzero(probes["mated"].to_numpy()), np.flatnonzero(~probes["mated"].to_numpy())
    n_non = min(len(non_mated), n_probes // 2)
    n_non = max(n_non, n_probes - len(mated))            # too few mated probes: more non-mated ones
    chosen = np.concatenate([rng.choice(mated, size=n_probes - n_non, replace=False),
                             rng.choice(non_mated, size=n_non, replace=False)])
    picked = probes.iloc[np.sort(chosen)]
    mates = gallery["gallery_id"].isin(set(picked["mate_gallery_id"].dropna()))
    size = max(int(mates.sum()), min(len(gallery), s.protocol_max_comparisons // n_probes))
    others = np.flatnonzero(~mates.to_numpy())
    extra = rng.choice(others, size=min(len(others), size - int(mates.sum())), replace=False)
    keep = np.zeros(len(gallery), bool)
    keep[np.flatnonzero(mates.to_numpy())] = True
    keep[extra] = True
    return picked.reset_index(drop=True), gallery[keep].reset_index(drop=True), True


def _templates(root: Path, rows: pd.DataFrame, known: dict, dpi: dict, s: EvaluationSettings, client) -> dict:
    todo = rows[~rows["sample_id"].isin(list(known))].drop_duplicates("sample_id")
    items = [(sid, path, int(dpi.get(sid) or 500)) for sid, path in zip(todo["sample_id"], todo["path"])]
    made = map_chunks(minutiae_chunk, [(str(root), c) for c in chunked(items, s.chunk_size)],
                      client=client, workers=s.workers, desc="protocol minutiae", progress=s.progress)
    return {**{k: known[k] for k in rows["sample_id"] if k in known},
            **{sid: t for (sid, _, _), t in zip(items, made)}}


def fnir_at_fpir(mate_rank: np.ndarray, mate_score: np.ndarray, non_mated_best: np.ndarray,
                 targets=FPIR_TARGETS) -> list[dict]:
    """[{fpir_target, threshold, fpir, fnir, n_mated, n_non_mated}] (module docstring)."""
    nm = np.asarray(non_mated_best, np.float64)
    rank, score = np.asarray(mate_rank, np.float64), np.asarray(mate_score, np.float64)
    out = []
    for target in targets:
        if nm.size == 0 or rank.size == 0:
            out.append({"fpir_target": target, "threshold": float("nan"), "fpir": float("nan"),
                        "fnir": float("nan"), "n_mated": int(rank.size), "n_non_mated": int(nm.size)})
            continue
        candidates = np.append(np.unique(nm), nm.max() + 1.0)
        fpir = (nm.size - np.searchsorted(np.sort(nm), candidates, side="left")) / nm.size   # share >= t
        threshold = float(candidates[np.argmax(fpir <= target)])
        hit = (rank == 1) & (score >= threshold)
        out.append({"fpir_target": target, "threshold": threshold, "fpir": float((nm >= threshold).mean()),
                    "fnir": float(1.0 - hit.mean()), "n_mated": int(rank.size), "n_non_mated": int(nm.size)})
    return out


def _figures(table: pd.DataFrame, max_rank: int) -> dict:
    ranked = table.loc[table["mated"], "mate_rank"].to_numpy(float)
    return {"n_searches": int(len(table)), "n_mated": int(table["mated"].sum()),
            **rank_figures(ranked, max_rank, RANKS)}


def evaluate_protocol(root: Path, templates: dict, s: EvaluationSettings, client=None, dpi: dict | None = None
                      ) -> tuple[pd.DataFrame, dict]:
    """→ (eval/protocol_search.parquet rows, one per search; summary["protocol"]). ``templates``:
    NBIS templates already made, by sample_id (reused); ``dpi``: sample_id → dpi (500 if absent)."""
    t0 = time.perf_counter()
    root = Path(root)
    gallery_all, probes_all = read_protocol(root)
    probes, gallery, sampled = select_searches(gallery_all, probes_all, s)
    made = _templates(root, pd.concat([probes[["sample_id", "path"]], gallery[["sample_id", "path"]]]),
                      templates, dpi or {}, s, client)
    gallery_templates = [made[sid] for sid in gallery["sample_id"]]
    tasks = [(s.fingerprint_matcher, c, gallery_templates)
             for c in chunked([(pid, *made[sid]) for pid, sid in zip(probes["probe_id"], probes["sample_id"])],
                              s.chunk_size)]
    t1 = time.perf_counter()
    rows = dict(map_chunks(search_chunk, tasks, client=client, workers=s.workers, desc="1:N protocol search",
                           progress=s.progress))
    search_seconds = time.perf_counter() - t1
    scores = np.stack([rows[pid] for pid in probes["probe_id"]]) if len(probes) else np.zeros((0, len(gallery)))
    gallery_ids = gallery["gallery_id"].to_numpy(object)
    is_mate = probes["mate_gallery_id"].to_numpy(object)[:, None] == gallery_ids[None, :]
    non_mate = np.where(is_mate, -np.inf, scores)
    table = probes[["probe_id", "sample_id", "impression_type", "mated", "mate_gallery_id"]].copy()
    table["mate_rank"] = mate_ranks(scores, is_mate)
    table["mate_score"] = np.where(is_mate.any(1), np.where(is_mate, scores, -np.inf).max(1, initial=-np.inf), np.nan)
    table["best_non_mate_score"] = non_mate.max(1, initial=-np.inf) if len(gallery) else np.nan
    table["best_non_mate_gallery_id"] = gallery_ids[non_mate.argmax(1)] if len(gallery) else None
    table["gallery_searched"] = len(gallery)

    max_rank = max(1, min(CMC_MAX_RANK, len(gallery)))
    mated = table[table["mated"] & table["mate_rank"].notna()]
    non_mated = table[~table["mated"]]
    source = "non-mated probes (fingers held out of the gallery)"
    nm_best = non_mated["best_non_mate_score"].to_numpy(float)
    if not len(non_mated):
        source, nm_best = "mated searches with their mate left out (no non-mated probes)", \
            mated["best_non_mate_score"].to_numpy(float)
    types = [t for t in PROBE_ORDER if t in set(table["impression_type"])] + sorted(
        set(table["impression_type"]) - set(PROBE_ORDER))
    summary = {
        "matcher": s.fingerprint_matcher, "native": native_available(), "sampled": sampled,
        "gallery_size": int(len(gallery_all)), "distractors": int(gallery_all["distractor"].sum()),
        "probes": int(len(probes_all)), "probes_mated": int(probes_all["mated"].sum()),
        "searches": int(len(probes)), "gallery_searched": int(len(gallery)),
        "comparisons": int(scores.size), "comparisons_full": int(len(probes_all) * len(gallery_all)),
        "comparisons_per_second": scores.size / search_seconds if search_seconds > 0 else float("nan"),
        "chance_rank_1": 1.0 / len(gallery) if len(gallery) else float("nan"),
        "tie_rule": TIE_RULE, "miss_rule": MISS_RULE, "fpir_source": source, "cmc_max_rank": max_rank,
        # the smallest FPIR step the non-mated searches resolve: a lower target is met only at FPIR 0
        "fpir_resolution": 1.0 / len(nm_best) if len(nm_best) else float("nan"),
        "overall": _figures(table, max_rank),
        "by_type": {t: _figures(table[table["impression_type"] == t], max_rank) for t in types},
        "fnir_at_fpir": fnir_at_fpir(mated["mate_rank"].to_numpy(float), mated["mate_score"].to_numpy(float),
                                     nm_best),
    }
    summary["seconds"] = time.perf_counter() - t0
    return table.reset_index(drop=True), summary
