"""Load a face generator from a user's checkpoint, never executing code from the file.

Formats (chosen by content, not by trust):
  * NVIDIA stylegan2-ada-pytorch snapshot `.pkl`       -> restricted unpickler (checkpoint_nvidia)
  * rosinality/stylegan2-pytorch `.pt` with `g_ema`    -> torch.load(weights_only=True) + name map
  * biomint's own: `<name>.pt` (torch.save of a flat {name: tensor} dict) next to
    `<name>.json` {"format": "biomint-stylegan2", "version": 1, "init_kwargs": {...}}
All end in `Generator(**init_kwargs).load_state_dict(state, strict=True)`.
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

from generators.face.checkpoint_nvidia import read_nvidia_pickle
from generators.face.checkpoint_rosinality import infer_rosinality_kwargs, rosinality_to_ada
from generators.face.errors import CheckpointError
from generators.face.generator import Generator

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


def _torch_load_safely(path: Path) -> Any:
    try:
        # rosinality's train.py stores its argparse.Namespace under "args": a plain attribute
        # bag, safe to allow; everything else must be tensors and containers.
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"Refusing to load {path}: it is not a tensors-only PyTorch file ({first}).") from None


def _build(init_kwargs: dict[str, Any], state: dict[str, torch.Tensor], path: Path) -> Generator:
    try:
        model = Generator(**init_kwargs)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} describes a generator this code cannot build: {exc}.") from None
    # resample_filter buffers are constants; formats that omit them get ours.
    for name, value in model.state_dict().items():
        if name.endswith("resample_filter") and name not in state:
            state[name] = value
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise CheckpointError(f"{path} does not match the StyleGAN2 architecture its arguments "
                              f"describe: {detail}") from None
    return model.eval().requires_grad_(False)


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


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> Generator:
    """Build the generator stored at `path` on `device` (eval mode, no grad).

    Raises CheckpointError with one sentence when the file is missing, unsafe or unsupported.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"Face checkpoint {path} does not exist; put a stylegan2-ada-pytorch .pkl (e.g. FFHQ "
            f"1024x1024), a rosinality .pt or a biomint .pt + .json there, or give the path of one "
            f"that exists.")
    sidecar = path.with_suffix(".json")
    if sidecar.is_file() and path.suffix != ".json":
        model = _load_own(path, sidecar)
    elif _is_nvidia_pickle(path):
        init_kwargs, state = read_nvidia_pickle(path)
        model = _build(init_kwargs, state, path)
    else:
        model = _load_torch_file(path)
    return model.to(device)


def _load_own(path: Path, sidecar: Path) -> Generator:
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{sidecar} is not valid JSON ({exc}).") from None
    if meta.get("format") != OWN_FORMAT or meta.get("version") != OWN_VERSION:
        raise CheckpointError(f"{sidecar} is not a {OWN_FORMAT} v{OWN_VERSION} description "
                              f"(format={meta.get('format')!r}, version={meta.get('version')!r}).")
    state = _torch_load_safely(path)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} must hold a flat dict of tensors.")
    return _build(meta["init_kwargs"], dict(state), path)


def _load_torch_file(path: Path) -> Generator:
    data = _torch_load_safely(path)
    if isinstance(data, dict) and isinstance(data.get("g_ema"), dict):
        g_ema = {k: v for k, v in data["g_ema"].items()}
        kwargs = infer_rosinality_kwargs(g_ema)
        latent_avg = data.get("latent_avg")
        state = rosinality_to_ada(g_ema, latent_avg, kwargs["img_resolution"].bit_length() - 1)
        model = _build(kwargs, state, path)
        if latent_avg is None:
            # rosinality's train.py stores no average w; its generate.py estimates it from
            # 4096 mapped latents (`mean_latent`). Do the same, with a fixed seed.
            model.mapping.w_avg.copy_(estimate_w_avg(model))
        return model
    raise CheckpointError(
        f"{path} is neither a rosinality checkpoint (no 'g_ema' entry) nor a biomint checkpoint "
        f"(no {path.with_suffix('.json').name} next to it); NVIDIA snapshots must be the "
        f"original .pkl file.")
