"""Map rosinality/stylegan2-pytorch `g_ema` state dicts onto stylegan2-ada-pytorch names.

rosinality's `Generator` (model.py) names, for log2 size L and n_mlp mapping layers:

  style.{1..n_mlp}.{weight, bias}            EqualLinear (style.0 is PixelNorm)  -> mapping.fc{i-1}
  input.input            [1, C, 4, 4]                                            -> b4.const [C, 4, 4]
  conv1.*  / to_rgb1.*                        4x4 StyledConv / ToRGB              -> b4.conv1 / b4.torgb
  convs.{2k}.*, convs.{2k+1}.*                upsampling + plain StyledConv       -> b{res}.conv0 / conv1
  to_rgbs.{k}.*                                                                   -> b{res}.torgb
  StyledConv: conv.weight [1, O, I, 3, 3], conv.modulation.{weight, bias}, noise.weight [1],
              activate.bias [O]
  ToRGB:      conv.weight [1, 3, I, 1, 1], conv.modulation.{weight, bias}, bias [1, 3, 1, 1]
  noises.noise_{j} [1, 1, r, r]  (j = 0 for conv1, 2k+1 / 2k+2 for convs)        -> noise_const
  checkpoint["latent_avg"] [w_dim]                                                -> mapping.w_avg

The two codebases compute the same functions with these weights: both scale the modulation by
1/sqrt(fan_in) (demodulation cancels it), upsample with a transposed conv followed by the
[1, 3, 3, 1] blur with the same padding, and add noise before bias + leaky ReLU * sqrt(2).
rosinality's generator has no output clamp, so conv_clamp is None. `resample_filter` buffers
are not in rosinality's dict; they are constants and are filled from our module. Its own
constants, `convs.{2k}.conv.blur.kernel` and `to_rgbs.{k}.upsample.kernel`, have to be the
[1, 3, 3, 1] filter our blocks resample with (`BLUR_KERNEL`), and are checked, then dropped.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch

from generators.face.errors import CheckpointError

# rosinality's make_kernel([1, 3, 3, 1]) (outer product over its sum, 64) times factor**2 = 4:
# what its Blur(upsample_factor=2) and Upsample(factor=2) register as `kernel` for 2x upsampling.
BLUR_KERNEL = torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64 * 4


def _check_blur_kernel(name: str, kernel: torch.Tensor) -> None:
    # The entries are dyadic (1/16, 3/16, 9/16), exact in any float format torch saves.
    if not (isinstance(kernel, torch.Tensor) and kernel.shape == BLUR_KERNEL.shape
            and kernel.is_floating_point()
            and torch.equal(kernel.detach().to(torch.float64), BLUR_KERNEL.to(torch.float64))):
        raise CheckpointError(
            f"its {name} is not the [1, 3, 3, 1] upsampling filter (outer product / 64 x 4) that "
            f"StyleGAN2 resamples with, so this code would draw other images than rosinality's; "
            f"only generators with the standard blur kernel are supported.")


def _layer_names(size_log2: int) -> list[tuple[str, str]]:
    """[(rosinality StyledConv prefix, ada prefix)] for every synthesis conv."""
    pairs = [("conv1", "synthesis.b4.conv1")]
    for k in range(size_log2 - 2):
        res = 2 ** (k + 3)
        pairs.append((f"convs.{2 * k}", f"synthesis.b{res}.conv0"))
        pairs.append((f"convs.{2 * k + 1}", f"synthesis.b{res}.conv1"))
    return pairs


def _rgb_names(size_log2: int) -> list[tuple[str, str]]:
    pairs = [("to_rgb1", "synthesis.b4.torgb")]
    for k in range(size_log2 - 2):
        pairs.append((f"to_rgbs.{k}", f"synthesis.b{2 ** (k + 3)}.torgb"))
    return pairs


def infer_rosinality_kwargs(g_ema: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Generator init kwargs (ada names) that reproduce the shapes of a rosinality g_ema."""
    mlp = sorted(int(m.group(1)) for k in g_ema if (m := re.fullmatch(r"style\.(\d+)\.weight", k)))
    if not mlp or "input.input" not in g_ema or "conv1.conv.weight" not in g_ema:
        raise CheckpointError("its g_ema lacks rosinality's style.*, input.input or conv1.* "
                              "entries, so it is not a rosinality/stylegan2-pytorch generator.")
    n_convs = len({m.group(1) for k in g_ema if (m := re.fullmatch(r"convs\.(\d+)\..*", k))})
    size_log2 = 2 + n_convs // 2
    w_dim = g_ema[f"style.{mlp[-1]}.weight"].shape[0]
    z_dim = g_ema["style.1.weight"].shape[1]
    channels = {4: g_ema["input.input"].shape[1]}
    for k in range(size_log2 - 2):
        channels[2 ** (k + 3)] = g_ema[f"convs.{2 * k}.conv.weight"].shape[1]
    # channels[res] = min(channel_base // res, channel_max): take the max from the coarsest
    # level and the base from the finest, then check every level.
    res_max = 2 ** size_log2
    channel_max = max(channels.values())
    channel_base = channels[res_max] * res_max
    if any(min(channel_base // r, channel_max) != c for r, c in channels.items()):
        raise CheckpointError(f"its rosinality channel widths {channels} do not follow "
                              f"min(base / resolution, max), so this generator cannot be rebuilt.")
    return dict(z_dim=int(z_dim), c_dim=0, w_dim=int(w_dim), img_resolution=int(res_max),
                img_channels=int(g_ema["to_rgb1.conv.weight"].shape[1]),
                mapping_kwargs=dict(num_layers=len(mlp)),
                synthesis_kwargs=dict(channel_base=int(channel_base), channel_max=int(channel_max),
                                      num_fp16_res=0, conv_clamp=None))


def rosinality_to_ada(g_ema: dict[str, torch.Tensor], latent_avg: torch.Tensor | None,
                      size_log2: int) -> dict[str, torch.Tensor]:
    """Rename (and reshape) a rosinality g_ema state dict to stylegan2-ada-pytorch names."""
    src = dict(g_ema)
    out: dict[str, torch.Tensor] = {}

    def take(name: str) -> torch.Tensor:
        try:
            return src.pop(name)
        except KeyError:
            raise CheckpointError(f"its rosinality state dict lacks '{name}'; export the "
                                  f"generator again.") from None

    n_mlp = len([k for k in src if re.fullmatch(r"style\.\d+\.weight", k)])
    for i in range(1, n_mlp + 1):
        out[f"mapping.fc{i - 1}.weight"] = take(f"style.{i}.weight")
        out[f"mapping.fc{i - 1}.bias"] = take(f"style.{i}.bias")
    out["synthesis.b4.const"] = take("input.input")[0]
    for j, (ros, ada) in enumerate(_layer_names(size_log2)):
        out[f"{ada}.weight"] = take(f"{ros}.conv.weight")[0]
        out[f"{ada}.affine.weight"] = take(f"{ros}.conv.modulation.weight")
        out[f"{ada}.affine.bias"] = take(f"{ros}.conv.modulation.bias")
        out[f"{ada}.noise_strength"] = take(f"{ros}.noise.weight").reshape([])
        out[f"{ada}.bias"] = take(f"{ros}.activate.bias")
        out[f"{ada}.noise_const"] = take(f"noises.noise_{j}")[0, 0]
        if ada.endswith(".conv0") and f"{ros}.conv.blur.kernel" in src:  # upsampling convs only
            _check_blur_kernel(f"{ros}.conv.blur.kernel", src.pop(f"{ros}.conv.blur.kernel"))
    for ros, ada in _rgb_names(size_log2):
        out[f"{ada}.weight"] = take(f"{ros}.conv.weight")[0]
        out[f"{ada}.affine.weight"] = take(f"{ros}.conv.modulation.weight")
        out[f"{ada}.affine.bias"] = take(f"{ros}.conv.modulation.bias")
        out[f"{ada}.bias"] = take(f"{ros}.bias").reshape(-1)
        if ros != "to_rgb1" and f"{ros}.upsample.kernel" in src:  # to_rgb1 does not upsample
            _check_blur_kernel(f"{ros}.upsample.kernel", src.pop(f"{ros}.upsample.kernel"))
    leftovers = list(src)
    if leftovers:
        raise CheckpointError(f"its rosinality state dict has entries this generator does not "
                              f"know ({leftovers[:5]}), so it is not a StyleGAN2 g_ema this code "
                              f"can rebuild.")
    w_dim = out["mapping.fc0.weight"].shape[0]
    out["mapping.w_avg"] = (latent_avg.reshape(-1) if latent_avg is not None
                            else torch.zeros([w_dim]))
    return out


def ada_to_rosinality(state: dict[str, torch.Tensor], img_resolution: int) -> dict[str, Any]:
    """Inverse map (ada names -> rosinality `{"g_ema": ..., "latent_avg": ...}`) for exports."""
    size_log2 = int(math.log2(img_resolution))
    g: dict[str, torch.Tensor] = {}
    n_mlp = len([k for k in state if re.fullmatch(r"mapping\.fc\d+\.weight", k)])
    for i in range(n_mlp):
        g[f"style.{i + 1}.weight"] = state[f"mapping.fc{i}.weight"]
        g[f"style.{i + 1}.bias"] = state[f"mapping.fc{i}.bias"]
    g["input.input"] = state["synthesis.b4.const"][None]
    for j, (ros, ada) in enumerate(_layer_names(size_log2)):
        g[f"{ros}.conv.weight"] = state[f"{ada}.weight"][None]
        g[f"{ros}.conv.modulation.weight"] = state[f"{ada}.affine.weight"]
        g[f"{ros}.conv.modulation.bias"] = state[f"{ada}.affine.bias"]
        g[f"{ros}.noise.weight"] = state[f"{ada}.noise_strength"].reshape(1)
        g[f"{ros}.activate.bias"] = state[f"{ada}.bias"]
        g[f"noises.noise_{j}"] = state[f"{ada}.noise_const"][None, None]
        if ada.endswith(".conv0"):
            g[f"{ros}.conv.blur.kernel"] = BLUR_KERNEL.clone()
    for ros, ada in _rgb_names(size_log2):
        g[f"{ros}.conv.weight"] = state[f"{ada}.weight"][None]
        g[f"{ros}.conv.modulation.weight"] = state[f"{ada}.affine.weight"]
        g[f"{ros}.conv.modulation.bias"] = state[f"{ada}.affine.bias"]
        g[f"{ros}.bias"] = state[f"{ada}.bias"].reshape(1, -1, 1, 1)
        if ros != "to_rgb1":
            g[f"{ros}.upsample.kernel"] = BLUR_KERNEL.clone()
    return {"g_ema": g, "latent_avg": state["mapping.w_avg"]}
