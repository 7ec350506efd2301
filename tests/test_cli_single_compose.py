"""A plain `biomint key=value ...` run composes its config once (pipeline/hydra_run.py) and must
leave what `@hydra.main` leaves: the same dataset, the same `.hydra/` record, the same log."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from conftest import run_biomint


def _hydra_record(here: Path) -> dict:
    """The run directory's .hydra files, with the folder of the run written as <here>."""
    return {name: yaml.safe_load((here / "run" / ".hydra" / name).read_text().replace(str(here), "<here>"))
            for name in ("config.yaml", "overrides.yaml", "hydra.yaml")}


def test_a_plain_run_leaves_what_hydra_main_leaves(tmp_path):
    """`--run` is a Hydra flag: it sends the same run through @hydra.main (two compositions)."""
    runs = {}
    for path in ("single", "hydra_main"):
        here = tmp_path / path
        flag = ["--run"] if path == "hydra_main" else []
        result = run_biomint(*flag, "dataset=smoke", f"output_dir={here / 'ds'}", f"hydra.run.dir={here / 'run'}",
                          cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
        meta = json.loads((here / "ds" / "dataset.json").read_text())
        logs = sorted((here / "run").glob("*.log"))
        runs[path] = {"record": _hydra_record(here), "logs": [p.name for p in logs], "config": meta["config"],
                      "files": sorted(str(p.relative_to(here)) for p in (here / "ds").rglob("*.png"))}
        assert "fingerprint: 12 samples minted" in logs[0].read_text()
    single, main = runs["single"], runs["hydra_main"]
    assert single["record"]["overrides.yaml"] == ["dataset=smoke", "output_dir=<here>/ds"]
    assert single["record"]["hydra.yaml"]["hydra"]["overrides"]["hydra"] == ["hydra.run.dir=<here>/run",
                                                                            "hydra.mode=RUN"]
    assert single["record"]["hydra.yaml"] == main["record"]["hydra.yaml"]
    assert single == main
    assert single["logs"] == ["biomint.log"] and len(single["files"]) == 12


def test_a_bad_value_stops_a_plain_run_before_hydra_writes_its_run_directory(tmp_path):
    result = run_biomint("dataset=smoke", "fingerprint.fingers=-1", f"output_dir={tmp_path / 'ds'}", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("biomint: fingerprint.fingers=-1 is not allowed") \
        and len(result.stderr.splitlines()) == 1, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []
