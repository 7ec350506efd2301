"""Training the latent diffusion model: on simulator pairs, or fine-tuning on real latents.

Each step takes a batch from training_data (simulator pairs made on the fly, or patches of a
lab's real latents conditioned on their own enhancement) and one Adam step on the
v-prediction loss. Batches are a pure function of (data seed, step), so a resumed run ends
with exactly the weights of an uninterrupted one, with or without data worker processes.

Checkpoint directory:
    last.pt      model, optimiser, step and losses (resume point; tensors only)
    model.pt     the state dict (fp16) of the weights' exponential moving average, which is
                 what samples well (Ho et al. 2020; decay warmed up as min(ema, (1+n)/(10+n)))
    model.json   UNet config, steps, data seed, settings and the loss log
    loss.png     the training loss and the held-out loss per checkpoint
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from generators.fingerprint import FingerprintSettings

from .diffusion import UNet, UNetConfig, v_loss
from .settings import LatentSettings
from .training_data import HELD_OUT_STEP, Batches, make_source


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 2000
    batch: int = 16
    patch: int = 128                      # px; a multiple of the UNet's unshuffle factor
    lr: float = 2e-4
    data_seed: int = 0
    pool_size: int = 16                   # master prints in the pool
    pool_refresh: int = 250               # steps between pools
    patches_per_latent: int = 4           # patches cut from each simulated latent
    checkpoint_every: int = 100
    ema: float = 0.999                    # decay of the weights' moving average (what is shipped)
    focus_share: float = 0.75             # share of samples with t drawn in [0, focus_t_max] ...
    focus_t_max: float = 0.6              # ... the range SDEdit samplers use (the stage: t0 = 0.2)
    channels: tuple[int, ...] = (32, 64, 96)
    unshuffle: int = 4
    condition: str = "residue"            # the condition map: residue (what the skin left) or ridges
    workers: int = 0                      # data processes (0: batches made in this process)
    real_dir: str | None = None           # fine-tune on the real latents of this folder
    init: str | None = None               # start from this checkpoint directory (fine-tuning)
    fingerprint: FingerprintSettings = field(default_factory=FingerprintSettings)
    latent: LatentSettings = field(default_factory=LatentSettings)

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch < 1 or self.patch < 16 or self.patch % 8:
            raise ValueError("need steps >= 1, batch >= 1 and a patch of >= 16 px divisible by 8")
        if self.patch % self.unshuffle:
            raise ValueError(f"the patch ({self.patch} px) must be a multiple of unshuffle={self.unshuffle}")
        if self.patch > min(self.latent.width, self.latent.height):
            raise ValueError(f"patch {self.patch} is larger than the latent canvas")
        if self.patches_per_latent < 1 or self.workers < 0:
            raise ValueError("need patches_per_latent >= 1 and workers >= 0")
        if self.condition not in ("residue", "ridges"):
            raise ValueError(f"condition must be residue or ridges, got {self.condition!r}")
        if not 0.0 <= self.focus_share <= 1.0 or not 0.0 < self.focus_t_max <= 1.0:
            raise ValueError("need focus_share in [0, 1] and focus_t_max in (0, 1]")


def save_atomic(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def held_out_loss(model: UNet, batches: list, device) -> float:
    """v-loss on fixed batches (steps HELD_OUT_STEP + i of the data stream, never trained on)
    with fixed noise: comparable between checkpoints."""
    model.eval()
    total = 0.0
    with torch.no_grad():
        for i, (x0, cond) in enumerate(batches):
            g = torch.Generator().manual_seed(1234 + i)
            total += float(v_loss(model, torch.from_numpy(x0).to(device), torch.from_numpy(cond).to(device),
                                  generator=g))
    model.train()
    return total / len(batches)


def _initial_model(settings: TrainSettings) -> UNet:
    if settings.init:
        # the architecture comes from the checkpoint; the condition is this run's (a model
        # trained on another condition map adapts to this one)
        model = load_model(Path(settings.init)).train()
        model.config = dataclasses.replace(model.config, condition=settings.condition)
        return model
    return UNet(UNetConfig(channels=tuple(settings.channels), unshuffle=settings.unshuffle,
                           condition=settings.condition))


def plot_losses(losses: list[float], held_out: list[tuple[int, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    steps = np.arange(1, len(losses) + 1)
    window = max(1, len(losses) // 50)
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    ax.plot(steps, losses, color="0.8", lw=0.5, label="training loss")
    ax.plot(steps[window - 1:], smooth, color="C0", lw=1.2, label=f"mean of {window} steps")
    if held_out:
        ax.plot(*zip(*held_out), "o-", color="C3", ms=3, label="held-out loss")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("v-prediction MSE")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def train(out_dir: Path, settings: TrainSettings, device: str = "cpu", progress: bool = True,
          log=print) -> dict:
    """Train (or resume) into `out_dir`; returns model.json's content."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(settings.data_seed)
    model = _initial_model(settings).to(device)
    average = copy.deepcopy(model).eval().requires_grad_(False)
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.lr)
    step, losses, held_log, initial = 0, [], [], None
    last = out_dir / "last.pt"
    if last.is_file():
        state = torch.load(last, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        average.load_state_dict(state["ema"])
        optimiser.load_state_dict(state["optimiser"])
        step, losses = int(state["step"]), [float(v) for v in state["losses"]]
        held_log = [(int(a), float(b)) for a, b in state.get("held_out", torch.zeros(0, 2)).tolist()]
        initial = float(state["initial"]) if "initial" in state and not torch.isnan(state["initial"]) else None
        log(f"train-latent: resuming at step {step} of {settings.steps}")
    held_batches = [make_source(settings).batch(HELD_OUT_STEP + i) for i in range(2)]
    meta_path = out_dir / "model.json"
    previous = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    initial = initial if initial is not None else previous.get("initial_held_out_loss")
    if initial is None and step == 0:
        initial = held_out_loss(average, held_batches, device)
    from tqdm import tqdm

    start = time.perf_counter()
    bar = tqdm(total=settings.steps, initial=step, desc="train-latent", unit="step", disable=not progress)
    for x0, cond in Batches(settings, step, settings.steps, settings.workers):
        g = torch.Generator().manual_seed(settings.data_seed * 1_000_003 + step)
        loss = v_loss(model, torch.from_numpy(x0).to(device), torch.from_numpy(cond).to(device), generator=g,
                      focus=(settings.focus_share, settings.focus_t_max) if settings.focus_share > 0 else None)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        decay = min(settings.ema, (1.0 + step) / (10.0 + step))
        with torch.no_grad():
            for a, p in zip(average.parameters(), model.parameters()):
                a.lerp_(p, 1.0 - decay)
        losses.append(float(loss.detach()))
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        if step % settings.checkpoint_every == 0 or step == settings.steps:
            held_log.append((step, held_out_loss(average, held_batches, device)))
            save_atomic({"model": model.state_dict(), "ema": average.state_dict(), "optimiser": optimiser.state_dict(), "step": step,
                         "losses": torch.tensor(losses), "held_out": torch.tensor(held_log, dtype=torch.float64),
                         "initial": torch.tensor(float("nan") if initial is None else initial)},
                        last)
    bar.close()
    final = held_log[-1][1] if held_log and held_log[-1][0] == step else held_out_loss(average, held_batches, device)
    meta = {
        "unet": model.config.to_json(), "steps": step, "data_seed": settings.data_seed,
        "train": {k: v for k, v in asdict(settings).items() if k not in ("fingerprint", "latent")},
        "data": "real latents" if settings.real_dir else "simulator pairs",
        "losses": losses, "held_out": held_log,
        "initial_held_out_loss": initial, "held_out_loss": final,
        "seconds_this_run": round(time.perf_counter() - start, 2), "device": str(device),
    }
    if settings.init:
        meta["init"] = str(settings.init)
    weights = {k: v.half() for k, v in average.state_dict().items()}
    save_atomic(weights, out_dir / "model.pt")
    tmp = meta_path.with_name(".model.json.tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, meta_path)
    plot_losses(losses, held_log, out_dir / "loss.png")
    log(f"train-latent: step {step}, held-out loss {final:.4f} (at the start {initial}) → {out_dir}")
    return meta


def load_model(directory: Path, device: str = "cpu") -> UNet:
    """The model of a checkpoint directory (model.json + model.pt), loaded with strict=True."""
    directory = Path(directory)
    meta_file, weights_file = directory / "model.json", directory / "model.pt"
    if not meta_file.is_file() or not weights_file.is_file():
        raise FileNotFoundError(f"{directory} holds no latent diffusion checkpoint (model.json and model.pt); "
                                "train one with biomint-train-latent")
    meta = json.loads(meta_file.read_text())
    model = UNet(UNetConfig.from_json(meta["unet"]))
    state = torch.load(weights_file, map_location="cpu", weights_only=True)
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return model.to(device).eval()
