"""Synthesis network ws -> image (StyleGAN2 "skip" architecture), names as in `G_ema.synthesis`.

One block per resolution 4, 8, ..., img_resolution (`b4`, `b8`, ...). Block b4 holds the
learned constant input `const` [C, 4, 4]; every other block upsamples with `conv0` (FIR
filter [1, 3, 3, 1]) and refines with `conv1`; each block's `torgb` output is added to the
upsampled RGB image of the block below (skip connections, StyleGAN2 fig. 7b).
"""

from __future__ import annotations

import math

import torch

from generators.face.layers import (NoiseGenerator, SynthesisLayer, ToRGBLayer, setup_filter,
                                    upsample2d)


def channels_per_resolution(img_resolution: int, channel_base: int, channel_max: int) -> dict[int, int]:
    """{resolution: channels} as stylegan2-ada-pytorch computes it: min(base // res, max)."""
    log2 = int(math.log2(img_resolution))
    return {2 ** i: min(channel_base // 2 ** i, channel_max) for i in range(2, log2 + 1)}


def _fused_modconv_default(value: bool | str | None) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if value == "inference_only":  # fused when not training, and this code never trains
        return True
    raise ValueError(f"fused_modconv_default must be True, False or 'inference_only', "
                     f"got {value!r}")


class SynthesisBlock(torch.nn.Module):
    """One resolution level: (const | 2x up conv0) -> conv1 -> torgb, plus the RGB skip."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int,
                 img_channels: int, use_fp16: bool = False, conv_clamp: float | None = None,
                 use_noise: bool = True, fused_modconv_default: bool | str | None = None) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.use_fp16 = use_fp16
        self.fused_modconv_default = _fused_modconv_default(fused_modconv_default)
        self.register_buffer("resample_filter", setup_filter())
        self.num_conv = 1 if in_channels == 0 else 2
        self.num_torgb = 1
        if in_channels == 0:
            self.const = torch.nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2,
                                        conv_clamp=conv_clamp, use_noise=use_noise)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution,
                                    conv_clamp=conv_clamp, use_noise=use_noise)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor,
                force_fp32: bool = False, noise_mode: str = "const",
                generator: NoiseGenerator = None) -> tuple[torch.Tensor, torch.Tensor]:
        """ws [B, num_conv + 1, w_dim]; x [B, I, r/2, r/2] or None; img [B, C, r/2, r/2] or None."""
        dtype = torch.float16 if self.use_fp16 and not force_fp32 else torch.float32
        # The two codebases choose differently, and fp16 results round as the choice does.
        if self.fused_modconv_default is None:
            # stylegan2-ada-pytorch: the grouped conv in fp32 or for one sample; scaling the
            # activations instead for fp16 batches.
            fused = dtype == torch.float32 or ws.shape[0] == 1
        else:
            fused = self.fused_modconv_default  # the stylegan3 repository's fixed choice
        w_iter = iter(ws.unbind(dim=1))
        kw = dict(fused_modconv=fused, noise_mode=noise_mode, generator=generator)
        if self.in_channels == 0:
            x = self.const.to(dtype).unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
            x = self.conv1(x, next(w_iter), **kw)
        else:
            x = x.to(dtype)
            x = self.conv0(x, next(w_iter), **kw)
            x = self.conv1(x, next(w_iter), **kw)
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        y = self.torgb(x, next(w_iter), fused_modconv=fused).to(torch.float32)
        img = img + y if img is not None else y
        return x, img


class SynthesisNetwork(torch.nn.Module):
    """ws [B, num_ws, w_dim] -> image [B, img_channels, R, R] (float32, roughly in [-1, 1])."""

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int,
                 channel_base: int = 32768, channel_max: int = 512, num_fp16_res: int = 0,
                 conv_clamp: float | None = None, architecture: str = "skip",
                 use_noise: bool = True, activation: str = "lrelu",
                 fused_modconv_default: bool | str | None = None) -> None:
        """fused_modconv_default: None = stylegan2-ada-pytorch's choice of modulated conv
        (fused in fp32 or for one sample); True, False or 'inference_only' (= True here, an
        inference-only implementation) = the stylegan3 repository's networks_stylegan2 argument."""
        super().__init__()
        _fused_modconv_default(fused_modconv_default)  # refuse a bad value before building
        if img_resolution < 4 or img_resolution & (img_resolution - 1):
            raise ValueError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
        if architecture != "skip":
            raise ValueError(f"synthesis architecture {architecture!r} is not supported (only 'skip')")
        if activation != "lrelu":
            raise ValueError(f"synthesis activation {activation!r} is not supported (only 'lrelu')")
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        log2 = int(math.log2(img_resolution))
        self.block_resolutions = [2 ** i for i in range(2, log2 + 1)]
        channels = channels_per_resolution(img_resolution, channel_base, channel_max)
        fp16_resolution = max(2 ** (log2 + 1 - num_fp16_res), 8)
        self.num_ws = 0
        for res in self.block_resolutions:
            block = SynthesisBlock(channels[res // 2] if res > 4 else 0, channels[res], w_dim, res,
                                   img_channels, use_fp16=res >= fp16_resolution,
                                   conv_clamp=conv_clamp, use_noise=use_noise,
                                   fused_modconv_default=fused_modconv_default)
            # Consecutive blocks share one w: torgb of block k uses the w of conv0 of block k+1.
            self.num_ws += block.num_conv
            setattr(self, f"b{res}", block)
        self.num_ws += 1  # the last block's torgb

    def forward(self, ws: torch.Tensor, noise_mode: str = "const", force_fp32: bool = False,
                generator: NoiseGenerator = None, fp16_on_cpu: bool = False) -> torch.Tensor:
        """ws [B, num_ws, w_dim] -> image [B, C, R, R] float32.

        fp16_on_cpu: run the fp16 blocks in half precision on the CPU as well, as
        stylegan2-ada-pytorch does (the stylegan3 repository's code does not); slow, for
        comparing fp16 results without a GPU.
        """
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(f"ws must be [B, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}")
        ws = ws.to(torch.float32)
        # fp16 is a CUDA speed option; CPU half convolutions are slow and imprecise.
        force_fp32 = force_fp32 or (ws.device.type != "cuda" and not fp16_on_cpu)
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            cur = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            w_idx += block.num_conv
            x, img = block(x, img, cur, force_fp32=force_fp32, noise_mode=noise_mode,
                           generator=generator)
        return img
