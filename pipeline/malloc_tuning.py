"""glibc malloc settings for the processes that mint, and how each process gets them.

glibc reads its malloc environment (MALLOC_*_, GLIBC_TUNABLES) once, when a process starts:
spawned Dask workers get it from `worker_env` (pipeline.cluster), the `biomint` script gets it
by re-executing itself once (`exec_with_malloc_env`, pipeline.launch), and a process that
calls `pipeline.runner.run` from Python gets the two heap thresholds by mallopt at warm-up
(pipeline.worker.heap_kept_for_arrays) but not the tunables, which have no mallopt.

Why each setting, measured on the fingerprint stage (360 samples, 40 fingers x 9 impressions,
2-core AMD EPYC KVM guest, glibc 2.36, transparent huge pages in `madvise` mode):
- MALLOC_TRIM_THRESHOLD_ / MALLOC_MMAP_THRESHOLD_: Dask's default MALLOC_TRIM_THRESHOLD_=65536
  also freezes the mmap threshold at 128 KiB, so every image-sized array is mmap'd and unmapped
  again: 7x the system time and 1.8x the wall time of a shard.
- glibc.malloc.hugetlb=1: malloc asks for transparent huge pages (madvise) where it grows its
  heaps. The 70 MB a process's heap grows to in its first shard then takes ~1,000 page faults
  instead of ~18,000 (one-worker run, 3 alternating pairs: 17.5-20.5k -> 1.0-1.05k faults).
- glibc.malloc.arena_max=1 (single-threaded workers only): a Dask worker mints on an executor
  thread, and glibc gives a non-main thread its own arena of mmap'd 64 MB heaps, which the
  huge-page setting does not reach: 34-38k page faults per 360 samples on two workers against
  2.0k with one arena. A worker with several threads keeps glibc's arenas, which exist so that
  its threads do not wait on one lock.
Together, over 4 alternating pairs of `biomint` runs with and without them (360 samples each):
one worker 95.7-101.2 samples/s against 93.7-99.1 (+2 % on the means), two workers 132.2-142.4
against 130.9-133.9 (+4 %), CPU per sample on two workers 13.4-14.4 ms against 14.3-14.5 ms.
"""
from __future__ import annotations

import os
import platform
import sys
from typing import Mapping

# kept on the heap, and kept there when freed, below these sizes (see the module docstring)
HEAP_ENV = {"MALLOC_TRIM_THRESHOLD_": str(256 << 20), "MALLOC_MMAP_THRESHOLD_": str(64 << 20)}

# set by exec_with_malloc_env before it re-executes, so that a process never does it twice
_EXECUTED = "BIOMINT_MALLOC_ENV"


def glibc_tunables(current: str | None, threads_per_worker: int) -> str:
    """GLIBC_TUNABLES for a minting process: `current` (the user's, kept as given and winning
    over ours key by key) plus huge pages, and one arena where the process mints on one thread."""
    ours = {"glibc.malloc.hugetlb": "1"}
    if threads_per_worker == 1:
        ours["glibc.malloc.arena_max"] = "1"
    items = [item for item in (current or "").split(":") if item]
    given = {item.split("=", 1)[0] for item in items}
    return ":".join(items + [f"{key}={value}" for key, value in ours.items() if key not in given])


def malloc_env(threads_per_worker: int, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The malloc environment variables a minting process should start with."""
    return {**HEAP_ENV, "GLIBC_TUNABLES": glibc_tunables(environ.get("GLIBC_TUNABLES"), threads_per_worker)}


def is_glibc() -> bool:
    return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def exec_with_malloc_env() -> None:
    """Re-execute this process (same interpreter, same argv) with `malloc_env(1)` unless it
    already has it: the `biomint` script mints a one-worker run in its own process, and the
    client of a cluster run holds the scheduler. Called before anything heavy is imported; does
    nothing off glibc, when the environment is already right, or if the exec fails."""
    if not is_glibc() or os.environ.get(_EXECUTED):
        return
    wanted = malloc_env(1)
    if all(os.environ.get(key) == value for key, value in wanted.items()):
        return
    env = {**os.environ, **wanted, _EXECUTED: "1"}
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, argv, env)
    except OSError:
        return   # an interpreter that cannot be executed again: mint with glibc's defaults
