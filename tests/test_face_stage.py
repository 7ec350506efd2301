"""The face stage: skipped without a checkpoint, CheckpointError for a missing one, rows, files,
shard-layout independence and regeneration (tiny random network, deterministic stand-in
recognizer, since random weights draw no face a real detector would find)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from photo_faces import one_face_checkpoint
from pixel_embedder import PixelEmbedder
from generators.face import Generator, save_generator
from pipeline.errors import BAD_INPUT_ERRORS, CheckpointError, ConfigError
from pipeline.manifest import rows_to_table
from pipeline.sharding import Shard
from pipeline.stages import face as stage
from pipeline.stages.base import StageContext

CONF = Path(__file__).resolve().parents[1] / "conf"


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    import pipeline.config  # noqa: F401  (registers the structured configs)

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose(config_name="config", overrides=overrides)


def test_default_dataset_skips_faces_with_one_line():
    cfg = _compose(["dataset=default"])
    assert cfg.face.checkpoint is None
    reason = stage.skip_reason(cfg.face)
    assert reason and "\n" not in reason and "face.checkpoint" in reason


def test_missing_checkpoint_is_a_bad_input_error(tmp_path):
    cfg = _compose(["dataset=smoke", f"face.checkpoint={tmp_path / 'ffhq.pkl'}"])
    assert stage.skip_reason(cfg.face) is None
    with pytest.raises(CheckpointError, match="ffhq.pkl does not exist") as info:
        stage.check(cfg.face)
    assert isinstance(info.value, BAD_INPUT_ERRORS)
    with pytest.raises(ConfigError, match="identities"):
        stage.check({"checkpoint": str(tmp_path), "identities": 0})
    with pytest.raises(ConfigError, match="not valid"):
        stage.typed({"checkpoint": None, "identites": 3})




@pytest.fixture()
def tiny_face_config(tmp_path, monkeypatch):
    torch.manual_seed(0)
    g = Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=32, img_channels=3,
                  mapping_kwargs=dict(num_layers=2),
                  synthesis_kwargs=dict(channel_base=256, channel_max=16))
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.02)
    ckpt, _ = save_generator(g, tmp_path / "tiny.pt")
    monkeypatch.setattr(stage, "_embedder", lambda *a: PixelEmbedder())
    # gate_block 2 makes the second shard below start inside a block (replay path).
    return stage.typed({"checkpoint": str(ckpt), "identities": 3, "images_per_identity": 3,
                        "gate_threshold": 0.99, "gate_block": 2, "similarity_floor": 0.5,
                        "max_retries": 2, "device": "cpu"})


def _mint(config, root: Path, shards: list[tuple[int, int]]):
    rows, dropped = [], []
    for i, (a, b) in enumerate(shards):
        ctx = StageContext(root=root, seed=7, device="cpu")
        rows += stage.run_shard(Shard(i, a, b), config, ctx)
        dropped += ctx.dropped
    return rows, dropped


def test_run_shard_rows_files_layout_independence_and_regenerate(tmp_path, tiny_face_config):
    c = tiny_face_config
    stage.check(c)
    rows, dropped = _mint(c, tmp_path / "a", [(0, 3)])
    assert len(rows) + len(dropped) == stage.expected_rows(c, 0, 3) == 9
    assert len(rows) >= 3 and sum(r["params"]["anchor"] for r in rows) == 3
    table = rows_to_table(rows, stage.PARAMS_TYPE)
    assert table.num_rows == len(rows)
    names = {f.name for f in stage.PARAMS_TYPE}
    for r in rows:
        assert set(r["params"]) == names
        assert (tmp_path / "a" / r["path"]).is_file() and (tmp_path / "a" / r["truth_path"]).is_file()
        assert (tmp_path / "a" / r["params"]["aligned_path"]).is_file()
        assert r["width"] == r["height"] == 32 and r["finger_position"] is None
        if not r["params"]["anchor"]:
            assert r["params"]["similarity"] >= 0.5 and r["params"]["mixing_source_seed"] > 0

    shas = {r["sample_id"]: r["sha256"] for r in rows}
    stage._BLOCKS.clear()  # a fresh worker: the shard starting at subject 1 replays subject 0
    other, _ = _mint(c, tmp_path / "b", [(1, 3), (0, 1)])
    assert {r["sample_id"]: r["sha256"] for r in other} == shas
    cached, _ = _mint(c, tmp_path / "c", [(2, 3), (0, 2)])  # blocks reused from the cache
    assert {r["sample_id"]: r["sha256"] for r in cached} == shas

    import hashlib
    ctx = StageContext(root=tmp_path / "a", seed=7, device="cpu")
    stage._BLOCKS.clear()
    for r in (rows[-1], rows[0]):
        assert hashlib.sha256(stage.regenerate(r, c, ctx)).hexdigest() == r["sha256"]


def test_edits_from_boundaries_and_drops_are_recorded(tmp_path, tiny_face_config):
    from generators.face import BoundarySet, checkpoint_sha256, save_boundaries

    rng = np.random.default_rng(0)
    yaw, light = (v / np.linalg.norm(v) for v in rng.standard_normal((2, 16)).astype(np.float32))
    sha = checkpoint_sha256(tiny_face_config.checkpoint)
    path = save_boundaries(tmp_path / "b.npz", BoundarySet({"yaw": yaw, "light": light}, sha))
    c = stage.typed({**vars(tiny_face_config), "boundaries": str(path),
                     "edits": {"yaw": [8.0, 16.0]}, "conditions": ["light"],
                     "similarity_floor": 0.95, "max_retries": 1, "identities": 2})
    stage.check(c)
    rows, dropped = _mint(c, tmp_path / "d", [(0, 2)])
    assert len(rows) + len(dropped) == 6 and dropped and len(rows) >= 2
    assert all("below_floor" in d["reason"] for d in dropped)
    edited = [r for r in rows if not r["params"]["anchor"]]
    for r in edited:
        assert r["params"]["edit_attributes"] == ["yaw"] and r["params"]["similarity"] >= 0.95
        assert abs(r["params"]["edit_magnitudes"][0]) >= 8.0 * 0.5 ** r["params"]["retries"] - 1e-9

    wrong = stage.typed({**vars(c), "checkpoint": str(tmp_path / "other.pt")})
    save_generator(Generator(**{**tiny_generator_kwargs(), "z_dim": 8}), tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="refit"):
        stage.check(wrong)
    with pytest.raises(ConfigError, match="refit"):
        stage.run_shard(Shard(0, 0, 1), wrong, StageContext(root=tmp_path / "e", seed=7))
    (tmp_path / "junk.pkl").write_bytes(b"\x80\x04junk")
    with pytest.raises(CheckpointError, match="Refusing"):
        stage.check(stage.typed({**vars(c), "checkpoint": str(tmp_path / "junk.pkl")}))


def tiny_generator_kwargs() -> dict:
    return dict(z_dim=16, c_dim=0, w_dim=16, img_resolution=32, img_channels=3,
                mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=256, channel_max=16))


@pytest.mark.parametrize("network, num_ws", [("stylegan2", 12), ("stylegan3", 3)])
def test_stage_with_real_sface_gates_duplicates_and_keeps_mated(tmp_path, network, num_ws):
    from PIL import Image

    ckpt = one_face_checkpoint(tmp_path, network)
    pytest.importorskip("evaluation.face_embedding")
    c = stage.typed({"checkpoint": str(ckpt), "identities": 3, "images_per_identity": 3,
                     "max_candidates": 2, "random_noise": False, "device": "cpu"})
    rows, dropped = _mint(c, tmp_path / "ds", [(0, 3)])
    assert [r["sample_id"] for r in rows] == ["face-00000000-00", "face-00000000-01", "face-00000000-02"]
    assert len(dropped) == 6 and all("no distinct face in 2 candidates" in d["reason"] for d in dropped)
    gate = json.loads((tmp_path / "ds/truth/face/_gate/part-00000.json").read_text())
    assert gate == {"subjects": [0, 3], "images": 3, "dropped": 6, "candidates": 5,
                    "rejected_duplicate": 4, "rejected_no_face": 0}
    for r in rows[1:]:
        assert r["params"]["similarity"] > 0.9 and r["params"]["retries"] == 0
    truth = (tmp_path / "ds" / rows[0]["truth_path"]).read_text()
    assert "landmarks_5" in truth
    with np.load(tmp_path / "ds" / "truth/face/00000000/identity.npz") as ident:
        assert ident["z"].shape == (16,) and ident["ws"].shape == (num_ws, 16)
    crop = Image.open(tmp_path / "ds" / rows[0]["params"]["aligned_path"])
    assert crop.size == (112, 112)
