"""Config tree, seeding rule, shard plan, pairs draw, cluster configs, bad command lines."""
from __future__ import annotations

import json

import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import run_biomint
from pipeline.config import check_config, to_config
from pipeline.errors import ConfigError
from pipeline.pairs import mated_pairs, non_mated_pairs, pairs_rng
from pipeline.seeding import derived_seed, sample_seed_sequence, subject_seed_sequence
from pipeline.sharding import plan_shards
from pipeline.stages import fingerprint as fp_stage


@pytest.mark.parametrize("preset", ["smoke", "default", "medium", "large"])
def test_presets_compose_and_pass_checks(compose_config, preset):
    config = to_config(compose_config(f"dataset={preset}"))
    check_config(config)
    fp_stage.check(config.fingerprint)
    assert config.dataset.name == preset
    assert fp_stage.expected_rows(config.fingerprint, 0, fp_stage.subject_count(config.fingerprint)) == \
        config.fingerprint.fingers * (config.fingerprint.impressions + config.fingerprint.rolled)


def test_public_overrides_reach_the_typed_config(compose_config):
    config = to_config(compose_config("dataset=smoke", "seed=7", "output_dir=/tmp/x", "fingerprint.fingers=5",
                                      "fingerprint.impressions=3", "fingerprint.positions=[1,6]",
                                      "fingerprint.difficulty=0.8", "cluster.workers=3"))
    assert (config.seed, config.output_dir, config.cluster.workers) == (7, "/tmp/x", 3)
    fp = config.fingerprint
    assert (fp.fingers, fp.impressions, fp.positions, fp.difficulty) == (5, 3, [1, 6], 0.8)
    assert fp_stage.settings_from(fp).difficulty == 0.8
    # 5 fingers over positions [1, 6]: subjects 0, 1 full, subject 2 holds only position 1
    assert fp_stage.subject_count(fp) == 3
    assert [fp_stage.fingers_of(fp, s) for s in range(3)] == [[1, 6], [1, 6], [1]]
    assert fp_stage.expected_rows(fp, 1, 3) == 3 * (3 + 1)   # 3 plain + 1 rolled per finger


def test_seeding_rule_separates_subject_and_sample_slots():
    subject = derived_seed(subject_seed_sequence(5, 1, 3, unit=2))
    samples = [derived_seed(sample_seed_sequence(5, 1, 3, k, unit=2)) for k in range(4)]
    assert len({subject, *samples}) == 5
    assert samples[0] == derived_seed(sample_seed_sequence(5, 1, 3, 0, unit=2))   # pure function
    assert samples[0] != derived_seed(sample_seed_sequence(5, 2, 3, 0, unit=2))   # stage id matters
    assert samples[0] != derived_seed(sample_seed_sequence(6, 1, 3, 0, unit=2))   # dataset seed matters
    assert samples[0] != derived_seed(sample_seed_sequence(5, 1, 3, 0, unit=7))   # finger matters


def test_shard_plan_covers_subjects_once():
    for size in (1, 3, 7, 100):
        shards = plan_shards(20, size)
        covered = [s for shard in shards for s in range(shard.start, shard.stop)]
        assert covered == list(range(20))
        assert [shard.name for shard in shards] == [f"part-{i:05d}" for i in range(len(shards))]


def test_pairs_are_deterministic_and_respect_identities():
    identity = np.repeat(np.arange(6), 4)
    mated = mated_pairs(identity, cap=1000, rng=pairs_rng(0, 1, 0))
    assert len(mated) == 6 * 6 and (identity[mated[:, 0]] == identity[mated[:, 1]]).all()
    capped = mated_pairs(identity, cap=10, rng=pairs_rng(0, 1, 0))
    assert len(capped) == 10 and {tuple(p) for p in capped} <= {tuple(p) for p in mated}
    a = non_mated_pairs(identity, 50, pairs_rng(3, 1, 1))
    b = non_mated_pairs(identity, 50, pairs_rng(3, 1, 1))
    assert np.array_equal(a, b) and len({tuple(p) for p in a}) == 50
    assert (identity[a[:, 0]] != identity[a[:, 1]]).all() and (a[:, 0] < a[:, 1]).all()
    assert len(non_mated_pairs(identity, 10**6, pairs_rng(3, 1, 1))) == 24 * 23 // 2 - 36  # all there are


def test_slurm_cluster_renders_a_job_script(compose_config):
    from pipeline.cluster import slurm_cluster

    config = to_config(compose_config("dataset=smoke", "cluster=slurm", "cluster.queue=gpu", "cluster.account=lab",
                                      "cluster.cores=8", "cluster.processes=8", "cluster.gpus_per_job=1",
                                      "cluster.walltime=00:30:00"))
    cluster = slurm_cluster(config.cluster)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert script.startswith("#!/usr/bin/env bash")
    for line in ("#SBATCH -p gpu", "#SBATCH -A lab", "#SBATCH --cpus-per-task=8", "#SBATCH -t 00:30:00",
                 "#SBATCH --gres=gpu:1", "export OMP_NUM_THREADS=1",
                 "export DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False"):
        assert line in script
    assert "--nthreads 1" in script and "--nworkers 8" in script
    # one thread per worker: huge pages and one malloc arena (pipeline.malloc_tuning)
    assert "glibc.malloc.hugetlb=1" in script and "glibc.malloc.arena_max=1" in script


def test_config_errors_are_one_sentence(compose_config):
    with pytest.raises(ConfigError, match=r"fingerprint.impressions=0 .*>= 1"):
        fp_stage.check(to_config(compose_config("fingerprint.impressions=0")).fingerprint)
    with pytest.raises(ConfigError, match=r"fingerprint.positions=\[0, 11\]"):
        fp_stage.check(to_config(compose_config("fingerprint.positions=[0,11]")).fingerprint)
    with pytest.raises(ConfigError, match=r"dataset.shard_size=0"):
        check_config(to_config(compose_config("dataset.shard_size=0")))


BAD_INPUTS = {
    "unknown key": (["dataset=smoke", "fingerprint.fingerz=3"], "fingerprint.fingerz is not a config key"),
    "negative count": (["dataset=smoke", "fingerprint.fingers=-4"], "fingerprint.fingers=-4 is not allowed"),
    "unknown preset": (["dataset=huge"], "dataset=huge is not a known option; allowed: default, large, medium, smoke"),
    "not a number": (["dataset=smoke", "seed=abc"], "seed=abc is not valid"),
    "missing checkpoint": (["dataset=smoke", "face.checkpoint=/nonexistent/ffhq.pkl"],
                           "face.checkpoint=/nonexistent/ffhq.pkl does not exist"),
    "sweep without --multirun": (["dataset=smoke", "seed=1,2"], "seed=1,2 is a sweep: add --multirun"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_sentence_and_exit_2(tmp_path, monkeypatch, capsys, case):
    from pipeline.cli import main

    args, expected = BAD_INPUTS[case]
    out = tmp_path / "ds"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["biomint", *args, f"output_dir={out}"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    stderr = capsys.readouterr().err
    assert exit_info.value.code == 2, stderr
    assert stderr.startswith("biomint: ") and expected in stderr
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr
    assert not out.exists() and not (tmp_path / "outputs").exists()  # no dataset, no Hydra run dir


def test_unwritable_output_dir_is_exit_2_from_the_console_script(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = run_biomint("dataset=smoke", f"output_dir={blocker}/ds", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == f"biomint: output_dir={blocker}/ds is not writable (Not a directory); " \
                                    "choose a directory you can write to"


def test_bad_subcommand_input_is_exit_2(tmp_path, monkeypatch, capsys):
    from pipeline.cli import main

    for argv in (["validate", str(tmp_path / "nothing")], ["regenerate", str(tmp_path), "fp-1", "x.png"],
                 ["evaluate", str(tmp_path / "nothing")]):
        monkeypatch.setattr("sys.argv", ["biomint", *argv])
        with pytest.raises(SystemExit) as exit_info:
            main()
        stderr = capsys.readouterr().err
        assert exit_info.value.code == 2 and stderr.startswith("biomint: ") and len(stderr.splitlines()) == 1


def test_changed_config_sentence_names_the_key(tmp_path, compose_config):
    from pipeline.runner import prepare_root

    cfg = compose_config("dataset=smoke")
    config = to_config(cfg)
    stages = [(fp_stage, config.fingerprint)]
    recorded = json.loads(json.dumps(OmegaConf.to_container(cfg, resolve=True)))
    prepare_root(tmp_path, recorded, False, stages, 1)
    changed = {**recorded, "seed": 9}
    with pytest.raises(ConfigError, match=r"different config \(seed: 0 → 9\).*overwrite=true"):
        prepare_root(tmp_path, changed, False, stages, 1)
    assert prepare_root(tmp_path, changed, True, stages, 1)["seed"] == 9
