"""`biomint plan`: what a run would mint and cost, printed before anything is written, and
close to what the run then does."""
from __future__ import annotations

import json
import re

from conftest import TINY, run_biomint


def test_plan_predicts_the_run_and_writes_nothing(tmp_path):
    root = tmp_path / "ds"
    planned = run_biomint("plan", *TINY, f"output_dir={root}")
    assert planned.returncode == 0, planned.stderr
    assert not root.exists()                                   # nothing written to the output_dir
    line = next(line for line in planned.stdout.splitlines() if line.strip().startswith("fingerprint:"))
    samples, subjects, shards, files = (int(v.replace(",", "")) for v in re.search(
        r"([\d,]+) samples of ([\d,]+) subjects in ([\d,]+) shards; ([\d,]+) files", line).groups())
    size = float(re.search(r"files, ([\d.,]+) kB on disk", line).group(1).replace(",", ""))
    pairs = {k: int(v.replace(",", "")) for k, v in re.findall(r"([a-z-]+) ~([\d,]+)", line)}

    assert run_biomint(*TINY, f"output_dir={root}").returncode == 0
    meta = json.loads((root / "dataset.json").read_text())
    stage = meta["stages"]["fingerprint"]
    assert (samples, shards) == (stage["rows"], stage["shards"]) and subjects == 3
    assert pairs == {k: v["mated"] + v["non_mated"] for k, v in meta["pairs"].items()}
    on_disk = [p for p in root.rglob("*") if p.is_file() and p.parts[len(root.parts)] in ("images", "truth", "manifest")]
    assert abs(files - len(on_disk)) <= 0.1 * len(on_disk)
    written = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 1000
    assert 0.6 * written < size < 1.5 * written, (size, written)


def test_plan_refuses_bad_overrides_in_one_sentence(tmp_path):
    result = run_biomint("plan", "dataset=smoke", "fingerprint.nope=1", f"output_dir={tmp_path / 'x'}")
    assert result.returncode == 2 and "fingerprint.nope is not a config key" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "x").exists()
