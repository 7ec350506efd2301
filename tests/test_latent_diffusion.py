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

TINY = dict(batch=4, patch=64, channels=(8, 16, 32), pool_size=4, lr=1e-3,
            fingerprint=FingerprintSettings(width=160, height=192, master_width=240, master_height=224),
            latent=LatentSettings(width=192, height=192))


def test_unet_maps_any_size_divisible_by_8_and_has_the_documented_size():
    assert 1.0e6 < parameter_count(UNet()) < 3.0e6
    model = UNet(UNetConfig(channels=(8, 16, 32)))
    for h, w in ((64, 64), (96, 136)):
        out = model(torch.zeros(2, 3, h, w), torch.rand(2))
        assert out.shape == (2, 1, h, w)


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
    assert meta["held_out_loss"] < 0.8 * meta["untrained_held_out_loss"]
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


def test_missing_checkpoint_and_bad_arguments_are_one_sentence(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="no latent diffusion checkpoint"):
        load_model(tmp_path)
    assert train_cli(["--out", str(tmp_path / "x"), "--patch", "60"]) == 2
    assert "divisible by 8" in capsys.readouterr().err
