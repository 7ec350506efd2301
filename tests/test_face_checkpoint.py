"""Face generator checkpoints: NVIDIA pickle structure, rosinality names, own format, refusal."""

from __future__ import annotations

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


def _write_nvidia_pkl(path, g: Generator, src: str, util) -> None:
    kw = util.EasyDict({k: (util.EasyDict(v) if isinstance(v, dict) else v)
                        for k, v in g.init_kwargs.items()})
    disc = torch.nn.Module()
    disc.b16 = torch.nn.Linear(2, 2)
    snapshot = dict(G=_Persistent(g, src, util.EasyDict, kw),
                    D=_Persistent(disc, src, util.EasyDict, {"c_dim": 0}),
                    G_ema=_Persistent(g, src, util.EasyDict, kw), augment_pipe=None,
                    training_set_kwargs=dict(resolution=np.int64(16), use_labels=False))
    with open(path, "wb") as fh:
        pickle.dump(snapshot, fh)


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


def test_torch_file_with_code_is_refused(tmp_path):
    marker = tmp_path / "marker"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"g_ema": Evil()}, path)
    with pytest.raises(CheckpointError, match="Refusing to load"):
        load_generator(path)
    assert not marker.exists()


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
