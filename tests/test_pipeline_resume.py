"""A run killed with SIGKILL half-way, then rerun: exact rows, no duplicates, validate passes.
And `--multirun` sweeps through the submitit launcher."""
from __future__ import annotations

import json

import pyarrow.dataset as ds
from conftest import TINY, kill_after_shards, run_biomint
from pipeline.validate import validate_dataset

FINGERS = 12  # one finger (position 2) per subject, one subject per shard: 12 shards


def test_sigkill_half_way_then_rerun_finishes_exactly(tmp_path):
    root = tmp_path / "ds"
    args = [*TINY, f"output_dir={root}", f"fingerprint.fingers={FINGERS}", "fingerprint.positions=[2]",
            "fingerprint.slaps=true", "dataset.shard_size=1", "cluster.workers=1"]
    stats_dir = root / "manifest" / "fingerprint" / "_stats"
    done_at_kill = kill_after_shards(args, stats_dir, 3, tmp_path)
    assert 3 <= done_at_kill < FINGERS, "the run was not killed half-way"
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["status"] == "in_progress"

    result = run_biomint(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"resuming — {done_at_kill} of {FINGERS} shards already minted" in result.stdout + result.stderr
    table = ds.dataset(root / "manifest" / "fingerprint", format="parquet").to_table()
    assert table.num_rows == FINGERS * (3 + 1)   # 2 plain + 1 rolled per finger, 1 slap (13) per subject
    assert len(set(table["sample_id"].to_pylist())) == table.num_rows
    report = validate_dataset(root)
    assert report.ok, report.summary()


def test_multirun_sweep_with_submitit_local_mints_one_dataset_per_seed(tmp_path):
    result = run_biomint("--multirun", "seed=1,2", "hydra/launcher=submitit_local", *TINY,
                         f"output_dir={tmp_path}/seed-${{seed}}", "cluster.workers=1", cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    hashes = []
    for seed in (1, 2):
        root = tmp_path / f"seed-{seed}"
        meta = json.loads((root / "dataset.json").read_text())
        assert meta["status"] == "complete" and meta["seed"] == seed
        assert validate_dataset(root).ok
        table = ds.dataset(root / "manifest" / "fingerprint", format="parquet").to_table()
        hashes.append(set(table["sha256"].to_pylist()))
    assert not hashes[0] & hashes[1]  # different seeds, different images
