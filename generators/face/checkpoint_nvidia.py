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

Reading is bounded (`ReadLimits`): a small file must not make the reader allocate gigabytes. The
sizes a stream declares (a storage's element count, a tensor's shape, an array's shape) and the
bytes it re-uses through the pickle memo are charged against the limits before anything of
that size is allocated. `check_torch_stream` applies the same bounds to torch.save output (zip
or legacy), which both the embedded storages here and `.pt` checkpoints are.
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import math
import pickle
import re
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import numpy as np
import torch

from generators.face.errors import CheckpointError

# The largest real face checkpoints are a rosinality 1024x1024 .pt with g, d, g_ema and both
# Adam states (~1-1.3 GB) and NVIDIA's FFHQ 1024 snapshot with G, D and G_ema (~380 MB). 4 GiB
# is three times the largest while still refusing a bomb long before it fills a worker's RAM.
MAX_CHECKPOINT_BYTES = 4 << 30
# A 1024x1024 StyleGAN2 network has ~150-300 tensors, so g + d + g_ema + two Adam states stay
# under ~2,000. Each tensor costs about a kilobyte of bookkeeping however small its data, so
# without a count a small pickle could make millions of views of one storage.
MAX_TENSORS = 10_000
# torch.save stores every zip entry uncompressed (1:1). Float weights re-packed with deflate
# shrink ~1.1:1 and pickles ~10:1, while zeros shrink ~1000:1: over 100:1 is a bomb.
MAX_COMPRESSION_RATIO = 100
# Below this an entry is harmless whatever its ratio (the total is bounded anyway).
_RATIO_FLOOR = 1 << 20
# torch.save's zip has a few bookkeeping entries besides the storages (data.pkl, version,
# byteorder, .data/serialization_id, ...).
_ZIP_BOOKKEEPING_ENTRIES = 32
# Real torch pickles reference ~10 distinct globals; a stream naming thousands is not one.
_MAX_SCAN_GLOBALS = 256


@dataclass(frozen=True)
class ReadLimits:
    """Bounds on what reading one checkpoint may allocate (tests shrink them)."""

    max_bytes: int = MAX_CHECKPOINT_BYTES
    max_tensors: int = MAX_TENSORS
    max_compression_ratio: int = MAX_COMPRESSION_RATIO


def human_bytes(n: int) -> str:
    """1536 -> '1.5 KiB' (limit messages)."""
    if n < 1024:
        return f"{n} bytes"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024:
            return f"{value:.1f} {unit}"
    return f"{value / 1024:.1f} PiB"


# Lines of torch's weights-only refusal that say nothing about the file: the headline, which
# suggests weights_only=False (running the file's code), and pointers to its documentation.
_TORCH_ADVICE = re.compile(r"weights.only|Check the documentation|Please file an issue", re.I)


def error_reason(exc: BaseException) -> str:
    """One line saying why reading failed, for the parenthesis of a CheckpointError sentence.

    torch's weights-only refusal spans several lines and opens with advice to load with
    weights_only=False; only a later line ("Trying to load unsupported GLOBAL posix.system ...",
    "Unsupported operand 103") names what is wrong, so that is the line kept.
    """
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).replace("WeightsUnpickler error:", "\n")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    useful = [ln for ln in lines if not _TORCH_ADVICE.search(ln)]
    if useful:
        return useful[0].rstrip(".")[:200]
    return "it holds objects other than tensors and containers" if lines else type(exc).__name__


def refuse_file_size(source: Any, size: int, limits: ReadLimits) -> None:
    """Refuse a file that is over the byte limit before any of it is read."""
    if size > limits.max_bytes:
        raise CheckpointError(
            f"Refusing to load {source}: the file is {human_bytes(size)}, over the "
            f"{human_bytes(limits.max_bytes)} limit for a face checkpoint; give a StyleGAN2 "
            f"snapshot (NVIDIA's FFHQ 1024x1024 .pkl is ~380 MB) or save only the generator's "
            f"weights.")


def _too_many_tensors(source: Any, limits: ReadLimits) -> CheckpointError:
    return CheckpointError(
        f"Refusing to load {source}: it holds more than {limits.max_tensors} tensors, the limit "
        f"for a face checkpoint; save only the generator's weights (a StyleGAN2 generator has a "
        f"few hundred tensors).")


def _too_much_data(source: Any, limits: ReadLimits) -> CheckpointError:
    return CheckpointError(
        f"Refusing to load {source}: its tensors declare more than "
        f"{human_bytes(limits.max_bytes)} of data, the limit for a face checkpoint; save only "
        f"the generator's weights (a 1024x1024 StyleGAN2 generator is ~130 MB).")


def _numel(shape: Any) -> int:
    """Element count of a declared shape; 0 when it is not a tuple of ints (torch refuses it)."""
    if not isinstance(shape, (tuple, list)) or not all(isinstance(d, int) for d in shape):
        return 0
    return math.prod(max(d, 0) for d in shape)


class _Budget:
    """Running totals for one checkpoint, checked as each tensor or storage is declared."""

    def __init__(self, source: Any, limits: ReadLimits) -> None:
        self.source, self.limits = source, limits
        self.tensors = self.storages = self.tensor_bytes = self.storage_bytes = 0

    def tensor(self, nbytes: int) -> None:
        self.tensors += 1
        if self.tensors > self.limits.max_tensors:
            raise _too_many_tensors(self.source, self.limits)
        self.tensor_bytes += nbytes
        if self.tensor_bytes > self.limits.max_bytes:
            raise _too_much_data(self.source, self.limits)

    def storage(self, nbytes: int) -> None:
        self.storages += 1
        if self.storages > self.limits.max_tensors:
            raise _too_many_tensors(self.source, self.limits)
        self.storage_bytes += nbytes
        if self.storage_bytes > self.limits.max_bytes:
            raise _too_much_data(self.source, self.limits)


# Bytes per element of the storage classes torch pickles; unknown ones count as the widest.
_STORAGE_ITEMSIZE = {
    "DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2,
    "LongStorage": 8, "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1,
    "BoolStorage": 1, "ComplexFloatStorage": 8, "ComplexDoubleStorage": 16, "UntypedStorage": 1,
}
_TENSOR_REBUILDS = {("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor")}


class _Opaque:
    """Stand-in for every global while a torch pickle is scanned: calling, building or filling
    it does nothing, so the scan runs no code and allocates nothing the stream does not hold."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass


class _DeclaredStorage:
    """What the scan returns for a storage's persistent id: its element size, never its data."""

    def __init__(self, itemsize: int) -> None:
        self.itemsize = itemsize


class _ScanUnpickler(pickle.Unpickler):
    """Reads a torch.save pickle for its declared storages and tensor shapes only."""

    def __init__(self, fh: BinaryIO, budget: _Budget) -> None:
        super().__init__(fh)
        self.budget = budget
        self.storages: dict[str, int] = {}  # key -> declared bytes
        self._stubs: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key not in self._stubs:
            if len(self._stubs) >= _MAX_SCAN_GLOBALS:
                raise pickle.UnpicklingError(f"more than {_MAX_SCAN_GLOBALS} distinct globals")
            budget = self.budget
            if key in _TENSOR_REBUILDS:
                def init(stub: Any, storage: Any = None, offset: Any = 0, size: Any = (),
                         *rest: Any) -> None:
                    itemsize = storage.itemsize if isinstance(storage, _DeclaredStorage) else 16
                    budget.tensor(_numel(size) * itemsize)
                stub = type(name, (_Opaque,), {"__init__": init})
            else:
                stub = type(name, (_Opaque,), {})
            stub.torch_name = name
            self._stubs[key] = stub
        return self._stubs[key]

    def persistent_load(self, pid: Any) -> Any:
        # zip: ('storage', type, key, location, numel); legacy adds view metadata.
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            return _Opaque()
        itemsize = _STORAGE_ITEMSIZE.get(getattr(pid[1], "torch_name", ""), 16)
        key, numel = str(pid[2]), pid[4]
        if key not in self.storages:
            nbytes = max(numel, 0) * itemsize if isinstance(numel, int) else 0
            self.storages[key] = nbytes
            self.budget.storage(nbytes)
        return _DeclaredStorage(itemsize)


def _zip_entry_count(fh: BinaryIO) -> int | None:
    """Entries the zip's end record announces, read before zipfile builds one object each."""
    try:
        end = zipfile._EndRecData(fh)  # the parser ZipFile itself uses (zip64 included)
        return None if end is None else int(end[zipfile._ECD_ENTRIES_TOTAL])
    except (AttributeError, OSError, struct.error, IndexError, TypeError, ValueError):
        return None


def _check_zip(fh: BinaryIO, source: Any, budget: _Budget) -> int:
    """Central-directory bounds of a torch.save zip; returns the bytes its storages hold."""
    limits = budget.limits
    entries = _zip_entry_count(fh)
    if entries is not None and entries > limits.max_tensors + _ZIP_BOOKKEEPING_ENTRIES:
        raise _too_many_tensors(source, limits)
    with zipfile.ZipFile(fh) as zf:
        infos = zf.infolist()
        if len(infos) > limits.max_tensors + _ZIP_BOOKKEEPING_ENTRIES:
            raise _too_many_tensors(source, limits)
        total = sum(i.file_size for i in infos)
        for info in infos:
            packed = max(info.compress_size, 1)
            if (info.compress_type != zipfile.ZIP_STORED and info.file_size > _RATIO_FLOOR
                    and info.file_size > limits.max_compression_ratio * packed):
                raise CheckpointError(
                    f"Refusing to load {source}: zip entry {info.filename} unpacks to "
                    f"{human_bytes(info.file_size)} from {human_bytes(packed)} "
                    f"({info.file_size // packed}:1, over the {limits.max_compression_ratio}:1 "
                    f"limit) although torch.save never compresses, so it is a decompression "
                    f"bomb or was re-packed; save the checkpoint again with torch.save.")
        if total > limits.max_bytes:
            raise CheckpointError(
                f"Refusing to load {source}: its zip entries unpack to {human_bytes(total)}, over "
                f"the {human_bytes(limits.max_bytes)} limit for a face checkpoint; save only the "
                f"generator's weights (a 1024x1024 StyleGAN2 generator is ~130 MB).")
        pickles = [i for i in infos if i.filename.count("/") == 1
                   and i.filename.endswith("/data.pkl")]
        if pickles:
            with zf.open(pickles[0]) as pkl:
                _ScanUnpickler(pkl, budget).load()
        return sum(i.file_size for i in infos if "/data/" in i.filename)


def _check_legacy(fh: BinaryIO, size: int, budget: _Budget) -> int:
    """Declared storages of a legacy (pre-zip) torch.save stream; returns its byte length."""
    scan = _ScanUnpickler(fh, budget)
    for _ in range(3):  # magic number, protocol version, sys info
        scan.load()
    scan.load()  # the object, whose persistent ids declare every storage
    return size


def check_torch_stream(fh: BinaryIO, size: int, source: Any, limits: ReadLimits,
                       holder: str = "the file") -> None:
    """Refuse torch.save output (zip or legacy, `size` bytes) whose declared storages, tensors
    or unpacked entries exceed `limits` or the bytes actually present, before torch.load.

    Raises CheckpointError naming `source`; a stream too malformed to scan is refused as well,
    since torch.load would refuse it too.
    """
    refuse_file_size(source, size, limits)
    budget = _Budget(source, limits)
    start = fh.tell()
    try:
        is_zip = fh.read(4) == b"PK\x03\x04"  # torch's own test (torch.serialization._is_zipfile)
        fh.seek(start)
        available = _check_zip(fh, source, budget) if is_zip else _check_legacy(fh, size, budget)
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, AttributeError, TypeError,
            ValueError, IndexError, KeyError, MemoryError, OverflowError, RecursionError,
            struct.error, OSError) as exc:
        raise CheckpointError(f"Refusing to load {source}: it is not a tensors-only PyTorch file "
                              f"({error_reason(exc)}).") from None
    finally:
        fh.seek(start)
    declared = budget.storage_bytes
    if declared > available:
        raise CheckpointError(
            f"Refusing to load {source}: its tensors declare {human_bytes(declared)} of data but "
            f"{holder} holds only {human_bytes(available)}, so it is truncated or forged; "
            f"download or save the checkpoint again.")


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
