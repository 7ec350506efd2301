"""What runs on a Dask worker: mint one shard, write its Parquet part, then its stats (last)."""
from __future__ import annotations

import re
import time
import traceback
from pathlib import Path

from pipeline.errors import DISK_FULL_ERRNOS
from pipeline.manifest import (part_path, remove_temporaries, rows_to_table, stats_path, write_json_atomic,
                               write_table_atomic)
from pipeline.sharding import Shard
from pipeline.stages import StageContext, load_stages, stage_device
from pipeline.stages.base import assign_files, relative_sample_dir
from pipeline.storage import open_storage

ERROR_LOG_DIR = ".biomint-errors"   # tracebacks of failed shards (hidden: not part of the dataset)


def resolve_device(preference: str) -> str:
    """auto → this worker's GPU when it has one (workers share GPUs round-robin), else cpu."""
    if preference != "auto":
        return preference
    from pipeline.cluster import visible_gpus

    gpus = visible_gpus()
    if gpus == 0:
        return "cpu"
    try:
        from distributed import get_worker

        name = get_worker().name
        # LocalCluster names workers 0, 1, ...; dask-jobqueue "SLURMCluster-<job>-<process>":
        # the trailing number is the worker's slot on its node.
        match = re.search(r"(\d+)$", str(name))
        index = int(match.group(1)) if match else 0
    except ValueError:  # not on a worker
        index = 0
    return f"cuda:{index % gpus}"


def one_thread_per_worker() -> None:
    """A worker per core: torch and OpenCV (the generators use both) must not start a thread
    pool per worker. OpenCV's own pool ignores OMP_NUM_THREADS: left alone, each worker ran
    two threads on its core (the in-process worker used 1.2 cores for a shard, for the same
    wall time: 9 % more CPU per sample on average over 3 runs, measured). The bytes are the same either way."""
    import cv2
    import torch

    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)
    if cv2.getNumThreads() != 1:
        cv2.setNumThreads(1)


# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def heap_kept_for_arrays() -> None:
    """Give this process the heap thresholds spawned workers start with (malloc_tuning.HEAP_ENV):
    glibc reads MALLOC_*_ only when a process starts, and a one-worker run mints in the client
    process (InlineClient), which may not have been started by the `biomint` script. Without
    them every image-sized array was mmap'd and its pages faulted in again: 550 page faults per
    fingerprint sample against 13, 1.5 ms more system time per sample (measured on 360 samples).
    Where malloc is not glibc's, nothing is set."""
    import ctypes

    from pipeline.malloc_tuning import HEAP_ENV

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):     # no C library by that name, or no mallopt in it
        return
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    mallopt(M_TRIM_THRESHOLD, int(HEAP_ENV["MALLOC_TRIM_THRESHOLD_"]))
    mallopt(M_MMAP_THRESHOLD, int(HEAP_ENV["MALLOC_MMAP_THRESHOLD_"]))


def check_params(stage, rows: list[dict]) -> None:
    """Every row's params must have exactly the keys of the stage's PARAMS_TYPE: pyarrow would
    otherwise drop unknown keys and fill missing ones with nulls without a word."""
    declared = {f.name for f in stage.PARAMS_TYPE}
    for row in rows:
        if set(row["params"]) != declared:
            extra, missing = set(row["params"]) - declared, declared - set(row["params"])
            raise RuntimeError(f"{stage.NAME} sample {row['sample_id']}: params keys differ from the stage's "
                               f"PARAMS_TYPE (extra {sorted(extra)}, missing {sorted(missing)})")


def warm_up(stage_names: list[str]) -> None:
    """Import the stages' generators (and torch) on a worker before the first shard is timed."""
    stages = load_stages()
    one_thread_per_worker()
    heap_kept_for_arrays()
    for name in stage_names:
        getattr(stages[name], "warm_up", lambda: None)()
        # pyarrow imports pandas on its first conversion from Python objects: 0.13-0.21 s of CPU
        # that each worker's first shard paid inside its timing (the client process of a
        # one-worker run had imported pandas before its first shard)
        rows_to_table([], stages[name].PARAMS_TYPE)


def mint_shard(stage_name: str, config, root: str, seed: int, shard: Shard, storage: str = "files") -> dict:
    """Write the files, the Parquet part and the stats of one shard; return the stats.
    `storage` names where the files go (pipeline.storage.STORAGES: files, tar).

    Raises if the stage made a different number of rows than the config asks for, so that
    the shard is retried and, failing again, the run reports it.
    """
    return _mint_shard(stage_name, config, root, seed, shard, _context(root, seed, stage_name, shard, storage))


def _context(root: str, seed: int, stage_name: str, shard: Shard, storage: str) -> StageContext:
    return StageContext(root=Path(root), seed=seed, storage=open_storage(storage, Path(root), stage_name, shard.name))


def _mint_shard(stage_name: str, config, root: str, seed: int, shard: Shard, context: StageContext) -> dict:
    try:
        return _mint_shard_files(stage_name, config, root, shard, context)
    finally:
        context.storage.discard()       # a spool of a shard that failed


def _mint_shard_files(stage_name: str, config, root: str, shard: Shard, context: StageContext) -> dict:
    stage = load_stages()[stage_name]
    root_path = Path(root)
    context.device = resolve_device(stage_device(config))
    one_thread_per_worker()
    _remove_leftovers(root_path, stage, shard)
    context.storage.remove_leftovers()
    start, cpu_start = time.perf_counter(), time.process_time()
    rows = stage.run_shard(shard, config, context)
    expected = stage.expected_rows(config, shard.start, shard.stop)
    if len(rows) + len(context.dropped) != expected:
        raise RuntimeError(f"{stage_name} {shard.describe()} made {len(rows)} rows and dropped "
                           f"{len(context.dropped)}, but the config asks for {expected}")
    check_params(stage, rows)
    shared = context.storage.finish(rows, assign_files(rows, context.written), stage.PARAMS_TYPE)
    write_table_atomic(part_path(root_path, stage_name, shard.name), rows_to_table(rows, stage.PARAMS_TYPE))
    stats = {"stage": stage_name, "shard": shard.index, "subjects": [shard.start, shard.stop],
             "rows": len(rows), "dropped": context.dropped, "seconds": round(time.perf_counter() - start, 4),
             "cpu_seconds": round(time.process_time() - cpu_start, 4),
             "device": context.device, "files": shared,
             "bytes": sum(entry["bytes"] for entry in context.written)}
    write_json_atomic(stats_path(root_path, stage_name, shard.name), stats)  # last: marks the shard done
    return stats


def mint_shard_reporting(stage_name: str, config, root: str, seed: int, shard: Shard,
                         storage: str = "files") -> dict:
    """mint_shard, with a failure returned instead of raised: {"failed": "disk_full" | "error",
    "message": one line, "log": file with the traceback}. The client then retries or stops
    and reports each failure once, instead of Dask logging every attempt's traceback."""
    context = _context(root, seed, stage_name, shard, storage)
    try:
        return _mint_shard(stage_name, config, root, seed, shard, context)
    except Exception as e:  # every failure of a shard is reported to the client, none is lost
        kind = "disk_full" if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS else "error"
        message = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}".rstrip(": ")
        log_file = Path(root) / ERROR_LOG_DIR / f"{stage_name}-{shard.name}.log"
        try:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            log_file.write_text(traceback.format_exc())
        except OSError:  # a full disk may refuse the log too; the message still reaches the client
            log_file = None
        # what the shard wrote before it failed tells the client how many bytes a sample takes
        images = [entry for entry in context.written if entry["path"].startswith("images/")]
        return {"failed": kind, "message": message, "path": getattr(e, "filename", None),
                "log": str(log_file) if log_file else None,
                "written_bytes": sum(entry["bytes"] for entry in context.written), "written_samples": len(images)}


def _remove_leftovers(root: Path, stage, shard: Shard) -> None:
    """Temporary files a killed run left where this shard writes (they are never read, and
    the shard is about to be written again)."""
    modality = getattr(stage, "MODALITY", stage.NAME)
    for subject in range(shard.start, shard.stop):
        for kind in ("images", "truth"):
            remove_temporaries(root / relative_sample_dir(kind, modality, subject))
