"""Conditional image-to-image diffusion for latent prints: a small UNet, cosine schedule,
v-prediction and a deterministic DDIM sampler.

Conditioning is by channel concatenation (SR3 / Palette): the network sees the noisy latent
x_t beside its conditions — the residue the touch left (its ridges where they transferred,
smudged, doubled or overlapped; `condition="ridges"`: the clean ridge map of the whole touch)
and the visible-region mask —
and predicts v = alpha * eps - sigma * x0 (Salimans & Ho,
"Progressive distillation", 2022), which stays well scaled at both ends of the schedule.
The schedule is the cosine one of Nichol & Dhariwal (2021): alpha_bar(t) = cos^2(((t + s) /
(1 + s)) * pi / 2), t in [0, 1]. Sampling is DDIM with eta = 0 (Song et al., 2021) in a few
steps, optionally starting at t0 < 1 from the procedural latent noised to t0 (SDEdit, Meng
et al., 2022). The UNet has no attention, so it runs at any resolution whose sides are
multiples of its `unshuffle` factor (4 px by default).

Speed: the network first folds each 4x4 pixel block into channels (pixel unshuffle, as in
ESPCN, Shi et al. 2016, run backwards) and unfolds its output the same way, so its
convolutions run at a sixteenth of the pixels. A ridge period is ~9 px at 500 ppi, so a
4-px fold keeps every ridge in reach of the first 3x3 convolution, and the last layer still
sets every output pixel on its own. One step at 512x512 costs ~0.1 s on one CPU core.

Shapes: images [B, 1, H, W] in [-1, 1] (0 = mid grey), conditions [B, C, H, W].
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

SCHEDULE_OFFSET = 0.008   # s of the cosine schedule


@dataclass(frozen=True)
class UNetConfig:
    channels: tuple[int, ...] = (32, 64, 96)        # per resolution level; ~1.1 M parameters
    condition_channels: int = 2                     # ridge map, visible-region mask
    time_dim: int = 128
    groups: int = 8
    unshuffle: int = 4                              # px folded into channels at the input (1: none)
    condition: str = "residue"                      # channel 0: "residue" (what the skin left) or
                                                    # "ridges" (the clean ridge map of the touch)

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, d: dict) -> "UNetConfig":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def alpha_sigma(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha(t), sigma(t) of the cosine schedule (alpha^2 + sigma^2 = 1), t in [0, 1]."""
    angle = (t + SCHEDULE_OFFSET) / (1.0 + SCHEDULE_OFFSET) * (math.pi / 2.0)
    return torch.cos(angle), torch.sin(angle)


def time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding [B, dim] of t in [0, 1] (scaled to the usual 0..1000 range)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, the time embedding as a per-channel scale and shift (FiLM)."""

    def __init__(self, c_in: int, c_out: int, time_dim: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(min(groups, c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.film = nn.Linear(time_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(min(groups, c_out), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1.0 + scale) + shift
        h = self.conv2(F.silu(h))
        return h + self.skip(x)


class UNet(nn.Module):
    """[B, 1 + C, H, W] (x_t and conditions), t [B] -> v [B, 1, H, W]."""

    def __init__(self, config: UNetConfig = UNetConfig()):
        super().__init__()
        self.config = config
        ch, td, g = config.channels, config.time_dim, config.groups
        self.time = nn.Sequential(nn.Linear(td, td), nn.SiLU(), nn.Linear(td, td))
        fold = config.unshuffle ** 2
        self.stem = nn.Conv2d((1 + config.condition_channels) * fold, ch[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.pool = nn.ModuleList()
        for i, c in enumerate(ch):
            self.down.append(ResBlock(ch[max(i - 1, 0)] if i else ch[0], c, td, g))
            self.pool.append(nn.Conv2d(c, c, 3, stride=2, padding=1) if i < len(ch) - 1 else nn.Identity())
        self.middle = ResBlock(ch[-1], ch[-1], td, g)
        self.up = nn.ModuleList()
        for i in reversed(range(len(ch))):
            c_in = ch[-1] if i == len(ch) - 1 else ch[i + 1]
            self.up.append(ResBlock(c_in + ch[i], ch[i], td, g))
        self.out = nn.Sequential(nn.GroupNorm(min(g, ch[0]), ch[0]), nn.SiLU(), nn.Conv2d(ch[0], fold, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)
        # a linear path from the folded input to the folded output (a 12x12-px linear filter):
        # at small t, v is mostly the input's own noise, (x_t - alpha x0) / sigma, which this
        # path learns within a few hundred steps instead of the whole UNet having to carry it
        self.linear = nn.Conv2d((1 + config.condition_channels) * fold, fold, 3, padding=1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        k = self.config.unshuffle
        if x.shape[-1] % k or x.shape[-2] % k:
            raise ValueError(f"image sides must be multiples of {k}, got {tuple(x.shape[-2:])}")
        emb = self.time(time_embedding(t, self.config.time_dim))
        folded = F.pixel_unshuffle(x, k) if k > 1 else x
        h = self.stem(folded)
        skips = []
        for block, pool in zip(self.down, self.pool):
            h = block(h, emb)
            skips.append(h)
            h = pool(h)
        h = self.middle(h, emb)
        for block in self.up:
            skip = skips.pop()
            if h.shape[-2:] != skip.shape[-2:]:
                h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = block(torch.cat([h, skip], dim=1), emb)
        out = self.out(h) + self.linear(folded)
        return F.pixel_shuffle(out, k) if k > 1 else out


def v_loss(model: UNet, x0: torch.Tensor, cond: torch.Tensor, generator: torch.Generator | None = None,
           focus: tuple[float, float] | None = None) -> torch.Tensor:
    """Mean squared error of the v prediction at times drawn uniformly in [0, 1] (one per
    sample); with focus = (share, t_max), that share of the samples draws t in [0, t_max]
    instead: the range an SDEdit sampler starting at t0 <= t_max uses. Random numbers are
    drawn on the CPU generator, so a batch's times and noise are the same on any device."""
    b = x0.shape[0]
    t = torch.rand(b, generator=generator)
    if focus is not None:
        share, t_max = focus
        t = torch.where(torch.rand(b, generator=generator) < share, t * t_max, t)
    eps = torch.randn(x0.shape, generator=generator).to(x0.device)
    t = t.to(x0.device)
    a, s = alpha_sigma(t)
    a, s = a[:, None, None, None], s[:, None, None, None]
    xt = a * x0 + s * eps
    v = a * eps - s * x0
    return F.mse_loss(model(torch.cat([xt, cond], dim=1), t), v)


SPACINGS = ("uniform", "quadratic")


def sampling_times(steps: int, t0: float, spacing: str = "quadratic") -> torch.Tensor:
    """[steps + 1] times from t0 down to 0. Quadratic spacing, t_i = t0 (1 - i / n)^2, puts
    the last steps near t = 0, where one step removes what is left of the noise best (DDIM's
    own "quad" schedule, Song et al. 2021, app. D.2): with 3 steps from 0.5 the last x0
    prediction is made at t = 0.056 instead of 0.167."""
    if spacing not in SPACINGS:
        raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
    fraction = torch.linspace(1.0, 0.0, steps + 1)
    return t0 * (fraction ** 2 if spacing == "quadratic" else fraction)


@torch.no_grad()
def ddim_sample(model: UNet, cond: torch.Tensor, steps: int, generator: torch.Generator,
                start: torch.Tensor | None = None, t0: float = 1.0, spacing: str = "quadratic") -> torch.Tensor:
    """x0 [B, 1, H, W] in [-1, 1] by DDIM (eta = 0) from t0 to 0 in `steps` steps; with
    `start` (the procedural latent) and t0 < 1 the chain starts from start noised to t0."""
    if not 1 <= steps <= 1000 or not 0.0 < t0 <= 1.0:
        raise ValueError(f"need 1 <= steps <= 1000 and 0 < t0 <= 1, got {steps}, {t0}")
    b, _, h, w = cond.shape
    noise = torch.randn((b, 1, h, w), generator=generator, device="cpu").to(cond.device)
    times = sampling_times(steps, t0, spacing).to(cond.device)
    a, s = alpha_sigma(times[0].expand(b))
    x = noise if start is None else a[:, None, None, None] * start + s[:, None, None, None] * noise
    for i in range(steps):
        t, t_next = times[i].expand(b), times[i + 1].expand(b)
        a, s = (v[:, None, None, None] for v in alpha_sigma(t))
        v = model(torch.cat([x, cond], dim=1), t)
        x0 = (a * x - s * v).clamp(-1.0, 1.0)
        eps = (s * x + a * v)
        a_next, s_next = (v_[:, None, None, None] for v_ in alpha_sigma(t_next))
        x = a_next * x0 + s_next * eps
    return x.clamp(-1.0, 1.0)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
