"""The boundary-fitting command on tiny random networks (StyleGAN2 and StyleGAN3): labels, fit,
file, and that moving along the fitted brightness normal really brightens the rendered images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from generators.face import Generator, Generator3, checkpoint_sha256, load_boundaries, load_generator, save_generator
from generators.face.editing import apply_edits
from generators.face.identities import map_latents, render
from generators.face.labellers import brightness_scores
from pipeline.face_boundaries import fit_boundaries_main


def _checkpoint(tmp_path, network: str = "stylegan2"):
    torch.manual_seed(1)
    if network == "stylegan3":
        g = Generator3(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3,
                       mapping_kwargs=dict(num_layers=2), channel_base=256, channel_max=16, num_layers=4,
                       num_critical=1)
    else:
        g = Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3,
                      mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=128, channel_max=16))
    return save_generator(g, tmp_path / f"tiny_{network}.pt")[0]


@pytest.mark.parametrize("network", ["stylegan2", "stylegan3"])
def test_fit_boundaries_command_writes_usable_boundaries(tmp_path, capsys, network):
    ckpt = _checkpoint(tmp_path, network)
    labels = tmp_path / "labels.csv"
    rows = ["index,age"] + [f"{i},{20 + (i * 37) % 50}" for i in range(0, 200, 2)]
    labels.write_text("\n".join(rows) + "\n")
    out = tmp_path / "boundaries.npz"
    rc = fit_boundaries_main(["--checkpoint", str(ckpt), "--out", str(out), "--samples", "200",
                              "--fraction", "0.2", "--batch", "50", "--device", "cpu",
                              "--attributes", "brightness,illumination",
                              "--labels-csv", str(labels), "--csv-attributes", "age"])
    assert rc == 0 and "brightness" in capsys.readouterr().out
    bs = load_boundaries(out, checkpoint_sha256=checkpoint_sha256(ckpt))
    assert sorted(bs.normals) == ["age", "brightness", "illumination"]
    assert bs.info["brightness"]["accuracy"] > 0.8 and bs.info["age"]["labelled"] == 100

    g = load_generator(ckpt)
    assert isinstance(g, Generator3) == (network == "stylegan3")
    z = np.random.default_rng(5).standard_normal((8, 16)).astype(np.float32)
    ws = map_latents(g, z, 0.7, None, torch.device("cpu"))
    n = {"b": bs.normals["brightness"]}
    darker = brightness_scores(render(g, apply_edits(ws, n, {"b": -2.0}), torch.device("cpu")))
    lighter = brightness_scores(render(g, apply_edits(ws, n, {"b": 2.0}), torch.device("cpu")))
    assert (lighter > darker).mean() >= 0.75


def test_fit_boundaries_command_bad_input_exit_2(tmp_path, capsys):
    rc = fit_boundaries_main(["--checkpoint", str(tmp_path / "none.pkl"), "--out", str(tmp_path / "b.npz")])
    assert rc == 2 and "does not exist" in capsys.readouterr().err
    ckpt = _checkpoint(tmp_path)
    rc = fit_boundaries_main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "b.npz"),
                              "--attributes", "glasses", "--samples", "20"])
    assert rc == 2 and "no offline labeller" in capsys.readouterr().err
