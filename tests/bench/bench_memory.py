"""Memory of a large mint: the client's and each worker's peak RSS over a whole run, for
`storage=tar` and `storage=files` (the "Scale" issue: client < 1 GB, workers < 1.5 GB at
10^5 samples), and, for tar, every sample read back by the `webdataset` package with its
sha256 checked against the manifest.

Run:  BIOMINT_MEMORY_FINGERS=11200 .venv/bin/python -m pytest -q -m bench tests/bench/bench_memory.py -s
      (11,200 fingers of the default preset = 100,800 prints + up to 200 latents, ~35 min per
      storage on 2 cores; the default, 1,100 fingers, is ~10^4 samples in ~4 min per storage;
      BIOMINT_MEMORY_STORAGES=tar runs one storage)
Writes tests/bench/results/memory.json: peaks, the RSS trace (so that a flat client can be
seen, not just a low peak), samples/s, and the read-back check.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.bench

RESULTS = Path(__file__).parent / "results" / "memory.json"
CLIENT_LIMIT_MB, WORKER_LIMIT_MB = 1024.0, 1536.0
FINGERS = int(os.environ.get("BIOMINT_MEMORY_FINGERS", "1100"))
STORAGES = [s for s in os.environ.get("BIOMINT_MEMORY_STORAGES", "tar,files").split(",") if s]


class RssMonitor:
    """Polls the RSS of a process and of each of its descendants (Dask's nanny and worker
    processes) every `interval` s; keeps per-process peaks and a coarse trace."""

    def __init__(self, pid: int, interval: float = 0.5):
        self.root, self.interval = psutil.Process(pid), interval
        self.peaks: dict[int, tuple[str, float]] = {}
        self.trace: list[tuple[float, float, float]] = []      # (s, client MB, largest other MB) now
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._start = time.perf_counter()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        last_trace = -1e9
        while not self._stop.is_set():
            try:
                procs = [self.root] + self.root.children(recursive=True)
            except psutil.NoSuchProcess:
                return
            others = client_now = 0.0
            for p in procs:
                try:
                    mb = p.memory_info().rss / 2 ** 20
                    name = " ".join(p.cmdline()[:3])[-80:]
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                if mb > self.peaks.get(p.pid, ("", 0.0))[1]:
                    self.peaks[p.pid] = (name, mb)
                if p.pid != self.root.pid:
                    others = max(others, mb)
                else:
                    client_now = mb
            now = time.perf_counter() - self._start
            if now - last_trace >= 10.0:
                self.trace.append((round(now, 1), round(client_now, 1), round(others, 1)))
                last_trace = now
            self._stop.wait(self.interval)


def _mint(storage: str, root: Path) -> dict:
    args = [sys.executable, "-m", "pipeline.cli", "dataset=default", f"output_dir={root}", f"storage={storage}",
            f"fingerprint.fingers={FINGERS}", f"latent.fingers={min(100, FINGERS)}", "cluster.workers=2", "overwrite=true"]
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with RssMonitor(proc.pid) as monitor:
        out, _ = proc.communicate()
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, out[-3000:]
    meta = json.loads((root / "dataset.json").read_text())
    samples = sum(int(v.get("rows", 0)) for v in meta.get("stages", {}).values() if isinstance(v, dict))
    client = monitor.peaks.get(proc.pid, ("", 0.0))[1]
    workers = sorted((mb for pid, (name, mb) in monitor.peaks.items() if pid != proc.pid), reverse=True)
    return {"storage": storage, "samples": samples, "seconds": round(seconds, 1),
            "samples_per_s": round(samples / seconds, 2) if seconds else None,
            "client_peak_rss_mb": round(client, 1), "largest_child_peak_rss_mb": round(workers[0], 1) if workers else None,
            "child_peaks_mb": [round(v, 1) for v in workers[:6]], "rss_trace_s_client_child_mb": monitor.trace,
            "within_limits": bool(client < CLIENT_LIMIT_MB and (not workers or workers[0] < WORKER_LIMIT_MB))}


def _webdataset_read_back(root: Path) -> dict:
    """Every member of every tar through `webdataset` (not our code): its sha256 against the
    manifest's `files` entries."""
    import pyarrow.parquet as pq
    import webdataset as wds

    expected = {}
    for part in sorted((root / "manifest").glob("*/part-*.parquet")):
        for files in pq.read_table(part, columns=["files"]).column("files").to_pylist():
            for f in files:
                expected[f["path"]] = f["sha256"]
    tars = sorted(str(p) for p in (root / "shards").glob("*/*.tar"))
    checked = mismatched = samples = 0
    for sample in wds.WebDataset(tars, shardshuffle=False):
        samples += 1
        tar = sample["__url__"]
        for ext, data in sample.items():
            if ext.startswith("__"):
                continue
            key = f"{Path(tar).relative_to(root)}#{sample['__key__']}.{ext}"
            if key in expected:
                checked += 1
                mismatched += hashlib.sha256(data).hexdigest() != expected[key]
    return {"tars": len(tars), "samples_read": samples, "members_checked": checked, "sha256_mismatches": mismatched,
            "members_in_manifest": len(expected)}


def test_memory_stays_bounded_over_a_large_mint(tmp_path):
    results = {"fingers": FINGERS, "limits_mb": {"client": CLIENT_LIMIT_MB, "worker": WORKER_LIMIT_MB}, "runs": []}
    for storage in STORAGES:
        root = tmp_path / storage
        run = _mint(storage, root)
        if storage == "tar":
            run["webdataset"] = _webdataset_read_back(root)
        results["runs"].append(run)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2))
        print(json.dumps({k: v for k, v in run.items() if k != "rss_trace_s_client_child_mb"}), flush=True)
        subprocess.run(["rm", "-rf", str(root)], check=False)      # 10^5 samples are ~18 GB
    for run in results["runs"]:
        assert run["within_limits"], run
        if "webdataset" in run:
            w = run["webdataset"]
            assert w["sha256_mismatches"] == 0 and w["members_checked"] == w["members_in_manifest"], w
