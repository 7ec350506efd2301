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
from pipeline.drops import DropTally, too_many_dropped
from pipeline.errors import DISK_FULL_ERRNOS, ConfigError, DiskFull, ManifestError, disk_full_sentence
from pipeline.lock import dataset_lock
from pipeline.manifest import (SCHEMA_VERSION, finished_shard_stats, is_temporary, load_dataset_json, manifest_dir,
                               part_path, remove_temporaries, shard_state, stats_path, write_json_atomic)
from pipeline.pairs import pairs_state, write_pairs
from pipeline.sharding import plan_shards
from pipeline.stages import load_stages, stage_device
from pipeline.storage import tar_path

log = logging.getLogger("biomint")

# What overwrite=true may delete in an existing dataset root (nothing else is touched).
DATASET_ENTRIES = ("dataset.json", "images", "truth", "shards", "manifest", "pairs", "protocol", "eval", "report",
                   "export")
VERSIONED_PACKAGES = ("biomint", "numpy", "pyarrow", "dask", "distributed", "hydra-core", "pillow", "torch")
# Sample ids write the subject with 8 digits (fp-00000042-07-03): at most 10^8 subjects per stage.
MAX_SUBJECTS = 10 ** 8
# Stage keys that decide whether a run's result is accepted, not what it mints: dataset.json does
# not record them, so a rerun may raise one to accept what a failed run reported.
ACCEPTANCE_KEYS = ("max_drop_fraction",)


class ShardsFailed(RuntimeError):
    """Some shards failed after every retry (their subject ranges are in the message)."""


class TooManyDropped(ShardsFailed):
    """A stage dropped more of its samples than its `max_drop_fraction`. A ShardsFailed, so
    that every command that mints (run, repair) ends with its one sentence and exit 1."""


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
        subjects = stage.subject_count(stage_config)
        if subjects > MAX_SUBJECTS:
            raise ConfigError(f"{name} asks for {subjects:,} subjects, more than the {MAX_SUBJECTS:,} that sample "
                              "ids can number (8 digits); mint several datasets with different seeds instead")
        active.append((stage, stage_config))
    return active


def run(cfg: DictConfig) -> dict:
    """Mint (or finish, or repair) the dataset that `cfg` describes; returns dataset.json's content.

    The run holds the dataset root's lock throughout (pipeline.lock): a second run on the same
    root stops at once with exit 2. A full disk anywhere ends in DiskFull (one sentence, exit
    1) with the dataset left in_progress; rerunning the same command finishes it."""
    config = to_config(cfg)
    check_config(config)
    stages = active_stages(config)
    if not stages:
        raise ConfigError("no stage would run: enable at least one (e.g. fingerprint.fingers=100)")
    root = resolve_output_dir(config.output_dir)
    check_writable(root)
    active_names = {stage.NAME for stage, _ in stages}
    recorded = generation_config(cfg, tuple(name for name in load_stages() if name not in active_names))
    for name in active_names:
        for key in ACCEPTANCE_KEYS:
            (recorded.get(name) or {}).pop(key, None)
    with dataset_lock(root, "mint", wait=config.wait):
        try:
            meta = prepare_root(root, recorded, config.overwrite, stages, config.dataset.shard_size)
            damage = verify_complete(root, stages, meta, config.dataset.shard_size) \
                if meta.get("status") == "complete" else None
            if meta.get("status") == "complete" and not damage:
                log.info("dataset %s is already complete (%s; shards and files checked); nothing to mint",
                         root, _counts(meta))
            else:
                if damage:
                    log.warning("dataset %s was complete but is damaged (%s); repairing it", root, damage)
                    meta["status"] = "in_progress"
                    write_json_atomic(root / "dataset.json", meta)
                meta = mint_dataset(root, config, stages, meta)
            _after_mint(root, config)
        except OSError as e:
            if e.errno in DISK_FULL_ERRNOS:
                raise DiskFull(disk_full_sentence(e.filename or root)) from None
            raise
    return meta


def _after_mint(root: Path, config) -> None:
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


def verify_complete(root: Path, stages, meta: dict, shard_size: int) -> str | None:
    """Why a dataset marked complete must be repaired (the cheap check: parts, stats, every
    file's existence and size, the pairs), or None when it is whole."""
    for stage, stage_config in stages:
        for shard in plan_shards(stage.subject_count(stage_config), shard_size):
            _, why = shard_state(root, stage.NAME, shard.name, stage.expected_rows(stage_config, shard.start, shard.stop))
            if why:
                return f"{stage.NAME} {shard.describe()}: {why}"
    why = pairs_state(root, meta.get("pairs", {}))
    for stage, _ in stages:
        if why is None and hasattr(stage, "finish_state"):
            why = stage.finish_state(root, meta.get(stage.NAME) or {})
    return why


def mint_dataset(root: Path, config, stages: list[tuple], meta: dict) -> dict:
    """Mint the pending shards of every stage, check the counts, write the pairs, mark complete."""
    for directory in (root, *(manifest_dir(root, stage.NAME) for stage, _ in stages),
                      *(stats_path(root, stage.NAME, "x").parent for stage, _ in stages),
                      *((root / tar_path(stage.NAME, "x")).parent for stage, _ in stages)):
        remove_temporaries(directory)
    pending = {stage.NAME: pending_shards(root, stage, sc, config.dataset.shard_size) for stage, sc in stages}
    tallies: dict[str, DropTally] = {}
    if any(len(p) for p in pending.values()):
        from pipeline.cluster import open_cluster
        from pipeline.worker import warm_up

        wants_gpu = any(stage_device(sc).startswith(("auto", "cuda")) for _, sc in stages)
        samples = sum(p.rows for p in pending.values())
        with open_cluster(config.cluster, wants_gpu=wants_gpu, samples=samples) as client:
            client.run(warm_up, [stage.NAME for stage, _ in stages])
            for stage, stage_config in stages:
                timing = mint_stage(client, root, config, stage, stage_config, pending[stage.NAME])
                meta["stages"][stage.NAME]["last_run"] = timing
                # Checked at once, so that a stage with too many drops stops the run before the next one
                tallies[stage.NAME] = tally_stage(root, stage, stage_config, config.dataset.shard_size)
                check_drops(stage, stage_config, tallies[stage.NAME])

    for stage, stage_config in stages:      # every shard, those of earlier runs too, before any pairs
        if stage.NAME not in tallies:
            tallies[stage.NAME] = tally_stage(root, stage, stage_config, config.dataset.shard_size)
            check_drops(stage, stage_config, tallies[stage.NAME])
    for stage, stage_config in stages:
        meta["stages"][stage.NAME]["rows"] = tallies[stage.NAME].rows
        meta["pairs"].update(write_pairs(root, stage, config.pairs, config.seed, stage_config))
    for stage, stage_config in stages:     # files built from every stage's rows (the 1:N protocol)
        if hasattr(stage, "finish"):
            meta[stage.NAME] = stage.finish(root, stage_config, config.seed)
    meta["status"] = "complete"
    write_json_atomic(root / "dataset.json", meta)
    log.info("dataset complete: %s (%s)", root, _counts(meta))
    return meta


def prepare_root(root: Path, recorded: dict, overwrite: bool, stages, shard_size: int) -> dict:
    """Create or reopen the dataset root: refuse a different config unless overwrite=true.
    Temporary files a killed run left are removed, never a reason to refuse the root."""
    remove_temporaries(root)
    if (root / "dataset.json").exists():
        try:
            meta = load_dataset_json(root)
        except ManifestError:
            if not overwrite:
                raise
            meta = None      # unreadable: overwrite=true replaces it like any other dataset
        if meta is not None and isinstance(meta.get("config"), dict) and "storage" not in meta["config"]:
            meta["config"] = {**meta["config"], "storage": "files"}   # minted before storage existed
        if meta is not None and meta.get("config") == recorded:
            return meta
        if not overwrite:
            raise ConfigError(f"output_dir={root} holds a dataset minted with a different config "
                              f"({_first_difference(meta.get('config'), recorded)}); rerun with "
                              "overwrite=true to replace it, or choose another output_dir")
        log.info("overwrite=true: removing the dataset in %s", root)
        for entry in DATASET_ENTRIES:
            path = root / entry
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    elif any(not p.name.startswith(".biomint-") and not is_temporary(p.name) for p in root.iterdir()):
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


class PendingShards:
    """The shards of a stage still to mint, without a list of them: a fresh stage is its whole
    plan (no file is looked at), a resumed one the plan less the shards whose stats exist and
    pass the cheap check (pipeline.manifest.shard_state). `rows` counts their samples."""

    def __init__(self, plan, todo, rows: int) -> None:
        self.plan, self.todo, self.rows = plan, todo, rows

    def __len__(self) -> int:
        return len(self.todo)

    def __iter__(self):
        return (self.plan[int(i)] for i in self.todo)


def pending_shards(root: Path, stage, stage_config, shard_size: int) -> PendingShards:
    import numpy as np

    shards = plan_shards(stage.subject_count(stage_config), shard_size)
    total = stage.expected_rows(stage_config, 0, stage.subject_count(stage_config))
    stats_dir = stats_path(root, stage.NAME, "x").parent
    done = {p.stem for p in stats_dir.glob("part-*.json")} if stats_dir.is_dir() else set()
    if not done:
        return PendingShards(shards, range(len(shards)), total)
    todo, rows, damaged = [], 0, 0
    for shard in shards:
        if shard.name not in done:
            todo.append(shard.index)
            rows += stage.expected_rows(stage_config, shard.start, shard.stop)
            continue
        _, why = shard_state(root, stage.NAME, shard.name, stage.expected_rows(stage_config, shard.start, shard.stop))
        if why:
            damaged += 1
            if damaged <= 5:
                log.warning("%s: re-minting %s: %s", stage.NAME, shard.describe(), why)
            todo.append(shard.index)
            rows += stage.expected_rows(stage_config, shard.start, shard.stop)
    if damaged > 5:
        log.warning("%s: ... and %d more damaged shards", stage.NAME, damaged - 5)
    if len(todo) < len(shards):
        log.info("%s: resuming — %d of %d shards already minted", stage.NAME, len(shards) - len(todo), len(shards))
    return PendingShards(shards, np.asarray(todo, dtype=np.int64), rows)


def mint_stage(client, root: Path, config, stage, stage_config, shards: PendingShards) -> dict:
    """Run a stage's pending shards on the cluster with a progress bar and a summary line
    (samples minted, dropped and the top reasons, throughput); returns this run's timing:
    samples (minted + dropped), dropped, shards, seconds (wall), shard_seconds and cpu_seconds
    (sums over shards of the time inside the workers' tasks: wall clock and CPU).

    Shards are submitted as workers free up (a few per worker in flight), so the client's
    memory does not grow with the count. A shard that fails is retried `cluster.retries`
    times and every failure is reported once at the end; a full disk stops the run at once
    (DiskFull: the path, the free space, and what the rest of the stage needs)."""
    import itertools

    from tqdm import tqdm

    from pipeline.cluster import completion_queue

    from pipeline.worker import mint_shard_reporting

    if not len(shards):
        return {"samples": 0, "shards": 0, "seconds": 0.0, "shard_seconds": 0.0, "cpu_seconds": 0.0, "workers": 0}
    workers = max(1, len(client.nthreads()))
    start = time.perf_counter()
    in_flight: dict = {}
    attempts: dict[int, int] = {}
    completed = completion_queue(client)
    todo = iter(shards)

    def submit(shard) -> None:
        future = client.submit(mint_shard_reporting, stage.NAME, stage_config, str(root), config.seed, shard,
                               config.storage,
                               retries=config.cluster.retries, pure=False,
                               key=f"{stage.NAME}-{shard.name}-{time.time_ns()}")
        in_flight[future] = shard
        completed.add(future)

    for shard in itertools.islice(todo, 4 * workers):
        submit(shard)
    failed, minted, shard_seconds, cpu_seconds, disk_full = [], 0, 0.0, 0.0, None
    drops = DropTally()          # of this run's shards: the summary line
    sample_bytes = sampled = 0       # bytes per sample so far: what the rest needs on a full disk
    with tqdm(total=shards.rows, desc=stage.NAME, unit="sample", dynamic_ncols=True) as bar:
        for future in completed:
            shard = in_flight.pop(future)
            if future.status == "error":      # the worker died `retries` + 1 times on this shard
                failed.append((shard.index, f"{shard.describe()}: {future.exception()!r}"))
            else:
                stats = future.result()
                failure = stats.get("failed")
                if failure:
                    sample_bytes += stats.get("written_bytes", 0)
                    sampled += stats.get("written_samples", 0)
                if failure == "disk_full":
                    disk_full = disk_full or (shard, stats)      # submit nothing more; let the rest end
                elif failure:
                    attempts[shard.index] = attempts.get(shard.index, 0) + 1
                    if attempts[shard.index] <= config.cluster.retries and not disk_full:
                        submit(shard)
                        continue
                    where = f" (traceback in {stats['log']})" if stats.get("log") else ""
                    failed.append((shard.index, f"{shard.describe()}: {stats['message']}{where}"))
                else:
                    minted += stats["rows"] + len(stats["dropped"])
                    drops.add_shard(stats)
                    shard_seconds += stats["seconds"]
                    cpu_seconds += stats["cpu_seconds"]
                    sample_bytes += stats.get("bytes", 0)
                    sampled += stats["rows"]
                    bar.update(stats["rows"] + len(stats["dropped"]))
            if not disk_full:   # 4 shards per worker, workers that joined since (SLURM jobs start late) too
                for shard in itertools.islice(todo, max(1, 4 * len(client.nthreads()) - len(in_flight))):
                    submit(shard)
    if disk_full:
        shard, stats = disk_full
        left = shards.rows - minted
        per_sample = sample_bytes / sampled if sampled else None
        raise DiskFull(disk_full_sentence(stats.get("path") or root,
                                          int(per_sample * left) if per_sample else None,
                                          f"the {left:,} samples of {stage.NAME} still to mint"))
    seconds = time.perf_counter() - start
    if failed:
        raise ShardsFailed(f"{stage.NAME}: {len(failed)} shard(s) failed after {config.cluster.retries} "
                           f"retries; rerun the same command to retry them: "
                           + "; ".join(message for _, message in sorted(failed)[:10])
                           + (f"; ... and {len(failed) - 10} more" if len(failed) > 10 else ""))
    why = f" ({drops.describe()})" if drops.dropped else ""
    log.info("%s: %d samples minted, %d dropped%s in %.1f s (%.2f samples/s) → %s", stage.NAME, drops.rows,
             drops.dropped, why, seconds, minted / seconds if seconds else 0.0, manifest_dir(root, stage.NAME))
    return {"samples": minted, "dropped": drops.dropped, "shards": len(shards), "seconds": round(seconds, 3),
            "shard_seconds": round(shard_seconds, 3), "cpu_seconds": round(cpu_seconds, 3),
            "workers": workers}


def tally_stage(root: Path, stage, stage_config, shard_size: int) -> DropTally:
    """Rows and drops of the stage's finished parts; fails the run unless rows + dropped =
    configured count."""
    tally = DropTally()
    for shard in plan_shards(stage.subject_count(stage_config), shard_size):
        stats = finished_shard_stats(root, stage.NAME, shard.name,
                                     stage.expected_rows(stage_config, shard.start, shard.stop))
        if stats is None:
            raise ShardsFailed(f"{stage.NAME}: {shard.describe()} has no complete part at "
                               f"{part_path(root, stage.NAME, shard.name)}; rerun the same command")
        tally.add_shard(stats)
    expected = stage.expected_rows(stage_config, 0, stage.subject_count(stage_config))
    if tally.samples != expected:
        raise ShardsFailed(f"{stage.NAME}: {tally.rows} rows + {tally.dropped} dropped != {expected} configured")
    return tally


def check_drops(stage, stage_config, tally: DropTally) -> None:
    """TooManyDropped when the stage dropped more than its max_drop_fraction allows (stages
    without that hook may drop any share)."""
    if not hasattr(stage, "max_drop_fraction"):
        return
    cause = getattr(stage, "drop_cause", lambda reason: None)
    top = tally.top(1)
    sentence = too_many_dropped(stage.NAME, tally, stage.max_drop_fraction(stage_config),
                                cause(top[0][1]) if top else None)
    if sentence:
        raise TooManyDropped(sentence)


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
