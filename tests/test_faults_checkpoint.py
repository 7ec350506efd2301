"""Face checkpoints are user files, and reading one is bounded: a small file that declares (or
expands to) gigabytes is refused with one sentence before anything that large is allocated.

Every bomb here is small on disk; the gigabytes exist only as declared sizes or as a deflate
stream. Peak memory is measured in a child process forked, per file, from one interpreter
that has already imported torch (import alone costs ~200-400 MB; each fork starts near it).
"""

from __future__ import annotations

import collections
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import types
import zipfile
import zlib
from pathlib import Path

import pytest

from conftest import biomint_env, biomint_lines

pytestmark = pytest.mark.skipif(sys.platform != "linux",
                                reason="peak memory is read as Linux ru_maxrss (KiB) in forked children")

REPO = Path(__file__).resolve().parents[1]
GIB = 1 << 30
# Loading a tiny checkpoint after importing torch peaks at ~220-400 MB; each bomb below would
# push it past 1.2 GB (measured before the loader was bounded).
PEAK_LIMIT_MB = 600

# A server that loads each requested checkpoint in a fresh fork and reports what happened.
_SERVER = r"""
import json, os, resource, signal, sys
from generators.face.checkpoint import ReadLimits, load_generator
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        signal.alarm(120)
        try:
            load_generator(req["path"], limits=ReadLimits(**req["limits"]))
            out = {"error": None, "message": ""}
        except BaseException as e:
            out = {"error": type(e).__name__, "message": str(e)}
        out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        data = fh.read()
    _, status = os.waitpid(pid, 0)
    print(data.decode() if data else json.dumps({"error": f"child died ({status})",
                                                  "message": "", "peak_mb": -1}), flush=True)
"""


@pytest.fixture(scope="module")
def load_in_child():
    """load_in_child(path, **limits) -> {"error", "message", "peak_mb"} of a forked load."""
    proc = subprocess.Popen([sys.executable, "-c", _SERVER], cwd=REPO, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert json.loads(proc.stdout.readline()) == {"ready": True}

    def load(path: Path, **limits) -> dict:
        proc.stdin.write(json.dumps({"path": str(path), "limits": limits}) + "\n")
        proc.stdin.flush()
        return json.loads(proc.stdout.readline())

    yield load
    proc.stdin.close()
    proc.wait(timeout=30)


def _assert_refused(result: dict, path: Path, *phrases: str) -> None:
    assert result["error"] == "CheckpointError", result
    message = result["message"]
    assert "\n" not in message and str(path) in message, message
    for phrase in phrases:
        assert phrase in message, (phrase, message)
    assert 0 < result["peak_mb"] < PEAK_LIMIT_MB, result


# --- writing torch files whose storages are only declared ------------------------------------

class _Storage:
    """A storage as torch.save's persistent id names it; its bytes are written separately."""

    def __init__(self, storage_type: type, key: str, numel: int) -> None:
        self.storage_type, self.key, self.numel = storage_type, key, numel


class _Call:
    """Pickles as `fn(*args)`, the form torch and NVIDIA's pickles take."""

    def __init__(self, fn, *args) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


class _TorchPickler(pickle.Pickler):
    def __init__(self, fh, legacy: bool) -> None:
        super().__init__(fh, protocol=2)  # torch.save's protocol
        self.legacy = legacy

    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            pid = ("storage", obj.storage_type, obj.key, "cpu", obj.numel)
            return pid + (None,) if self.legacy else pid  # legacy adds view metadata
        return None


def _pickle(obj, legacy: bool) -> bytes:
    buf = io.BytesIO()
    _TorchPickler(buf, legacy).dump(obj)
    return buf.getvalue()


def _byte_tensor(storage: _Storage) -> _Call:
    import torch

    return _Call(torch._utils._rebuild_tensor_v2, storage, 0, (storage.numel,), (1,), False,
                 collections.OrderedDict())


def _legacy_file(obj, storages: dict[str, bytes]) -> bytes:
    """torch.save(obj, _use_new_zipfile_serialization=False): four pickles, then each storage
    as its element count and bytes."""
    sys_info = dict(protocol_version=1001, little_endian=True,
                    type_sizes=dict(short=2, int=4, long=4))
    out = b"".join(pickle.dumps(x, protocol=2) for x in (0x1950A86A20F9469CFC6C, 1001, sys_info))
    out += _pickle(obj, legacy=True) + pickle.dumps(list(storages), protocol=2)
    return out + b"".join(struct.pack("<q", len(data)) + data for data in storages.values())


def _write_zip(path: Path, members: list[tuple[str, int, bytes, int, int]]) -> None:
    """(name, method, bytes as stored, crc32, unpacked size) -> a plain zip file."""
    body, central = b"", b""
    for name, method, data, crc, size in members:
        raw = name.encode()
        central += struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 0, method, 0, 0x21, crc,
                               len(data), size, len(raw), 0, 0, 0, 0, 0, len(body)) + raw
        body += struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, method, 0, 0x21, crc, len(data),
                            size, len(raw), 0) + raw + data
    path.write_bytes(body + central + struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, len(members),
                                                  len(members), len(central), len(body), 0))


def _stored(name: str, data: bytes) -> tuple[str, int, bytes, int, int]:
    return name, zipfile.ZIP_STORED, data, zlib.crc32(data), len(data)


def _torch_bookkeeping() -> list[tuple[str, int, bytes, int, int]]:
    """The entries torch.save writes besides data.pkl and the storages (version, byteorder...)."""
    import torch

    buf = io.BytesIO()
    torch.save({}, buf)
    with zipfile.ZipFile(buf) as zf:
        return [_stored(i.filename, zf.read(i)) for i in zf.infolist()
                if not i.filename.endswith("data.pkl")]


def _zeros_deflated(size: int) -> bytes:
    """Raw deflate stream of `size` zero bytes (a multiple of 1 MiB), without compressing them:
    after a full flush the compressor restarts, so every 1 MiB of zeros encodes the same."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    segment = c.compress(bytes(1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)
    return segment * (size >> 20) + c.flush()


_CRC32_OF_1_GIB_OF_ZEROS = 0x5B64C2B0  # zlib.crc32(bytes(GIB)), which takes a second to compute


def _write_zip_bomb(path: Path) -> None:
    """A torch.save zip whose one tensor, 1 GiB of uint8 zeros, is deflated to ~1 MiB (torch.load
    accepts deflated entries and inflates them whole)."""
    import torch

    tensor = _byte_tensor(_Storage(torch.ByteStorage, "0", GIB))
    _write_zip(path, _torch_bookkeeping() + [
        _stored("archive/data.pkl", _pickle({"g_ema": {"input.input": tensor}}, legacy=False)),
        ("archive/data/0", zipfile.ZIP_DEFLATED, _zeros_deflated(GIB), _CRC32_OF_1_GIB_OF_ZEROS, GIB)])


# --- the refusals --------------------------------------------------------------------------

def test_a_zip_bomb_checkpoint_is_refused_before_it_is_expanded(tmp_path, load_in_child):
    path = tmp_path / "550000.pt"
    _write_zip_bomb(path)
    assert path.stat().st_size < 1.1 * 2**20
    with zipfile.ZipFile(path) as zf:  # a well-formed zip whose entry really inflates to 1 GiB
        info = zf.getinfo("archive/data/0")
        assert info.file_size == GIB and zf.open(info).read(1 << 20) == bytes(1 << 20)

    result = load_in_child(path)
    _assert_refused(result, path, "archive/data/0", "1.0 GiB", "over the 100:1 limit",
                    "decompression bomb", "torch.save")


def test_zip_entries_that_unpack_past_the_byte_limit_are_refused_unread(tmp_path, load_in_child):
    import numpy as np
    import torch

    # 2 bits of entropy a byte: deflates ~4:1, a plausible re-packing, not a bomb.
    data = np.random.default_rng(0).integers(0, 4, 4 << 20, dtype=np.uint8).tobytes()
    c = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_HUFFMAN_ONLY)  # fast: no match search
    packed = c.compress(data) + c.flush()
    storage = _Storage(torch.ByteStorage, "0", len(data))
    path = tmp_path / "repacked.pt"
    _write_zip(path, _torch_bookkeeping() + [
        _stored("archive/data.pkl", _pickle({"g_ema": {"w": _byte_tensor(storage)}}, legacy=False)),
        ("archive/data/0", zipfile.ZIP_DEFLATED, packed, zlib.crc32(data), len(data))])
    assert path.stat().st_size < 2 << 20

    result = load_in_child(path, max_bytes=2 << 20)
    _assert_refused(result, path, "unpack to 4.0 MiB", "over the 2.0 MiB limit")


def test_a_file_over_the_byte_limit_is_refused_before_it_is_read(tmp_path, load_in_child):
    import torch

    path = tmp_path / "big.pt"
    torch.save({"g_ema": {"w": torch.zeros(1 << 19)}}, path)  # 2 MiB of float32
    result = load_in_child(path, max_bytes=1 << 20)
    _assert_refused(result, path, "the file is 2.0 MiB, over the 1.0 MiB limit")


@pytest.mark.parametrize("declared", [GIB, 1 << 44], ids=["1GiB", "16TiB"])
def test_a_legacy_checkpoint_declaring_more_than_it_holds_is_refused(tmp_path, load_in_child,
                                                                     declared):
    import torch

    storage = _Storage(torch.ByteStorage, "0", declared)
    path = tmp_path / "legacy.pt"
    path.write_bytes(_legacy_file({"g_ema": {"w": _byte_tensor(storage)}}, {"0": bytes(16)}))
    assert path.stat().st_size < 4096

    result = load_in_child(path)
    if declared == GIB:
        _assert_refused(result, path, "declare 1.0 GiB of data but the file holds only",
                        "truncated or forged")
    else:  # over the limit before it is compared with the file
        _assert_refused(result, path, "declare more than 4.0 GiB of data",
                        "limit for a face checkpoint")


@pytest.mark.parametrize("declared", [GIB, 1 << 44], ids=["1GiB", "16TiB"])
def test_an_nvidia_pickle_whose_embedded_storage_declares_a_huge_tensor_is_refused(
        tmp_path, load_in_child, declared):
    import torch

    # What a TypedStorage pickles as: _load_from_bytes(torch.save(storage) in legacy format).
    embedded = _legacy_file(_Storage(torch.ByteStorage, "0", declared), {"0": bytes(16)})
    path = tmp_path / "network-snapshot-000000.pkl"
    path.write_bytes(pickle.dumps({"G_ema": [_Call(torch.storage._load_from_bytes, embedded)]}))

    result = load_in_child(path)
    if declared == GIB:
        _assert_refused(result, path, "declare 1.0 GiB of data but its embedded storage holds only")
    else:
        _assert_refused(result, path, "declare more than 4.0 GiB of data")


def test_an_nvidia_pickle_reusing_one_storage_blob_is_refused_before_a_gigabyte_is_built(
        tmp_path, load_in_child):
    import torch

    blob = _legacy_file(_Storage(torch.ByteStorage, "0", 1 << 20), {"0": bytes(1 << 20)})
    # The pickle memo stores `blob` once and hands it to all 1024 calls: 1 MiB on disk, 1 GiB
    # of storages when loaded.
    path = tmp_path / "network-snapshot-000000.pkl"
    path.write_bytes(pickle.dumps({"G_ema": [_Call(torch.storage._load_from_bytes, blob)
                                             for _ in range(1024)]}))
    assert path.stat().st_size < 1.1 * 2**20

    result = load_in_child(path)
    _assert_refused(result, path, "storages add up to more than the 1.0 MiB the file holds",
                    "memory bomb")


def test_a_pickle_with_more_tensors_than_the_limit_is_refused(tmp_path, load_in_child):
    import torch

    # One 4-byte storage, memoised, viewed 10,001 times: each view costs ~1 KB when built.
    storage = _Call(torch.storage._load_from_bytes,
                    _legacy_file(_Storage(torch.ByteStorage, "0", 4), {"0": bytes(4)}))
    views = [_Call(torch._utils._rebuild_tensor_v2, storage, 0, (1,), (1,), False,
                   collections.OrderedDict()) for _ in range(10_001)]
    path = tmp_path / "network-snapshot-000000.pkl"
    path.write_bytes(pickle.dumps({"G_ema": views}))

    result = load_in_child(path)
    _assert_refused(result, path, "more than 10000 tensors", "save only the generator's weights")


def test_a_zip_checkpoint_with_more_entries_than_the_tensor_limit_is_refused(tmp_path,
                                                                              load_in_child):
    import torch

    path = tmp_path / "many.pt"
    torch.save({"g_ema": {f"t{i}": torch.zeros(1) for i in range(60)}}, path)
    result = load_in_child(path, max_tensors=20)
    _assert_refused(result, path, "more than 20 tensors")


def test_a_numpy_array_declaring_a_huge_shape_is_refused(tmp_path, load_in_child):
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    path = tmp_path / "network-snapshot-000000.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _Call(_reconstruct, np.ndarray, (1 << 44,), b"b")}))

    result = load_in_child(path)
    _assert_refused(result, path, "declare more than 4.0 GiB of data")


@pytest.fixture()
def persistence(monkeypatch):
    """torch_utils.persistence as NVIDIA's snapshots reference it (never called here)."""
    mod = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):
        raise AssertionError("the loader must not call the original reconstruct hook")

    _reconstruct_persistent_obj.__module__ = mod.__name__
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    mod._reconstruct_persistent_obj = _reconstruct_persistent_obj
    monkeypatch.setitem(sys.modules, "torch_utils", types.ModuleType("torch_utils"))
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    return mod


def test_a_generator_wider_than_the_weights_its_file_holds_is_refused_before_it_is_built(
        tmp_path, load_in_child, persistence):
    # 2048 channels at every resolution up to 1024: ~2.5 GiB of weights, described in ~500 bytes.
    kwargs = dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=1024, img_channels=3,
                  mapping_kwargs=dict(num_layers=8),
                  synthesis_kwargs=dict(channel_base=1 << 24, channel_max=2048, num_fp16_res=0,
                                        conv_clamp=None))
    meta = dict(type="class", version=6, module_src="", class_name="Generator",
                state=dict(_init_kwargs=kwargs, _parameters={}, _buffers={}, _modules={}))
    path = tmp_path / "network-snapshot-000000.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _Call(persistence._reconstruct_persistent_obj, meta)}))
    assert path.stat().st_size < 1024

    result = load_in_child(path)
    _assert_refused(result, path, "describe a generator of about 2.5 GiB",
                    "holds only 0 bytes of its weights")

    kwargs["synthesis_kwargs"]["channel_max"] = 1 << 14  # ~160 GiB: over the limit outright
    path.write_bytes(pickle.dumps({"G_ema": _Call(persistence._reconstruct_persistent_obj, meta)}))
    _assert_refused(load_in_child(path), path, "over the 4.0 GiB limit")


BIOMINT = Path(sys.executable).with_name("biomint")


@pytest.mark.skipif(not BIOMINT.is_file(), reason="the biomint console script is not installed")
def test_the_cli_refuses_a_zip_bomb_checkpoint_with_one_sentence_and_exit_2(tmp_path):
    path = tmp_path / "ffhq.pt"
    _write_zip_bomb(path)
    r = subprocess.run([str(BIOMINT), "dataset=smoke", f"output_dir={tmp_path / 'ds'}",
                        f"face.checkpoint={path}"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=300, env=biomint_env())
    assert r.returncode == 2, r.stderr[-2000:]
    lines = biomint_lines(r)
    assert len(lines) == 1 and "decompression bomb" in lines[0] and str(path) in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "ds").exists()
