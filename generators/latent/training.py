"""Training the latent diffusion model on pairs the procedural simulator makes on the fly.

Each step draws a batch of (procedural latent, ridge map, visible mask) from a pool of master
prints that is renewed every `pool_refresh` steps, cuts random patches (the UNet has no
attention, so patches train a full-resolution model: Patch Diffusion, arXiv 2304.12526) and
takes one Adam step on the v-prediction loss. Data are a pure function of (data seed, step),
so a resumed run sees exactly the batches an uninterrupted one would.

Checkpoint directory:
    last.pt      model, optimiser, step and losses (resume point; tensors only)
    model.pt     the model's state dict (fp16 with `half=True`)
    model.json   UNet config, steps, data seed, settings and the loss log
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from generators.fingerprint import FingerprintSettings, make_master

from .diffusion import UNet, UNetConfig, v_loss
from .settings import LatentSettings
from .simulator import make_latent


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 2000
    batch: int = 8
    patch: int = 128                      # px; a multiple of 8
    lr: float = 2e-4
    data_seed: int = 0
    pool_size: int = 16                   # master prints in the pool
    pool_refresh: int = 250               # steps between pools
    checkpoint_every: int = 100
    channels: tuple[int, ...] = (16, 32, 64, 128)
    fingerprint: FingerprintSettings = field(default_factory=FingerprintSettings)
    latent: LatentSettings = field(default_factory=LatentSettings)

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch < 1 or self.patch < 16 or self.patch % 8:
            raise ValueError("need steps >= 1, batch >= 1 and a patch of >= 16 px divisible by 8")
        if self.patch > min(self.latent.width, self.latent.height):
            raise ValueError(f"patch {self.patch} is larger than the latent canvas")


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(entropy=int(seed), spawn_key=tuple(int(k) for k in key)))


class PairSource:
    """Batches [B, 1, P, P] (target latent) and [B, 2, P, P] (ridges, mask), in [-1, 1] / [0, 1]."""

    def __init__(self, settings: TrainSettings):
        self.s = settings
        self._pool_index = -1
        self._pool: list = []

    def _masters(self, step: int) -> list:
        index = step // self.s.pool_refresh
        if index != self._pool_index:
            self._pool = [make_master(self.s.fingerprint, 1 + k % 10, _rng(self.s.data_seed, 0, index, k))
                          for k in range(self.s.pool_size)]
            self._pool_index = index
        return self._pool

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        masters = self._masters(step)
        rng = _rng(self.s.data_seed, 1, step)
        p = self.s.patch
        targets, conds = [], []
        for _ in range(self.s.batch):
            a, b = rng.choice(len(masters), size=2, replace=False)
            lat = make_latent(masters[a], self.s.latent, rng, overlap=masters[b])
            ys, xs = np.nonzero(lat.mask)
            h, w = lat.image.shape
            # patches centred near the visible region, where the ridges are
            k = int(rng.integers(len(xs))) if len(xs) else 0
            cy = int(ys[k]) if len(xs) else h // 2
            cx = int(xs[k]) if len(xs) else w // 2
            y0 = int(np.clip(cy - p // 2 + rng.integers(-p // 4, p // 4 + 1), 0, h - p))
            x0 = int(np.clip(cx - p // 2 + rng.integers(-p // 4, p // 4 + 1), 0, w - p))
            window = (slice(y0, y0 + p), slice(x0, x0 + p))
            targets.append(lat.image[window].astype(np.float32) / 127.5 - 1.0)
            conds.append(np.stack([lat.ridges[window], lat.mask[window].astype(np.float32)]))
        return torch.from_numpy(np.stack(targets)[:, None]), torch.from_numpy(np.stack(conds))


def save_atomic(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def held_out_loss(model: UNet, source: PairSource, device, batches: int = 2) -> float:
    """v-loss on fixed batches (steps -1, -2, ... of the data stream, never trained on) with
    fixed noise: comparable between checkpoints."""
    model.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(batches):
            x0, cond = source.batch(10**9 + i)
            g = torch.Generator().manual_seed(1234 + i)
            total += float(v_loss(model, x0.to(device), cond.to(device), generator=g))
    model.train()
    return total / batches


def train(out_dir: Path, settings: TrainSettings, device: str = "cpu", progress: bool = True,
          log=print) -> dict:
    """Train (or resume) into `out_dir`; returns model.json's content."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(settings.data_seed)
    model = UNet(UNetConfig(channels=tuple(settings.channels))).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.lr)
    step, losses = 0, []
    last = out_dir / "last.pt"
    if last.is_file():
        state = torch.load(last, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        step, losses = int(state["step"]), [float(v) for v in state["losses"]]
        log(f"train-latent: resuming at step {step} of {settings.steps}")
    source = PairSource(settings)
    untrained = None
    if step == 0:
        untrained = held_out_loss(model, source, device)
    from tqdm import tqdm

    start = time.perf_counter()
    bar = tqdm(total=settings.steps, initial=step, desc="train-latent", unit="step", disable=not progress)
    while step < settings.steps:
        x0, cond = source.batch(step)
        g = torch.Generator().manual_seed(settings.data_seed * 1_000_003 + step)
        loss = v_loss(model, x0.to(device), cond.to(device), generator=g)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        if step % settings.checkpoint_every == 0 or step == settings.steps:
            save_atomic({"model": model.state_dict(), "optimiser": optimiser.state_dict(), "step": step,
                         "losses": torch.tensor(losses)}, last)
    bar.close()
    meta_path = out_dir / "model.json"
    previous = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    meta = {
        "unet": model.config.to_json(), "steps": step, "data_seed": settings.data_seed,
        "train": {k: v for k, v in asdict(settings).items() if k not in ("fingerprint", "latent")},
        "losses": losses, "untrained_held_out_loss": previous.get("untrained_held_out_loss", untrained),
        "held_out_loss": held_out_loss(model, source, device),
        "seconds_this_run": round(time.perf_counter() - start, 2),
    }
    weights = {k: v.half() for k, v in model.state_dict().items()}
    save_atomic(weights, out_dir / "model.pt")
    tmp = meta_path.with_name(".model.json.tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, meta_path)
    log(f"train-latent: step {step}, held-out loss {meta['held_out_loss']:.4f} "
        f"(untrained {meta['untrained_held_out_loss']}) → {out_dir}")
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
