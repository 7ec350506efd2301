"""1:N protocols (`protocol=open_set|closed_set`, `protocol.distractors=N`): the gallery and probe
files a harness loads, what they name, determinism, validate, and the 1:N evaluation on them."""
from __future__ import annotations

import json
import shutil

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import compose_overrides

from evaluation import EvaluationSettings, evaluate_dataset
from evaluation.protocol_search import fnir_at_fpir, select_searches
from pipeline.errors import ConfigError
from pipeline.protocol import finger_hash, held_out_threshold
from pipeline.runner import active_stages, run
from pipeline.config import to_config
from pipeline.validate import regenerate_sample, validate_dataset

# 8 fingers on positions [2, 7] (subjects 0-3), 2 plain + 1 rolled each, clean prints on
# canvases big enough for Bozorth3; 2 fingers held out (non_mated_share 0.25), 6 distractors
# (subjects 4-6), one latent of each of the first 4 fingers.
FINGERS, DISTRACTORS, HELD_OUT = 8, 6, 2
CLEAN = ["dataset=smoke", f"fingerprint.fingers={FINGERS}", "fingerprint.impressions=2", "fingerprint.profile=clean",
         "fingerprint.width=288", "fingerprint.height=320", "fingerprint.master_width=352",
         "fingerprint.master_height=384", "fingerprint.rolled_width=384", "fingerprint.rolled_height=384",
         "protocol=open_set", f"protocol.distractors={DISTRACTORS}", "protocol.non_mated_share=0.25",
         "latent.per_finger=1", "latent.fingers=4", "latent.sampler=procedural", "cluster.workers=1"]


def mint(root, *overrides):
    return run(compose_overrides(*overrides, f"output_dir={root}"))


@pytest.fixture(scope="module")
def minted(tmp_path_factory):
    root = tmp_path_factory.mktemp("protocol") / "ds"
    meta = mint(root, *CLEAN)
    assert meta["status"] == "complete"
    return root


def sql(root, query):
    """DuckDB over the dataset's Parquet files, as a tool outside biomint reads them."""
    con = duckdb.connect()
    con.sql(f"create view gallery as select * from read_parquet('{root}/protocol/gallery.parquet')")
    con.sql(f"create view probes as select * from read_parquet('{root}/protocol/probes.parquet')")
    con.sql(f"create view manifest as select * from read_parquet('{root}/manifest/*/part-*.parquet', union_by_name=true)")
    return con.sql(query).fetchall()


def test_gallery_holds_one_rolled_print_per_enrolled_finger_plus_the_distractors(minted):
    rows = sql(minted, "select distractor, impression_type, count(*), count(distinct gallery_id), "
                       "count(distinct finger_id) from gallery group by all order by 1")
    assert rows == [(False, "rolled", FINGERS - HELD_OUT, FINGERS - HELD_OUT, FINGERS - HELD_OUT),
                    (True, "rolled", DISTRACTORS, DISTRACTORS, DISTRACTORS)]
    # a gallery entry is one finger: g-<subject>-<position>, its print the finger's r00
    assert sql(minted, "select count(*) from gallery where sample_id != 'fp' || substr(gallery_id, 2) || '-r00'") == [(0,)]


def test_every_gallery_and_probe_sample_exists_in_the_manifest_with_its_path(minted):
    for table in ("gallery", "probes"):
        missing = sql(minted, f"select t.sample_id from {table} t left join manifest m "
                              "on t.sample_id = m.sample_id and t.path = m.path where m.sample_id is null")
        assert missing == [], table
    assert all((minted / p).is_file() for (p,) in sql(minted, "select path from gallery union all select path from probes"))


def test_probes_are_the_other_impressions_and_the_latents_each_mated_to_its_own_finger(minted):
    counts = dict(((t, m), n) for t, m, n in sql(minted, "select impression_type, mated, count(*) from probes group by all"))
    latents = sql(minted, "select count(*) from manifest where impression_type = 'latent'")[0][0]
    assert sum(n for (t, _), n in counts.items() if t == "plain") == FINGERS * 2        # every plain print
    assert sum(n for (t, _), n in counts.items() if t == "latent") == latents == 4       # every latent
    # the only rolled print of a finger is its gallery entry, or a non-mated probe when the finger is held out
    assert {m: n for (t, m), n in counts.items() if t == "rolled"} == {False: HELD_OUT}
    assert sum(n for (_, m), n in counts.items() if not m) == HELD_OUT * 3 + sql(
        minted, "select count(*) from probes where not mated and impression_type = 'latent'")[0][0]
    # the expected mate is the gallery entry of the probe's own finger, and it is in the gallery
    wrong = sql(minted, "select count(*) from probes p left join gallery g on p.mate_gallery_id = g.gallery_id "
                        "where p.mated and (g.finger_id is null or g.finger_id != p.finger_id or g.distractor)")
    assert wrong == [(0,)]
    # non-mated probes name no mate, and their finger is not in the gallery
    assert sql(minted, "select count(*) from probes where not mated and (mate_gallery_id is not null "
                       "or finger_id in (select finger_id from gallery))") == [(0,)]


def test_distractors_have_no_probe_and_are_the_fingerprint_stages_further_fingers(minted):
    assert sql(minted, "select count(*) from probes where finger_id in "
                       "(select finger_id from gallery where distractor)") == [(0,)]
    subjects = sorted({s for (s,) in sql(minted, "select subject_id from gallery where distractor")})
    assert subjects == [4, 5, 6]       # after the fingerprint stage's subjects 0-3, never one of theirs
    # a distractor is the print `fingerprint.fingers=F+D` would mint: the fingerprint stage's seeds
    from pipeline.stages import StageContext
    from pipeline.stages import fingerprint as fingerprint_stage
    from pipeline.sharding import Shard

    config = to_config(compose_overrides(*CLEAN, f"fingerprint.fingers={FINGERS + DISTRACTORS}"))
    context = StageContext(root=minted.parent / "bigger", seed=0)
    rows = fingerprint_stage.run_shard(Shard(0, 5, 6), config.fingerprint, context)
    bigger = {r["sample_id"]: r["sha256"] for r in rows if r["impression_type"] == "rolled"}
    ours = dict(sql(minted, "select sample_id, sha256 from manifest where subject_id = 5"))
    assert bigger == ours and len(ours) == 2
    ok, _, _ = regenerate_sample(minted, "fp-00000005-07-r00", minted.parent / "r.png")
    assert ok


def test_validate_checks_the_protocol_files(minted, tmp_path):
    report = validate_dataset(minted)
    assert report.ok, report.summary()
    assert any(line.startswith("protocol: gallery") for line in report.lines)
    copy = tmp_path / "copy"
    shutil.copytree(minted, copy)
    probes = pq.read_table(copy / "protocol" / "probes.parquet")
    bogus = probes.set_column(probes.schema.get_field_index("sample_id"), "sample_id",
                              pa.array(["fp-99999999-02-00"] + probes["sample_id"].to_pylist()[1:]))
    pq.write_table(bogus, copy / "protocol" / "probes.parquet")
    problems = validate_dataset(copy).problems
    assert any("probes.parquet differs" in p for p in problems)
    assert any("sample fp-99999999-02-00 is not in the manifest" in p for p in problems)
    (copy / "protocol" / "gallery.parquet").unlink()
    assert any("gallery.parquet does not exist" in p for p in validate_dataset(copy).problems)


def test_dataset_json_records_the_protocol_config_and_counts(minted):
    meta = json.loads((minted / "dataset.json").read_text())
    recorded = meta["config"]["protocol"]
    assert (recorded["kind"], recorded["distractors"], recorded["non_mated_share"]) == ("open_set", DISTRACTORS, 0.25)
    assert meta["protocol"]["gallery"] == {"enrolled": FINGERS - HELD_OUT, "distractors": DISTRACTORS}
    assert meta["protocol"]["held_out_fingers"] == HELD_OUT
    assert meta["protocol"]["files"]["probes"]["rows"] == pq.ParquetFile(minted / "protocol" / "probes.parquet").metadata.num_rows


def test_same_seed_gives_the_same_protocol_bytes_whatever_the_workers(tmp_path):
    small = ["dataset=smoke", "fingerprint.fingers=6", "protocol=open_set", "protocol.distractors=3",
             "protocol.non_mated_share=0.3"]
    one, two = tmp_path / "one", tmp_path / "two"
    mint(one, *small, "cluster.workers=1")
    mint(two, *small, "cluster.workers=2")
    for name in ("gallery", "probes"):
        assert (one / "protocol" / f"{name}.parquet").read_bytes() == (two / "protocol" / f"{name}.parquet").read_bytes()
    other_seed = tmp_path / "seed1"
    mint(other_seed, *small, "cluster.workers=1", "seed=1")
    assert (one / "protocol" / "probes.parquet").read_bytes() != (other_seed / "protocol" / "probes.parquet").read_bytes()


def test_protocol_none_writes_and_records_nothing(tmp_path):
    meta = mint(tmp_path / "none", "dataset=smoke", "cluster.workers=1")
    assert "protocol" not in meta and "protocol" not in meta["config"]
    assert not (tmp_path / "none" / "protocol").exists() and not (tmp_path / "none" / "manifest" / "protocol").exists()


def test_bad_protocol_values_are_one_sentence(tmp_path):
    for overrides, words in ((["protocol=open_set", "protocol.distractors=-1"], "protocol.distractors=-1"),
                             (["protocol=closed_set", "fingerprint.rolled=0", "protocol.gallery=rolled"], "rolled prints"),
                             (["protocol=open_set", "protocol.non_mated_share=1.5"], "non_mated_share=1.5"),
                             (["protocol=open_set", "protocol.probe_types=[plain,slap]"], "probe_types")):
        with pytest.raises(ConfigError, match=words):
            active_stages(to_config(compose_overrides("dataset=smoke", f"output_dir={tmp_path}", *overrides)))


def test_held_out_fingers_are_an_exact_count_decided_per_finger():
    assert len(np.unique(finger_hash(np.arange(100_000), 12345))) == 100_000      # a bijection: no ties
    count, threshold = held_out_threshold(1000, 0.1, 12345)
    assert count == 100 and int((finger_hash(np.arange(1000), 12345) <= threshold).sum()) == 100
    assert held_out_threshold(1000, 0.0, 12345) == (0, None)


def test_evaluation_cmc_rises_to_one_and_rank_1_is_far_above_chance_on_clean_prints(minted):
    summary = evaluate_dataset(minted, EvaluationSettings(protocol_only=True, workers=1, progress=False))
    pr = summary["protocol"]
    assert not pr["sampled"] and pr["comparisons"] == pr["comparisons_full"] == 22 * 12
    cmc = np.array(pr["overall"]["cmc"])
    assert np.all(np.diff(cmc) >= 0) and cmc[-1] == 1.0 and len(cmc) == 12
    assert pr["by_type"]["plain"]["rank_1"] >= 0.8 > 5 * pr["chance_rank_1"]
    assert pr["fpir_source"].startswith("non-mated probes")
    assert [r["fpir_target"] for r in pr["fnir_at_fpir"]] == [0.001, 0.01, 0.1]
    assert json.loads((minted / "eval" / "summary.json").read_text())["protocol"]["comparisons"] == 264
    table = pd.read_parquet(minted / "eval" / "protocol_search.parquet")
    assert len(table) == 22 and table.loc[~table["mated"], "mate_rank"].isna().all()
    page = (minted / "report" / "index.html").read_text()
    assert "1:N protocol" in page and "FNIR at FPIR" in page and "264 comparisons" in page


def test_a_large_protocol_is_searched_on_a_deterministic_subset_within_the_budget():
    gallery = pd.DataFrame({"gallery_id": [f"g-{i:08d}" for i in range(5000)], "sample_id": range(5000),
                            "path": "x", "distractor": np.arange(5000) >= 1000})
    probes = pd.DataFrame({"probe_id": range(8000), "sample_id": range(8000), "path": "x", "impression_type": "plain",
                           "mated": np.arange(8000) % 8 != 0})
    probes["mate_gallery_id"] = [f"g-{i % 1000:08d}" if m else None for i, m in zip(range(8000), probes["mated"])]
    s = EvaluationSettings(protocol_max_comparisons=20_000, protocol_searches=100)
    picked, subset, sampled = select_searches(gallery, probes, s)
    assert sampled and len(picked) == 100 and len(picked) * len(subset) <= 20_000
    assert (~picked["mated"]).sum() == 50         # half the searches non-mated, for FPIR
    assert set(picked["mate_gallery_id"].dropna()) <= set(subset["gallery_id"])      # every mate searched for
    again = select_searches(gallery, probes, s)
    assert again[0]["probe_id"].tolist() == picked["probe_id"].tolist()
    assert again[1]["gallery_id"].tolist() == subset["gallery_id"].tolist()


def test_fnir_at_fpir_takes_the_lowest_threshold_within_the_target():
    non_mated = np.array([10, 20, 30, 40, 50, 60, 70, 80, 90, 100], float)   # best score of each non-mated search
    rank = np.array([1, 1, 1, 2], float)
    score = np.array([120, 95, 45, 200], float)
    at = {r["fpir_target"]: r for r in fnir_at_fpir(rank, score, non_mated, targets=(0.0, 0.1, 0.5))}
    assert at[0.0]["threshold"] == 101 and at[0.0]["fpir"] == 0 and at[0.0]["fnir"] == 0.75
    assert at[0.1]["threshold"] == 100 and at[0.1]["fpir"] == 0.1 and at[0.1]["fnir"] == 0.75
    assert at[0.5]["threshold"] == 60 and at[0.5]["fnir"] == 0.5       # rank 2 is a miss whatever its score


def test_plan_counts_the_distractor_fingers(tmp_path):
    from pipeline.plan import plan_command

    text = plan_command(["dataset=smoke", f"output_dir={tmp_path / 'ds'}", "protocol=open_set", "protocol.distractors=10"])
    line = next(line for line in text.splitlines() if line.strip().startswith("protocol:"))
    assert "10 samples of 5 subjects" in line and line.endswith("pairs none")
    assert not (tmp_path / "ds").exists()


def test_a_rerun_rebuilds_damaged_protocol_files_byte_for_byte(minted, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(minted, copy)
    before = (copy / "protocol" / "gallery.parquet").read_bytes()
    (copy / "protocol" / "gallery.parquet").unlink()
    (copy / "protocol" / "probes.parquet").write_bytes(b"not parquet")
    meta = mint(copy, *CLEAN)           # nothing to mint: the rerun notices the damage and rebuilds
    assert meta["status"] == "complete" and (copy / "protocol" / "gallery.parquet").read_bytes() == before
    assert validate_dataset(copy).ok


def test_without_non_mated_probes_fpir_comes_from_the_mated_searches_with_their_mate_left_out(minted, tmp_path):
    copy = tmp_path / "closed"
    shutil.copytree(minted, copy, ignore=shutil.ignore_patterns("eval", "report"))
    probes = pq.read_table(copy / "protocol" / "probes.parquet")
    pq.write_table(probes.filter(probes["mated"]), copy / "protocol" / "probes.parquet")
    pr = evaluate_dataset(copy, EvaluationSettings(protocol_only=True, workers=1, progress=False))["protocol"]
    assert pr["fpir_source"].startswith("mated searches with their mate left out")
    assert pr["fnir_at_fpir"][0]["n_non_mated"] == pr["overall"]["n_mated"] == pr["searches"]


def test_with_storage_tar_the_protocol_names_the_tar_members(tmp_path):
    root = tmp_path / "tar"
    mint(root, "dataset=smoke", "storage=tar", "fingerprint.fingers=6", "protocol=open_set", "protocol.distractors=4",
         "cluster.workers=1")
    paths = sql(root, "select path from gallery union all select path from probes")
    assert paths and all("#" in p and (root / p.split("#")[0]).is_file() for (p,) in paths)
    assert validate_dataset(root).ok
