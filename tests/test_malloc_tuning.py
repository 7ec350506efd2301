"""The malloc environment minting processes start with (pipeline.malloc_tuning): huge pages
everywhere, one arena where a process mints on one thread, the user's own GLIBC_TUNABLES kept,
and the `biomint` script's process and every spawned worker started with it."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO
from pipeline.malloc_tuning import glibc_tunables, is_glibc, malloc_env

glibc_only = pytest.mark.skipif(not is_glibc(), reason="GLIBC_TUNABLES is read by glibc only")


def test_single_threaded_processes_get_huge_pages_and_one_arena():
    assert glibc_tunables(None, 1) == "glibc.malloc.hugetlb=1:glibc.malloc.arena_max=1"


def test_processes_with_several_threads_keep_glibcs_arenas():
    assert glibc_tunables("", 4) == "glibc.malloc.hugetlb=1"


def test_the_users_own_tunables_are_kept_and_win_key_by_key():
    mine = "glibc.malloc.hugetlb=0:glibc.cpu.hwcaps=-AVX512F"
    assert glibc_tunables(mine, 1) == mine + ":glibc.malloc.arena_max=1"


def test_the_heap_thresholds_come_with_the_tunables():
    env = malloc_env(1, {})
    assert env["MALLOC_MMAP_THRESHOLD_"] == str(64 << 20) and env["MALLOC_TRIM_THRESHOLD_"] == str(256 << 20)
    assert env["GLIBC_TUNABLES"] == glibc_tunables(None, 1)


def _reexecuted(extra_env: dict[str, str]) -> list[str]:
    code = ("import os; print('started', flush=True); "
            "from pipeline.malloc_tuning import exec_with_malloc_env; exec_with_malloc_env(); "
            "print(os.environ['GLIBC_TUNABLES'], os.environ['MALLOC_MMAP_THRESHOLD_'])")
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "BIOMINT_MALLOC_ENV")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO,
                         env={**env, **extra_env}, timeout=60)
    return out.stdout.splitlines()


@glibc_only
def test_the_script_restarts_itself_once_with_the_malloc_environment():
    # 'started' twice: the process ran its first line, re-executed, ran it again, then went on
    assert _reexecuted({}) == ["started", "started", f"{glibc_tunables(None, 1)} {64 << 20}"]


@glibc_only
def test_a_process_that_has_the_environment_already_is_not_restarted():
    env = {**malloc_env(1, {}), "GLIBC_TUNABLES": glibc_tunables(None, 1)}
    assert _reexecuted(env) == ["started", f"{glibc_tunables(None, 1)} {64 << 20}"]


@glibc_only
def test_local_workers_start_with_the_malloc_environment():
    from pipeline.cluster import open_local
    from pipeline.config import LocalClusterConfig

    with open_local(LocalClusterConfig(workers=2), wants_gpu=False) as client:
        seen = client.run(lambda: (os.environ.get("GLIBC_TUNABLES", ""), os.environ.get("MALLOC_MMAP_THRESHOLD_")))
    expected = glibc_tunables(os.environ.get("GLIBC_TUNABLES"), 1)
    assert sorted(seen.values()) == [(expected, str(64 << 20))] * 2


def test_a_workers_warm_up_imports_what_its_first_shard_needs():
    """The generator's modules (its package resolves them on first use) and pandas, which
    pyarrow imports on its first conversion of rows: 0.13-0.21 s of CPU each worker's first
    shard used to count."""
    code = ("import sys; from pipeline.worker import warm_up; warm_up(['fingerprint']); "
            "print(all(m in sys.modules for m in ('generators.fingerprint.impression', "
            "'generators.fingerprint.master', 'generators.fingerprint.rolled', 'pandas')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO,
                         timeout=120)
    assert out.stdout.strip() == "True", out.stdout + out.stderr
