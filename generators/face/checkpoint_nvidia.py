"""Read NVIDIA `.pkl` snapshots (stylegan2-ada-pytorch, stylegan3) without executing their code.

A snapshot is `pickle.dump(dict(G=..., D=..., G_ema=..., augment_pipe=..., ...))` where each
network object pickles (via `torch_utils.persistence`) as a call
`torch_utils.persistence._reconstruct_persistent_obj(meta)` with
`meta = dict(type='class', version=6, module_src=<python source>, class_name=<name>,
state=<the module's __dict__>)`. Loading it normally `exec`s `module_src`: a checkpoint is
arbitrary code. Here `find_class` resolves only an allow-list; the persistent-object hook is
mapped to `PersistentRecord`, which keeps class name, state and init kwargs and never looks at
the source, and tensor storages (pickled as `torch.storage._load_from_bytes(bytes)`) are read
with `torch.load(weights_only=True)`. Everything else raises `CheckpointError`. Protocol 0-2
streams get what pickle gives them: Python 2 names mapped to Python 3 ones before the allow-list
is consulted, and bytes rebuilt from their latin-1 text (`_PROTOCOL_2_BYTES`).

Reading is bounded (`checkpoint_limits.ReadLimits`): the sizes a stream declares and the bytes it
re-uses through the pickle memo are charged against the limits before anything of that size is
allocated, and the embedded storages go through `check_torch_stream` first.
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import pickle
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import numpy as np
import torch

from generators.face.checkpoint_limits import (ReadLimits, _Budget, _numel, check_torch_stream, error_reason,
                                               human_bytes, refuse_file_size)
from generators.face.errors import CheckpointError

class PersistentRecord:
    """Inert stand-in for one persistent network object: class name, state (the module's
    `__dict__`: parameters, buffers, sub-modules and plain attributes), init kwargs."""

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


def _numpy_scalar(dtype: np.dtype, data: Any = None) -> Any:
    """numpy scalar rebuild restricted to plain (non-object) dtypes."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise pickle.UnpicklingError("numpy object scalars are not allowed in a checkpoint")
    return np.frombuffer(data, dtype=dtype, count=1)[0] if isinstance(data, bytes) else \
        np.zeros((), dtype=dtype)[()]


def _numpy_dtype(*args: Any) -> np.dtype:
    return np.dtype(*args)


def _latin1_bytes(text: Any, encoding: Any = None) -> bytes:
    """`_codecs.encode(text, 'latin1')`: how protocols 0-2 write a non-empty bytes object."""
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError("_codecs.encode is allowed only to rebuild latin-1 bytes")
    return text.encode("latin-1")


def _empty_bytes(*args: Any) -> bytes:
    """`bytes()`: how protocols 0-2 write b'' (with arguments, bytes(n) would allocate n)."""
    if args:
        raise pickle.UnpicklingError("bytes() is allowed only without arguments")
    return b""


# (module, name) -> object. Nothing here can run code chosen by the file.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): PersistentRecord,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("dnnlib", "EasyDict"): _EasyDict,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy", "ndarray"): np.ndarray,
}
# Allowed globals that allocate what the stream declares: resolved, per load, to methods of a
# _BudgetedHooks, which charges each call to that load's budget first.
_BUDGETED: dict[tuple[str, str], str] = {
    ("torch._utils", "_rebuild_tensor_v2"): "_rebuild_tensor_v2",
    ("torch._utils", "_rebuild_tensor"): "_rebuild_tensor",
    ("torch.storage", "_load_from_bytes"): "_load_storage_from_bytes",
    ("numpy.core.multiarray", "_reconstruct"): "_reconstruct_array",
    ("numpy._core.multiarray", "_reconstruct"): "_reconstruct_array",
}
for _name in ("float16", "float32", "float64", "bfloat16", "int64", "int32", "uint8", "bool"):
    if hasattr(torch, _name):
        _ALLOWED[("torch", _name)] = getattr(torch, _name)
# Protocols 0-2 have no bytes opcode: pickle writes bytes as these two calls. Resolved only in
# such streams, and only to builders that cannot make anything but the bytes the stream holds.
_PROTOCOL_2_BYTES: dict[tuple[str, str], Any] = {
    ("_codecs", "encode"): _latin1_bytes,
    ("builtins", "bytes"): _empty_bytes,
}


class _BudgetedHooks:
    """The `_BUDGETED` globals for one load: each call is charged before it allocates.

    Kept apart from the unpickler: its memo holds these bound methods, and a method bound to
    the unpickler would make a cycle that keeps the memo (every storage's bytes) alive until
    the garbage collector runs.
    """

    def __init__(self, source: Any, limits: ReadLimits, stream_size: int | None) -> None:
        self.source, self.limits, self.stream_size = source, limits, stream_size
        self.budget = _Budget(source, limits)

    def _load_storage_from_bytes(self, data: Any) -> Any:
        """torch.storage._load_from_bytes without code, each call charged in full."""
        if not isinstance(data, bytes):
            raise pickle.UnpicklingError("a storage must be pickled as bytes")
        self.budget.storage(len(data))
        # Each real storage's bytes are in the stream once; more than the stream holds means
        # the memo hands the same bytes to many storages.
        if self.stream_size is not None and self.budget.storage_bytes > self.stream_size:
            raise CheckpointError(
                f"Refusing to load {self.source}: its storages add up to more than the "
                f"{human_bytes(self.stream_size)} the file holds, so the pickle re-uses the same "
                f"bytes for many tensors (a memory bomb); export the generator again.")
        check_torch_stream(io.BytesIO(data), len(data), self.source, self.limits,
                           holder="its embedded storage")
        try:
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError) as exc:
            raise CheckpointError(
                f"Refusing to load {self.source}: an embedded tensor storage is not a "
                f"tensors-only PyTorch stream ({error_reason(exc)}); export the generator "
                f"again.") from None

    def _charge_tensor(self, storage: Any, size: Any) -> None:
        # A view may declare more elements than its storage holds (stride 0), and whatever
        # copies it allocates what it declares.
        dtype = getattr(storage, "dtype", None)  # element_size() warns on TypedStorage
        itemsize = dtype.itemsize if isinstance(dtype, torch.dtype) else 16
        self.budget.tensor(_numel(size) * itemsize)

    def _rebuild_tensor_v2(self, storage: Any, storage_offset: Any, size: Any, stride: Any,
                           *rest: Any) -> torch.Tensor:
        self._charge_tensor(storage, size)
        return torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, *rest)

    def _rebuild_tensor(self, storage: Any, storage_offset: Any, size: Any,
                        stride: Any) -> torch.Tensor:
        self._charge_tensor(storage, size)
        return torch._utils._rebuild_tensor(storage, storage_offset, size, stride)

    def _reconstruct_array(self, cls: Any, shape: Any, dtype: Any) -> np.ndarray:
        if cls is not np.ndarray:
            raise pickle.UnpicklingError("only numpy.ndarray arrays are allowed in a checkpoint")
        try:
            itemsize = np.dtype(dtype).itemsize
        except TypeError:
            raise pickle.UnpicklingError(f"array dtype {dtype!r} is not a numpy dtype") from None
        # ndarray.__new__ allocates `shape` (pickled arrays declare (0,) and get their data
        # from the stream in __setstate__, which shares the stream's bytes).
        dims = tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)
        self.budget.tensor(_numel(dims) * itemsize)
        return np.ndarray.__new__(np.ndarray, shape, dtype)


class RestrictedUnpickler(pickle.Unpickler):
    """pickle.Unpickler whose globals come only from `_ALLOWED` and `_BUDGETED`, and whose
    storages, tensors and arrays together stay within `limits` (storages also within the
    `stream_size` bytes of the stream, when given)."""

    def __init__(self, fh: BinaryIO, source: Any = "the checkpoint",
                 limits: ReadLimits = ReadLimits(), stream_size: int | None = None,
                 fix_imports: bool = True) -> None:
        super().__init__(fh, fix_imports=fix_imports)
        self.hooks = _BudgetedHooks(source, limits, stream_size)
        # pickle.Unpickler.find_class maps Python 2 names (__builtin__.set, copy_reg, ...) to
        # Python 3 ones for protocols below 3; an override has to do it itself, and the C
        # unpickler does not expose the protocol, so it is read here: PROTO opens protocol 2+
        # streams, protocols 0 and 1 have no header.
        start = fh.tell()
        head = fh.read(2)
        fh.seek(start)
        protocol = head[1] if len(head) == 2 and head[:1] == b"\x80" else 0
        self.python2_names = fix_imports and protocol < 3

    def find_class(self, module: str, name: str) -> Any:
        if self.python2_names:
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
            if (module, name) in _PROTOCOL_2_BYTES:
                return _PROTOCOL_2_BYTES[(module, name)]
        if (module, name) in _BUDGETED:
            return getattr(self.hooks, _BUDGETED[(module, name)])
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not used by StyleGAN pickles")


# Plain attributes of the pickled modules that decide how a network computes (block precision,
# activation clamping, the stylegan3 repository's modulated-conv choice); `checkpoint` checks
# them against the network its init kwargs build.
RECORDED_ATTRIBUTES = ("use_fp16", "conv_clamp", "fused_modconv_default")


class NvidiaNetwork(NamedTuple):
    """One network of a snapshot: init kwargs, state dict, and {module path: {attribute: value}}
    for the RECORDED_ATTRIBUTES its modules carry ('' is the network itself)."""

    init_kwargs: dict[str, Any]
    state: dict[str, torch.Tensor]
    attributes: dict[str, dict[str, Any]]


def _flatten_module(record: PersistentRecord, prefix: str, out: dict[str, torch.Tensor],
                    attributes: dict[str, dict[str, Any]], source: Any) -> None:
    """Walk a record tree and collect parameters and persistent buffers as a state dict."""
    state = record.state
    params = state.get("_parameters") or {}
    buffers = state.get("_buffers") or {}
    skip = set(state.get("_non_persistent_buffers_set") or ())
    for name, value in list(params.items()) + [(k, v) for k, v in buffers.items() if k not in skip]:
        if value is None:
            continue
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"Refusing to load {source}: its entry {prefix}{name} is not a "
                                  f"tensor; export the generator again.")
        # No copy: _build copies into the model once shapes match, whereas cloning a view
        # first would allocate whatever size it declares (stride 0 makes that any size).
        out[prefix + name] = value.detach()
    found = {k: _to_plain(state[k]) for k in RECORDED_ATTRIBUTES if k in state}
    if found:
        attributes[prefix[:-1]] = found
    for name, child in (state.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, PersistentRecord):
            raise CheckpointError(f"Refusing to load {source}: its sub-module {prefix}{name} is "
                                  f"not a persistent network object; export the generator again.")
        _flatten_module(child, f"{prefix}{name}.", out, attributes, source)


def read_nvidia_network(path: Path, network: str = "G_ema", limits: ReadLimits = ReadLimits(),
                        ) -> NvidiaNetwork:
    """`network` of an NVIDIA snapshot (stylegan2-ada-pytorch or stylegan3 repository), running
    no code and allocating no more than `limits` allow."""
    size = path.stat().st_size
    refuse_file_size(path, size, limits)
    try:
        with open(path, "rb") as fh:
            data = RestrictedUnpickler(fh, path, limits, size).load()
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError,
            IndexError, RuntimeError, MemoryError, OverflowError, RecursionError) as exc:
        raise CheckpointError(
            f"Refusing to load {path}: it is not an NVIDIA StyleGAN snapshot that can be read "
            f"safely ({error_reason(exc)}); export the generator with NVIDIA's own tools or "
            f"convert it to a state dict.") from None
    if not isinstance(data, dict) or not isinstance(data.get(network), PersistentRecord):
        keys = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(
            f"{path} has no '{network}' network (found {keys}); expected an NVIDIA StyleGAN "
            f"snapshot such as network-snapshot-XXXXXX.pkl.")
    record = data[network]
    if record.class_name != "Generator":
        raise CheckpointError(f"{path}: '{network}' is a {record.class_name}, not a Generator; "
                              f"give a snapshot whose {network} is the generator.")
    state: dict[str, torch.Tensor] = {}
    attributes: dict[str, dict[str, Any]] = {}
    _flatten_module(record, "", state, attributes, path)
    return NvidiaNetwork(record.init_kwargs, state, attributes)


def read_nvidia_pickle(path: Path, network: str = "G_ema", limits: ReadLimits = ReadLimits(),
                       ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(init_kwargs, state_dict) of `network` in an NVIDIA snapshot (see read_nvidia_network)."""
    found = read_nvidia_network(path, network, limits)
    return found.init_kwargs, found.state
