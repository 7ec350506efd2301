"""Latent search in `biomint evaluate`: a real smoke dataset with latents (procedural sampler,
so every latent requested is minted), evaluated in-process.

Six fingers (three subjects x positions 2 and 7), each with two plain prints, one rolled print
and two latents: twelve latents searched against a gallery of six rolled prints.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from evaluation import EvaluationSettings, evaluate_dataset
from evaluation.fingerprint_matching import bozorth3, extract_minutiae
from evaluation.latent_search import (VALUE_CLASSES, cmc, evaluate_latents, gallery_prints,
                                      mate_ranks, search_chunk)
from evaluation.parallel import map_chunks
from evaluation.report import format_summary

FINGERS, PER_FINGER = 6, 2
TIMING = {"images_per_second", "pairs_per_second", "seconds"}


@pytest.fixture(scope="module")
def minted(tmp_path_factory):
    from conftest import compose_overrides
    from pipeline.runner import run

    root = tmp_path_factory.mktemp("latent") / "ds"
    run(compose_overrides("dataset=smoke", f"fingerprint.fingers={FINGERS}",
                          f"latent.per_finger={PER_FINGER}", "latent.sampler=procedural",
                          "pairs.non_mated=30", "cluster.workers=1", "dataset.shard_size=3",
                          f"output_dir={root}"))
    return root


@pytest.fixture(scope="module")
def evaluated(minted):
    summary = evaluate_dataset(minted, EvaluationSettings(progress=False, workers=1))
    return minted, summary, pd.read_parquet(minted / "eval" / "latent_search.parquet")


def _manifest(root: Path, stage: str) -> pd.DataFrame:
    return pd.read_parquet(root / "manifest" / stage)


def test_one_row_per_latent_ranked_within_the_rolled_gallery(evaluated):
    root, summary, table = evaluated
    latents, prints = _manifest(root, "latent"), _manifest(root, "fingerprint")
    rolled = prints[prints["impression_type"] == "rolled"]
    assert len(latents) == FINGERS * PER_FINGER
    assert sorted(table["sample_id"]) == sorted(latents["sample_id"]) and table["sample_id"].is_unique
    ls = summary["latent_search"]
    assert ls["gallery"] == "rolled" and ls["gallery_size"] == len(rolled) == FINGERS
    assert ls["n_latents"] == len(table) and ls["n_without_mate"] == 0 and ls["searched"]
    assert table["mate_rank"].between(1, ls["gallery_size"]).all()
    assert (table["n_mates"] == 1).all()
    # the mate is the rolled print of the latent's own finger, the best impostor is not
    finger = dict(zip(prints["sample_id"], zip(prints["subject_id"], prints["finger_position"])))
    own = list(zip(table["subject_id"], table["finger_position"]))
    assert [finger[m] for m in table["mate_sample_id"]] == own
    assert all(finger[b] != f for b, f in zip(table["best_impostor_sample_id"], own))
    assert set(table["mate_sample_id"]) <= set(rolled["sample_id"])
    # what NBIS finds inside the visible region is part of what it finds
    assert (table["nbis_minutiae_in_mask"] <= table["nbis_minutiae"]).all()
    params = pd.DataFrame(list(latents["params"]), index=latents["sample_id"])
    assert (table.set_index("sample_id")["visible_area_px"]
            == params.loc[table["sample_id"], "visible_area_px"].to_numpy()).all()
    assert ((table["visible_fraction_of_mate"] > 0) & (table["visible_fraction_of_mate"] < 1)).all()


def test_a_rank_recomputed_by_hand_from_bozorth3(evaluated):
    """One latent against every rolled print, scored here: its rank follows the tie rule, and
    the latent-rolled pairs table holds the same scores (taken from the search)."""
    root, summary, table = evaluated
    row = table.sort_values("sample_id").iloc[0]
    latents, prints = _manifest(root, "latent"), _manifest(root, "fingerprint")
    path = dict(zip(pd.concat([latents, prints])["sample_id"], pd.concat([latents, prints])["path"]))
    latent = cv2.imread(str(root / path[row["sample_id"]]), cv2.IMREAD_GRAYSCALE)
    probe = extract_minutiae(latent)
    scores = {}
    for sid in prints.loc[prints["impression_type"] == "rolled", "sample_id"]:
        image = cv2.imread(str(root / path[sid]), cv2.IMREAD_GRAYSCALE)
        scores[sid] = bozorth3(probe, extract_minutiae(image), latent.shape[0], image.shape[0],
                               latent.shape[1], image.shape[1])
    pairs = pd.read_parquet(root / "eval" / "fingerprint_pairs.parquet")
    mine = pairs[(pairs["kind"] == "latent-rolled") & (pairs["a_sample_id"] == row["sample_id"])]
    assert len(mine) and all(score == pytest.approx(scores[b])
                             for b, score in zip(mine["b_sample_id"], mine["score"]))
    assert mine["segment_position"].isna().all()
    mate = scores.pop(row["mate_sample_id"])
    assert row["mate_score"] == pytest.approx(mate)
    assert row["best_impostor_score"] == pytest.approx(max(scores.values()))
    assert row["mate_rank"] == 1 + sum(v >= mate for v in scores.values())
    assert mine.loc[mine["mated"], "score"].tolist() == [pytest.approx(mate)]


def test_cmc_per_class_is_a_cumulative_share(evaluated):
    _, summary, table = evaluated
    ls = summary["latent_search"]
    assert ls["cmc_max_rank"] == min(100, ls["gallery_size"])
    for name, f in [*ls["by_class"].items(), ("all", ls["overall"])]:
        curve = np.asarray(f["cmc"])
        assert len(curve) == ls["cmc_max_rank"], name
        assert (np.diff(curve) >= 0).all() and 0 <= curve[0] and curve[-1] <= 1, name
        assert f["rank_1"] == pytest.approx(curve[0]) and f["rank_1"] <= f["rank_20"], name
    # every latent has a mate in a gallery of six: all are found by rank 6
    assert ls["overall"]["cmc"][-1] == 1.0 and ls["overall"]["rank_20"] == 1.0
    assert ls["overall"]["rank_1"] == pytest.approx((table["mate_rank"] == 1).mean())


def test_per_class_counts_sum_to_the_total(evaluated):
    root, summary, table = evaluated
    ls = summary["latent_search"]
    assert set(ls["classes"]) <= set(VALUE_CLASSES) and ls["classes"] == list(ls["by_class"])
    assert sum(f["count"] for f in ls["by_class"].values()) == ls["overall"]["count"] == len(table)
    assert {c: f["count"] for c, f in ls["by_class"].items()} == \
        table["value_class"].value_counts().to_dict()
    for cls, f in ls["by_class"].items():
        rows = table[table["value_class"] == cls]
        assert f["median_nbis_minutiae_in_mask"] == pytest.approx(rows["nbis_minutiae_in_mask"].median())
        assert f["median_visible_fraction_of_mate"] == pytest.approx(
            rows["visible_fraction_of_mate"].median())
    saved = json.loads((root / "eval" / "summary.json").read_text())["latent_search"]
    assert saved["by_class"].keys() == ls["by_class"].keys() and saved["gallery"] == "rolled"


def test_latent_pairs_are_scored_and_summarised_apart(evaluated):
    root, summary, _ = evaluated
    pairs = pd.read_parquet(root / "eval" / "fingerprint_pairs.parquet")
    listed = pd.concat([pd.read_parquet(p) for p in (root / "pairs").glob("latent-*/*.parquet")])
    by_kind = summary["latent_search"]["pairs"]["by_kind"]
    assert set(by_kind) == set(listed["kind"]) == {"latent-rolled", "latent-plain"}
    for kind, k in by_kind.items():
        mine = listed[listed["kind"] == kind]
        assert (k["n_genuine"], k["n_impostor"]) == (mine["mated"].sum(), (~mine["mated"]).sum())
        assert k["unscored_pairs"] == 0
    assert pairs.loc[pairs["kind"].str.startswith("latent-"), "score"].notna().all()
    # the prints' Bozorth3 figures leave latent kinds out
    assert not any(k.startswith("latent") for k in summary["fingerprint"]["matching"]["kinds"])
    assert "latent" not in summary["fingerprint"]["impression_types"]


def test_prints_figures_are_those_of_the_fingerprint_stage_alone(evaluated):
    """Evaluating only the fingerprint stage (latent pairs then name unread samples and are
    left out) reports the very same fingerprint figures."""
    root, summary, _ = evaluated
    alone = evaluate_dataset(root, EvaluationSettings(progress=False, workers=1, write_report=False,
                                                      stages=("fingerprint",)))
    assert "latent_search" not in alone

    def strip(d):
        return {k: strip(v) if isinstance(v, dict) else v for k, v in d.items() if k not in TIMING}

    assert strip(alone["fingerprint"]) == strip(summary["fingerprint"])


def test_report_and_terminal_summary_have_the_latent_search(evaluated):
    root, summary, _ = evaluated
    page = Path(summary["report"]).read_text()
    for text in ("<h2>Latent search", "Rank-1 and rank-20 per value class", 'alt="latent CMC"',
                 'alt="latent histograms"', 'alt="bozorth3 hist latent-rolled"',
                 "Latents beside their mates", "<h2>DET curves"):
        assert text in page, text
    text = format_summary(summary)
    assert "latent search: 12 latents vs 6 rolled prints" in text
    for cls in summary["latent_search"]["classes"]:
        assert sum(line.startswith(f"    {cls}: ") for line in text.splitlines()) == 1, cls


def test_tie_rule_on_a_hand_made_score_matrix():
    """rank = 1 + impostors scoring at least the best mate; other mates never count ahead."""
    scores = np.array([[9, 3, 3, 1],     # mate (col 0) alone at the top        → 1
                       [5, 5, 2, 0],     # mate tied with an impostor at the top → 2
                       [0, 0, 0, 0],     # nothing matches: last                 → 4
                       [4, 7, 6, 4],     # two impostors higher, one tied        → 4
                       [2, 8, 1, 3],     # two mates (cols 0, 1): the best is 8  → 1
                       [6, 6, 6, 6]], float)
    is_mate = np.zeros_like(scores, bool)
    is_mate[:4, 0] = True
    is_mate[4, :2] = True               # row 5 has no mate in the gallery
    ranks = mate_ranks(scores, is_mate)
    assert ranks[:5].tolist() == [1, 2, 4, 4, 1] and np.isnan(ranks[5])
    # CMC over the ranked searches only: ranks 1, 2, 4, 4, 1
    assert cmc(ranks, 4).tolist() == [0.4, 0.6, 0.6, 1.0]


def test_gallery_falls_back_to_one_plain_print_per_finger(minted):
    from evaluation.dataset import read_manifest

    manifest = read_manifest(minted)
    prints = manifest[(manifest["modality"] == "fingerprint") & (manifest["impression_type"] != "rolled")]
    gallery, kind = gallery_prints(prints)
    assert kind == "plain" and len(gallery) == FINGERS and (gallery["impression"] == 0).all()
    latents = manifest[manifest["modality"] == "latent_fingerprint"].reset_index(drop=True)
    s = EvaluationSettings(progress=False, workers=1)
    table, scored, ls = evaluate_latents(minted, latents, prints, pairs=pd.DataFrame(),
                                         templates={}, s=s)
    assert ls["gallery"] == "plain" and "plain" in ls["gallery_note"] and ls["gallery_size"] == FINGERS
    assert set(table["mate_sample_id"]) <= set(gallery["sample_id"]) and scored.empty
    assert table["mate_rank"].between(1, FINGERS).all() and "pairs" not in ls


def test_search_on_worker_processes_scores_as_in_process(minted):
    prints = _manifest(minted, "fingerprint")
    templates = []
    for p in prints["path"]:
        image = cv2.imread(str(minted / p), cv2.IMREAD_GRAYSCALE)
        templates.append((extract_minutiae(image), image.shape[:2]))
    # the six richest prints: Bozorth3 scores 0 even against itself below ~15 minutiae, and
    # the smoke preset's plain canvases hold about 10
    templates = sorted(templates, key=lambda t: -len(t[0]))[:6]
    probes = [(f"probe{k}", m, hw) for k, (m, hw) in enumerate(templates)]
    tasks = [("bozorth3", probes[k:k + 2], templates) for k in range(0, 6, 2)]
    here = map_chunks(search_chunk, tasks, workers=1, progress=False)
    there = map_chunks(search_chunk, tasks, workers=2, progress=False)
    assert [sid for sid, _ in here] == [sid for sid, _ in there] == [p[0] for p in probes]
    for (_, a), (_, b) in zip(here, there):
        assert np.array_equal(a, b)
    # a print against itself is its best score
    assert all(row.argmax() == k for k, (_, row) in enumerate(here))
