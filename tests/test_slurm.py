"""SLURM: the `cluster=slurm` kind (dask-jobqueue) and Hydra's submitit SLURM launcher on a real
one-node SLURM cluster on localhost (`make test-slurm`), and the client-side checks they rely on.

The `slurm`-marked test needs root and Debian's slurm-wlm and munge (`make test-slurm` installs
them when root). It starts munged, slurmctld and slurmd from a slurm.conf in a temporary folder
(SLURM_CONF points at it, free ports, so the machine's own /etc/slurm and /etc/munge are not
used), mints `dataset=smoke` through both SLURM paths and through local runs, and checks that
every dataset validates and that the SLURM bytes equal the local ones. The daemons, and every
process whose environment names that slurm.conf, are gone when the fixture ends, pass or fail.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import BIOMINT, TINY, compose_overrides, file_hashes

SLURM_BINARIES = ("munged", "munge", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel", "scontrol")
PARTITION = "biomint"


# --- client-side checks, no SLURM needed (part of `make test`) ---------------------------------

def test_cores_inside_a_slurm_job_are_the_jobs_cpus_per_task(monkeypatch):
    from pipeline.cluster import available_cores

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert available_cores() == 4                  # not in a job: the variable is someone else's
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    assert available_cores() == 1                  # task/none leaves the node's cores in the mask
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "8")
    assert available_cores() == 4                  # a mask narrower than the job wins
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    assert available_cores() == 4


def _fake_sbatch(tmp_path: Path, monkeypatch, rc: int, stderr: str) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\nprintf '%s\\n' '{stderr}' >&2\nexit {rc}\n")
    sbatch.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return calls


def _slurm_cluster(*overrides: str):
    from pipeline.cluster import slurm_cluster
    from pipeline.config import to_config

    return slurm_cluster(to_config(compose_overrides("dataset=smoke", "cluster=slurm", *overrides)).cluster)


def test_a_worker_job_slurm_refuses_is_one_sentence_before_anything_is_queued(tmp_path, monkeypatch):
    from pipeline.cluster import check_slurm_job
    from pipeline.errors import ConfigError

    calls = _fake_sbatch(tmp_path, monkeypatch, 1, "sbatch: error: invalid partition specified: nope")
    cluster = _slurm_cluster("cluster.queue=nope")
    try:
        with pytest.raises(ConfigError, match=r"SLURM would not run the worker job \(invalid partition "
                                              r"specified: nope\); check cluster.queue"):
            check_slurm_job(cluster)
    finally:
        cluster.close()
    assert calls.read_text().startswith("--test-only ")      # asked, never submitted


def test_a_worker_job_slurm_would_run_passes_the_check(tmp_path, monkeypatch):
    from pipeline.cluster import check_slurm_job

    _fake_sbatch(tmp_path, monkeypatch, 0, "sbatch: Job 8 to start at 2026-12-01T21:17:13 using 1 processors")
    cluster = _slurm_cluster()
    try:
        check_slurm_job(cluster)
    finally:
        cluster.close()


def test_shards_in_flight_follow_workers_that_join_late(tmp_path, monkeypatch):
    """SLURM jobs start one by one: the run starts with the first worker, and the shards in flight
    must grow to 4 per worker as the others join (not stay at 4 x the first count)."""
    import pipeline.worker
    from pipeline.cluster import InlineClient
    from pipeline.config import to_config
    from pipeline.runner import mint_stage, pending_shards
    from pipeline.stages import load_stages

    def fake_shard(stage_name, config, root, seed, shard, storage="files"):
        client.running -= 1
        return {"rows": 2 * len(range(shard.start, shard.stop)), "dropped": [], "seconds": 0.0,
                "cpu_seconds": 0.0, "bytes": 0}

    class LateWorkers(InlineClient):
        running = peak = asked = 0

        def submit(self, fn, *args, **kwargs):
            self.running += 1
            self.peak = max(self.peak, self.running)
            return super().submit(fn, *args, **kwargs)

        def nthreads(self):
            self.asked += 1
            return {f"w{i}": 1 for i in range(1 if self.asked == 1 else 3)}   # 1 at start, then 3

    monkeypatch.setattr(pipeline.worker, "mint_shard_reporting", fake_shard)
    config = to_config(compose_overrides(*TINY, "fingerprint.fingers=80", f"output_dir={tmp_path}"))
    stage = load_stages()["fingerprint"]
    shards = pending_shards(tmp_path, stage, config.fingerprint, config.dataset.shard_size)
    client = LateWorkers()
    timing = mint_stage(client, tmp_path, config, stage, config.fingerprint, shards)
    assert timing["shards"] == len(shards) == 40 and client.running == 0
    assert client.peak == 12                       # 4 per worker once the three are there


# --- a real one-node SLURM cluster --------------------------------------------------------------

def _which(name: str) -> str | None:
    """A SLURM or munge binary: on the PATH, or in the sbin folders a user's PATH may lack."""
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what: str, ready, timeout: float, logs=()) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.5)
    tails = "\n".join(f"--- {p}:\n" + "\n".join(Path(p).read_text(errors="replace").splitlines()[-20:])
                      for p in logs if Path(p).is_file())
    raise RuntimeError(f"{what} not ready after {timeout:.0f} s\n{tails}")


def _node_hardware() -> dict[str, str]:
    """What `slurmd -C` reports for this node (CPUs, sockets, cores, threads, RealMemory)."""
    out = subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True, check=True, timeout=60).stdout
    fields = dict(item.split("=", 1) for item in out.split("\n", 1)[0].split() if "=" in item)
    keep = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory")
    return {k: fields[k] for k in keep if k in fields}


def _our_processes(marker: bytes) -> list[int]:
    """Pids of processes whose environment holds `marker` (SLURM_CONF=<our slurm.conf>): the
    daemons, the job steps and every job's processes, and nothing of anyone else's."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if marker in (proc / "environ").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                pass
    return pids


@dataclass
class LocalSlurm:
    root: Path
    host: str
    env: dict
    daemons: list = field(default_factory=list)
    observed: dict = field(default_factory=dict)     # job id -> {"name", "states" seen, "node"}

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    def run(self, *cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(list(cmd), env=self.env, capture_output=True, text=True, check=check, timeout=timeout)

    def squeue(self) -> list[list[str]]:
        out = self.run("squeue", "-h", "-o", "%i|%j|%T|%N", check=False).stdout
        return [line.split("|") for line in out.splitlines() if line.strip()]

    def jobcomp(self) -> list[dict]:
        """The job completion log (jobcomp/filetxt): one record per finished job."""
        path = self.root / "log" / "jobcomp.txt"
        if not path.is_file():
            return []
        return [dict(item.split("=", 1) for item in line.split() if "=" in item)
                for line in path.read_text().splitlines() if line.strip()]

    def biomint(self, *args: str, timeout: float = 420) -> tuple[subprocess.CompletedProcess, float]:
        """The console script with SLURM_CONF set, run from the shared folder (not the repo: the
        workers must find biomint through the Python they were started with); returns the
        result and its wall time, while a thread records what squeue shows."""
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                for job_id, name, state, node in self.squeue():
                    seen = self.observed.setdefault(job_id, {"name": name, "states": set(), "node": ""})
                    seen["states"].add(state)
                    seen["node"] = node or seen["node"]
                stop.wait(0.5)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        start = time.perf_counter()
        try:
            result = subprocess.run([*BIOMINT, *args], cwd=self.root / "shared", env={**self.env, "HYDRA_FULL_ERROR": "1"},
                                    capture_output=True, text=True, timeout=timeout)
        finally:
            stop.set()
            watcher.join()
        return result, time.perf_counter() - start


def _start_slurm(root: Path) -> LocalSlurm:
    host = subprocess.run(["hostname", "-s"], capture_output=True, text=True, check=True).stdout.strip()
    for sub, mode in (("munge", 0o700), ("run", 0o755), ("state", 0o700), ("spool", 0o755), ("log", 0o755),
                      ("shared", 0o755)):
        (root / sub).mkdir(mode=mode)
        (root / sub).chmod(mode)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(128))
    key.chmod(0o400)
    socket_path = root / "run" / "munge.socket"
    conf = root / "slurm.conf"
    hardware = " ".join(f"{k}={v}" for k, v in _node_hardware().items())
    conf.write_text(f"""\
# a one-node cluster on localhost for tests/test_slurm.py
ClusterName=biomint-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={socket_path}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/slurmd-%n
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd-%n.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={root}/log/jobcomp.txt
MpiDefault=none
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=600
NodeName={host} NodeAddr=127.0.0.1 {hardware} State=UNKNOWN
PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
    env = {**os.environ, "SLURM_CONF": str(conf)}
    env.pop("SLURM_JOB_ID", None)
    slurm = LocalSlurm(root=root, host=host, env=env)
    log = root / "log"

    def daemon(name: str, *cmd: str) -> None:
        out = open(log / f"{name}.stdout", "w")
        slurm.daemons.append(subprocess.Popen([_which(cmd[0]), *cmd[1:]], env=env, stdout=out, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL, start_new_session=True))
        out.close()

    daemon("munged", "munged", "--foreground", f"--socket={socket_path}", f"--key-file={key}",
           f"--pid-file={root}/run/munged.pid", f"--log-file={log}/munged.log", f"--seed-file={root}/munge/seed")
    _wait("munged", lambda: socket_path.exists() and subprocess.run(
        [_which("munge"), "-n", "-S", str(socket_path)], capture_output=True).returncode == 0, 30, [log / "munged.log"])
    daemon("slurmctld", "slurmctld", "-D", "-i", "-f", str(conf))
    daemon("slurmd", "slurmd", "-D", "-f", str(conf))

    def node_idle() -> bool:
        for proc in slurm.daemons:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}: "
                                   + (log / f"{Path(proc.args[0]).name}.stdout").read_text()[-2000:])
        out = slurm.run("sinfo", "-h", "-N", "-o", "%N %t", check=False).stdout.split()
        return out[:2] == [host, "idle"]

    _wait(f"node {host} idle in sinfo", node_idle, 90,
          [log / "slurmctld.log", log / "slurmd.log", log / "slurmctld.stdout", log / "slurmd.stdout"])
    return slurm


def _stop_slurm(slurm: LocalSlurm) -> list[int]:
    """Cancel every job, stop the daemons, and end whatever still names our slurm.conf; returns
    the pids that had to be killed (none when SLURM cleaned up after itself)."""
    if all(proc.poll() is None for proc in slurm.daemons[1:]):
        jobs = [job_id for job_id, *_ in slurm.squeue()]
        if jobs:
            slurm.run("scancel", *jobs, check=False)
        deadline = time.monotonic() + 30
        while slurm.squeue() and time.monotonic() < deadline:
            time.sleep(0.5)
    for proc in reversed(slurm.daemons):        # slurmd, slurmctld, then munged
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
    marker = f"SLURM_CONF={slurm.conf}\0".encode()
    deadline, left = time.monotonic() + 15, _our_processes(marker)
    while left and time.monotonic() < deadline:      # job steps end a moment after slurmd
        time.sleep(0.5)
        left = _our_processes(marker)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


@pytest.fixture(scope="module")
def slurm(request):
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("needs root: the test starts slurmctld and slurmd (SlurmUser=root); run `sudo make test-slurm`")
    missing = [b for b in SLURM_BINARIES if _which(b) is None]
    if missing:
        pytest.skip(f"SLURM is not installed (missing {', '.join(missing)}): `make test-slurm` installs the "
                    "Debian packages slurm-wlm and munge when run as root")
    root = Path(tempfile.mkdtemp(prefix="biomint-slurm-"))
    root.chmod(0o755)      # munged wants every folder above its socket searchable by all
    slurm = None
    try:
        slurm = _start_slurm(root)
        yield slurm
    finally:
        left = _stop_slurm(slurm) if slurm is not None else []
        for proc in (slurm.daemons if slurm is not None else []):
            assert proc.poll() is not None
        if os.environ.get("BIOMINT_SLURM_KEEP"):
            print(f"slurm: kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
        assert not left, f"processes of the test's SLURM cluster outlived it and were killed: {left}"


# --- comparing datasets -------------------------------------------------------------------------

def _table(path: Path):
    import pyarrow.dataset as ds

    return ds.dataset(path, format="parquet").to_table()


def _manifest_digests(root: Path) -> dict:
    """Per stage, each row's sha256 and its files' (path, sha256), by sample_id."""
    out = {}
    for stage in sorted(p.name for p in (root / "manifest").iterdir()):
        rows = _table(root / "manifest" / stage).to_pylist()
        out[stage] = {r["sample_id"]: (r["path"], r["sha256"], r["truth_path"],
                                       tuple((f["path"], f["sha256"]) for f in r.get("files") or ()))
                      for r in rows}
    return out


def _pairs(root: Path) -> dict:
    return {kind.name: sorted(tuple(sorted(r.items())) for r in _table(kind).to_pylist())
            for kind in sorted((root / "pairs").iterdir())}


def _assert_same_dataset(local: Path, other: Path) -> None:
    files = file_hashes(local)
    assert files and file_hashes(other) == files
    manifest = _manifest_digests(local)
    assert manifest and _manifest_digests(other) == manifest
    for stage, rows in manifest.items():          # the manifest's sha256 are the files' bytes
        for sample_id, (path, sha, _, _) in rows.items():
            assert files[path] == sha, (stage, sample_id)
    pairs = _pairs(local)
    assert pairs and _pairs(other) == pairs
    a, b = (json.loads((root / "dataset.json").read_text()) for root in (local, other))
    assert a["status"] == b["status"] == "complete"
    assert (a["config"], a["seed"], a["pairs"]) == (b["config"], b["seed"], b["pairs"])


def _ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"


@pytest.mark.slurm
def test_slurm_cluster_and_submitit_launcher_mint_the_local_bytes(slurm):
    shared = slurm.root / "shared"
    times: dict[str, float] = {}

    # (1) cluster=slurm: two dask-jobqueue jobs of one core, the venv's Python, logs in the shared folder
    result, times["local"] = slurm.biomint("dataset=smoke", f"output_dir={shared}/local",
                                           f"hydra.run.dir={shared}/hydra/local")
    _ok(result)
    result, times["cluster=slurm"] = slurm.biomint(
        "dataset=smoke", "cluster=slurm", "cluster.workers=2", "cluster.cores=1", "cluster.processes=1",
        "cluster.memory=1GB", "cluster.walltime=00:10:00", f"cluster.queue={PARTITION}",
        f"cluster.log_directory={shared}/dask-logs", f"cluster.local_directory={shared}/dask-scratch",
        f"output_dir={shared}/slurm", f"hydra.run.dir={shared}/hydra/slurm")
    _ok(result)
    log = result.stdout + result.stderr
    assert f"#SBATCH -p {PARTITION}" in log      # and the workers run this Python (the venv's), no activation:
    assert re.search(rf"^{re.escape(str(Path(sys.executable).parent))}/python[0-9.]* -m distributed.cli.dask_worker ",
                     log, re.M)
    dask_jobs = [seen for seen in slurm.observed.values() if seen["name"] == "dask-worker"]
    assert len(dask_jobs) == 2 and all("RUNNING" in j["states"] and j["node"] == slurm.host for j in dask_jobs)
    _wait("dask-worker jobs to end", lambda: not [j for j in slurm.squeue() if j[1] == "dask-worker"], 30)
    worker_logs = sorted((shared / "dask-logs").glob("dask-worker-*.err"))
    assert worker_logs and any("Registered to" in p.read_text() for p in worker_logs)

    # (2) hydra/launcher=submitit_slurm: one SLURM array task per seed, against the basic launcher
    sweep = ["--multirun", "dataset=smoke", "seed=1,2"]
    result, times["multirun local"] = slurm.biomint(
        *sweep, f"output_dir={shared}/local-s${{seed}}", f"hydra.sweep.dir={shared}/sweep-local")
    _ok(result)
    result, times["multirun submitit_slurm"] = slurm.biomint(
        *sweep, "hydra/launcher=submitit_slurm", f"hydra.launcher.partition={PARTITION}",
        "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2", "hydra.launcher.timeout_min=10",
        f"output_dir={shared}/slurm-s${{seed}}", f"hydra.sweep.dir={shared}/sweep-slurm")
    _ok(result)
    array_tasks = {job: seen for job, seen in slurm.observed.items()      # the array's tasks (not "<id>_[0-1]")
             if seen["name"] == "biomint" and re.fullmatch(r"\d+_\d+", job)}
    assert len(array_tasks) == 2 and all("RUNNING" in j["states"] and j["node"] == slurm.host for j in array_tasks.values())
    submitit_logs = sorted((shared / "sweep-slurm" / ".submitit").glob("*/*_log.out"))
    assert len(submitit_logs) == 2 and all("dataset complete" in p.read_text() for p in submitit_logs)

    # every dataset validates, and SLURM's bytes are the local ones
    for name in ("local", "slurm", "local-s1", "local-s2", "slurm-s1", "slurm-s2"):
        _ok(slurm.biomint("validate", str(shared / name))[0])
    _assert_same_dataset(shared / "local", shared / "slurm")
    for seed in (1, 2):
        _assert_same_dataset(shared / f"local-s{seed}", shared / f"slurm-s{seed}")
    assert file_hashes(shared / "slurm-s1") != file_hashes(shared / "slurm-s2")
    for seed in (1, 2):      # a job given one core mints in its own process, not one worker per node core
        meta = json.loads((shared / f"slurm-s{seed}" / "dataset.json").read_text())
        assert meta["stages"]["fingerprint"]["last_run"]["workers"] == 1

    # SLURM's own record of the jobs (jobcomp/filetxt: sacct needs slurmdbd, which this cluster has not)
    _wait("the job completion log", lambda: len([j for j in slurm.jobcomp() if j.get("Name") == "biomint"]) >= 2, 30)
    done = slurm.jobcomp()
    workers = [j for j in done if j.get("Name") == "dask-worker"]
    tasks = [j for j in done if j.get("Name") == "biomint"]
    assert len(workers) == 2 and all(j["NodeList"] == slurm.host and j["Partition"] == PARTITION for j in workers)
    assert len(tasks) == 2 and all(j["JobState"] == "COMPLETED" and j["ExitCode"] == "0:0" for j in tasks)
    assert {j.get("ArrayTaskId") for j in tasks} == {"0", "1"}
    print("\nSLURM test: wall times " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()))
    print("squeue saw: " + "; ".join(f"job {job} {j['name']} {'/'.join(sorted(j['states']))} on {j['node']}"
                                     for job, j in sorted(slurm.observed.items())))
    for job in done:
        print("jobcomp: " + " ".join(f"{k}={job.get(k, '')}" for k in
                                     ("JobId", "Name", "JobState", "Partition", "NodeList", "ProcCnt", "StartTime",
                                      "EndTime", "ArrayJobId", "ArrayTaskId", "ExitCode")))
    if os.environ.get("BIOMINT_SLURM_REPORT"):
        Path(os.environ["BIOMINT_SLURM_REPORT"]).write_text(json.dumps(
            {"wall_seconds": times, "squeue": {job: {**j, "states": sorted(j["states"])}
                                               for job, j in slurm.observed.items()},
             "jobcomp": done}, indent=2))


@pytest.mark.slurm
def test_a_job_the_partition_cannot_run_stops_the_mint_in_one_sentence(slurm):
    shared = slurm.root / "shared"
    result, _ = slurm.biomint("dataset=smoke", "cluster=slurm", "cluster.workers=1", "cluster.cores=64",
                              "cluster.processes=1", "cluster.memory=1GB", f"cluster.queue={PARTITION}",
                              f"output_dir={shared}/too-big", f"hydra.run.dir={shared}/hydra/too-big",
                              timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    assert re.search(r"biomint: SLURM would not run the worker job \(.*Requested node configuration is not "
                     r"available\); check cluster.queue", result.stderr)
    assert not [j for j in slurm.squeue() if j[1] == "dask-worker"]
