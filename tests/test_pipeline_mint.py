"""Minting on a real LocalCluster: identical bytes for any layout, regenerate, validate,
manifests readable without biomint, resume refusals."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pyarrow.dataset as ds
import pytest

from conftest import REPO, file_hashes, mint, run_biomint
from pipeline.errors import ConfigError, ManifestError
from pipeline.validate import regenerate_sample, validate_dataset

ROWS = 6 * (2 + 1)  # TINY: 6 fingers x (2 plain + 1 rolled)
MATED = 6 + 6 * 2   # plain-plain: one pair per finger; rolled-plain: the rolled print with each plain one


@pytest.fixture(scope="module")
def minted(tmp_path_factory):
    """The TINY dataset minted by 2 workers, one subject per shard."""
    root = tmp_path_factory.mktemp("mint") / "two-workers"
    meta = mint(root, "cluster.workers=2", "dataset.shard_size=1")
    assert meta["status"] == "complete"
    return root


def manifest(root):
    return ds.dataset(root / "manifest" / "fingerprint", format="parquet").to_table()


def test_layout_counts_and_dataset_json(minted):
    meta = json.loads((minted / "dataset.json").read_text())
    assert meta["status"] == "complete" and meta["schema_version"] == 3 and meta["seed"] == 0
    assert meta["config"]["fingerprint"]["fingers"] == 6 and meta["versions"]["numpy"]
    table = manifest(minted)
    assert table.num_rows == ROWS == meta["stages"]["fingerprint"]["rows"]
    assert len(set(table["sample_id"].to_pylist())) == ROWS
    assert sorted(p.name for p in (minted / "manifest" / "fingerprint").glob("part-*.parquet")) == \
        ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    row = table.to_pylist()[0]
    assert row["path"] == f"images/fingerprint/{row['subject_id']:08d}/{row['sample_id']}.png"
    assert row["truth_path"].endswith(".ist") and (minted / row["truth_path"]).is_file()
    # every file of the sample, image first, with its sha256 and size
    assert [f["path"].rsplit(".", 1)[0] for f in row["files"]][:1] == [row["path"].rsplit(".", 1)[0]]
    assert {f["path"].split(row["sample_id"], 1)[1] for f in row["files"]} == \
        {".png", ".ist", ".xyt", ".orientation.npy", ".singularities.json"}
    assert all((minted / f["path"]).stat().st_size == f["bytes"] for f in row["files"])
    assert (row["modality"], row["dpi"], row["width"], row["height"]) == ("fingerprint", 500, 160, 192)
    pairs = ds.dataset(minted / "pairs" / "plain-plain", format="parquet").to_table()
    assert pairs.num_rows == meta["pairs"]["plain-plain"]["mated"] + meta["pairs"]["plain-plain"]["non_mated"]
    assert meta["pairs"]["plain-plain"] == {"mated": 6, "non_mated": 30}


def test_same_bytes_for_one_worker_and_another_shard_size(minted, tmp_path):
    other = tmp_path / "one-worker"
    mint(other, "cluster.workers=1", "dataset.shard_size=2")
    assert len(list((other / "manifest" / "fingerprint").glob("part-*.parquet"))) == 2
    key = ["sample_id", "sha256", "seed", "path", "truth_path"]
    a = manifest(minted).select(key).sort_by("sample_id")
    b = manifest(other).select(key).sort_by("sample_id")
    assert a.equals(b)
    hashes = file_hashes(minted)
    assert hashes == file_hashes(other) and len(hashes) == ROWS * 5  # image + 4 truth files each
    pairs = [ds.dataset(r / "pairs" / "plain-plain", format="parquet").to_table() for r in (minted, other)]
    assert pairs[0].equals(pairs[1])


def test_regenerate_is_byte_exact(minted, tmp_path):
    rows = manifest(minted).sort_by("sample_id").to_pylist()
    out = tmp_path / "again.png"
    result = run_biomint("regenerate", str(minted), rows[-1]["sample_id"], str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "matches" in result.stdout
    assert out.read_bytes() == (minted / rows[-1]["path"]).read_bytes()
    same, row, version = regenerate_sample(minted, rows[0]["sample_id"], tmp_path / "first.png")
    assert version == row["generator_version"] and "+src." in version
    assert same and (tmp_path / "first.png").read_bytes() == (minted / row["path"]).read_bytes()
    with pytest.raises(ManifestError, match="fp-99999999-01-00 is not in the manifest"):
        regenerate_sample(minted, "fp-99999999-01-00", out)


def test_validate_passes_then_names_the_corrupted_sample(minted, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(minted, copy)
    assert validate_dataset(copy).ok
    row = manifest(copy).sort_by("sample_id").to_pylist()[5]
    image = copy / row["path"]
    data = bytearray(image.read_bytes())
    data[len(data) // 2] ^= 0x01
    image.write_bytes(bytes(data))
    result = run_biomint("validate", str(copy), cwd=tmp_path)
    assert result.returncode == 1
    assert f"sample {row['sample_id']}: sha256 of {row['path']} differs" in result.stdout
    other = manifest(copy).sort_by("sample_id").to_pylist()[6]
    (copy / other["truth_path"]).unlink()
    problems = validate_dataset(copy).problems
    assert len(problems) == 2
    assert problems[1] == f"sample {other['sample_id']}: {other['truth_path']} does not exist"


def test_validate_names_pairs_that_point_at_unknown_samples(minted, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    copy = tmp_path / "copy"
    shutil.copytree(minted, copy)
    part = sorted((copy / "pairs" / "plain-plain").glob("part-*.parquet"))[0]
    table = pq.read_table(part)
    b = table["b_sample_id"].to_pylist()
    b[0] = "fp-99999999-01-00"
    pq.write_table(table.set_column(table.schema.get_field_index("b_sample_id"), "b_sample_id",
                                    pa.array(b, pa.string())), part)
    report = validate_dataset(copy)
    assert not report.ok
    assert report.problems == [f"pair {table['pair_id'][0].as_py()}: sample fp-99999999-01-00 "
                               "is not in the manifest"]


def test_manifest_reads_with_duckdb_polars_pandas_and_no_biomint(minted):
    script = textwrap.dedent(f"""
        import sys, duckdb, polars as pl, pandas as pd
        root = {str(minted)!r}
        n, distinct, classes = duckdb.sql(
            f"select count(*), count(distinct sample_id), count(params.finger_class) "
            f"from read_parquet('{{root}}/manifest/fingerprint/*.parquet')").fetchall()[0]
        mated = duckdb.sql(
            f"select count(*) from read_parquet('{{root}}/pairs/*/*.parquet') p "
            f"join read_parquet('{{root}}/manifest/fingerprint/*.parquet') a on p.a_sample_id = a.sample_id "
            f"where p.mated").fetchall()[0][0]
        frame = pl.read_parquet(f"{{root}}/manifest/fingerprint/*.parquet")
        assert frame.unnest("params").height == frame.height
        pandas_frame = pd.read_parquet(f"{{root}}/manifest/fingerprint")
        assert not any(m.split('.')[0] in ('pipeline', 'generators', 'evaluation') for m in sys.modules)
        print(n, distinct, classes, mated, frame.height, len(pandas_frame), frame["seed"].dtype)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=minted)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(ROWS)] * 3 + [str(MATED)] + [str(ROWS)] * 2 + ["UInt64"]


def test_rerun_is_a_noop_and_a_changed_config_is_refused(minted):
    before = file_hashes(minted)
    assert mint(minted, "cluster.workers=2", "dataset.shard_size=1")["status"] == "complete"
    assert file_hashes(minted) == before
    with pytest.raises(ConfigError, match=r"different config \(seed: 0 → 1\)"):
        mint(minted, "cluster.workers=2", "dataset.shard_size=1", "seed=1")


def test_evaluate_command_calls_the_evaluation(minted, tmp_path, monkeypatch, capsys):
    from pipeline.cli import cmd_evaluate

    copy = tmp_path / "copy"
    shutil.copytree(minted, copy)
    assert cmd_evaluate([str(copy), "max_nonmated_pairs=10", "progress=false"]) == 0
    assert "biomint evaluation" in capsys.readouterr().out
    assert (copy / "report" / "index.html").is_file() and list((copy / "eval").glob("*.parquet"))
    with pytest.raises(SystemExit) as bad:
        cmd_evaluate([str(tmp_path / "missing")])
    assert bad.value.code == 2 and "does not exist" in capsys.readouterr().err


def test_evaluate_runs_on_an_existing_dask_scheduler(minted, tmp_path, capsys):
    from distributed import LocalCluster

    from pipeline.cli import cmd_evaluate

    copy = tmp_path / "copy"
    shutil.copytree(minted, copy)
    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None) as cluster:
        assert cmd_evaluate([str(copy), "max_nonmated_pairs=10", "progress=false",
                             "write_report=false", "--scheduler", cluster.scheduler_address]) == 0
    assert "biomint evaluation" in capsys.readouterr().out
    assert list((copy / "eval").glob("*.parquet"))
    with pytest.raises(SystemExit) as bad:
        cmd_evaluate([str(copy), "--scheduler", "tcp://127.0.0.1:1"])
    assert bad.value.code == 2 and "no Dask scheduler answered" in capsys.readouterr().err


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(_has_cuda(), reason="needs a machine without CUDA")
def test_a_shard_that_keeps_failing_is_reported_with_its_subjects(tmp_path):
    from pipeline.runner import ShardsFailed

    with pytest.raises(ShardsFailed, match=r"shard 0 \(subjects 0\.\.0\).*shard 2 \(subjects 2\.\.2\)"):
        mint(tmp_path / "ds", "fingerprint.device=cuda:0", "cluster.workers=1", "cluster.retries=1",
             "dataset.shard_size=1")
    meta = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert meta["status"] == "in_progress"


def test_a_worker_runs_torch_and_opencv_on_one_thread_each():
    """One worker per core: a worker process of a real LocalCluster, after its warm-up, and the
    in-process worker of a one-worker run, keep torch and OpenCV to one thread (OpenCV's pool
    ignores OMP_NUM_THREADS)."""
    import cv2
    import torch
    from dask.distributed import Client, LocalCluster

    from pipeline.worker import one_thread_per_worker, warm_up

    def threads() -> tuple[int, int]:
        import cv2
        import torch

        return torch.get_num_threads(), cv2.getNumThreads()

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        client.run(warm_up, ["fingerprint"])
        assert list(client.run(threads).values()) == [(1, 1)]
    before = threads()
    try:
        cv2.setNumThreads(2)
        one_thread_per_worker()
        assert threads() == (1, 1)
    finally:
        torch.set_num_threads(before[0])
        cv2.setNumThreads(before[1])


def test_the_in_process_worker_keeps_freed_arrays_on_the_heap():
    """A one-worker run mints in the client process, which glibc started without the workers'
    MALLOC_*_ settings: warm_up sets them with mallopt, so an image-sized array comes from the
    heap and stays there when freed, instead of being mmap'd (and page-faulted) anew each time."""
    probe = textwrap.dedent("""
        import ctypes, sys
        import numpy as np
        class Info(ctypes.Structure):                  # glibc's struct mallinfo2
            _fields_ = [(name, ctypes.c_size_t) for name in
                        "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
        mallinfo2 = ctypes.CDLL(None).mallinfo2
        mallinfo2.restype = Info
        if sys.argv[1] == "warm":
            from pipeline.worker import warm_up
            warm_up([])
        image = np.ones(5 << 20)                       # 40 MB
        mapped = mallinfo2().hblkhd                    # bytes in mmap'd chunks
        del image
        print(mapped >> 20, mallinfo2().fordblks >> 20)  # MiB mmap'd while alive, MiB free on the heap after
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    try:
        result = {mode: subprocess.run([sys.executable, "-c", probe, mode], capture_output=True, text=True,
                                       check=True, env=env, cwd=REPO).stdout.split()
                  for mode in ("cold", "warm")}
    except subprocess.CalledProcessError as error:
        if "mallinfo2" in error.stderr:
            pytest.skip("malloc is not glibc >= 2.33")
        raise
    cold, warm = ([int(v) for v in result[mode]] for mode in ("cold", "warm"))
    assert cold[0] >= 38 and cold[1] < 38            # glibc's own settings: mmap'd, unmapped when freed
    assert warm[0] < 38 and warm[1] >= 38, warm      # warmed up: from the heap, kept there for the next


@pytest.mark.parametrize("dashboard", [False, True])
def test_a_local_cluster_nobody_watches_does_not_profile_its_workers(dashboard):
    """cluster.dashboard=false (the default): the workers do not sample their stacks for the
    dashboard's profile and the event loops are checked less often (measured: that monitoring
    took 0.35-0.55 s of CPU per 7 s stage on 2 cores); cluster.dashboard=true keeps it all."""
    import dask

    from pipeline.cluster import open_local
    from pipeline.config import LocalClusterConfig

    def profiling() -> bool:
        import dask

        return bool(dask.config.get("distributed.worker.profile.enabled"))

    with open_local(LocalClusterConfig(workers=2, dashboard=dashboard), wants_gpu=False) as client:
        assert list(client.run(profiling).values()) == [dashboard, dashboard]
    assert dask.config.get("distributed.worker.profile.enabled")      # the client's own config is back
