"""StyleGAN3 snapshots through the whole face path: `load_generator` picks Generator3 and draws
the reference's pixels, the face stage mints rows that regenerate byte-exact, and the console
script mints a dataset of real faces with one (a StyleGAN3 that draws a photo, judged by the real
YuNet + SFace gate) and fails a run whose random-weight snapshot draws no face."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from conftest import FP32_KERNEL_ROUNDING, biomint_lines, run_biomint
from photo_faces import one_face_checkpoint
from pixel_embedder import PixelEmbedder
from pipeline.sharding import Shard
from pipeline.stages import face as stage
from pipeline.stages.base import StageContext

FIXTURES = Path(__file__).parent / "fixtures" / "face_sg3"


@pytest.mark.parametrize("name", ["sg3t", "sg3r"])
def test_load_generator_builds_stylegan3_and_draws_the_reference_pixels(name):
    from generators.face import Generator3, fine_layer_start, load_generator

    g = load_generator(FIXTURES / f"{name}.pkl")
    assert isinstance(g, Generator3)
    z = torch.from_numpy(np.load(FIXTURES / f"{name}_z.npy"))
    c_file = FIXTURES / f"{name}_c.npy"
    c = torch.from_numpy(np.load(c_file)) if c_file.exists() else None
    info = json.loads((FIXTURES / "fixtures.json").read_text())[name]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            ws = g.mapping(z, c, truncation_psi=info["truncation_psi"], truncation_cutoff=info["truncation_cutoff"])
            image = g.synthesis(ws, noise_mode="const")
    finally:
        torch.set_num_threads(threads)
    assert np.abs(ws.numpy() - np.load(FIXTURES / f"{name}_ws.npy")).max() <= FP32_KERNEL_ROUNDING
    assert np.abs(image.numpy() - np.load(FIXTURES / f"{name}_img.npy")).max() <= FP32_KERNEL_ROUNDING
    assert 0 < fine_layer_start(g) < g.num_ws


def test_the_face_stage_mints_and_regenerates_with_a_stylegan3_snapshot(tmp_path, monkeypatch):
    monkeypatch.setattr(stage, "_embedder", lambda *a: PixelEmbedder())
    config = stage.typed({"checkpoint": str(FIXTURES / "sg3t.pkl"), "identities": 2, "images_per_identity": 2,
                          "gate_threshold": 0.99, "similarity_floor": 0.0, "max_retries": 1, "device": "cpu"})
    stage.check(config)
    context = StageContext(root=tmp_path, seed=3, device="cpu")
    rows = stage.run_shard(Shard(0, 0, 2), config, context)
    assert len(rows) + len(context.dropped) == 4 and len(rows) >= 2
    for row in rows:
        assert row["width"] == row["height"] == 32 and (tmp_path / row["path"]).is_file()
    stage._BLOCKS.clear()
    again = stage.regenerate(rows[-1], config, StageContext(root=tmp_path, seed=3, device="cpu"))
    assert hashlib.sha256(again).hexdigest() == rows[-1]["sha256"]


def test_a_dataset_minted_with_a_stylegan3_face_checkpoint_holds_real_faces_that_validate(tmp_path):
    """The console script with a StyleGAN3 that draws one real face (photo_faces), the real
    YuNet + SFace gate and the default drop limit: every sample is kept, its truth holds the
    detector's landmarks, and validate and regenerate agree with what was minted."""
    ckpt = one_face_checkpoint(tmp_path, "stylegan3")
    root = tmp_path / "ds"
    args = ["dataset=smoke", f"output_dir={root}", f"face.checkpoint={ckpt}", "face.identities=1",
            "face.images_per_identity=3", "face.max_candidates=2", "cluster.workers=1"]
    result = run_biomint(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"face: 3 samples minted, 0 dropped in ", result.stdout + result.stderr)
    meta = json.loads((root / "dataset.json").read_text())
    assert set(meta["stages"]) == {"fingerprint", "face"} and meta["status"] == "complete"
    assert meta["stages"]["face"]["rows"] == 3
    rows = pq.read_table(root / "manifest/face").to_pylist()
    assert sorted(r["sample_id"] for r in rows) == [f"face-00000000-0{k}" for k in range(3)]
    for row in rows:
        assert (row["width"], row["height"]) == (128, 128)
        assert "landmarks_5" in (root / row["truth_path"]).read_text()
        if not row["params"]["anchor"]:
            assert row["params"]["similarity"] > 0.9     # SFace: the same person as the anchor
    checked = run_biomint("validate", str(root), cwd=tmp_path)
    assert checked.returncode == 0 and "face: 3 samples" in checked.stdout, checked.stdout[-3000:]
    again = run_biomint("regenerate", str(root), "face-00000000-02", str(tmp_path / "again.png"), cwd=tmp_path)
    assert again.returncode == 0 and "matches" in again.stdout, again.stdout + again.stderr


def test_a_random_weight_stylegan3_snapshot_fails_the_run_on_its_drop_rate_with_one_sentence(tmp_path):
    root = tmp_path / "ds"
    args = ["dataset=smoke", f"output_dir={root}", f"face.checkpoint={FIXTURES / 'sg3t.pkl'}",
            "face.identities=2", "face.images_per_identity=2", "face.max_candidates=2", "cluster.workers=1"]
    result = run_biomint(*args, cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    [sentence] = biomint_lines(result)
    assert re.fullmatch(r"biomint: face: [234] of 4 samples were dropped \(.*more than face\.max_drop_fraction=0\.2\), "
                        r"most for .*is face\.checkpoint a face generator \(StyleGAN2 or StyleGAN3 trained on faces\)\?.*",
                        sentence), sentence
    gates = [json.loads(p.read_text()) for p in (root / "truth/face/_gate").glob("part-*.json")]
    # the stage drew StyleGAN3 images and judged them: at least one candidate per identity
    assert sum(g["candidates"] for g in gates) >= 2
    assert json.loads((root / "dataset.json").read_text())["status"] == "in_progress"


def test_a_conditional_checkpoint_draws_the_chosen_class_and_refuses_a_missing_one(tmp_path, monkeypatch):
    """sg3r is conditional (c_dim=4): the stage needs face.class_index, passes it as the
    one-hot label NVIDIA's conditional models were trained with, and each class is another
    face; an unconditional checkpoint refuses a class."""
    from pipeline.errors import ConfigError

    monkeypatch.setattr(stage, "_embedder", lambda *a: PixelEmbedder())
    base = {"checkpoint": str(FIXTURES / "sg3r.pkl"), "identities": 2, "images_per_identity": 2,
            "gate_threshold": 0.99, "similarity_floor": 0.0, "max_retries": 1, "device": "cpu"}
    with pytest.raises(ConfigError, match=r"conditional on 4 classes .* face.class_index=0..3"):
        stage.check(stage.typed(base))
    with pytest.raises(ConfigError, match="out of range"):
        stage.check(stage.typed({**base, "class_index": 4}))
    with pytest.raises(ConfigError, match="unconditional"):
        stage.check(stage.typed({**base, "checkpoint": str(FIXTURES / "sg3t.pkl"), "class_index": 1}))

    images = {}
    for label in (0, 3):
        config = stage.typed({**base, "class_index": label})
        stage.check(config)
        root = tmp_path / f"class{label}"
        rows = stage.run_shard(Shard(0, 0, 2), config, StageContext(root=root, seed=5, device="cpu"))
        assert rows, f"class {label} minted nothing"
        images[label] = {r["sample_id"]: (root / r["path"]).read_bytes() for r in rows}
        stage._BLOCKS.clear()
        again = stage.regenerate(rows[-1], config, StageContext(root=root, seed=5, device="cpu"))
        assert hashlib.sha256(again).hexdigest() == rows[-1]["sha256"]
    # the same subjects and seeds, another label: other pixels
    shared = set(images[0]) & set(images[3])
    assert shared and all(images[0][k] != images[3][k] for k in shared)

    from generators.face import class_vector, load_generator, map_latents

    g = load_generator(FIXTURES / "sg3r.pkl")
    c = class_vector(g, 2)
    assert c.tolist() == [0.0, 0.0, 1.0, 0.0]
    z = np.load(FIXTURES / "sg3r_z.npy")
    with torch.no_grad():
        reference = g.mapping(torch.from_numpy(z), torch.from_numpy(np.tile(c, (len(z), 1))), truncation_psi=0.7)
    assert np.array_equal(map_latents(g, z, 0.7, None, torch.device("cpu"), c), reference.numpy())
