"""The CLI's fixed cost: what one `biomint dataset=smoke` run costs beyond minting its samples.

Run:  .venv/bin/python -m pytest -m bench tests/bench/bench_cli.py -s
Writes tests/bench/results/cli.json. Each run is the console script in a fresh process (what
a user types), on automatic workers; its wall and CPU seconds (the child's rusage), and the
fixed cost = wall - the stage's own minting seconds (dataset.json's last_run), and the same in
CPU seconds (steadier when other processes share the machine). Runs alternate
with a run on one explicit worker so that both see the same machine. Target ("Speed measured
end to end"): fixed cost <= 3 s.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import biomint_env

pytestmark = pytest.mark.bench

RESULTS = Path(__file__).parent / "results"
SCRIPT = Path(sys.executable).with_name("biomint")
TARGET_FIXED_SECONDS = 3.0
RUNS = 5


def _one_run(root: Path, *overrides: str) -> dict:
    shutil.rmtree(root, ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([str(SCRIPT), "dataset=smoke", f"output_dir={root}", *overrides], capture_output=True,
                          text=True, cwd=root.parent, env=biomint_env())
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = json.loads((root / "dataset.json").read_text())["stages"]["fingerprint"]["last_run"]
    return {"wall_seconds": round(wall, 3),
            "cpu_seconds": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 3),
            "stage_seconds": last["seconds"], "stage_cpu_seconds": last["cpu_seconds"], "samples": last["samples"],
            "fixed_seconds": round(wall - last["seconds"], 3)}


def test_cli_fixed_cost_of_a_smoke_run(tmp_path):
    if not SCRIPT.is_file():
        pytest.skip(f"no console script next to {sys.executable}")
    runs = {"auto_workers": [], "one_worker": []}
    _one_run(tmp_path / "warm")                     # page cache: the first import reads from disk
    for _ in range(RUNS):
        runs["auto_workers"].append(_one_run(tmp_path / "auto"))
        runs["one_worker"].append(_one_run(tmp_path / "one", "cluster.workers=1"))
    summary = {}
    for name, rows in runs.items():
        fixed = sorted(r["fixed_seconds"] for r in rows)
        cpu = sorted(r["cpu_seconds"] - r["stage_cpu_seconds"] for r in rows)
        summary[name] = {"runs": rows, "fixed_seconds_median": fixed[len(fixed) // 2],
                         "fixed_cpu_seconds_median": round(cpu[len(cpu) // 2], 3),
                         "fixed_seconds_min": fixed[0],
                         "wall_seconds_median": sorted(r["wall_seconds"] for r in rows)[len(rows) // 2]}
    median = summary["auto_workers"]["fixed_seconds_median"]
    result = {"benchmark": "cli", "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
              "command": "biomint dataset=smoke output_dir=<tmp>", **summary,
              "target_fixed_seconds": TARGET_FIXED_SECONDS, "meets_target": bool(median <= TARGET_FIXED_SECONDS)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "cli.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in runs}, indent=2))
    for name in runs:
        print(name, summary[name]["fixed_seconds_median"], summary[name]["wall_seconds_median"])
