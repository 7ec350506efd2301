"""Dask clusters by kind: a registry of openers, picked by `cluster.kind` (local, address, slurm)."""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Callable, Iterator

from pipeline.malloc_tuning import malloc_env

log = logging.getLogger("biomint")

# Set in every worker process before it starts. One thread per worker: keep BLAS/OpenMP/torch
# pools at one thread too. The malloc settings (heap thresholds, huge pages, one arena for a
# single-threaded worker) and the measurements behind them are in pipeline.malloc_tuning.
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def worker_env(threads_per_worker: int) -> dict[str, str]:
    """The environment a worker process starts with (Dask's nanny pre-spawn environ, or the
    exports of a SLURM job script)."""
    return {**THREAD_ENV, **malloc_env(threads_per_worker)}


# What a local cluster nobody watches (cluster.dashboard=false) need not do: sample every
# worker's stacks every 10 ms for the dashboard's profile (counted in the worker's CPU), check
# each event loop every 20 ms for blocking, poll the host's load every 0.5 s. On a 2-core
# machine the client process (scheduler and nannies) competes with both workers for the cores:
# measured over 4 alternating 2-worker runs of 360 prints, the client's CPU per stage fell from
# 0.34-0.55 s to 0.16-0.20 s and the stage took 5.2-6.4 s instead of 6.1-7.7 s.
UNWATCHED_WORKER = {"distributed.worker.profile.enabled": False}
UNWATCHED_CLUSTER = {**UNWATCHED_WORKER, "distributed.admin.tick.interval": "500ms",
                     "distributed.admin.system-monitor.interval": "2s"}


def dask_env(settings: dict) -> dict[str, str]:
    """Dask settings as the environment variables Dask reads at start (SLURM workers are
    started by a job script, not by this process): a.b-c -> DASK_A__B_C."""
    return {"DASK_" + key.upper().replace(".", "__").replace("-", "_"): str(value)
            for key, value in settings.items()}


def quiet_dask_logs() -> None:
    """Dask logs every worker start and stop at INFO; keep the run's log to biomint's lines."""
    import distributed  # noqa: F401  (configures its loggers on import: set levels after it)

    for name in ("distributed", "distributed.http.proxy"):
        if logging.getLogger(name).getEffectiveLevel() < logging.WARNING:
            logging.getLogger(name).setLevel(logging.WARNING)


def available_cores() -> int:
    """Cores this process may use: its affinity mask, and inside a SLURM job at most the job's
    `--cpus-per-task` (a node without task binding, TaskPlugin=task/none, leaves every core in the
    mask, so a job given one core would start a worker per core of the node)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    per_task = os.environ.get("SLURM_CPUS_PER_TASK", "") if os.environ.get("SLURM_JOB_ID") else ""
    return min(cores, int(per_task)) if per_task.isdigit() and int(per_task) > 0 else cores


def visible_gpus() -> int:
    """GPUs visible to this process, without importing torch on machines that have none."""
    if not Path("/dev/nvidiactl").exists() and not os.environ.get("CUDA_VISIBLE_DEVICES"):
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def local_worker_count(workers: int, wants_gpu: bool) -> int:
    if workers > 0:
        return workers
    gpus = visible_gpus() if wants_gpu else 0
    return gpus if gpus > 0 else available_cores()


class InlineFuture:
    """A task of InlineClient: run when the completion queue reaches it."""

    def __init__(self, fn: Callable, args: tuple) -> None:
        self.fn, self.args, self.status = fn, args, "pending"
        self._result = self._error = None

    def run(self) -> None:
        try:
            self._result, self.status = self.fn(*self.args), "finished"
        except Exception as e:  # a failing task is reported like a Dask one, with its exception
            self._error, self.status = e, "error"

    def result(self):
        if self._error is not None:
            raise self._error
        return self._result

    def exception(self):
        return self._error


class InlineQueue:
    """Futures in submission order, each run as the loop reaches it (what as_completed gives)."""

    def __init__(self) -> None:
        self.futures: list[InlineFuture] = []

    def add(self, future: InlineFuture) -> None:
        self.futures.append(future)

    def __iter__(self):
        while self.futures:
            future = self.futures.pop(0)
            future.run()
            yield future


class InlineClient:
    """One local worker: the shards run in this process, one after another, with no Dask
    cluster to start (~2 s and a second torch import saved on small runs). The same
    `mint_shard` code writes the same bytes; what a worker process would isolate (a crash
    kills the run) is what resume is for."""

    def submit(self, fn: Callable, *args, **_: object) -> InlineFuture:
        return InlineFuture(fn, args)

    def run(self, fn: Callable, *args) -> None:
        fn(*args)

    def nthreads(self) -> dict:
        return {"inline": 1}

    def cancel(self, futures) -> None:
        pass


def completion_queue(client):
    """An as_completed-like queue for `client` (Dask's, or InlineClient's own)."""
    if isinstance(client, InlineClient):
        return InlineQueue()
    from dask.distributed import as_completed

    return as_completed()


# With cluster.workers=0 (one per core) a run of at most this many samples is minted in the
# client process: starting worker processes (each imports torch: ~2 s) costs more than such a
# run takes on one core (~40 ms a plain impression, ~0.5 s a CPU face).
SMALL_RUN_SAMPLES = 48


def runs_inline(cfg, wants_gpu: bool, samples: int | None = None) -> bool:
    """Whether a local run goes to InlineClient: one worker, or a small run on auto workers
    (never when threads, a dashboard or other cluster kinds are asked for)."""
    if cfg.kind != "local" or cfg.threads_per_worker != 1 or cfg.dashboard:
        return False
    small = cfg.workers == 0 and samples is not None and samples <= SMALL_RUN_SAMPLES
    return small or local_worker_count(cfg.workers, wants_gpu) == 1


@contextlib.contextmanager
def open_local(cfg, wants_gpu: bool, samples: int | None = None) -> Iterator:
    n = local_worker_count(cfg.workers, wants_gpu)
    if runs_inline(cfg, wants_gpu, samples):
        log.info("local: %s, in this process (no Dask cluster)",
                 "1 worker" if n == 1 else f"{samples} samples, fewer than a cluster's start is worth")
        yield InlineClient()
        return
    import dask
    from dask.distributed import Client, LocalCluster

    spawn_env = dask.config.set({"distributed.nanny.pre-spawn-environ": worker_env(cfg.threads_per_worker),
                                 **({} if cfg.dashboard else UNWATCHED_CLUSTER)})
    # a random dashboard port unless asked for: other clusters on the machine may hold :8787
    dashboard = ":8787" if cfg.dashboard else ":0"
    with spawn_env, LocalCluster(n_workers=n, threads_per_worker=cfg.threads_per_worker, processes=True,
                                 memory_limit=cfg.memory_limit, dashboard_address=dashboard) as cluster, \
            Client(cluster) as client:
        log.info("dask: local cluster, %d workers x %d thread(s)%s", n, cfg.threads_per_worker,
                 f", dashboard {client.dashboard_link}" if cfg.dashboard else "")
        yield client


@contextlib.contextmanager
def open_address(cfg, wants_gpu: bool) -> Iterator:
    from dask.distributed import Client

    with Client(cfg.address, timeout="30s") as client:
        log.info("dask: scheduler %s, %d workers", cfg.address, len(client.nthreads()))
        yield client


def slurm_cluster(cfg):
    """A dask-jobqueue SLURMCluster from the `cluster=slurm` config (no job is submitted yet)."""
    from dask_jobqueue import SLURMCluster

    directives = list(cfg.job_extra_directives)
    if cfg.gpus_per_job:
        directives.append(f"--gres=gpu:{cfg.gpus_per_job}")
    threads_per_worker = max(1, cfg.cores // max(1, cfg.processes))   # dask-jobqueue's --nthreads
    exports = {**worker_env(threads_per_worker), **dask_env(UNWATCHED_WORKER)}
    return SLURMCluster(queue=cfg.queue, account=cfg.account, cores=cfg.cores, processes=cfg.processes,
                        memory=cfg.memory, walltime=cfg.walltime, job_extra_directives=directives,
                        job_script_prologue=list(cfg.job_script_prologue)
                        + [f"export {k}={v}" for k, v in exports.items()],
                        log_directory=cfg.log_directory, local_directory=cfg.local_directory)


def check_slurm_job(cluster) -> None:
    """Ask SLURM whether it would ever run the worker job (`sbatch --test-only`: nothing is
    queued) before any is submitted. dask-jobqueue only logs a refused submission, and a job that
    asks for more than any node has stays pending: either way the run would wait for a worker forever."""
    import subprocess
    import tempfile

    from pipeline.errors import ConfigError

    with tempfile.NamedTemporaryFile("w", prefix="biomint-slurm-", suffix=".sh") as script:
        script.write(cluster.job_script())
        script.flush()
        try:
            result = subprocess.run(["sbatch", "--test-only", script.name], capture_output=True, text=True,
                                    timeout=120)
        except FileNotFoundError:
            raise ConfigError("cluster=slurm needs SLURM's sbatch on the PATH: run biomint where jobs are "
                              "submitted (a login node)") from None
    if result.returncode != 0:
        lines = [line.strip() for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        why = "; ".join(line.removeprefix("sbatch: error: ") for line in lines) or f"exit code {result.returncode}"
        raise ConfigError(f"SLURM would not run the worker job ({why}); check cluster.queue, cluster.account, "
                          "cluster.cores, cluster.processes, cluster.memory, cluster.walltime and "
                          "cluster.gpus_per_job against the partition (the job script is in the run's log)")


@contextlib.contextmanager
def open_slurm(cfg, wants_gpu: bool) -> Iterator:
    from dask.distributed import Client

    with slurm_cluster(cfg) as cluster, Client(cluster) as client:
        jobs = max(1, cfg.workers)
        log.info("dask: SLURM cluster, %d jobs requested; job script:\n%s", jobs, cluster.job_script())
        check_slurm_job(cluster)
        cluster.scale(jobs=jobs)
        client.wait_for_workers(1)
        yield client


CLUSTER_KINDS: dict[str, Callable] = {"local": open_local, "address": open_address, "slurm": open_slurm}


def open_cluster(cfg, wants_gpu: bool = False, samples: int | None = None):
    """Context manager yielding a dask Client for the configured cluster kind (an InlineClient
    for one local worker, or for a local run of at most SMALL_RUN_SAMPLES `samples` on auto
    workers)."""
    if runs_inline(cfg, wants_gpu, samples):
        return open_local(cfg, wants_gpu, samples)
    quiet_dask_logs()
    return CLUSTER_KINDS[cfg.kind](cfg, wants_gpu)
