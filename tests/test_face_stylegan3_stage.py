"""StyleGAN3 snapshots through the whole face path: `load_generator` picks Generator3 and draws
the reference's pixels, the face stage mints rows that regenerate byte-exact, and the console
script runs a dataset with one (random weights draw no face a real detector finds, so the
stand-in recognizer of the stage tests decides the gate in-process)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import FP32_KERNEL_ROUNDING, run_biomint
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


def test_a_dataset_with_a_stylegan3_checkpoint_runs_end_to_end_and_validates(tmp_path):
    root = tmp_path / "ds"
    args = ["dataset=smoke", f"output_dir={root}", f"face.checkpoint={FIXTURES / 'sg3t.pkl'}",
            "face.identities=2", "face.images_per_identity=2", "face.max_candidates=2", "face.max_drop_fraction=1.0",
            "cluster.workers=1"]
    result = run_biomint(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    meta = json.loads((root / "dataset.json").read_text())
    assert set(meta["stages"]) == {"fingerprint", "face"} and meta["status"] == "complete"
    gates = [json.loads(p.read_text()) for p in (root / "truth/face/_gate").glob("part-*.json")]
    # the stage drew StyleGAN3 faces and judged them: at least one candidate per identity
    assert sum(g["candidates"] for g in gates) >= 2
    assert run_biomint("validate", str(root)).returncode == 0


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
