"""The StyleGAN2 generator (`G_ema`): mapping + synthesis, built from stored init kwargs.

`Generator(**init_kwargs)` accepts the keyword arguments either StyleGAN2 codebase stores in its
pickles (`G_ema._init_kwargs`): z_dim, c_dim, w_dim, img_resolution, img_channels,
mapping_kwargs (num_layers, ...) and the synthesis arguments (channel_base, channel_max,
num_fp16_res, conv_clamp, ...), nested under synthesis_kwargs as stylegan2-ada-pytorch stores
them or at the top level as the stylegan3 repository's StyleGAN2 (and its legacy.py) does; see
`nested_init_kwargs`. Its state dict has the same names and shapes as `G_ema.state_dict()`.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from generators.face.layers import NoiseGenerator
from generators.face.mapping import MappingNetwork
from generators.face.synthesis import SynthesisNetwork

# Keyword arguments that only change training behaviour or memory layout, not the weights
# or the images of an eval-mode generator; accepted and ignored.
_IGNORED_SYNTHESIS_KWARGS = {"fp16_channels_last", "channels_last"}
_IGNORED_TOP_KWARGS = {"epochs"}
_MAPPING_KWARGS = {"num_layers", "embed_features", "layer_features", "activation",
                   "lr_multiplier", "w_avg_beta"}
_SYNTHESIS_KWARGS = {"channel_base", "channel_max", "num_fp16_res", "conv_clamp", "architecture",
                     "use_noise", "activation", "fused_modconv_default"}
# Everything the stylegan3 repository's networks_stylegan2.Generator passes on to its synthesis
# network from its top-level keywords.
_TOP_LEVEL_SYNTHESIS_KWARGS = _SYNTHESIS_KWARGS | _IGNORED_SYNTHESIS_KWARGS | {"resample_filter"}
# That code's defaults where they differ from stylegan2-ada-pytorch's (num_fp16_res=0,
# conv_clamp=None, and a modulated conv fused only in fp32 or for one sample).
STYLEGAN3_SYNTHESIS_DEFAULTS = {"num_fp16_res": 4, "conv_clamp": 256, "fused_modconv_default": True}


def nested_init_kwargs(init_kwargs: dict[str, Any], stylegan3: bool = False) -> dict[str, Any]:
    """Init kwargs of either StyleGAN2 layout in stylegan2-ada-pytorch's: synthesis arguments
    under `synthesis_kwargs`, and for the stylegan3 repository's layout its defaults written out.

    The stylegan3 layout is recognised by synthesis arguments at the top level; `stylegan3=True`
    says the kwargs come from that code even when none is there to show it (a caller who knows
    where they come from, e.g. from the pickled modules). Raises ValueError for kwargs that mix
    the two layouts.
    """
    kwargs = dict(init_kwargs)
    flat = {k: kwargs.pop(k) for k in list(kwargs) if k in _TOP_LEVEL_SYNTHESIS_KWARGS}
    if "synthesis_kwargs" in kwargs:
        if flat:
            raise ValueError(f"synthesis arguments both in synthesis_kwargs and at the top level "
                             f"({sorted(flat)})")
        return kwargs
    if flat or stylegan3:
        kwargs["synthesis_kwargs"] = {**STYLEGAN3_SYNTHESIS_DEFAULTS, **flat}
    return kwargs


def plain(value: Any) -> Any:
    """EasyDict-like mappings, tuples and numpy scalars -> JSON-able dicts, lists, numbers
    (what `init_kwargs` holds, so that save_generator can write it as JSON)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


class Generator(torch.nn.Module):
    """z [B, z_dim] -> image [B, img_channels, R, R] in about [-1, 1]."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, img_resolution: int,
                 img_channels: int, mapping_kwargs: dict | None = None,
                 synthesis_kwargs: dict | None = None, **extra: Any) -> None:
        """`extra`: the stylegan3 layout's top-level synthesis arguments (see
        nested_init_kwargs), or keywords that do not change the images (epochs)."""
        super().__init__()
        if synthesis_kwargs is not None:
            extra["synthesis_kwargs"] = synthesis_kwargs
        extra = nested_init_kwargs(extra)
        synthesis_kwargs = extra.pop("synthesis_kwargs", None)
        unknown = set(extra) - _IGNORED_TOP_KWARGS
        if unknown:
            raise ValueError(f"unsupported generator arguments: {sorted(unknown)}")
        mapping_kwargs = dict(mapping_kwargs or {})
        synthesis_kwargs = dict(synthesis_kwargs or {})
        bad = set(mapping_kwargs) - _MAPPING_KWARGS
        if bad:
            raise ValueError(f"unsupported mapping_kwargs: {sorted(bad)}")
        filt = synthesis_kwargs.pop("resample_filter", [1, 3, 3, 1])
        if list(filt) != [1, 3, 3, 1]:
            raise ValueError(f"only the [1, 3, 3, 1] resample filter is supported, got {filt}")
        for key in _IGNORED_SYNTHESIS_KWARGS:
            synthesis_kwargs.pop(key, None)
        bad = set(synthesis_kwargs) - _SYNTHESIS_KWARGS
        if bad:
            raise ValueError(f"unsupported synthesis_kwargs: {sorted(bad)}")
        self.init_kwargs: dict[str, Any] = plain(dict(
            z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution,
            img_channels=img_channels, mapping_kwargs=copy.deepcopy(mapping_kwargs),
            synthesis_kwargs=copy.deepcopy(synthesis_kwargs)))
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, self.num_ws, **mapping_kwargs)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, noise_mode: str = "const",
                generator: NoiseGenerator = None, force_fp32: bool = False,
                fp16_on_cpu: bool = False) -> torch.Tensor:
        """fp16 blocks (num_fp16_res) run in half precision on CUDA unless force_fp32 (and on
        the CPU too with fp16_on_cpu, see SynthesisNetwork.forward)."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode, generator=generator, force_fp32=force_fp32,
                              fp16_on_cpu=fp16_on_cpu)


def latents_from_rng(rng: np.random.Generator, z_dim: int, count: int = 1) -> np.ndarray:
    """Standard-normal z latents [count, z_dim] float32 drawn from a numpy Generator.

    numpy (not torch) draws them so that an identity's latent depends only on its seed,
    never on the device or the torch version.
    """
    return rng.standard_normal((count, z_dim)).astype(np.float32)


def images_to_uint8(img: torch.Tensor) -> np.ndarray:
    """img [B, C, H, W] in [-1, 1] -> uint8 [B, H, W, C] (RGB), as StyleGAN's own scripts do."""
    x = (img.detach().to(torch.float32) * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """`device` if given, else CUDA when present, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
