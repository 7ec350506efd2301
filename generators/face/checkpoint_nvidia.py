"""Read NVIDIA stylegan2-ada-pytorch `.pkl` snapshots without executing their code.

A snapshot is `pickle.dump(dict(G=..., D=..., G_ema=..., augment_pipe=..., ...))` where each
network object pickles (via `torch_utils.persistence`) as a call
`torch_utils.persistence._reconstruct_persistent_obj(meta)` with
`meta = dict(type='class', version=6, module_src=<python source>, class_name=<name>,
state=<the module's __dict__>)`. Loading it normally `exec`s `module_src`: a checkpoint is
arbitrary code. Here `find_class` resolves only an allow-list; the persistent-object hook is
mapped to `PersistentRecord`, which keeps class name, state and init kwargs and never looks at
the source, and tensor storages (pickled as `torch.storage._load_from_bytes(bytes)`) are read
with `torch.load(weights_only=True)`. Everything else raises `CheckpointError`.
"""

from __future__ import annotations

import collections
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from generators.face.errors import CheckpointError


class PersistentRecord:
    """Inert stand-in for one persistent network object: class name, state, init kwargs."""

    def __init__(self, meta: dict) -> None:
        if not isinstance(meta, dict) or meta.get("type") != "class" or "state" not in meta:
            raise pickle.UnpicklingError("persistent object record without type='class' and state")
        self.class_name: str = str(meta.get("class_name"))
        self.version = meta.get("version")
        state = meta.get("state") or {}
        if not isinstance(state, dict):
            raise pickle.UnpicklingError("persistent object state is not a dict")
        self.state: dict = dict(state)
        kwargs = self.state.get("_init_kwargs", {})
        self.init_kwargs: dict = _to_plain(kwargs)
        # The embedded source is deliberately dropped unread.


class _EasyDict(dict):
    """Target for dnnlib.util.EasyDict: a dict that pickle's BUILD can set attributes on."""


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_plain(v) for v in value) if isinstance(value, list) else \
            tuple(_to_plain(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def _load_storage_from_bytes(data: bytes) -> Any:
    """Replacement for torch.storage._load_from_bytes that cannot run code."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _numpy_scalar(dtype: np.dtype, data: Any = None) -> Any:
    """numpy scalar rebuild restricted to plain (non-object) dtypes."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise pickle.UnpicklingError("numpy object scalars are not allowed in a checkpoint")
    return np.frombuffer(data, dtype=dtype, count=1)[0] if isinstance(data, bytes) else \
        np.zeros((), dtype=dtype)[()]


def _numpy_dtype(*args: Any) -> np.dtype:
    return np.dtype(*args)


def _reconstruct_array(cls: Any, shape: Any, dtype: Any) -> np.ndarray:
    if cls is not np.ndarray:
        raise pickle.UnpicklingError("only numpy.ndarray arrays are allowed in a checkpoint")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


# (module, name) -> object. Nothing here can run code chosen by the file.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): PersistentRecord,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("dnnlib", "EasyDict"): _EasyDict,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct_array,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct_array,
    ("numpy", "ndarray"): np.ndarray,
}
for _name in ("float16", "float32", "float64", "bfloat16", "int64", "int32", "uint8", "bool"):
    if hasattr(torch, _name):
        _ALLOWED[("torch", _name)] = getattr(torch, _name)


class RestrictedUnpickler(pickle.Unpickler):
    """pickle.Unpickler whose globals come only from `_ALLOWED`."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not used by StyleGAN pickles")


def _flatten_module(record: PersistentRecord, prefix: str, out: dict[str, torch.Tensor]) -> None:
    """Walk a record tree and collect parameters and persistent buffers as a state dict."""
    state = record.state
    params = state.get("_parameters") or {}
    buffers = state.get("_buffers") or {}
    skip = set(state.get("_non_persistent_buffers_set") or ())
    for name, value in list(params.items()) + [(k, v) for k, v in buffers.items() if k not in skip]:
        if value is None:
            continue
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"entry {prefix}{name} is not a tensor")
        out[prefix + name] = value.detach().clone()
    for name, child in (state.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, PersistentRecord):
            raise CheckpointError(f"sub-module {prefix}{name} is not a persistent network object")
        _flatten_module(child, f"{prefix}{name}.", out)


def read_nvidia_pickle(path: Path, network: str = "G_ema") -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Return (init_kwargs, state_dict) of `network` in an NVIDIA snapshot, running no code."""
    try:
        with open(path, "rb") as fh:
            data = RestrictedUnpickler(fh).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError,
            IndexError, RuntimeError) as exc:
        raise CheckpointError(
            f"Refusing to load {path}: it is not a stylegan2-ada-pytorch snapshot that can be read "
            f"safely ({exc}); export the generator with NVIDIA's own tools or convert it to a "
            f"state dict.") from None
    if not isinstance(data, dict) or not isinstance(data.get(network), PersistentRecord):
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(
            f"{path} has no '{network}' network (found {keys}); expected a stylegan2-ada-pytorch "
            f"snapshot such as network-snapshot-XXXXXX.pkl.")
    record = data[network]
    if record.class_name != "Generator":
        raise CheckpointError(f"{path}: '{network}' is a {record.class_name}, not a Generator.")
    state: dict[str, torch.Tensor] = {}
    _flatten_module(record, "", state)
    return record.init_kwargs, state
