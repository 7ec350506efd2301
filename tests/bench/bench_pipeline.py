"""Pipeline benchmark: samples/s with 1 and 2 workers in alternating pairs (parallel
efficiency of the median pair; target 0.85) beside the machine's own ceiling (two lone
one-worker runs at once, after each pair) and per-shard overhead, on the real fingerprint
stage at the default canvas, and the end-to-end rate per core (samples per CPU second of the
shards: generation, PNG, truth files, manifest parts; target 60), with the gain of the C
pixel kernels over the numpy formulas in the same run. Writes
tests/bench/results/pipeline.json. Run with `make bench` (timings on a shared machine are noisy).
"""
from __future__ import annotations

import json
import os
import platform
import resource
import time
from pathlib import Path

import pytest

from conftest import BIOMINT, REPO, biomint_env, compose_overrides, run_biomint
from generators.fingerprint import pixel_kernels
from pipeline.manifest import load_dataset_json
from pipeline.runner import run

RESULTS = Path(__file__).parent / "results" / "pipeline.json"
# 20 subjects x 2 fingers x (8 plain + 1 rolled) = 360 impressions at the default canvases
# (the default preset's latents are off: they have their own benchmarks).
SIZE = ["dataset=default", "fingerprint.fingers=40", "fingerprint.positions=[2,7]", "fingerprint.impressions=8",
        "pairs.non_mated=100", "latent.per_finger=0"]
SAMPLES = 40 * (8 + 1)
TARGET_PER_CORE = 60.0   # samples/s per core, end to end ("Speed measured end to end")
TARGET_EFFICIENCY = 0.85  # 2 workers' samples/s over twice one worker's, same issue
# Five pairs: the median of three moved by 0.05 between runs of the same code minutes apart.
PAIRS = 5


def _timing(meta: dict, start: float) -> dict:
    timing = dict(meta["stages"]["fingerprint"]["last_run"])
    timing["total_seconds"] = round(time.perf_counter() - start, 3)  # + cluster start, pairs, dataset.json
    timing["samples_per_s"] = round(timing["samples"] / timing["seconds"], 3)
    # CPU the shards got / wall time x workers: well under 1 means other processes held the cores
    timing["cpu_utilisation"] = round(timing["cpu_seconds"] / (timing["seconds"] * timing["workers"]), 3)
    return timing


def mint_timed(root: Path, *overrides: str) -> dict:
    """A run in this process (pipeline.runner.run), for comparisons made inside one process."""
    start = time.perf_counter()
    return _timing(run(compose_overrides(*SIZE, f"output_dir={root}", *overrides)), start)


def mint_timed_by_script(root: Path, *overrides: str) -> dict:
    """A run of the `biomint` script in a subprocess, as users run it: its process and the
    workers start with the malloc environment of pipeline.malloc_tuning, which glibc reads only
    at a process's start (this process, started by pytest, has glibc's defaults)."""
    start = time.perf_counter()
    result = run_biomint(*SIZE, f"output_dir={root}", *overrides, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return _timing(load_dataset_json(root), start)


def co_run_rate(roots: tuple[Path, Path], *overrides: str) -> float:
    """Two one-worker `biomint` runs started together, each in its own folder and process (no
    Dask, nothing shared but the machine): their samples over the time from the first shard's
    start in either to the last shard's end in either (the stats files' mtimes less the shards'
    seconds), so that a stage that started or ended alone does not flatter the figure. Over
    twice a lone run's rate it is the machine's own ceiling for 1 -> 2 workers (shared L3 cache,
    memory bandwidth, the hypervisor), which Dask's efficiency can be read against."""
    import subprocess

    runs = [subprocess.Popen([*BIOMINT, *SIZE, f"output_dir={root}", "cluster.workers=1", *overrides], cwd=REPO,
                             env=biomint_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for root in roots]
    samples, starts, ends = 0, [], []
    for root, process in zip(roots, runs):
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-2000:]
        samples += load_dataset_json(root)["stages"]["fingerprint"]["last_run"]["samples"]
        for stats in (root / "manifest" / "fingerprint" / "_stats").glob("*.json"):
            end = stats.stat().st_mtime
            starts.append(end - json.loads(stats.read_text())["seconds"])
            ends.append(end)
    return samples / (max(ends) - min(starts))


def file_create_cpu_us(folder: Path, n: int = 500) -> float:
    """Kernel CPU per new file (open with O_CREAT, then close) in a new folder beside the runs'.
    The stage creates five files per sample, and on the ext4 disk of the VM this README was
    measured on an inode allocation cost 20 us in some folders and 0.4-1.1 ms in others, and
    the same folder moved between the two within the hour: up to ~5 ms of CPU per sample that
    the shards' CPU seconds count. Measured in the same run, so the end-to-end rate can be read
    against it."""
    folder.mkdir()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_stime
    for i in range(n):
        os.close(os.open(folder / f"probe{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    return round(1e6 * (resource.getrusage(resource.RUSAGE_SELF).ru_stime - before) / n, 1)


def pixel_kernels_gain(root: Path, pairs: int = 3) -> dict:
    """One-worker runs (in this process) with the C pixel kernels and with the numpy formulas,
    alternating, each pair of its own seed (same bytes either way): samples per CPU second
    end to end, and the per-pair speed ratio native / numpy."""
    if pixel_kernels.backend() != "native":
        return {"backend": pixel_kernels.backend()}
    native, numpy = [], []
    for k in range(pairs):
        seed = f"seed={2000 + k}"
        for use_native in ((True, False) if k % 2 else (False, True)):
            with pixel_kernels.numpy_backend(enabled=not use_native):
                run_ = mint_timed(root / f"{pixel_kernels.backend()}-{k}", "cluster.workers=1",
                                  "dataset.shard_size=2", seed)
            (native if use_native else numpy).append(run_["samples"] / run_["cpu_seconds"])
    ratios = sorted(a / b for a, b in zip(native, numpy))
    return {"backend": "native", "samples_per_cpu_s_native": [round(r, 2) for r in native],
            "samples_per_cpu_s_numpy": [round(r, 2) for r in numpy],
            "speed_ratio_native_to_numpy_median": round(ratios[len(ratios) // 2], 3)}


@pytest.mark.bench
def test_pipeline_throughput_and_shard_overhead(tmp_path):
    # Alternating 1- and 2-worker runs of the `biomint` script (the issue's method: these VMs'
    # speed drifts by 10-20 % over a minute), efficiency per adjacent pair, the median pair
    # reported. Each run is a fresh process, as a user's is: none meets the growth convolutions'
    # shapes of an earlier run and skips oneDNN's primitive creation (1-3 ms per new shape), and
    # the one-worker run mints in a process with the workers' malloc environment (in this
    # process it would have glibc's defaults, and the pair would credit Dask with the difference).
    # Each pair mints prints of its own seed, both runs the same ones.
    # After each pair, the machine's ceiling beside it: two lone one-worker runs at once (co_run_rate).
    pairs, ceilings, file_create = [], [], [file_create_cpu_us(tmp_path / "probe-start")]
    for k in range(PAIRS):
        seed = f"seed={1000 + k}"
        one = mint_timed_by_script(tmp_path / f"w1-{k}", "cluster.workers=1", "dataset.shard_size=2", seed)
        two = mint_timed_by_script(tmp_path / f"w2-{k}", "cluster.workers=2", "dataset.shard_size=2", seed)
        pairs.append((one, two))
        together = co_run_rate((tmp_path / f"co-a-{k}", tmp_path / f"co-b-{k}"), "dataset.shard_size=2", seed)
        ceilings.append(together / (2 * one["samples_per_s"]))
    efficiencies = [two["samples_per_s"] / (2 * one["samples_per_s"]) for one, two in pairs]
    of_ceiling = sorted(e / c for e, c in zip(efficiencies, ceilings))
    median = sorted(range(PAIRS), key=efficiencies.__getitem__)[PAIRS // 2]
    one, two = pairs[median]
    efficiency = efficiencies[median]
    # Per-shard overhead: worker time not spent inside the stage's run_shard, per shard
    # (scheduling, pickling, Parquet part + stats writing), measured with one subject per shard.
    small = mint_timed_by_script(tmp_path / "s1", "cluster.workers=1", "dataset.shard_size=1")
    kernels = pixel_kernels_gain(tmp_path)
    file_create.append(file_create_cpu_us(tmp_path / "probe-end"))
    overhead = (small["seconds"] * small["workers"] - small["shard_seconds"]) / small["shards"]
    # the "Speed measured end to end" headline: samples (8 plain + 1 rolled per finger) per CPU
    # second of the shards, generation + PNG + truth files + manifest parts included, all runs
    end_to_end = {name: sum(run["samples"] for run in runs) / sum(run["cpu_seconds"] for run in runs)
                  for name, runs in (("one_worker", [a for a, _ in pairs]), ("two_workers", [b for _, b in pairs]))}
    result = {
        "benchmark": "pipeline",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "node": platform.node()},
        "dataset": SIZE,
        "one_worker": one,          # the median pair
        "two_workers": two,
        "parallel_efficiency": round(efficiency, 3),
        "parallel_efficiency_per_pair": [round(e, 3) for e in efficiencies],
        "parallel_efficiency_target": TARGET_EFFICIENCY,
        "samples_per_s_per_pair": [[a["samples_per_s"], b["samples_per_s"]] for a, b in pairs],
        # two lone one-worker runs at once over twice the pair's one-worker rate: what the machine
        # allows two minting processes, Dask or not (co_run_rate); and Dask's efficiency over it
        "machine_ceiling_per_pair": [round(c, 3) for c in ceilings],
        "machine_ceiling_median": round(sorted(ceilings)[PAIRS // 2], 3),
        "efficiency_over_machine_ceiling_median": round(of_ceiling[PAIRS // 2], 3),
        # CPU per sample with 1 worker / with 2: the pipeline's own parallel cost, whatever the load
        "cpu_efficiency": round(one["cpu_seconds"] / two["cpu_seconds"], 3),
        "one_subject_per_shard": small,
        "per_shard_overhead_s": round(overhead, 4),
        "end_to_end_samples_per_s_per_core": {name: round(rate, 2) for name, rate in end_to_end.items()},
        "end_to_end_target_per_core": TARGET_PER_CORE,
        "meets_end_to_end_target": bool(end_to_end["one_worker"] >= TARGET_PER_CORE),
        # kernel CPU per new file where the runs wrote, before and after them (file_create_cpu_us)
        "file_create_cpu_us": file_create,
        "output_folder": str(tmp_path),
        # the C pixel kernels or the numpy formulas (same bytes, generators/fingerprint/pixel_kernels.py),
        # and the end-to-end gain of the kernels in this run (one worker, alternating pairs)
        "pixel_kernels": kernels,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "note": "samples/s over the stage's wall time (cluster start and worker imports excluded); "
                "cpu_utilisation < ~0.9 means the cores were shared with other processes",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    assert all(a["samples"] == b["samples"] == SAMPLES for a, b in pairs) and small["samples"] == SAMPLES
    assert efficiency > 0
