"""Run chunked work over Dask (a client passed in), a local process pool, or in-process.

Why processes: afis serialises every native MINDTCT/Bozorth3 call behind one process-wide
lock (NBIS keeps global state), so threads would run one at a time. With no client and
``workers != 1`` (0 = one per CPU core) a ``ProcessPoolExecutor`` (spawn context: no forked OpenCV/ONNX threads)
avoids a LocalCluster's start-up, dashboard port and nanny processes for what is a flat map;
with a ``distributed.Client`` (LocalCluster, SLURMCluster…) the same chunks are mapped on it,
so evaluation scales like generation. ``workers == 1``, or a single chunk, runs in-process.
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable, Sequence

from tqdm.auto import tqdm


def map_chunks(fn: Callable[[Any], list], chunks: Sequence[Any], *, client=None,
               workers: int = 1, desc: str = "", progress: bool = True) -> list:
    """Apply ``fn`` to every chunk; return the concatenated results in chunk order."""
    workers = workers or _usable_cores()
    results: list[list | None] = [None] * len(chunks)
    bar = tqdm(total=len(chunks), desc=desc, unit="chunk", disable=not progress or not chunks,
               leave=False)
    try:
        if client is not None and chunks:
            from distributed import as_completed as dask_completed

            futures = client.map(fn, list(chunks), pure=False)
            index = {f.key: k for k, f in enumerate(futures)}
            for fut in dask_completed(futures):
                results[index[fut.key]] = fut.result()
                bar.update(1)
        elif workers > 1 and len(chunks) > 1:
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=ctx) as ex:
                futs = {ex.submit(fn, c): k for k, c in enumerate(chunks)}
                for fut in as_completed(futs):
                    results[futs[fut]] = fut.result()
                    bar.update(1)
        else:
            for k, c in enumerate(chunks):
                results[k] = fn(c)
                bar.update(1)
    finally:
        bar.close()
    return [item for part in results for item in (part or [])]


def chunked(items: Sequence[Any], size: int) -> list[list[Any]]:
    return [list(items[k:k + size]) for k in range(0, len(items), size)]


def _usable_cores() -> int:
    """Cores this process may run on (CPU affinity and cgroup-pinned sets), not the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
