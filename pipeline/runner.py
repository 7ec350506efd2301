"""`run(cfg)`: mint a dataset. Everything below `@hydra.main` is plain Python tests can call."""
from __future__ import annotations

import logging
import platform
import shutil
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from omegaconf import DictConfig

from pipeline.config import check_config, check_writable, generation_config, resolve_output_dir, to_config
from pipeline.errors import ConfigError
from pipeline.manifest import (SCHEMA_VERSION, finished_shard_stats, load_dataset_json, manifest_dir,
                               part_path, write_json_atomic)
from pipeline.pairs import write_pairs
from pipeline.sharding import plan_shards
from pipeline.stages import load_stages, stage_device

log = logging.getLogger("biomint")

# What overwrite=true may delete in an existing dataset root (nothing else is touched).
DATASET_ENTRIES = ("dataset.json", "images", "truth", "manifest", "pairs", "eval", "report", "export")
VERSIONED_PACKAGES = ("biomint", "numpy", "pyarrow", "dask", "distributed", "hydra-core", "pillow", "torch")


class ShardsFailed(RuntimeError):
    """Some shards failed after every retry (their subject ranges are in the message)."""


def active_stages(config) -> list[tuple]:
    """(stage module, its typed config) of every stage that runs; logs why others are skipped."""
    active = []
    configs = {name: getattr(config, name, None) for name in load_stages()}
    for name, stage in load_stages().items():
        stage_config = configs[name]
        if stage_config is None:
            continue
        if hasattr(stage, "bind"):
            stage_config = stage.bind(stage_config, configs)
        reason = stage.skip_reason(stage_config)
        if reason:
            log.info("%s: skipped — %s", name, reason)
            continue
        stage.check(stage_config)
        active.append((stage, stage_config))
    return active


def run(cfg: DictConfig) -> dict:
    """Mint (or finish minting) the dataset that `cfg` describes; returns dataset.json's content."""
    config = to_config(cfg)
    check_config(config)
    stages = active_stages(config)
    if not stages:
        raise ConfigError("no stage would run: enable at least one (e.g. fingerprint.fingers=100)")
    root = resolve_output_dir(config.output_dir)
    check_writable(root)
    active_names = {stage.NAME for stage, _ in stages}
    recorded = generation_config(cfg, tuple(name for name in load_stages() if name not in active_names))
    meta = prepare_root(root, recorded, config.overwrite, stages, config.dataset.shard_size)
    if meta.get("status") == "complete":
        log.info("dataset %s is already complete (%s); nothing to mint", root, _counts(meta))
    else:
        meta = mint_dataset(root, config, stages, meta)
    if config.export.ansi_nist:
        from pipeline.export import export_ansi_nist

        done = export_ansi_nist(root, compression=config.export.compression)
        log.info("export: %d ANSI/NIST-ITL transactions (%d records) → %s", done["transactions"], done["records"],
                 done["directory"])
    if config.evaluation.after_mint:
        from pipeline.evaluate import evaluate_root

        from evaluation.errors import EVALUATION_INPUT_ERRORS
        from evaluation.report import format_summary

        try:
            summary = evaluate_root(root, dict(config.evaluation.settings))
        except EVALUATION_INPUT_ERRORS as e:
            raise ConfigError(str(e)) from None
        log.info("%s", format_summary(summary))
    return meta


def mint_dataset(root: Path, config, stages: list[tuple], meta: dict) -> dict:
    """Mint the pending shards of every stage, check the counts, write the pairs, mark complete."""
    pending = {stage.NAME: pending_shards(root, stage, sc, config.dataset.shard_size) for stage, sc in stages}
    if any(pending.values()):
        from pipeline.cluster import open_cluster
        from pipeline.worker import warm_up

        wants_gpu = any(stage_device(sc).startswith(("auto", "cuda")) for _, sc in stages)
        with open_cluster(config.cluster, wants_gpu=wants_gpu) as client:
            client.run(warm_up, [stage.NAME for stage, _ in stages])
            for stage, stage_config in stages:
                timing = mint_stage(client, root, config, stage, stage_config, pending[stage.NAME])
                meta["stages"][stage.NAME]["last_run"] = timing

    for stage, stage_config in stages:
        meta["stages"][stage.NAME]["rows"] = count_rows(root, stage, stage_config, config.dataset.shard_size)
        meta["pairs"].update(write_pairs(root, stage, config.pairs, config.seed, stage_config))
    meta["status"] = "complete"
    write_json_atomic(root / "dataset.json", meta)
    log.info("dataset complete: %s (%s)", root, _counts(meta))
    return meta


def prepare_root(root: Path, recorded: dict, overwrite: bool, stages, shard_size: int) -> dict:
    """Create or reopen the dataset root: refuse a different config unless overwrite=true."""
    if (root / "dataset.json").exists():
        meta = load_dataset_json(root)
        if meta.get("config") == recorded:
            return meta
        if not overwrite:
            raise ConfigError(f"output_dir={root} holds a dataset minted with a different config "
                              f"({_first_difference(meta.get('config'), recorded)}); rerun with "
                              "overwrite=true to replace it, or choose another output_dir")
        log.info("overwrite=true: removing the dataset in %s", root)
        for entry in DATASET_ENTRIES:
            path = root / entry
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    elif any(not p.name.startswith(".biomint-") for p in root.iterdir()):
        raise ConfigError(f"output_dir={root} is not empty and holds no biomint dataset.json; "
                          "choose an empty or new directory")
    meta = {
        "schema_version": SCHEMA_VERSION,
        "status": "in_progress",
        "seed": recorded["seed"],
        "name": recorded["dataset"]["name"],
        "config": recorded,
        "versions": package_versions(),
        "stages": {stage.NAME: {"stage_id": stage.STAGE_ID, "modality": stage.MODALITY,
                                "pair_kind": stage.PAIR_KIND,
                                "expected_rows": stage.expected_rows(sc, 0, stage.subject_count(sc)),
                                "shards": len(plan_shards(stage.subject_count(sc), shard_size))}
                   for stage, sc in stages},
        "pairs": {},
    }
    write_json_atomic(root / "dataset.json", meta)
    return meta


def pending_shards(root: Path, stage, stage_config, shard_size: int) -> list:
    shards = plan_shards(stage.subject_count(stage_config), shard_size)
    todo = [s for s in shards
            if finished_shard_stats(root, stage.NAME, s.name, stage.expected_rows(stage_config, s.start, s.stop)) is None]
    if len(todo) < len(shards):
        log.info("%s: resuming — %d of %d shards already minted", stage.NAME, len(shards) - len(todo), len(shards))
    return todo


def mint_stage(client, root: Path, config, stage, stage_config, shards: list) -> dict:
    """Run a stage's pending shards on the cluster with a progress bar and a summary line;
    returns this run's timing: samples, shards, seconds (wall), shard_seconds and cpu_seconds
    (sums over shards of the time inside the workers' tasks: wall clock and CPU)."""
    from dask.distributed import as_completed
    from tqdm import tqdm

    from pipeline.worker import mint_shard

    if not shards:
        return {"samples": 0, "shards": 0, "seconds": 0.0, "shard_seconds": 0.0, "cpu_seconds": 0.0, "workers": 0}
    total = sum(stage.expected_rows(stage_config, s.start, s.stop) for s in shards)
    start = time.perf_counter()
    futures = {client.submit(mint_shard, stage.NAME, stage_config, str(root), config.seed, shard,
                             retries=config.cluster.retries, pure=False, key=f"{stage.NAME}-{shard.name}-{time.time_ns()}"): shard
               for shard in shards}
    failed, minted, shard_seconds, cpu_seconds = [], 0, 0.0, 0.0
    with tqdm(total=total, desc=stage.NAME, unit="sample", dynamic_ncols=True) as bar:
        for future in as_completed(futures):
            shard = futures[future]
            if future.status == "error":
                failed.append((shard.index, f"{shard.describe()}: {future.exception()!r}"))
                continue
            stats = future.result()
            minted += stats["rows"] + len(stats["dropped"])
            shard_seconds += stats["seconds"]
            cpu_seconds += stats["cpu_seconds"]
            bar.update(stats["rows"] + len(stats["dropped"]))
    seconds = time.perf_counter() - start
    if failed:
        raise ShardsFailed(f"{stage.NAME}: {len(failed)} shard(s) failed after {config.cluster.retries} "
                           f"retries; rerun the same command to retry them: "
                           + "; ".join(message for _, message in sorted(failed)))
    log.info("%s: %d samples in %.1f s (%.2f samples/s) → %s", stage.NAME, minted, seconds,
             minted / seconds if seconds else 0.0, manifest_dir(root, stage.NAME))
    return {"samples": minted, "shards": len(shards), "seconds": round(seconds, 3),
            "shard_seconds": round(shard_seconds, 3), "cpu_seconds": round(cpu_seconds, 3),
            "workers": len(client.nthreads())}


def count_rows(root: Path, stage, stage_config, shard_size: int) -> int:
    """Rows of the stage's finished parts; fails the run unless rows + dropped = configured count."""
    rows = dropped = 0
    for shard in plan_shards(stage.subject_count(stage_config), shard_size):
        stats = finished_shard_stats(root, stage.NAME, shard.name,
                                     stage.expected_rows(stage_config, shard.start, shard.stop))
        if stats is None:
            raise ShardsFailed(f"{stage.NAME}: {shard.describe()} has no complete part at "
                               f"{part_path(root, stage.NAME, shard.name)}; rerun the same command")
        rows, dropped = rows + stats["rows"], dropped + len(stats["dropped"])
    expected = stage.expected_rows(stage_config, 0, stage.subject_count(stage_config))
    if rows + dropped != expected:
        raise ShardsFailed(f"{stage.NAME}: {rows} rows + {dropped} dropped != {expected} configured")
    return rows


def package_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def _counts(meta: dict) -> str:
    return ", ".join(f"{name} {s.get('rows', '?')} samples" for name, s in meta["stages"].items())


def _first_difference(old, new, prefix: str = "") -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                return _first_difference(old.get(key), new.get(key), f"{prefix}{key}.")
    return f"{prefix.rstrip('.')}: {old!r} → {new!r}"
