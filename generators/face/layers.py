"""StyleGAN2 building blocks in pure PyTorch (no custom CUDA plugins).

Parameter and buffer names follow stylegan2-ada-pytorch's `G_ema` state dict, so a user's
checkpoint loads with `strict=True`:

  FullyConnectedLayer: weight [out, in], bias [out]
  SynthesisLayer:      resample_filter [4, 4], affine.{weight, bias}, weight [O, I, k, k],
                       noise_const [res, res], noise_strength [], bias [O]
  ToRGBLayer:          affine.{weight, bias}, weight [C_img, I, 1, 1], bias [C_img]

Equations: Karras et al., "Analyzing and Improving the Image Quality of StyleGAN", CVPR 2020
(modulation eq. 1, demodulation eq. 3); equalized learning rate from Karras et al. 2018 (PGGAN).
"""

from __future__ import annotations

import math
from typing import Union

import torch
import torch.nn.functional as F

# Per-layer noise source: one CPU generator, one per batch row, or None (global RNG).
NoiseGenerator = Union[torch.Generator, list[torch.Generator], None]

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)  # keeps activations at unit variance after leaky ReLU


def setup_filter(taps: list[float] | tuple[float, ...] = (1, 3, 3, 1)) -> torch.Tensor:
    """Separable FIR low-pass filter as a normalised 2-D kernel [k, k] (sums to 1)."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def upfirdn2d(
    x: torch.Tensor,                         # [B, C, H, W]
    f: torch.Tensor | None,                  # [k] separable, [k, k] full, None = identity
    up: int = 1,
    down: int = 1,
    pad: tuple[int, int, int, int] = (0, 0, 0, 0),  # x0, x1, y0, y1 on the upsampled grid
    gain: float = 1.0,
) -> torch.Tensor:
    """Zero-insertion upsampling, padding (negative crops), FIR convolution, decimation.

    `gain` scales the 2-D response: a separable filter takes gain ** 0.5 on each axis.
    Output side: (in * up + pad0 + pad1 - (k - 1) + down - 1) // down.
    """
    b, c, h, w = x.shape
    if up > 1:
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(b, c, h * up, w * up)
    px0, px1, py0, py1 = pad
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0): x.shape[2] - max(-py1, 0), max(-px0, 0): x.shape[3] - max(-px1, 0)]
    if f is None:
        x = x * gain if gain != 1 else x
        return x[:, :, ::down, ::down] if down > 1 else x
    # Flipped taps make F.conv2d (a correlation) a true convolution; the designed filters are
    # symmetric, but a checkpoint's own buffers are used as they are. Decimation is the
    # convolution's stride: only the kept samples are computed, each with the same sum of
    # products (bit-identical to filtering everything and then keeping every down-th).
    k = (f * (gain ** (f.ndim / 2))).to(x.dtype).flip(list(range(f.ndim)))
    if f.ndim == 2:
        return F.conv2d(x, k[None, None].repeat(c, 1, 1, 1), groups=c, stride=down)
    x = F.conv2d(x, k[None, None, None, :].repeat(c, 1, 1, 1), groups=c, stride=(1, down))  # x
    return F.conv2d(x, k[None, None, :, None].repeat(c, 1, 1, 1), groups=c, stride=(down, 1))  # y


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """FIR upsampling of [B, C, H, W] to [B, C, up*H, up*W] (used on the RGB skip path)."""
    fw = f.shape[-1]
    p = ((fw + up - 1) // 2, (fw - up) // 2)
    return upfirdn2d(x, f, up=up, pad=(p[0], p[1], p[0], p[1]), gain=up * up)


def conv2d_resample(
    x: torch.Tensor,  # [B, I*groups, H, W]
    w: torch.Tensor,  # [O, I, k, k]
    f: torch.Tensor | None = None,
    up: int = 1,
    padding: int = 0,
    groups: int = 1,
    flip_weight: bool = True,  # True = correlation (what F.conv2d does)
) -> torch.Tensor:
    """Convolution with optional 2x upsampling: transposed conv then FIR filter.

    Reproduces the operation order of stylegan2-ada-pytorch so trained weights give the
    same images (the filter padding below is what keeps output = up * input size).
    """
    if up == 1:
        if not flip_weight:
            w = w.flip([2, 3])
        return F.conv2d(x, w, padding=padding, groups=groups)
    if f is None:
        raise ValueError("conv2d_resample needs a resample filter when up > 1")
    out_ch, in_per_group, kh, kw = w.shape
    fw = f.shape[-1]
    p0 = padding + (fw + up - 1) // 2 - (kw - 1)
    p1 = padding + (fw - up) // 2 - (kw - up)
    # Transposed convolution wants [I, O, k, k] per group.
    if groups == 1:
        wt = w.transpose(0, 1)
    else:
        wt = w.reshape(groups, out_ch // groups, in_per_group, kh, kw).transpose(1, 2)
        wt = wt.reshape(groups * in_per_group, out_ch // groups, kh, kw)
    pt = max(min(-p0, -p1), 0)
    if flip_weight:  # the transposed conv already flips; undo to keep the requested sense
        wt = wt.flip([2, 3])
    x = F.conv_transpose2d(x, wt, stride=up, padding=pt, groups=groups)
    return upfirdn2d(x, f, pad=(p0 + pt, p1 + pt, p0 + pt, p1 + pt), gain=up * up)


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None,
    lrelu: bool,
    gain: float,
    clamp: float | None,
) -> torch.Tensor:
    """x + b (on dim 1), then leaky ReLU (slope 0.2) if `lrelu`, times `gain`, clamped to ±clamp."""
    if b is not None:
        x = x + b.reshape([-1 if i == 1 else 1 for i in range(x.ndim)])
    if lrelu:
        x = F.leaky_relu(x, LRELU_SLOPE)
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def modulated_conv2d(
    x: torch.Tensor,  # [B, I, H, W]
    weight: torch.Tensor,  # [O, I, k, k]
    styles: torch.Tensor,  # [B, I]
    noise: torch.Tensor | None = None,  # broadcastable to [B, O, H', W']
    up: int = 1,
    padding: int = 0,
    resample_filter: torch.Tensor | None = None,
    demodulate: bool = True,
    flip_weight: bool = True,
    fused_modconv: bool = True,
) -> torch.Tensor:
    """Modulated (and demodulated) convolution, StyleGAN2 eq. 1-3. Returns [B, O, H', W']."""
    batch = x.shape[0]
    out_ch, in_ch, kh, kw = weight.shape
    if x.dtype == torch.float16 and demodulate:
        # Pre-normalise so fp16 products cannot overflow; demodulation cancels the scale.
        weight = weight * (1 / math.sqrt(in_ch * kh * kw)
                           / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)
    w = None
    dcoefs = None
    if demodulate or fused_modconv:
        w = weight.unsqueeze(0) * styles.reshape(batch, 1, -1, 1, 1)  # [B, O, I, k, k]
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # [B, O]
    if demodulate and fused_modconv:
        w = w * dcoefs.reshape(batch, -1, 1, 1, 1)

    # Noise is added as in NVIDIA's code, so that fp16 blocks round as the reference's do:
    # unfused, cast to x's dtype and fused with the demodulation into one addcmul (one
    # rounding); fused, added in place in fp32 and rounded once into x's dtype.
    if not fused_modconv:
        # Scale activations instead of weights: one shared conv, cheaper for fp16 batches.
        x = x * styles.to(x.dtype).reshape(batch, -1, 1, 1)
        x = conv2d_resample(x, weight.to(x.dtype), resample_filter, up=up, padding=padding,
                            flip_weight=flip_weight)
        if demodulate and noise is not None:
            return torch.addcmul(noise.to(x.dtype), x, dcoefs.to(x.dtype).reshape(batch, -1, 1, 1))
        if demodulate:
            return x * dcoefs.to(x.dtype).reshape(batch, -1, 1, 1)
        if noise is not None:
            return x.add_(noise.to(x.dtype))
        return x

    # Fused: one grouped convolution with a per-sample weight.
    x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, in_ch, kh, kw)
    x = conv2d_resample(x, w.to(x.dtype), resample_filter, up=up, padding=padding,
                        groups=batch, flip_weight=flip_weight)
    x = x.reshape(batch, -1, *x.shape[2:])
    if noise is not None:
        x = x.add_(noise)
    return x


class FullyConnectedLayer(torch.nn.Module):
    """Equalised-learning-rate linear layer: y = act(x @ (W * gain).T + b * lr_mul)."""

    def __init__(self, in_features: int, out_features: int, lrelu: bool = False,
                 lr_multiplier: float = 1.0, bias_init: float = 0.0) -> None:
        super().__init__()
        self.lrelu = lrelu
        self.weight = torch.nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = torch.nn.Parameter(torch.full([out_features], float(bias_init)))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, in] -> [B, out]."""
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias.to(x.dtype)
        if self.bias_gain != 1:
            b = b * self.bias_gain
        if not self.lrelu:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, lrelu=True, gain=LRELU_GAIN, clamp=None)


class SynthesisLayer(torch.nn.Module):
    """Modulated 3x3 conv (+ optional 2x upsampling), per-pixel noise, bias, leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int,
                 up: int = 1, conv_clamp: float | None = None, use_noise: bool = True,
                 kernel_size: int = 3) -> None:
        super().__init__()
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.conv_clamp = conv_clamp
        self.padding = kernel_size // 2
        self.register_buffer("resample_filter", setup_filter())
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(
            torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = torch.nn.Parameter(torch.zeros([]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "const",
                fused_modconv: bool = True, generator: NoiseGenerator = None,
                gain: float = 1.0) -> torch.Tensor:
        """x [B, I, r/up, r/up], w [B, w_dim] -> [B, O, r, r].

        noise_mode: "const" uses the stored noise_const buffer, "random" draws fresh noise
        from `generator` (one torch.Generator, or a list with one per batch row; drawn on
        the CPU, so the same seed gives the same noise on any device), "none" disables it.
        """
        styles = self.affine(w)
        noise = None
        if self.use_noise and noise_mode == "random":
            shape = [1, 1, self.resolution, self.resolution]
            if isinstance(generator, (list, tuple)):
                # One generator per batch row: a sample's noise does not depend on its batch.
                n = torch.cat([torch.randn(shape, generator=g) for g in generator])
            else:
                n = torch.randn([x.shape[0]] + shape[1:], generator=generator)
            noise = n.to(x.device) * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        elif noise_mode not in ("random", "const", "none"):
            raise ValueError(f"noise_mode must be 'random', 'const' or 'none', got {noise_mode!r}")
        x = modulated_conv2d(x, self.weight, styles, noise=noise, up=self.up,
                             padding=self.padding, resample_filter=self.resample_filter,
                             flip_weight=(self.up == 1), fused_modconv=fused_modconv)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias.to(x.dtype), lrelu=True, gain=LRELU_GAIN * gain, clamp=clamp)


class ToRGBLayer(torch.nn.Module):
    """Modulated 1x1 conv without demodulation: features [B, I, r, r] -> image [B, C, r, r]."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int,
                 conv_clamp: float | None = None) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, 1, 1]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused_modconv: bool = True) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused_modconv=fused_modconv)
        return bias_act(x, self.bias.to(x.dtype), lrelu=False, gain=1.0, clamp=self.conv_clamp)
