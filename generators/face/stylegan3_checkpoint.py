"""Tell StyleGAN3 snapshots from StyleGAN2 ones and build `Generator3` from them safely.

Both kinds pickle their generator as class 'Generator'; what differs is the state (a StyleGAN3
synthesis network starts with the Fourier-feature `synthesis.input`, a StyleGAN2 one with the
constant `synthesis.b4.const`) and the arguments (only StyleGAN3 has `magnitude_ema_beta`,
`num_critical`, `conv_kernel`, ...). Reading goes through
`checkpoint_nvidia.read_nvidia_pickle`, which runs no code from the file; this module only
sizes, builds and fills the network (`strict=True`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from generators.face.checkpoint import load_strict
from generators.face.checkpoint_limits import ReadLimits, refuse_network_size
from generators.face.checkpoint_nvidia import read_nvidia_pickle
from generators.face.errors import CheckpointError
from generators.face.stylegan3 import (
    LAYER_DEFAULTS, MAPPING_LAYERS, SYNTHESIS_DEFAULTS, Generator3, plan_layers)

# Arguments that only stylegan3's networks_stylegan3.Generator takes (train.py always stores
# magnitude_ema_beta for -T and -R).
STYLEGAN3_ONLY_KWARGS = frozenset({
    "num_critical", "first_cutoff", "first_stopband", "last_stopband_rel", "margin_size",
    "output_scale", "conv_kernel", "filter_size", "lrelu_upsampling", "use_radial_filters",
    "magnitude_ema_beta"})
STYLEGAN3_STATE_KEYS = ("synthesis.input.freqs", "synthesis.input.transform")


def is_stylegan3(init_kwargs: dict[str, Any], state: dict[str, torch.Tensor] | None = None) -> bool:
    """True for a StyleGAN3 (-T or -R) generator: by its state's keys when given, otherwise
    by its arguments (synthesis arguments at the top level, one of StyleGAN3's own)."""
    if state:
        return any(key in state for key in STYLEGAN3_STATE_KEYS)
    return ("synthesis_kwargs" not in init_kwargs
            and any(key in init_kwargs for key in STYLEGAN3_ONLY_KWARGS))


def stylegan3_nbytes(init_kwargs: dict[str, Any]) -> int | None:
    """float32 bytes of Generator3(**init_kwargs)'s parameters and buffers, computed from the
    layer plan without building anything; None when the arguments are malformed (the
    constructor then refuses them itself)."""
    try:
        kw = dict(init_kwargs)
        z, c, w = (int(kw.pop(k)) for k in ("z_dim", "c_dim", "w_dim"))
        res, rgb = int(kw.pop("img_resolution")), int(kw.pop("img_channels"))
        mapping = dict(kw.pop("mapping_kwargs", None) or {})
        synth = {**SYNTHESIS_DEFAULTS, **{k: v for k, v in kw.items() if k in SYNTHESIS_DEFAULTS}}
        layer = {**LAYER_DEFAULTS, **{k: v for k, v in kw.items() if k in LAYER_DEFAULTS}}
        synth.pop("output_scale")
        depth = int(mapping.get("num_layers", MAPPING_LAYERS))
        if min(z, c, w, depth) < 0:
            return None
        n = (z + (w if c else 0) + 1) * w + (depth - 1) * (w + 1) * w + w
        n += (c + 1) * w if c else 0
        plans = plan_layers(res, rgb, **synth)
        ch = plans[0].out_channels
        n += ch * ch + 4 * (w + 1) + 9 + 3 * ch
        kernel, taps, ratio = (int(layer[k]) for k in ("conv_kernel", "filter_size",
                                                       "lrelu_upsampling"))
        for p in plans[1:]:
            k = 1 if p.is_torgb else kernel
            tmp = max(p.in_rate, p.out_rate) * (1 if p.is_torgb else ratio)
            up, down = tmp // p.in_rate, tmp // p.out_rate
            radial = bool(layer["use_radial_filters"]) and not p.is_critical
            n += p.out_channels * p.in_channels * k * k + p.out_channels + 1
            n += (w + 1) * p.in_channels
            if not p.is_torgb:
                n += taps * up if up > 1 else 0
                n += ((taps * down) ** (2 if radial else 1)) if down > 1 else 0
        return 4 * n
    except (TypeError, ValueError, KeyError, AttributeError, ArithmeticError):
        return None


def build_stylegan3(init_kwargs: dict[str, Any], state: dict[str, torch.Tensor],
                    source: Any = "the checkpoint", limits: ReadLimits = ReadLimits(),
                    ) -> Generator3:
    """Generator3(**init_kwargs) with `state` loaded (strict), eval mode, no grad.

    The arguments come from the file, and a few bytes can describe a network of any width:
    one that the limit or the file's own weights cannot pay for is refused before it is built.
    Raises CheckpointError (one sentence naming `source`).
    """
    refuse_network_size(source, stylegan3_nbytes(init_kwargs), state, limits, "StyleGAN3 generator",
                        "a 1024x1024 StyleGAN3 generator is ~90 MB")
    try:
        model = Generator3(**init_kwargs)
    except (TypeError, ValueError, ArithmeticError, RuntimeError) as exc:
        detail = " ".join(str(exc).split())[:300]
        raise CheckpointError(
            f"{source} describes a StyleGAN3 generator this code cannot build: {detail}.") from None
    problem = _mismatch(model.state_dict(), state)
    if problem:
        raise CheckpointError(f"{source} does not match the StyleGAN3 architecture its arguments "
                              f"describe ({problem}); export the generator again.")
    return load_strict(model, state, source, "StyleGAN3")


def _mismatch(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> str:
    """'' when `state` has exactly the expected names and shapes, else a short summary."""
    def some(names: list[str]) -> str:
        return ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {list(state[k].shape)} instead of {list(expected[k].shape)}"
              for k in expected if k in state and isinstance(state[k], torch.Tensor)
              and state[k].shape != expected[k].shape]
    parts = [f"{len(missing)} missing: {some(missing)}" if missing else "",
             f"{len(unexpected)} unexpected: {some(unexpected)}" if unexpected else "",
             f"{len(shapes)} of another shape: {some(shapes)}" if shapes else ""]
    return "; ".join(p for p in parts if p)


def read_stylegan3(path: str | Path, limits: ReadLimits = ReadLimits()) -> Generator3:
    """The StyleGAN3 `G_ema` of an NVIDIA snapshot `.pkl`, read without running its code."""
    path = Path(path)
    init_kwargs, state = read_nvidia_pickle(path, limits=limits)
    if not is_stylegan3(init_kwargs, state):
        raise CheckpointError(
            f"{path} holds a StyleGAN2 generator, not a StyleGAN3 one; load it with "
            f"generators.face.load_generator.")
    return build_stylegan3(init_kwargs, state, path, limits)
