"""Rolled prints and slaps through the pipeline: manifest rows and columns, the pair kinds,
determinism across shard layouts, resume-safe counts, validate and byte-exact regenerate."""
from __future__ import annotations

import duckdb
import pyarrow.dataset as ds
import pytest
from conftest import compose_overrides

from pipeline.runner import run
from pipeline.validate import regenerate_sample, validate_dataset

# 4 fingers over positions [2, 7] -> 2 subjects; per subject slap 13 (finger 2) and 14 (finger 7)
SLAPS = ["dataset=smoke", "fingerprint.slaps=true", "pairs.non_mated=30"]
ROWS = 4 * (2 + 1) + 2 * 2


def mint(root, *overrides):
    return run(compose_overrides(*SLAPS, f"output_dir={root}", *overrides))


@pytest.fixture(scope="module")
def minted(tmp_path_factory):
    root = tmp_path_factory.mktemp("types") / "ds"
    meta = mint(root, "cluster.workers=2", "dataset.shard_size=1")
    assert meta["status"] == "complete"
    return root


def manifest(root):
    return ds.dataset(root / "manifest" / "fingerprint", format="parquet").to_table()


def test_rows_carry_their_impression_type_and_ansi_nist_code(minted):
    table = manifest(minted)
    assert table.num_rows == ROWS
    counts = dict(duckdb.sql(f"select impression_type, count(*) from read_parquet('{minted}/manifest/fingerprint/*.parquet') "
                             "group by 1").fetchall())
    assert counts == {"plain": 8, "rolled": 4, "slap": 4}
    rows = {r["sample_id"]: r for r in table.to_pylist()}
    rolled = rows["fp-00000001-07-r00"]
    assert (rolled["impression_type"], rolled["width"], rolled["height"]) == ("rolled", 320, 288)
    assert rolled["params"]["ansi_nist_impression_code"] in (1, 3) and rolled["params"]["segments"] is None
    assert rows["fp-00000001-07-00"]["params"]["ansi_nist_impression_code"] == 0
    slap = rows["fp-00000000-13-s00"]
    assert (slap["finger_position"], slap["width"], slap["height"]) == (13, 640, 384)
    assert [s["position"] for s in slap["params"]["segments"]] == [2]
    assert (minted / slap["truth_path"].replace(".ist", ".segments.json")).is_file()


def test_pair_kinds_name_the_right_identities(minted):
    meta_pairs = validate_dataset(minted)
    assert meta_pairs.ok, meta_pairs.summary()
    con = duckdb.connect()
    con.sql(f"create view m as select * from read_parquet('{minted}/manifest/fingerprint/*.parquet')")
    con.sql(f"create view p as select * from read_parquet('{minted}/pairs/*/*.parquet')")
    kinds = dict(con.sql("select kind, count(*) filter (where mated) from p group by 1").fetchall())
    # every rolled print with each plain print of its finger; every slap segment likewise
    assert kinds == {"plain-plain": 4, "rolled-plain": 8, "slap-plain": 8}
    bad = con.sql("""select count(*) from p join m a on p.a_sample_id = a.sample_id join m b on p.b_sample_id = b.sample_id
                     where p.kind = 'rolled-plain' and (a.impression_type != 'rolled' or b.impression_type != 'plain'
                        or p.mated != (a.subject_id = b.subject_id and a.finger_position = b.finger_position))""").fetchall()[0][0]
    assert bad == 0
    # slap-plain: b's finger position is one of the slap's segments; mated iff same subject
    bad = con.sql("""select count(*) from p join m a on p.a_sample_id = a.sample_id join m b on p.b_sample_id = b.sample_id
                     where p.kind = 'slap-plain' and (a.impression_type != 'slap'
                        or not list_contains(list_transform(a.params.segments, lambda s: s.position), b.finger_position)
                        or p.mated != (a.subject_id = b.subject_id))""").fetchall()[0][0]
    assert bad == 0


def test_same_bytes_for_another_shard_layout_and_regenerate_is_exact(minted, tmp_path):
    other = tmp_path / "other"
    mint(other, "cluster.workers=1", "dataset.shard_size=2")
    key = ["sample_id", "sha256", "seed"]
    assert manifest(minted).select(key).sort_by("sample_id").equals(manifest(other).select(key).sort_by("sample_id"))
    for sid in ("fp-00000001-07-r00", "fp-00000001-14-s00"):
        same, row, _ = regenerate_sample(minted, sid, tmp_path / f"{sid}.png")
        assert same, sid


def test_turning_rolled_off_keeps_every_plain_byte(minted, tmp_path):
    plain_only = tmp_path / "plain"
    mint(plain_only, "fingerprint.rolled=0", "fingerprint.slaps=false", "cluster.workers=1")
    table = manifest(plain_only)
    assert set(table["impression_type"].to_pylist()) == {"plain"}
    both = {r["sample_id"]: r["sha256"] for r in manifest(minted).to_pylist()}
    assert all(both[r["sample_id"]] == r["sha256"] for r in table.to_pylist())


def test_cross_kind_pairs_are_exhaustive_capped_and_distinct(monkeypatch):
    import numpy as np

    from pipeline import pairs

    a_id = np.array([1, 1, 2, 3])                 # e.g. rolled prints of fingers 1, 1, 2, 3
    b_id = np.array([1, 2, 2, 2, 4])              # plain prints
    mated = pairs.cross_mated_pairs(a_id, b_id, 100, pairs.pairs_rng(0, 1, 2))
    assert sorted(map(tuple, mated.tolist())) == [(0, 0), (1, 0), (2, 1), (2, 2), (2, 3)]
    capped = pairs.cross_mated_pairs(a_id, b_id, 3, pairs.pairs_rng(0, 1, 2))
    assert len(capped) == 3 and set(map(tuple, capped.tolist())) <= set(map(tuple, mated.tolist()))
    everything = pairs.cross_non_mated_pairs(a_id, b_id, 10**6, pairs.pairs_rng(0, 1, 3))
    assert len(everything) == 4 * 5 - 5 and all(a_id[i] != b_id[j] for i, j in everything)
    # with positions: a slap segment only meets plain prints of its finger position
    # (identity = subject * 16 + position, as the pipeline numbers them)
    a_pos, b_pos = np.array([2, 7, 2, 7]), np.array([2, 7, 2, 2, 7])
    a_sid, b_sid = np.array([0, 0, 1, 1]) * 16 + a_pos, np.array([0, 0, 1, 2, 2]) * 16 + b_pos
    same_pos = pairs.cross_non_mated_pairs(a_sid, b_sid, 10**6, pairs.pairs_rng(0, 1, 3), a_pos, b_pos)
    assert sorted(map(tuple, same_pos.tolist())) == [(0, 2), (0, 3), (1, 4), (2, 0), (2, 3), (3, 1), (3, 4)]
    # the rejection sampler (lists too long to enumerate) obeys the same rules
    monkeypatch.setattr(pairs, "ENUMERATE_LIMIT", 0)
    drawn = pairs.cross_non_mated_pairs(a_sid, b_sid, 10**6, pairs.pairs_rng(0, 1, 3), a_pos, b_pos)
    assert sorted(map(tuple, drawn.tolist())) == sorted(map(tuple, same_pos.tolist()))
    some = pairs.cross_non_mated_pairs(a_id, b_id, 6, pairs.pairs_rng(0, 1, 3))
    assert len(set(map(tuple, some.tolist()))) == 6 and all(a_id[i] != b_id[j] for i, j in some)
