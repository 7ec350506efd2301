"""Specification of the latent diffusion model (generators.latent.diffusion / .training): the
UNet's shapes and size, seeded DDIM sampling, a short CPU training run whose held-out loss
falls, and a resumed run that ends with exactly the weights of an uninterrupted one."""
from __future__ import annotations

import json

import pytest
import torch

from generators.fingerprint import FingerprintSettings
from generators.latent import LatentSettings
from generators.latent.diffusion import UNet, UNetConfig, alpha_sigma, ddim_sample, parameter_count
from generators.latent.training import TrainSettings, load_model, train
from pipeline.train_latent import main as train_cli

TINY = dict(batch=4, patch=64, channels=(8, 16, 32), unshuffle=2, pool_size=4, lr=1e-3,
            fingerprint=FingerprintSettings(width=160, height=192, master_width=240, master_height=224),
            latent=LatentSettings(width=192, height=192))


def test_unet_maps_any_size_divisible_by_its_fold_and_has_the_documented_size():
    assert 1.0e6 < parameter_count(UNet()) < 3.0e6
    model = UNet(UNetConfig(channels=(8, 16, 32)))
    for h, w in ((64, 64), (96, 136), (192, 188)):
        out = model(torch.zeros(2, 3, h, w), torch.rand(2))
        assert out.shape == (2, 1, h, w)
    with pytest.raises(ValueError, match="multiples of 4"):
        model(torch.zeros(1, 3, 64, 66), torch.rand(1))


def test_every_output_pixel_has_its_own_value_after_the_fold():
    """Pixel unshuffle folds 4x4 blocks into channels; the output must still vary inside a
    block (a network that painted 4x4 tiles would not draw 9-px ridges)."""
    torch.manual_seed(0)
    model = UNet(UNetConfig(channels=(8, 16)))
    for p in model.out.parameters():
        torch.nn.init.normal_(p, std=0.1)
    out = model(torch.randn(1, 3, 32, 32), torch.rand(1))[0, 0].detach()
    blocks = out.reshape(8, 4, 8, 4).permute(0, 2, 1, 3).reshape(64, 16)
    assert float(blocks.std(dim=1).min()) > 1e-3


def test_cosine_schedule_runs_from_signal_to_noise():
    a, s = alpha_sigma(torch.tensor([0.0, 0.5, 1.0]))
    assert torch.allclose(a ** 2 + s ** 2, torch.ones(3))
    assert a[0] > 0.99 and s[2] > 0.99 and a[1] > a[2]


def test_ddim_is_seeded_and_refuses_bad_arguments():
    torch.manual_seed(0)
    model = UNet(UNetConfig(channels=(8, 16)))
    for p in model.out.parameters():          # a non-trivial network (the output layer starts at zero)
        torch.nn.init.normal_(p, std=0.1)
    cond = torch.rand(1, 2, 32, 32)
    a = ddim_sample(model, cond, 4, torch.Generator().manual_seed(1))
    b = ddim_sample(model, cond, 4, torch.Generator().manual_seed(1))
    c = ddim_sample(model, cond, 4, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c) and a.abs().max() <= 1.0
    start = torch.zeros(1, 1, 32, 32)
    near = ddim_sample(model, cond, 2, torch.Generator().manual_seed(1), start=start, t0=0.2)
    assert (near - start).abs().mean() < (a - start).abs().mean()   # SDEdit stays near its start
    with pytest.raises(ValueError):
        ddim_sample(model, cond, 0, torch.Generator())


def test_fifty_cpu_steps_lower_the_held_out_loss_and_resume_is_exact(tmp_path):
    meta = train(tmp_path / "straight", TrainSettings(steps=50, checkpoint_every=25, **TINY), progress=False,
                 log=lambda *_: None)
    # fixed held-out batches and noise: the fall is the model's, not the draw's
    assert meta["held_out_loss"] < 0.95 * meta["initial_held_out_loss"]
    assert len(meta["losses"]) == 50 and json.loads((tmp_path / "straight" / "model.json").read_text())["steps"] == 50
    # 30 steps, stopped after 20 and resumed, give the weights of 30 straight steps
    train(tmp_path / "resumed", TrainSettings(steps=20, checkpoint_every=10, **TINY), progress=False, log=lambda *_: None)
    train(tmp_path / "resumed", TrainSettings(steps=30, checkpoint_every=10, **TINY), progress=False, log=lambda *_: None)
    train(tmp_path / "once", TrainSettings(steps=30, checkpoint_every=10, **TINY), progress=False, log=lambda *_: None)
    a = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "once" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    model = load_model(tmp_path / "once")
    assert isinstance(model, UNet) and model.config.channels == (8, 16, 32)


def test_worker_processes_make_exactly_the_batches_of_the_training_process():
    from generators.latent.training_data import Batches

    settings = TrainSettings(steps=3, **TINY)
    here = list(Batches(settings, 1, 3, workers=0))
    there = list(Batches(settings, 1, 3, workers=1))
    assert len(here) == len(there) == 2
    assert all((a == b).all() and (c == d).all() for (a, c), (b, d) in zip(here, there))
    assert here[0][0].shape == (4, 1, 64, 64) and here[0][1].shape == (4, 2, 64, 64)


def test_missing_checkpoint_and_bad_arguments_are_one_sentence(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="no latent diffusion checkpoint"):
        load_model(tmp_path)
    assert train_cli(["--out", str(tmp_path / "x"), "--patch", "60"]) == 2
    assert "divisible by 8" in capsys.readouterr().err


def test_fine_tuning_on_a_folder_of_real_latents_starts_from_a_checkpoint_and_lowers_its_loss(tmp_path):
    """A lab's latents come without pairs: the conditions are their own enhanced ridges and
    mask. Stand-ins here: procedural latents written as PNG files and read back."""
    import numpy as np
    from PIL import Image

    from generators.fingerprint import make_master
    from generators.latent import make_latent

    base = train(tmp_path / "base", TrainSettings(steps=10, checkpoint_every=10, **TINY), progress=False,
                 log=lambda *_: None)
    real = tmp_path / "real" / "case-1"
    real.mkdir(parents=True)
    fp_settings, lat_settings = TINY["fingerprint"], TINY["latent"]
    for i in range(3):
        master = make_master(fp_settings, 1 + i, np.random.default_rng(i))
        image = make_latent(master, lat_settings, np.random.default_rng(10 + i)).image
        Image.fromarray(image).save(real / f"latent-{i}.png")
    assert train_cli(["--out", str(tmp_path / "lab"), "--init", str(tmp_path / "base"), "--real", str(tmp_path / "real"),
                      "--steps", "30", "--batch", "4", "--patch", "64", "--lr", "1e-3", "--quiet"]) == 0
    meta = json.loads((tmp_path / "lab" / "model.json").read_text())
    assert meta["data"] == "real latents" and meta["init"] == str(tmp_path / "base")
    assert meta["unet"] == base["unet"]                      # the architecture comes from the checkpoint
    assert meta["held_out_loss"] < meta["initial_held_out_loss"]
    assert (tmp_path / "lab" / "loss.png").stat().st_size > 1000


def test_fine_tuning_refuses_a_folder_without_images_in_one_sentence(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert train_cli(["--out", str(tmp_path / "x"), "--real", str(tmp_path / "empty")]) == 2
    assert "holds no latent images" in capsys.readouterr().err
    assert train_cli(["--out", str(tmp_path / "x"), "--init", str(tmp_path / "empty")]) == 2
    assert "holds no latent diffusion checkpoint" in capsys.readouterr().err
