"""`biomint` with faces: skipped without a checkpoint, exit 2 for a missing one, and a real
mint of faces + fingerprints into one dataset (validate and regenerate included)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import biomint_env


BIOMINT = Path(sys.executable).with_name("biomint")
pytestmark = pytest.mark.skipif(not BIOMINT.is_file(), reason="the biomint console script is not installed")


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIOMINT), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env=biomint_env())


def test_missing_checkpoint_exits_2_with_one_sentence(tmp_path):
    r = _run(["dataset=smoke", f"output_dir={tmp_path / 'ds'}", f"face.checkpoint={tmp_path / 'ffhq.pkl'}"],
             tmp_path)
    assert r.returncode == 2
    assert "ffhq.pkl does not exist" in r.stderr + r.stdout and "Traceback" not in r.stderr


def test_faces_and_fingerprints_in_one_dataset(tmp_path):
    from photo_faces import one_face_checkpoint

    ckpt = one_face_checkpoint(tmp_path)
    root = tmp_path / "ds"
    r = _run(["dataset=smoke", f"output_dir={root}", f"face.checkpoint={ckpt}", "face.identities=2",
              "face.images_per_identity=2", "face.random_noise=false", "face.max_candidates=2",
              "face.max_drop_fraction=0.5", "cluster.workers=1"], tmp_path)   # subject 1 is dropped: 50 %
    assert r.returncode == 0, r.stderr[-2000:]
    meta = json.loads((root / "dataset.json").read_text())
    assert set(meta["stages"]) == {"fingerprint", "face"}
    # One real face behind every latent: subject 0 is kept, subject 1 is a duplicate (dropped).
    assert sorted(p.name for p in (root / "images/face/00000000").iterdir()) == \
        ["face-00000000-00.png", "face-00000000-01.png"]
    assert not (root / "images/face/00000001").exists()
    v = _run(["validate", str(root)], tmp_path)
    assert v.returncode == 0 and "face: 2 samples (2 dropped)" in v.stdout
    g = _run(["regenerate", str(root), "face-00000000-01", str(tmp_path / "again.png")], tmp_path)
    assert g.returncode == 0 and "matches" in g.stdout
