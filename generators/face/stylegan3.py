"""The alias-free generator (StyleGAN3-T and -R): mapping + Fourier-feature synthesis.

Karras et al. 2021, "Alias-Free Generative Adversarial Networks" (NeurIPS). Written from the
paper; parameter and buffer names, shapes and the order of floating-point operations are
those of NVIDIA's `G_ema` (stylegan3 repository), so a user's snapshot loads with
`strict=True` and draws the same image:

  mapping.{embed, fc0..fc<n-1>}.{weight, bias}, mapping.w_avg          (same as StyleGAN2's)
  synthesis.input.{weight [C, C], affine.{weight [4, w], bias [4]}, transform [3, 3],
                   freqs [C, 2], phases [C]}
  synthesis.L<i>_<size>_<channels>.{weight [O, I, k, k], bias [O], magnitude_ema [],
                   up_filter [t] (absent when the rate does not go up), down_filter [t] or
                   [t, t] (radial, -R), affine.{weight [I, w], bias [I]}}

`Generator3(**init_kwargs)` takes exactly the keyword arguments the stylegan3 repository pickles
(`G_ema._init_kwargs`: synthesis arguments at the top level, `mapping_kwargs` nested).
The network has no per-pixel noise: `noise_mode` and `generator` are accepted and ignored, so
the StyleGAN2 call sites (editing, identities, mated images) work unchanged.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from generators.face.generator import plain
from generators.face.layers import FullyConnectedLayer
from generators.face.mapping import MappingNetwork
from generators.face.stylegan3_filters import filtered_lrelu, jinc_lowpass, kaiser_lowpass

# Synthesis arguments, with the defaults of the paper's -T and -R generators (Karras et al.
# 2021, section 3, "flexible layer specifications").
SYNTHESIS_DEFAULTS: dict[str, Any] = dict(
    channel_base=32768, channel_max=512,
    num_layers=14,              # layers between the Fourier input and ToRGB
    num_critical=2,             # last layers sampled at exactly the output rate
    first_cutoff=2.0,           # f_c of layer 0
    first_stopband=2 ** 2.1,    # f_t of layer 0
    last_stopband_rel=2 ** 0.3,  # f_t of the last layer over its f_c
    margin_size=10,             # pixels computed beyond the image border on each side
    output_scale=0.25, num_fp16_res=4)
LAYER_DEFAULTS: dict[str, Any] = dict(
    conv_kernel=3,              # 1 for -R
    filter_size=6,              # taps per unit of the lower rate when resampling
    lrelu_upsampling=2,         # temporary rate of the nonlinearity over the larger rate
    use_radial_filters=False,   # True for -R
    conv_clamp=256, magnitude_ema_beta=0.999)
_MAPPING_KWARGS = {"num_layers", "lr_multiplier", "w_avg_beta"}
MAPPING_LAYERS = 2              # the stylegan3 mapping network's own default depth
# Real configurations have 14 layers; far more is a malformed file (every layer costs a plan).
MAX_LAYERS = 256
LRELU_GAIN = math.sqrt(2.0)
LRELU_SLOPE = 0.2


@dataclass(frozen=True)
class LayerPlan:
    """One synthesis layer's signal specification (section 3, "flexible layer specifications")."""

    index: int
    in_channels: int
    out_channels: int
    in_size: int                # pixels per side, margins included
    out_size: int
    in_rate: int                # sampling rate s
    out_rate: int
    in_cutoff: float            # cutoff frequency f_c
    out_cutoff: float
    in_half_width: float        # transition band half-width f_h
    out_half_width: float
    is_torgb: bool
    is_critical: bool
    use_fp16: bool

    @property
    def name(self) -> str:
        return f"L{self.index}_{self.out_size}_{self.out_channels}"


def plan_layers(img_resolution: int, img_channels: int, channel_base: int, channel_max: int,
                num_layers: int, num_critical: int, first_cutoff: float, first_stopband: float,
                last_stopband_rel: float, margin_size: int, num_fp16_res: int,
                ) -> list[LayerPlan]:
    """Plans of the Fourier input's signal (index -1) and of layers 0..num_layers (ToRGB last).

    Section 3, "flexible layer specifications": cutoffs f_c and minimum stopbands f_t follow
    geometric progressions from the first layer to the last non-critical one and stay at
    f_c = R / 2, f_t = f_c * last_stopband_rel after it; a layer's rate s is the smallest power
    of two >= 2 f_t (at most R), its half-width f_h = max(f_t, s / 2) - f_c, its channel count
    inversely proportional to f_c. The last two layers have no margin.
    """
    if not 1 <= num_layers <= MAX_LAYERS or not 0 <= num_critical < num_layers:
        raise ValueError(f"num_layers must be in 1..{MAX_LAYERS} and num_critical in "
                         f"0..num_layers-1, got {num_layers} and {num_critical}")
    if img_resolution < 4 or img_channels < 1:
        raise ValueError(f"img_resolution {img_resolution} / img_channels {img_channels} too small")
    if not (first_cutoff > 0 and first_stopband > 0 and last_stopband_rel > 0 and margin_size >= 0
            and channel_base > 0 and channel_max >= 1 and num_fp16_res >= 0):
        raise ValueError("cutoffs, stopbands and channel counts must be positive, margins and "
                         "num_fp16_res non-negative")
    last_cutoff = img_resolution / 2
    last_stopband = last_cutoff * last_stopband_rel
    progress = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
    cutoffs = first_cutoff * (last_cutoff / first_cutoff) ** progress
    stopbands = first_stopband * (last_stopband / first_stopband) ** progress
    rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, img_resolution))))
    half_widths = np.maximum(stopbands, rates / 2) - cutoffs
    sizes = rates + margin_size * 2
    sizes[-2:] = img_resolution
    channels = np.rint(np.minimum((channel_base / 2) / cutoffs, channel_max))
    channels[-1] = img_channels
    plans = []
    for i in range(-1, num_layers + 1):
        prev, cur = max(i - 1, 0), max(i, 0)
        plans.append(LayerPlan(
            index=i, in_channels=int(channels[prev]), out_channels=int(channels[cur]),
            in_size=int(sizes[prev]), out_size=int(sizes[cur]),
            in_rate=int(rates[prev]), out_rate=int(rates[cur]),
            in_cutoff=float(cutoffs[prev]), out_cutoff=float(cutoffs[cur]),
            in_half_width=float(half_widths[prev]), out_half_width=float(half_widths[cur]),
            is_torgb=(i == num_layers), is_critical=(i >= num_layers - num_critical),
            use_fp16=bool(rates[cur] * 2 ** num_fp16_res > img_resolution)))
    return plans


class FourierInput(torch.nn.Module):
    """Fourier features: C sinusoids of random frequency in the band |f| <= f_c (section 3,
    "Fourier features" and "transformed Fourier features").

    The first style vector predicts a rotation and translation of the input (4 numbers:
    cos, sin, tx, ty, normalised so the rotation has unit length); `transform` is a further
    user-chosen inverse transform of the output image (identity in a trained snapshot).
    """

    def __init__(self, w_dim: int, channels: int, size: int, sampling_rate: float,
                 bandwidth: float) -> None:
        super().__init__()
        self.channels, self.size = channels, size
        self.sampling_rate, self.bandwidth = sampling_rate, bandwidth
        self.weight = torch.nn.Parameter(torch.randn([channels, channels]))
        self.affine = FullyConnectedLayer(w_dim, 4)
        with torch.no_grad():  # start as the identity transform
            self.affine.weight.zero_()
            self.affine.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
        self.register_buffer("transform", torch.eye(3, 3))
        # Uniform in the disc of radius f_c: radius ~ f_c sqrt(u), angle uniform.
        radius = bandwidth * torch.rand([channels]).sqrt()
        angle = 2 * math.pi * torch.rand([channels])
        self.register_buffer("freqs", torch.stack([radius * angle.cos(), radius * angle.sin()], 1))
        self.register_buffer("phases", torch.rand([channels]) - 0.5)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        """w [B, w_dim] -> features [B, C, size, size] (float32)."""
        batch, dev = w.shape[0], w.device
        t = self.affine(w)
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        rotate = torch.eye(3, device=dev).unsqueeze(0).repeat([batch, 1, 1])
        rotate[:, 0, 0], rotate[:, 0, 1] = t[:, 0], -t[:, 1]
        rotate[:, 1, 0], rotate[:, 1, 1] = t[:, 1], t[:, 0]
        shift = torch.eye(3, device=dev).unsqueeze(0).repeat([batch, 1, 1])
        shift[:, 0, 2], shift[:, 1, 2] = -t[:, 2], -t[:, 3]
        # Inverse transforms of the image: rotate, then translate, then the user's transform.
        m = rotate @ shift @ self.transform.unsqueeze(0)
        freqs = self.freqs.unsqueeze(0)
        # A translation by d shifts each sinusoid's phase by f . d; a rotation turns f.
        phases = self.phases.unsqueeze(0) + (freqs @ m[:, :2, 2:]).squeeze(2)
        freqs = freqs @ m[:, :2, :2]
        # A user transform that scales up may push frequencies past f_c: fade them out linearly
        # so that nothing reaches the Nyquist rate s / 2.
        fade = (1 - (freqs.norm(dim=2) - self.bandwidth)
                / (self.sampling_rate / 2 - self.bandwidth)).clamp(0, 1)
        # Sample positions: pixel centres of a size x size grid spanning size / s units.
        theta = torch.eye(2, 3, device=dev)
        theta[0, 0] = 0.5 * self.size / self.sampling_rate
        theta[1, 1] = 0.5 * self.size / self.sampling_rate
        grid = F.affine_grid(theta.unsqueeze(0), [1, 1, self.size, self.size], align_corners=False)
        x = (grid.unsqueeze(3) @ freqs.permute(0, 2, 1).unsqueeze(1).unsqueeze(2)).squeeze(3)
        x = torch.sin((x + phases.unsqueeze(1).unsqueeze(2)) * (np.pi * 2))
        x = x * fade.unsqueeze(1).unsqueeze(2)
        # A trainable 1x1 mixing of the features (equalised learning rate).
        x = x @ (self.weight / np.sqrt(self.channels)).t()
        return x.permute(0, 3, 1, 2)


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool,
                     padding: int, input_gain: torch.Tensor) -> torch.Tensor:
    """x [B, I, H, W], weight [O, I, k, k], styles [B, I] -> [B, O, H + 2p - k + 1, ...].

    Karras et al. 2020 eq. 1-3 (modulate, demodulate), plus StyleGAN3's input gain
    1 / sqrt(EMA of the input's mean square) (section 3, "simplified generator"), folded into
    the weights. Weights and styles are first scaled to unit RMS: demodulation cancels any
    scale, and it keeps fp16 products finite.
    """
    batch = x.shape[0]
    out_ch, in_ch, kh, kw = weight.shape
    if demodulate:
        weight = weight * weight.square().mean([1, 2, 3], keepdim=True).rsqrt()
        styles = styles * styles.square().mean().rsqrt()
    w = weight.unsqueeze(0) * styles.reshape(batch, 1, in_ch, 1, 1)       # [B, O, I, k, k]
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()           # [B, O]
        w = w * dcoefs.reshape(batch, out_ch, 1, 1, 1)
    w = w * input_gain.expand(batch, in_ch).reshape(batch, 1, in_ch, 1, 1)
    # One grouped convolution: each sample has its own weights.
    x = x.reshape(1, batch * in_ch, *x.shape[2:])
    x = F.conv2d(x, w.reshape(batch * out_ch, in_ch, kh, kw).to(x.dtype), padding=padding,
                 groups=batch)
    return x.reshape(batch, out_ch, *x.shape[2:])


class AliasFreeLayer(torch.nn.Module):
    """Modulated conv -> filtered leaky ReLU (section 3, "filtered nonlinearities"); ToRGB last."""

    def __init__(self, plan: LayerPlan, w_dim: int, conv_kernel: int = 3, filter_size: int = 6,
                 lrelu_upsampling: int = 2, use_radial_filters: bool = False,
                 conv_clamp: float | None = 256, magnitude_ema_beta: float = 0.999) -> None:
        super().__init__()
        if min(conv_kernel, filter_size, lrelu_upsampling) < 1:
            raise ValueError("conv_kernel, filter_size and lrelu_upsampling must be >= 1")
        self.plan = plan
        self.is_torgb, self.use_fp16 = plan.is_torgb, plan.use_fp16
        self.conv_kernel = 1 if plan.is_torgb else conv_kernel
        self.conv_clamp = conv_clamp
        self.magnitude_ema_beta = magnitude_ema_beta  # training only: eval keeps the stored EMA
        # The nonlinearity runs at lrelu_upsampling x the larger rate; ToRGB is linear.
        tmp_rate = max(plan.in_rate, plan.out_rate) * (1 if plan.is_torgb else lrelu_upsampling)
        self.up, self.down = tmp_rate // plan.in_rate, tmp_rate // plan.out_rate
        if self.up * plan.in_rate != tmp_rate or self.down * plan.out_rate != tmp_rate:
            raise ValueError(f"layer {plan.name}: rates {plan.in_rate}/{plan.out_rate} do not "
                             f"divide the temporary rate {tmp_rate}")
        up_taps = filter_size * self.up if self.up > 1 and not plan.is_torgb else 1
        down_taps = filter_size * self.down if self.down > 1 and not plan.is_torgb else 1

        self.affine = FullyConnectedLayer(w_dim, plan.in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(torch.randn(
            [plan.out_channels, plan.in_channels, self.conv_kernel, self.conv_kernel]))
        self.bias = torch.nn.Parameter(torch.zeros([plan.out_channels]))
        self.register_buffer("magnitude_ema", torch.ones([]))
        self.register_buffer("up_filter", kaiser_lowpass(
            up_taps, plan.in_cutoff, 2 * plan.in_half_width, tmp_rate))
        # Radial filters only where the layer is not critically sampled (section 3.1).
        design = jinc_lowpass if use_radial_filters and not plan.is_critical else kaiser_lowpass
        self.register_buffer("down_filter", design(
            down_taps, plan.out_cutoff, 2 * plan.out_half_width, tmp_rate))
        # Padding on the upsampled grid so that exactly out_size samples remain: the full conv
        # gives in + k - 1 samples, x up, and each filter eats taps - 1. The extra shift
        # (total + up) // 2 places the samples at pixel centres (symmetric interpretation of
        # Appendix C.3).
        total = ((plan.out_size - 1) * self.down + 1
                 - (plan.in_size + self.conv_kernel - 1) * self.up + up_taps + down_taps - 2)
        lo = (total + self.up) // 2
        self.padding = (lo, total - lo, lo, total - lo)

    def forward(self, x: torch.Tensor, w: torch.Tensor, force_fp32: bool = False) -> torch.Tensor:
        """x [B, I, in_size, in_size], w [B, w_dim] -> [B, O, out_size, out_size]."""
        styles = self.affine(w)
        if self.is_torgb:
            styles = styles * (1 / np.sqrt(self.plan.in_channels * self.conv_kernel ** 2))
        fp16 = self.use_fp16 and not force_fp32 and x.device.type == "cuda"
        x = x.to(torch.float16 if fp16 else torch.float32)
        x = modulated_conv2d(x, self.weight, styles, demodulate=not self.is_torgb,
                             padding=self.conv_kernel - 1, input_gain=self.magnitude_ema.rsqrt())
        return filtered_lrelu(x, self.up_filter, self.down_filter, self.bias.to(x.dtype),
                              self.up, self.down, self.padding,
                              gain=1.0 if self.is_torgb else LRELU_GAIN,
                              slope=1.0 if self.is_torgb else LRELU_SLOPE, clamp=self.conv_clamp)


class SynthesisNetwork3(torch.nn.Module):
    """ws [B, num_ws, w_dim] -> image [B, C, R, R]; num_ws = num_layers + 2."""

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int,
                 **kwargs: Any) -> None:
        super().__init__()
        unknown = set(kwargs) - set(SYNTHESIS_DEFAULTS) - set(LAYER_DEFAULTS)
        if unknown:
            raise ValueError(f"unsupported StyleGAN3 synthesis arguments: {sorted(unknown)}")
        args = dict(SYNTHESIS_DEFAULTS)
        args.update((k, v) for k, v in kwargs.items() if k in SYNTHESIS_DEFAULTS)
        layer_args = dict(LAYER_DEFAULTS)
        layer_args.update((k, v) for k, v in kwargs.items() if k in LAYER_DEFAULTS)
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.output_scale = args.pop("output_scale")
        plans = plan_layers(img_resolution, img_channels, **args)
        self.num_ws = len(plans)  # one w for the input, one per layer
        # the band limit of each w's layer (cycles per image): what "fine styles" are here
        self.w_cutoffs = tuple(float(plan.out_cutoff) for plan in plans)
        first = plans[0]
        self.input = FourierInput(w_dim, first.out_channels, first.out_size, first.out_rate,
                                  first.out_cutoff)
        self.layer_names = []
        for plan in plans[1:]:
            setattr(self, plan.name, AliasFreeLayer(plan, w_dim, **layer_args))
            self.layer_names.append(plan.name)

    def forward(self, ws: torch.Tensor, noise_mode: str = "const", generator: Any = None,
                force_fp32: bool = False) -> torch.Tensor:
        """fp16 layers (num_fp16_res) run in half precision on CUDA unless force_fp32.

        There is no per-pixel noise in StyleGAN3 (section 3, "simplified generator"):
        `noise_mode` is checked and `generator` ignored, so StyleGAN2 callers need no special
        case.
        """
        if noise_mode not in ("random", "const", "none"):
            raise ValueError(f"noise_mode must be 'random', 'const' or 'none', got {noise_mode!r}")
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must be [B, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}")
        per_layer = ws.to(torch.float32).unbind(dim=1)
        x = self.input(per_layer[0])
        for name, w in zip(self.layer_names, per_layer[1:]):
            x = getattr(self, name)(x, w, force_fp32=force_fp32)
        if self.output_scale != 1:
            x = x * self.output_scale
        return x.to(torch.float32)


class Generator3(torch.nn.Module):
    """z [B, z_dim] -> image [B, img_channels, R, R] in about [-1, 1] (StyleGAN3-T or -R)."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, img_resolution: int,
                 img_channels: int, mapping_kwargs: dict | None = None,
                 **synthesis_kwargs: Any) -> None:
        super().__init__()
        mapping_kwargs = dict(mapping_kwargs or {})
        bad = set(mapping_kwargs) - _MAPPING_KWARGS
        if bad:
            raise ValueError(f"unsupported StyleGAN3 mapping_kwargs: {sorted(bad)}")
        self.init_kwargs: dict[str, Any] = plain(dict(
            z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution,
            img_channels=img_channels, mapping_kwargs=copy.deepcopy(mapping_kwargs),
            **copy.deepcopy(synthesis_kwargs)))
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork3(w_dim, img_resolution, img_channels, **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        mapping_kwargs.setdefault("num_layers", MAPPING_LAYERS)
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, self.num_ws, **mapping_kwargs)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, noise_mode: str = "const",
                generator: Any = None, force_fp32: bool = False) -> torch.Tensor:
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode, generator=generator, force_fp32=force_fp32)
