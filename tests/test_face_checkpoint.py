"""Face generator checkpoints: NVIDIA pickle structure, rosinality names, own format, refusal."""

from __future__ import annotations

import codecs
import copyreg
import io
import os
import pickle
import sys
import types

import numpy as np
import pytest
import torch

from generators.face.checkpoint import load_generator, save_generator
from generators.face.checkpoint_rosinality import ada_to_rosinality
from generators.face.errors import CheckpointError
from generators.face.generator import Generator

TINY = dict(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3,
            mapping_kwargs=dict(num_layers=2),
            synthesis_kwargs=dict(channel_base=128, channel_max=16, num_fp16_res=0, conv_clamp=256))


def _tiny(seed: int = 0, **over) -> Generator:
    torch.manual_seed(seed)
    g = Generator(**{**TINY, **over}).eval()
    with torch.no_grad():  # non-zero noise strengths and w_avg so every tensor matters
        for name, p in g.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.3)
        g.mapping.w_avg.normal_()
    return g


def _images(g: Generator, seed: int = 1) -> torch.Tensor:
    z = torch.randn(3, g.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return g(z, truncation_psi=0.7, truncation_cutoff=3, noise_mode="const")


# --- NVIDIA snapshot structure, as torch_utils.persistence writes it -------------------------

@pytest.fixture()
def nvidia_modules(monkeypatch):
    """Importable stand-ins for torch_utils.persistence and dnnlib.util so that pickle can write
    the same global references (`torch_utils.persistence._reconstruct_persistent_obj`,
    `dnnlib.util.EasyDict`) that real snapshots contain."""
    persistence = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):  # never called by the code under test
        raise AssertionError("the loader must not call the original reconstruct hook")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    util = types.ModuleType("dnnlib.util")

    class EasyDict(dict):
        pass

    EasyDict.__module__ = "dnnlib.util"
    EasyDict.__qualname__ = "EasyDict"
    util.EasyDict = EasyDict
    for name, mod in {"torch_utils": types.ModuleType("torch_utils"),
                      "torch_utils.persistence": persistence,
                      "dnnlib": types.ModuleType("dnnlib"), "dnnlib.util": util}.items():
        monkeypatch.setitem(sys.modules, name, mod)
    return persistence, util


class _Persistent:
    """Pickles like a @persistence.persistent_class object: a call of the reconstruct hook on
    dict(type='class', version=6, module_src, class_name, state=module.__dict__)."""

    def __init__(self, module: torch.nn.Module, src: str, easydict: type, init_kwargs: dict):
        state = dict(module.__dict__)
        state["_modules"] = type(state["_modules"])(
            (k, _Persistent(v, src, easydict, {}) if v is not None else None)
            for k, v in module._modules.items())
        # Real snapshots hold numpy scalars too (e.g. weight_gain = lr / np.sqrt(fan_in)).
        state["weight_gain_np"] = np.float64(0.125)
        state["act_gain_np"] = np.float32(1.4142135)
        state["_init_args"] = ()
        state["_init_kwargs"] = easydict(init_kwargs)
        state.pop("init_kwargs", None)
        self.meta = dict(type="class", version=6, module_src=src,
                         class_name=type(module).__name__, state=state)
        self.hook = sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj

    def __reduce__(self):
        return (self.hook, (self.meta,))


def _write_nvidia_pkl(path, g: Generator, src: str, util, protocol: int = 4) -> None:
    kw = util.EasyDict({k: (util.EasyDict(v) if isinstance(v, dict) else v)
                        for k, v in g.init_kwargs.items()})
    disc = torch.nn.Module()
    disc.b16 = torch.nn.Linear(2, 2)
    snapshot = dict(G=_Persistent(g, src, util.EasyDict, kw),
                    D=_Persistent(disc, src, util.EasyDict, {"c_dim": 0}),
                    G_ema=_Persistent(g, src, util.EasyDict, kw), augment_pipe=None,
                    training_set_kwargs=dict(resolution=np.int64(16), use_labels=False))
    with open(path, "wb") as fh:
        pickle.dump(snapshot, fh, protocol=protocol)


def test_nvidia_pickle_reproduces_images_and_never_runs_module_src(tmp_path, nvidia_modules):
    _, util = nvidia_modules
    marker = tmp_path / "module_src_ran"
    # Real snapshots embed networks.py here; whoever execs it runs arbitrary code.
    src = f"open({str(marker)!r}, 'w').write('executed')\n"
    g = _tiny()
    path = tmp_path / "network-snapshot-000000.pkl"
    _write_nvidia_pkl(path, g, src, util)
    data = path.read_bytes()
    for token in (b"torch_utils.persistence", b"module_src", b"EasyDict", b"_load_from_bytes",
                  b"_rebuild_parameter", b"numpy", b"_init_kwargs"):
        assert token in data, token

    loaded = load_generator(path)
    assert loaded.init_kwargs == g.init_kwargs
    assert torch.equal(_images(loaded), _images(g))
    for (ka, va), (kb, vb) in zip(sorted(loaded.state_dict().items()), sorted(g.state_dict().items())):
        assert ka == kb and torch.equal(va, vb)
    assert not marker.exists()


def test_protocol_2_snapshot_loads_like_a_protocol_4_one(tmp_path, nvidia_modules):
    _, util = nvidia_modules
    g = _tiny(seed=2)
    path = tmp_path / "protocol2.pkl"
    _write_nvidia_pkl(path, g, "", util, protocol=2)
    data = path.read_bytes()
    # Python 2 names and protocol 2's way of writing bytes, as pickle writes them.
    assert data[:2] == b"\x80\x02" and b"c__builtin__\nset" in data and b"c_codecs\nencode" in data
    assert torch.equal(_images(load_generator(path)), _images(g))


def _reducing_to(fn, *args):
    class Call:
        def __reduce__(self):
            return (fn, args)
    return Call()


@pytest.mark.parametrize("protocol,fn,args,refused", [
    # Python 2 names are mapped (__builtin__ -> builtins), then the allow-list applies as ever.
    (2, exec, ("open({marker!r}, 'w')",), "builtins.exec"),
    (2, getattr, ("{marker}", "upper"), "builtins.getattr"),
    (2, copyreg._reconstructor, (object, object, None), "copyreg._reconstructor"),  # copy_reg
    # The bytes builders of protocols 0-2 build bytes and nothing else...
    (2, codecs.encode, ("{marker}", "rot13"), "latin-1 bytes"),
    (2, bytes, (10 ** 9,), "without arguments"),
    # ...and only in such streams.
    (4, codecs.encode, ("{marker}", "latin1"), "_codecs.encode"),
])
def test_python_2_name_mapping_widens_nothing(tmp_path, protocol, fn, args, refused):
    marker = tmp_path / "marker"
    args = tuple(a.format(marker=str(marker)) if isinstance(a, str) else a for a in args)
    path = tmp_path / "crafted.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _reducing_to(fn, *args)}, protocol=protocol))
    with pytest.raises(CheckpointError, match=f"Refusing to load .*{refused}") as err:
        load_generator(path)
    assert "\n" not in str(err.value) and not marker.exists()


def test_pickle_with_shell_command_is_refused_without_running_it(tmp_path):
    class Evil:
        def __init__(self, target):
            self.target = target

        def __reduce__(self):
            return (os.system, (f"touch {self.target}",))

    control = tmp_path / "control_marker"
    pickle.loads(pickle.dumps({"G_ema": Evil(control)}))  # what an ordinary pickle.load does
    assert control.exists(), "the crafted pickle must really run its command when loaded normally"

    marker = tmp_path / "marker"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": Evil(marker)}))
    with pytest.raises(CheckpointError, match="Refusing to load .*evil.pkl.*system"):
        load_generator(path)
    assert not marker.exists()


def _evil(marker):
    return _reducing_to(os.system, f"touch {marker}")


def _storage_with_code(tmp_path, marker, util):
    """A snapshot whose one tensor storage is a torch.save stream holding a shell command."""
    blob = io.BytesIO()
    torch.save({"x": _evil(marker)}, blob, _use_new_zipfile_serialization=False)
    module = torch.nn.Module()
    module.register_buffer("w_avg", torch.zeros(2))
    record = _Persistent(module, "", util.EasyDict, {})
    record.meta["state"]["_buffers"] = {
        "w_avg": _reducing_to(torch.storage._load_from_bytes, blob.getvalue())}
    return _write(tmp_path / "storage_with_code.pkl", pickle.dumps({"G_ema": record}))


# Each builds a malformed file in tmp_path; every one must be refused with one sentence.
_MALFORMED = {
    "torch file with code": lambda tmp, marker, util: _save(
        tmp / "evil.pt", {"g_ema": _evil(marker)}),
    "legacy torch file with code": lambda tmp, marker, util: _save(
        tmp / "evil_legacy.pt", {"g_ema": _evil(marker)}, zip_format=False),
    "storage with code": _storage_with_code,
    "truncated snapshot": lambda tmp, marker, util: _truncated_snapshot(tmp, util),
    "not a pickle": lambda tmp, marker, util: _write(tmp / "junk.pkl", b"not a pickle at all"),
    "own format with bad json": lambda tmp, marker, util: _own(tmp, "{not json"),
    "own format without init_kwargs": lambda tmp, marker, util: _own(
        tmp, '{"format": "biomint-stylegan2", "version": 1}'),
    "discriminator as G_ema": lambda tmp, marker, util: _write(tmp / "d.pkl", pickle.dumps(
        {"G_ema": _Persistent(torch.nn.Linear(2, 2), "", util.EasyDict, {})})),
    "rosinality with a foreign blur kernel": lambda tmp, marker, util: _rosinality(
        tmp, {"convs.2.conv.blur.kernel": torch.ones(4, 4) / 16}),
}


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _save(path, obj, zip_format=True):
    torch.save(obj, path, _use_new_zipfile_serialization=zip_format)
    return path


def _truncated_snapshot(tmp_path, util):
    path = tmp_path / "cut.pkl"
    _write_nvidia_pkl(path, _tiny(), "", util)
    return _write(path, path.read_bytes()[:5000])


def _own(tmp_path, sidecar: str):
    pt, meta = save_generator(_tiny(seed=5), tmp_path / "own.pt")
    meta.write_text(sidecar)
    return pt


def _rosinality(tmp_path, replace: dict):
    g = _tiny(seed=3, synthesis_kwargs=dict(channel_base=128, channel_max=16, conv_clamp=None))
    exported = ada_to_rosinality(g.state_dict(), g.img_resolution)
    exported["g_ema"].update(replace)
    return _save(tmp_path / "ros.pt", exported)


@pytest.mark.parametrize("case", _MALFORMED)
def test_every_refusal_is_one_sentence_without_weights_only_advice(tmp_path, nvidia_modules, case):
    _, util = nvidia_modules
    marker = tmp_path / "marker"
    path = _MALFORMED[case](tmp_path, marker, util)
    with pytest.raises(CheckpointError) as err:
        load_generator(path)
    message = str(err.value)
    assert "\n" not in message and message.endswith("."), message
    assert "weights_only" not in message and "\x1b" not in message, message
    assert str(path) in message or str(path.with_suffix(".json")) in message, message
    assert not marker.exists()


def test_rosinality_blur_kernels_must_be_the_1_3_3_1_filter(tmp_path):
    g = _tiny(seed=3, synthesis_kwargs=dict(channel_base=128, channel_max=16, conv_clamp=None))
    exported = ada_to_rosinality(g.state_dict(), g.img_resolution)
    kernels = sorted(k for k in exported["g_ema"] if k.endswith(".kernel"))
    # What rosinality's Generator registers at 16x16: one blur per upsampling conv, one per
    # upsampling ToRGB, each make_kernel([1, 3, 3, 1]) * 4.
    assert kernels == ["convs.0.conv.blur.kernel", "convs.2.conv.blur.kernel",
                       "to_rgbs.0.upsample.kernel", "to_rgbs.1.upsample.kernel"]
    k = torch.tensor([1.0, 3, 3, 1])
    assert torch.equal(exported["g_ema"]["convs.0.conv.blur.kernel"], torch.outer(k, k) / 64 * 4)
    torch.save(exported, tmp_path / "ok.pt")
    assert torch.equal(_images(load_generator(tmp_path / "ok.pt")), _images(g))

    for name, kernel in [("to_rgbs.1.upsample.kernel", torch.outer(k, k) / 64),  # no x4 gain
                         ("convs.0.conv.blur.kernel", torch.ones(3, 3) / 9 * 4),
                         ("conv1.conv.blur.kernel", torch.outer(k, k) / 16)]:  # 4x4 has no blur
        bad = {"g_ema": {**exported["g_ema"], name: kernel}, "latent_avg": exported["latent_avg"]}
        torch.save(bad, tmp_path / "bad.pt")
        with pytest.raises(CheckpointError, match=f"Refusing to load .*bad.pt: its .*{name}") \
                as err:
            load_generator(tmp_path / "bad.pt")
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_rosinality_state_dict_loads_and_matches(tmp_path, zip_format):
    g = _tiny(seed=3, synthesis_kwargs=dict(channel_base=128, channel_max=16, conv_clamp=None))
    exported = ada_to_rosinality(g.state_dict(), g.img_resolution)
    assert "convs.0.conv.weight" in exported["g_ema"] and "noises.noise_4" in exported["g_ema"]
    assert exported["g_ema"]["convs.0.conv.weight"].shape == (1, 16, 16, 3, 3)
    import argparse
    path = tmp_path / "550000.pt"
    torch.save({**exported, "args": argparse.Namespace(size=16, n_mlp=2)}, path,
               _use_new_zipfile_serialization=zip_format)
    loaded = load_generator(path)
    assert loaded.img_resolution == 16 and loaded.mapping.num_layers == 2
    assert torch.equal(_images(loaded), _images(g))

    # rosinality's own train.py saves no latent_avg: it is estimated like its mean_latent().
    torch.save({"g_ema": exported["g_ema"]}, tmp_path / "no_avg.pt")
    est = load_generator(tmp_path / "no_avg.pt").mapping.w_avg
    with torch.no_grad():
        ref = g.mapping(torch.randn(4096, 16, generator=torch.Generator().manual_seed(0)))[:, 0].mean(0)
    assert torch.allclose(est, ref, atol=1e-5) and est.abs().sum() > 0


def test_own_format_round_trip_and_errors(tmp_path):
    g = _tiny(seed=5)
    pt, meta = save_generator(g, tmp_path / "face_g.pt")
    assert torch.equal(_images(load_generator(pt)), _images(g))

    with pytest.raises(CheckpointError, match="does not exist"):
        load_generator(tmp_path / "missing.pkl")
    bad = dict(torch.load(pt, weights_only=True))
    bad.pop("mapping.w_avg")
    torch.save(bad, tmp_path / "broken.pt")
    (tmp_path / "broken.json").write_text(meta.read_text())
    with pytest.raises(CheckpointError, match="does not match.*w_avg"):
        load_generator(tmp_path / "broken.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="neither a rosinality"):
        load_generator(tmp_path / "other.pt")
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle at all")
    with pytest.raises(CheckpointError):
        load_generator(tmp_path / "junk.pkl")


def test_unbuildable_architecture_is_a_checkpoint_error(tmp_path):
    import json

    pt, meta = save_generator(_tiny(seed=6), tmp_path / "g.pt")
    desc = json.loads(meta.read_text())
    desc["init_kwargs"]["synthesis_kwargs"]["architecture"] = "resnet"
    meta.write_text(json.dumps(desc))
    with pytest.raises(CheckpointError, match="cannot build.*resnet"):
        load_generator(pt)
