"""Load a face generator from a user's checkpoint, never executing code from the file.

Formats (chosen by content, not by trust):
  * NVIDIA snapshot `.pkl` (stylegan2-ada-pytorch, or the stylegan3 repository's StyleGAN2 and
    its legacy.py conversions)                          -> restricted unpickler (checkpoint_nvidia)
  * rosinality/stylegan2-pytorch `.pt` with `g_ema`    -> torch.load(weights_only=True) + name map
  * biomint's own: `<name>.pt` (torch.save of a flat {name: tensor} dict) next to
    `<name>.json` {"format": "biomint-stylegan2", "version": 1, "init_kwargs": {...}}
All end in `_build`: `Generator(**init_kwargs).load_state_dict(state, strict=True)`.

Reading is bounded by `ReadLimits` (MAX_CHECKPOINT_BYTES, MAX_TENSORS, MAX_COMPRESSION_RATIO):
file size, zip entries, declared storages and tensor shapes, and the size of the network the
arguments describe are checked before anything that large is allocated.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

# The limits are re-exported for the loader's users.
from generators.face.checkpoint_limits import (  # noqa: F401
    MAX_CHECKPOINT_BYTES, MAX_COMPRESSION_RATIO, MAX_TENSORS, ReadLimits, check_torch_stream, error_reason,
    human_bytes, refuse_network_size)
from generators.face.checkpoint_nvidia import read_nvidia_network, read_nvidia_pickle  # noqa: F401
from generators.face.checkpoint_rosinality import infer_rosinality_kwargs, rosinality_to_ada
from generators.face.errors import CheckpointError
from generators.face.generator import Generator, nested_init_kwargs
from generators.face.synthesis import channels_per_resolution

OWN_FORMAT = "biomint-stylegan2"
OWN_VERSION = 1


def checkpoint_sha256(path: str | Path) -> str:
    """Hex SHA-256 of the checkpoint file (boundaries and manifests record it)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_generator(model: Generator, path: str | Path) -> tuple[Path, Path]:
    """Write biomint's own format: `path` (.pt, tensors only) + `path.with_suffix('.json')`."""
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, path)
    meta = path.with_suffix(".json")
    meta.write_text(json.dumps({"format": OWN_FORMAT, "version": OWN_VERSION,
                                "init_kwargs": model.init_kwargs}, indent=2, sort_keys=True))
    return path, meta


def _torch_load_safely(path: Path, limits: ReadLimits) -> Any:
    with open(path, "rb") as fh:
        check_torch_stream(fh, path.stat().st_size, path, limits)
    try:
        # rosinality's train.py stores its argparse.Namespace under "args": a plain attribute
        # bag, safe to allow; everything else must be tensors and containers.
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise CheckpointError(f"Refusing to load {path}: it is not a tensors-only PyTorch file "
                              f"({error_reason(exc)}).") from None


def _generator_nbytes(init_kwargs: dict[str, Any]) -> int | None:
    """Upper bound on the float32 parameters and buffers of Generator(**init_kwargs); None when
    the arguments are too malformed to tell (Generator then refuses them itself)."""
    try:
        init_kwargs = nested_init_kwargs(init_kwargs)
        m = dict(init_kwargs.get("mapping_kwargs") or {})
        s = dict(init_kwargs.get("synthesis_kwargs") or {})
        w, rgb, res_max = (int(init_kwargs[k]) for k in ("w_dim", "img_channels", "img_resolution"))
        z, c = int(init_kwargs["z_dim"]), int(init_kwargs["c_dim"])
        widest = max(z + w + c, int(m.get("layer_features") or w),
                     int(m.get("embed_features") or w))
        n = (int(m.get("num_layers", 8)) + 1) * (widest + 1) * widest
        if res_max < 4:
            return None
        ch = channels_per_resolution(res_max, int(s.get("channel_base", 32768)),
                                     int(s.get("channel_max", 512)))
        for res, out in ch.items():
            inp = ch.get(res // 2, 0)
            n += 9 * out * (inp + out) + (w + 1) * (inp + 2 * out + 1) + rgb * (out + 1) \
                + 16 * out + 2 * res * res + 64
        return 4 * n
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError):
        return None


# What only a StyleGAN3 (-T, -R) generator holds: its Fourier-feature input, or arguments the
# stylegan3 repository's train.py always stores for those configs.
_STYLEGAN3_STATE_KEYS = ("synthesis.input.freqs", "synthesis.input.transform")
_STYLEGAN3_KWARGS = ("magnitude_ema_beta", "conv_kernel", "use_radial_filters", "num_critical")


def _build(init_kwargs: dict[str, Any], state: dict[str, torch.Tensor], path: Path,
           limits: ReadLimits, attributes: dict[str, dict[str, Any]] | None = None) -> Generator:
    """The network the file holds, filled with `state` (strict), in eval mode.

    This is the one place where the architecture is chosen from the file's arguments and
    weights, so a further network (StyleGAN3) is routed here. `attributes`: what the pickled
    modules recorded (checkpoint_nvidia.RECORDED_ATTRIBUTES), checked against the result.
    """
    if (any(k in state for k in _STYLEGAN3_STATE_KEYS)
            or any(k in init_kwargs for k in _STYLEGAN3_KWARGS)):
        from generators.face.stylegan3_checkpoint import build_stylegan3

        return build_stylegan3(init_kwargs, state, path, limits)
    if attributes and "synthesis_kwargs" not in init_kwargs and any(
            a.get("fused_modconv_default") is not None for a in attributes.values()):
        # Modules that record fused_modconv_default are the stylegan3 repository's
        # networks_stylegan2, whose defaults apply even when no synthesis argument was given.
        init_kwargs = nested_init_kwargs(init_kwargs, stylegan3=True)
    model = _build_stylegan2(init_kwargs, state, path, limits)
    if attributes:
        _check_recorded(model, attributes, path)
    return model


def _build_stylegan2(init_kwargs: dict[str, Any], state: dict[str, torch.Tensor], path: Path,
                     limits: ReadLimits) -> Generator:
    refuse_network_size(path, _generator_nbytes(init_kwargs), state, limits, "generator",
                        "a 1024x1024 StyleGAN2 generator is ~130 MB")
    try:
        model = Generator(**init_kwargs)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} describes a generator this code cannot build: "
                              f"{error_reason(exc)}.") from None
    # resample_filter buffers are constants; formats that omit them get ours.
    for name, value in model.state_dict().items():
        if name.endswith("resample_filter") and name not in state:
            state[name] = value
    return load_strict(model, state, path, "StyleGAN2")


def load_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: Any,
                architecture: str) -> torch.nn.Module:
    """`model` with `state` loaded (strict), in eval mode without grad; CheckpointError (one
    sentence naming `source`) when the names or shapes differ."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise CheckpointError(f"{source} does not match the {architecture} architecture its arguments "
                              f"describe ({detail}); export the generator again.") from None
    return model.eval().requires_grad_(False)


def _comparable(name: str, value: Any) -> Any:
    if name == "fused_modconv_default" and value == "inference_only":
        return True  # fused whenever not training
    if name == "conv_clamp" and value is not None:
        return float(value)
    return value


def _check_recorded(model: torch.nn.Module, attributes: dict[str, dict[str, Any]],
                    path: Path) -> None:
    """Refuse a network whose arguments build something other than what its pickled modules
    were (e.g. defaults of another code version), since it would draw other images."""
    for where, recorded in attributes.items():
        try:
            module = model.get_submodule(where)
        except AttributeError:
            continue  # a module of theirs without a counterpart here (strict loading vouched)
        for name, value in recorded.items():
            if not hasattr(module, name):
                continue
            ours = getattr(module, name)
            if _comparable(name, ours) != _comparable(name, value):
                raise CheckpointError(
                    f"Refusing to load {path}: its module {where or 'G'} was pickled with "
                    f"{name}={value!r} but its init kwargs build {name}={ours!r}, so this code "
                    f"would not draw what the file's own code draws; export the generator again.")


# First object of a legacy (pre-zip, torch < 1.6) torch.save file.
_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


@torch.no_grad()
def estimate_w_avg(model: Generator, samples: int = 4096, seed: int = 0) -> torch.Tensor:
    """Mean of mapping(z) over `samples` standard-normal z (fixed seed): w_avg [w_dim]."""
    z = torch.randn(samples, model.z_dim, generator=torch.Generator().manual_seed(seed))
    dev = model.mapping.w_avg.device
    return model.mapping(z.to(dev), None)[:, 0].mean(dim=0)


def _is_nvidia_pickle(path: Path) -> bool:
    """A plain pickle stream that is not a torch.save file (zip, or legacy whose first pickled
    object is the magic number: PROTO, then LONG1 with 10 little-endian bytes)."""
    if zipfile.is_zipfile(path):
        return False
    with open(path, "rb") as fh:
        head = fh.read(14)
    if head[:1] != b"\x80":
        return False
    return head[2:4] != b"\x8a\x0a" or head[4:14] != _TORCH_LEGACY_MAGIC.to_bytes(10, "little")


def load_generator(path: str | Path, device: str | torch.device = "cpu",
                   limits: ReadLimits = ReadLimits()) -> Generator:
    """Build the generator stored at `path` on `device` (eval mode, no grad).

    Raises CheckpointError with one sentence when the file is missing, unsafe, unsupported or
    larger than `limits` allow.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"Face checkpoint {path} does not exist; put a stylegan2-ada-pytorch .pkl (e.g. FFHQ "
            f"1024x1024), a rosinality .pt or a biomint .pt + .json there, or give the path of one "
            f"that exists.")
    sidecar = path.with_suffix(".json")
    if sidecar.is_file() and path.suffix != ".json":
        model = _load_own(path, sidecar, limits)
    elif _is_nvidia_pickle(path):
        found = read_nvidia_network(path, limits=limits)
        model = _build(found.init_kwargs, found.state, path, limits, found.attributes)
    else:
        model = _load_torch_file(path, limits)
    return model.to(device)


def _load_own(path: Path, sidecar: Path, limits: ReadLimits) -> Generator:
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{sidecar} is not valid JSON ({error_reason(exc)}); save the "
                              f"generator again with save_generator.") from None
    if not isinstance(meta, dict) or meta.get("format") != OWN_FORMAT \
            or meta.get("version") != OWN_VERSION or not isinstance(meta.get("init_kwargs"), dict):
        found = meta if isinstance(meta, dict) else {}
        raise CheckpointError(
            f"{sidecar} is not a {OWN_FORMAT} v{OWN_VERSION} description with init_kwargs "
            f"(format={found.get('format')!r}, version={found.get('version')!r}); save the "
            f"generator again with save_generator.")
    state = _torch_load_safely(path, limits)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} must hold a flat dict of tensors; save the generator again "
                              f"with save_generator.")
    return _build(meta["init_kwargs"], dict(state), path, limits)


def _load_torch_file(path: Path, limits: ReadLimits) -> Generator:
    data = _torch_load_safely(path, limits)
    if isinstance(data, dict) and isinstance(data.get("g_ema"), dict):
        g_ema = {k: v for k, v in data["g_ema"].items()}
        latent_avg = data.get("latent_avg")
        try:
            kwargs = infer_rosinality_kwargs(g_ema)
            state = rosinality_to_ada(g_ema, latent_avg, kwargs["img_resolution"].bit_length() - 1)
        except CheckpointError as exc:
            raise CheckpointError(f"Refusing to load {path}: {exc}") from None
        model = _build(kwargs, state, path, limits)
        if latent_avg is None:
            # rosinality's train.py stores no average w; its generate.py estimates it from
            # 4096 mapped latents (`mean_latent`). Do the same, with a fixed seed.
            model.mapping.w_avg.copy_(estimate_w_avg(model))
        return model
    raise CheckpointError(
        f"{path} is neither a rosinality checkpoint (no 'g_ema' entry) nor a biomint checkpoint "
        f"(no {path.with_suffix('.json').name} next to it); NVIDIA snapshots must be the "
        f"original .pkl file.")
