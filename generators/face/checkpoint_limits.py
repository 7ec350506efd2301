"""Bounded reading of checkpoint streams: a small file must not make the reader allocate gigabytes.

`ReadLimits` caps a checkpoint's uncompressed bytes, tensor count and zip compression ratio;
`check_torch_stream` applies them to torch.save output (zip or legacy) before `torch.load`, by
reading the zip's central directory and scanning the pickle with inert stand-ins for storages
and tensors; `_Budget` charges what a stream declares (storage element counts, tensor shapes,
array shapes, bytes re-used through the pickle memo) as the restricted unpickler meets it
(checkpoint_nvidia). Every refusal is one sentence (`CheckpointError`).
"""

from __future__ import annotations

import io
import math
import pickle
import re
import struct
import zipfile
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

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
        self.counts = {"tensor": 0, "storage": 0}
        self.bytes = {"tensor": 0, "storage": 0}

    @property
    def storage_bytes(self) -> int:
        return self.bytes["storage"]

    def _declare(self, kind: str, nbytes: int) -> None:
        """Tensors and storages are limited alike, each kind against its own totals."""
        self.counts[kind] += 1
        if self.counts[kind] > self.limits.max_tensors:
            raise _too_many_tensors(self.source, self.limits)
        self.bytes[kind] += nbytes
        if self.bytes[kind] > self.limits.max_bytes:
            raise _too_much_data(self.source, self.limits)

    def tensor(self, nbytes: int) -> None:
        self._declare("tensor", nbytes)

    def storage(self, nbytes: int) -> None:
        self._declare("storage", nbytes)


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


# A network's byte estimate from its arguments runs up to ~1.3x high, and a checkpoint may hold
# its weights in half precision: another 2x. Tiny networks have more bookkeeping than weights.
ESTIMATE_SLACK = 3
ESTIMATE_FLOOR = 1 << 20


def stored_bytes(state: dict) -> int:
    """Bytes of the distinct storages behind the tensors of `state` (what the file provided)."""
    import torch

    seen: dict[int, int] = {}
    for t in state.values():
        if isinstance(t, torch.Tensor):
            s = t.untyped_storage()
            seen[s.data_ptr()] = max(seen.get(s.data_ptr(), 0), s.nbytes())
    return sum(seen.values())


def refuse_network_size(source: Any, nbytes: int | None, state: dict, limits: ReadLimits,
                        network: str, typical: str) -> None:
    """The arguments come from the file, and a few bytes can describe a network of any width:
    CheckpointError for one that the limit or the file's own weights cannot pay for, before it
    is built. `network` names it ("generator", "StyleGAN3 generator"), `typical` gives a real
    one's size for the message."""
    if nbytes is None:
        return
    if nbytes > limits.max_bytes:
        raise CheckpointError(
            f"Refusing to load {source}: its arguments describe a {network} of about "
            f"{human_bytes(nbytes)}, over the {human_bytes(limits.max_bytes)} limit for a face "
            f"checkpoint ({typical}); check its init kwargs or export the generator again.")
    held = stored_bytes(state)
    if nbytes > ESTIMATE_SLACK * held + ESTIMATE_FLOOR:
        raise CheckpointError(
            f"Refusing to load {source}: its arguments describe a {network} of about "
            f"{human_bytes(nbytes)} but the file holds only {human_bytes(held)} of its weights, "
            f"so they do not belong together; export the generator again.")
