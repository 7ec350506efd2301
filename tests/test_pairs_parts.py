"""Pairs tables are written a part at a time: every part boundary (inside the mated pairs,
at the switch to non-mated ones, inside those) keeps each pair once, with its id and flag."""
from __future__ import annotations

import numpy as np
import pyarrow.dataset as ds
import pytest

from pipeline import pairs


@pytest.mark.parametrize("part_rows", [1, 2, 5, 6, 7, 100])
def test_parts_hold_every_pair_once_whatever_the_part_size(tmp_path, part_rows):
    ids = np.array([f"s{i:02d}" for i in range(20)], dtype=object)
    mated = np.array([[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]])
    non_mated = np.array([[0, 10], [1, 11], [2, 12]])
    pairs._write_kind(tmp_path, "k", ids, ids, mated, non_mated, part_rows)
    parts = sorted((tmp_path / "pairs" / "k").glob("part-*.parquet"))
    assert len(parts) == -(-8 // part_rows)
    rows = ds.dataset(tmp_path / "pairs" / "k").to_table().sort_by("pair_id").to_pylist()
    assert [(r["pair_id"], r["a_sample_id"], r["b_sample_id"], r["mated"], r["kind"]) for r in rows] == sorted(
        [(f"k-m{i:09d}", f"s{a:02d}", f"s{b:02d}", True, "k") for i, (a, b) in enumerate(mated)]
        + [(f"k-n{i:09d}", f"s{a:02d}", f"s{b:02d}", False, "k") for i, (a, b) in enumerate(non_mated)])


def test_the_rejection_sampler_draws_distinct_valid_pairs_deterministically(monkeypatch):
    monkeypatch.setattr(pairs, "ENUMERATE_LIMIT", 0)
    identity = np.repeat(np.arange(200), 3)
    a = pairs.non_mated_pairs(identity, 5000, pairs.pairs_rng(1, 1, 1))
    assert np.array_equal(a, pairs.non_mated_pairs(identity, 5000, pairs.pairs_rng(1, 1, 1)))
    assert len(np.unique(a[:, 0] * 600 + a[:, 1])) == 5000
    assert (a[:, 0] < a[:, 1]).all() and (identity[a[:, 0]] != identity[a[:, 1]]).all()
    few = np.repeat(np.arange(20), 3)
    everything = pairs.non_mated_pairs(few, 10**9, pairs.pairs_rng(1, 1, 1))
    assert len(everything) == 60 * 59 // 2 - 20 * 3                          # all there are
