"""Latent prints through the pipeline: rows and ground truth, pairs against the fingerprint
stage's rolled and plain prints, identity with the fingerprint stage's fingers, determinism
across shard layouts, byte-exact regenerate, the identity gate, and one-sentence errors."""
from __future__ import annotations

import duckdb
import numpy as np
import pyarrow.dataset as ds
import pytest
from conftest import compose_overrides, run_biomint

from pipeline.errors import CheckpointError, ConfigError
from pipeline.runner import run
from pipeline.validate import regenerate_sample, validate_dataset

# smoke: 4 fingers at positions [2, 7] -> 2 subjects, 2 plain + 1 rolled each
LATENTS = ["dataset=smoke", "latent.per_finger=2", "pairs.non_mated=30", "latent.class_mix=[1,0,0]"]
# (the smoke finger is small: only "good"-sized visible regions show a few minutiae)


def mint(root, *overrides):
    return run(compose_overrides(*LATENTS, f"output_dir={root}", *overrides))


@pytest.fixture(scope="module")
def minted(tmp_path_factory):
    root = tmp_path_factory.mktemp("latent") / "ds"
    meta = mint(root, "cluster.workers=2", "dataset.shard_size=1")
    assert meta["status"] == "complete"
    return root


def latent_rows(root):
    return ds.dataset(root / "manifest" / "latent", format="parquet").to_table().to_pylist()


def dropped(root):
    import json

    return [d for f in (root / "manifest" / "latent" / "_stats").glob("*.json")
            for d in json.loads(f.read_text())["dropped"]]


def test_rows_are_latents_of_the_fingerprint_stage_fingers_with_their_ground_truth(minted):
    from PIL import Image

    rows = latent_rows(minted)
    assert len(rows) + len(dropped(minted)) == 4 * 2 and rows
    for row in rows:
        assert (row["modality"], row["impression_type"], row["width"], row["height"]) == ("latent_fingerprint", "latent",
                                                                                          192, 192)
        assert row["sample_id"].startswith(f"fp-{row['subject_id']:08d}-{row['finger_position']:02d}-l")
        p = row["params"]
        assert p["value_class"] in ("good", "bad", "ugly") and p["sampler"] == "diffusion"
        assert (p["sampler_steps"], p["t0"]) == (3, 0.2) and p["checkpoint"].startswith("weights@")
        assert p["mean_abs_difference"] > 0.5          # the diffusion latent is not its procedural start
        xyt = (minted / row["truth_path"]).read_text().split("\n")
        assert len([line for line in xyt if line.strip()]) == p["n_visible_minutiae"]
        mask = np.asarray(Image.open(minted / row["truth_path"].replace(".xyt", ".mask.png")))
        assert int((mask > 0).sum()) == p["visible_area_px"]
        assert np.load(minted / row["truth_path"].replace(".xyt", ".orientation.npy")).shape == (24, 24)


def test_pairs_name_latents_against_rolled_and_plain_prints_of_the_same_finger(minted):
    report = validate_dataset(minted)
    assert report.ok, report.summary()
    con = duckdb.connect()
    con.sql(f"create view m as select * from read_parquet('{minted}/manifest/*/*.parquet', union_by_name=true)")
    con.sql(f"create view p as select * from read_parquet('{minted}/pairs/latent-*/*.parquet')")
    n = len(latent_rows(minted))
    kinds = dict(con.sql("select kind, count(*) filter (where mated) from p group by 1").fetchall())
    assert kinds == {"latent-rolled": n * 1, "latent-plain": n * 2}
    bad = con.sql("""select count(*) from p join m a on p.a_sample_id = a.sample_id join m b on p.b_sample_id = b.sample_id
                     where a.impression_type != 'latent' or b.impression_type != split_part(p.kind, '-', 2)
                        or p.mated != (a.subject_id = b.subject_id and a.finger_position = b.finger_position)""").fetchall()
    assert bad[0][0] == 0


def test_latents_grow_the_master_prints_of_the_fingerprint_stage(minted):
    """A latent's mates are its finger's plain and rolled prints: the latent stage grows the
    very master print the fingerprint stage grew (same seed sequence, same settings)."""
    from generators.fingerprint import make_master
    from pipeline.manifest import load_dataset_json
    from pipeline.stages import StageContext
    from pipeline.stages import fingerprint as fingerprint_stage
    from pipeline.stages import latent as latent_stage
    from pipeline.validate import stage_config_from

    meta = load_dataset_json(minted)
    config = stage_config_from(meta, latent_stage)
    context = StageContext(root=minted, seed=int(meta["seed"]))
    grown = latent_stage._masters(config, context, 1, [7], "cpu")[7]
    settings = fingerprint_stage.settings_from(config.fingerprint)
    expected = make_master(settings, 7, fingerprint_stage._master_rng(context, 1, 7))
    assert grown.ridges.shape == (224, 240) and np.array_equal(grown.minutiae, expected.minutiae)
    assert latent_stage.overlap_position(config, 1, 7) == 2      # the subject's other finger


def test_same_bytes_for_another_shard_layout_and_regenerate_is_exact(minted, tmp_path):
    other = tmp_path / "other"
    mint(other, "cluster.workers=1", "dataset.shard_size=2")
    key = ["sample_id", "sha256", "seed"]
    table = lambda root: ds.dataset(root / "manifest" / "latent", format="parquet").to_table().select(key)
    assert table(minted).sort_by("sample_id").equals(table(other).sort_by("sample_id"))
    sid = latent_rows(minted)[0]["sample_id"]
    same, row, _ = regenerate_sample(minted, sid, tmp_path / "again.png")
    assert same and row["impression_type"] == "latent"


def test_adding_latents_changes_no_fingerprint_byte(minted, tmp_path):
    plain = tmp_path / "plain"
    run(compose_overrides("dataset=smoke", "pairs.non_mated=30", f"output_dir={plain}"))
    key = ["sample_id", "sha256"]
    table = lambda root: ds.dataset(root / "manifest" / "fingerprint", format="parquet").to_table().select(key)
    assert table(minted).sort_by("sample_id").equals(table(plain).sort_by("sample_id"))


def test_the_identity_gate_drops_latents_that_lose_their_minutiae_and_counts_them(tmp_path):
    """One DDIM step from pure noise draws ridges the model imagines: with gate_keep=1 such
    latents fail the gate, are dropped and recorded, and the dataset still validates."""
    root = tmp_path / "gate"
    meta = mint(root, "latent.t0=1.0", "latent.steps=1", "latent.gate_keep=1.0", "latent.gate_attempts=1",
                "fingerprint.fingers=4")
    gone = dropped(root)
    assert gone and all("identity gate" in d["reason"] for d in gone)
    assert meta["stages"]["latent"]["rows"] + len(gone) == 8
    assert validate_dataset(root).ok


def test_procedural_sampler_needs_no_checkpoint_and_bad_input_is_one_sentence(tmp_path):
    root = tmp_path / "proc"
    meta = mint(root, "latent.sampler=procedural", "latent.checkpoint=/nonexistent")
    assert meta["stages"]["latent"]["rows"] == 8
    assert {r["params"]["sampler"] for r in latent_rows(root)} == {"procedural"}
    with pytest.raises(CheckpointError, match="holds no latent diffusion checkpoint"):
        mint(tmp_path / "x", f"latent.checkpoint={tmp_path}")
    with pytest.raises(ConfigError, match="latent.fingers=9 is more than fingerprint.fingers=4"):
        mint(tmp_path / "y", "latent.fingers=9")
    done = run_biomint("dataset=smoke", "latent.per_finger=1", "latent.sampler=mystery", f"output_dir={tmp_path / 'z'}")
    assert done.returncode == 2 and "latent.sampler=mystery is not allowed" in done.stderr
