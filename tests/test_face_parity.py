"""StyleGAN2 snapshots of both NVIDIA repositories load and draw what the reference code drew.

The fixtures (tests/fixtures/face/, README.md there) are tiny random-weight snapshots made with
NVIDIA's own code, every embedded module_src blanked, together with that code's outputs for
fixed z, c and noise. fp32 matches bit for bit where this CPU's BLAS/oneDNN kernels sum as the
fixtures' machine did, and to float32 kernel rounding elsewhere (conftest.FP32_KERNEL_ROUNDING);
fp16 blocks (run on the CPU on both sides) within two fp16 steps.
"""

from __future__ import annotations

import functools
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import FP16_KERNEL_ROUNDING, FP32_KERNEL_ROUNDING
from generators.face import CheckpointError, load_generator, save_generator

FIXTURES = Path(__file__).parent / "fixtures" / "face"
# name: (repository layout, fp16 blocks)
SNAPSHOTS = {
    "ada-uncond-32": ("stylegan2-ada-pytorch train.py", True),
    "ada-cond-32": ("stylegan2-ada-pytorch train.py, conditional, --fp32", False),
    "sg3-stylegan2-32": ("stylegan3 train.py --cfg=stylegan2", True),
    "sg3-stylegan2-unfused-16": ("stylegan3 networks_stylegan2, fused_modconv_default=False", True),
    "sg3-legacy-32": ("stylegan3 legacy.py conversion of a TensorFlow pickle", False),
}
FP16 = [name for name, (_, fp16) in SNAPSHOTS.items() if fp16]


@functools.cache
def _generator(name: str):
    return load_generator(FIXTURES / f"{name}.pkl")


@functools.cache
def _reference(name: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / f"{name}.npz", allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _inputs(name: str):
    ref = _reference(name)
    c = torch.from_numpy(ref["c"]) if ref["c"].shape[1] else None
    cutoff = int(ref["cutoff"])
    return torch.from_numpy(ref["z"]), c, float(ref["psi"]), (None if cutoff < 0 else cutoff)


def _noise(name: str) -> torch.Generator:
    """The noise the reference drew: torch's global CPU generator seeded with noise_seed, which
    a torch.Generator with that seed repeats (checked on the first layer's draw)."""
    ref = _reference(name)
    probe = torch.randn(ref["noise_probe"].shape,
                        generator=torch.Generator().manual_seed(int(ref["noise_seed"])))
    if not np.array_equal(probe.numpy(), ref["noise_probe"]):
        pytest.skip("this torch draws other normal numbers from a seed than the fixtures' did")
    return torch.Generator().manual_seed(int(ref["noise_seed"]))


def _max_diff(ours: torch.Tensor, ref: np.ndarray) -> float:
    assert tuple(ours.shape) == ref.shape
    return float(np.abs(ours.detach().float().numpy() - ref).max())


@pytest.mark.parametrize("name", SNAPSHOTS)
def test_mapping_gives_the_reference_ws(name):
    z, c, psi, cutoff = _inputs(name)
    with torch.no_grad():
        ws = _generator(name).mapping(z, c, truncation_psi=psi, truncation_cutoff=cutoff)
    assert _max_diff(ws, _reference(name)["ws"]) <= FP32_KERNEL_ROUNDING


@pytest.mark.parametrize("noise_mode", ["const", "random"])
@pytest.mark.parametrize("name", SNAPSHOTS)
def test_fp32_images_equal_the_reference_to_kernel_rounding(name, noise_mode):
    g, ref = _generator(name), _reference(name)
    noise = _noise(name) if noise_mode == "random" else None
    with torch.no_grad():
        img = g.synthesis(torch.from_numpy(ref["ws"]), noise_mode=noise_mode, generator=noise,
                          force_fp32=True)
    assert _max_diff(img, ref[f"img_{noise_mode}_fp32"]) <= FP32_KERNEL_ROUNDING


@pytest.mark.parametrize("name", SNAPSHOTS)
def test_the_whole_generator_draws_the_reference_image_from_z(name):
    z, c, psi, cutoff = _inputs(name)
    with torch.no_grad():
        img = _generator(name)(z, c, truncation_psi=psi, truncation_cutoff=cutoff)
    assert _max_diff(img, _reference(name)["img_const_fp32"]) <= FP32_KERNEL_ROUNDING


@pytest.mark.parametrize("name", FP16)
def test_fp16_blocks_round_like_the_reference(name):
    g, ref = _generator(name), _reference(name)
    ws = torch.from_numpy(ref["ws"])
    with torch.no_grad():
        const = g.synthesis(ws, noise_mode="const", fp16_on_cpu=True)
        rand = g.synthesis(ws, noise_mode="random", generator=_noise(name), fp16_on_cpu=True)
        # One sample: stylegan2-ada-pytorch's blocks fuse the modulated conv as well.
        single = g.synthesis(ws[:1], noise_mode="const", fp16_on_cpu=True)
    assert _max_diff(const, ref["img_const_fp16"]) <= FP16_KERNEL_ROUNDING
    assert _max_diff(rand, ref["img_random_fp16"]) <= FP16_KERNEL_ROUNDING
    assert _max_diff(single, ref["img_const_fp16_b1"]) <= FP16_KERNEL_ROUNDING
    # The fixtures' fp16 really differs from their fp32 (otherwise this test would show nothing).
    assert np.abs(ref["img_const_fp16"] - ref["img_const_fp32"]).max() > 1e-4


def test_stylegan3_layouts_arrive_nested_with_that_codes_defaults():
    trained = _generator("sg3-stylegan2-32")
    assert trained.init_kwargs["synthesis_kwargs"] == {
        "channel_base": 128, "channel_max": 8, "fused_modconv_default": "inference_only",
        "num_fp16_res": 4, "conv_clamp": 256}
    # num_fp16_res=4 at 32x32: every block from 8x8 up runs in fp16, fused.
    blocks = {res: getattr(trained.synthesis, f"b{res}") for res in (4, 8, 16, 32)}
    assert [b.use_fp16 for b in blocks.values()] == [False, True, True, True]
    assert all(b.fused_modconv_default is True for b in blocks.values())
    legacy = _generator("sg3-legacy-32").init_kwargs
    assert legacy["synthesis_kwargs"]["num_fp16_res"] == 0
    assert legacy["synthesis_kwargs"]["conv_clamp"] is None
    assert legacy["mapping_kwargs"]["w_avg_beta"] == 0.995
    ada = _generator("ada-uncond-32").synthesis.b32
    assert ada.fused_modconv_default is None and ada.use_fp16


def test_fixtures_hold_no_source_code():
    for name in SNAPSHOTS:
        data = (FIXTURES / f"{name}.pkl").read_bytes()
        assert b"torch_utils.persistence" in data and b"module_src" in data
        assert b"import torch" not in data and b"persistent_class" not in data, name


def test_a_stylegan3_layout_generator_round_trips_through_biomints_own_format(tmp_path):
    g, ref = _generator("sg3-stylegan2-32"), _reference("sg3-stylegan2-32")
    pt, _ = save_generator(g, tmp_path / "face_g.pt")
    again = load_generator(pt)
    assert again.init_kwargs == g.init_kwargs
    with torch.no_grad():
        img = again.synthesis(torch.from_numpy(ref["ws"]), noise_mode="const", fp16_on_cpu=True)
    assert _max_diff(img, ref["img_const_fp16"]) <= FP16_KERNEL_ROUNDING


# --- the same snapshots rewritten: pickle protocol 2, edited arguments, damage ------------------

class _Record:
    """A persistent object read as plain data; pickles back as the same reconstruct call."""

    def __init__(self, meta):
        self.meta = meta

    def __reduce__(self):
        return (sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj, (self.meta,))


@pytest.fixture()
def rewrite(monkeypatch, tmp_path):
    """rewrite(name, edit=None, protocol=4) -> path of the fixture snapshot re-pickled with
    `protocol` after edit(data). Plain pickle reads it (the fixtures are ours) through stand-ins
    for the two modules a snapshot names, so every record keeps its structure."""
    persistence = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):
        return _Record(meta)

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    util = types.ModuleType("dnnlib.util")

    class EasyDict(dict):
        pass

    EasyDict.__module__, EasyDict.__qualname__ = "dnnlib.util", "EasyDict"
    util.EasyDict = EasyDict
    for mod_name, mod in {"torch_utils": types.ModuleType("torch_utils"),
                          "torch_utils.persistence": persistence,
                          "dnnlib": types.ModuleType("dnnlib"), "dnnlib.util": util}.items():
        monkeypatch.setitem(sys.modules, mod_name, mod)

    def _rewrite(name: str, edit=None, protocol: int = 4) -> Path:
        data = pickle.loads((FIXTURES / f"{name}.pkl").read_bytes())
        if edit is not None:
            edit(data)
        out = tmp_path / f"{name}-p{protocol}.pkl"
        out.write_bytes(pickle.dumps(data, protocol=protocol))
        return out

    return _rewrite


def _g_ema_kwargs(data) -> dict:
    return data["G_ema"].meta["state"]["_init_kwargs"]


def test_a_protocol_2_snapshot_loads_and_draws_the_same_images(rewrite):
    path = rewrite("sg3-stylegan2-32", protocol=2)
    head = path.read_bytes()
    assert head[:2] == b"\x80\x02" and b"__builtin__" in head and b"_codecs" in head
    ref = _reference("sg3-stylegan2-32")
    with torch.no_grad():
        img = load_generator(path).synthesis(torch.from_numpy(ref["ws"]), force_fp32=True)
    assert _max_diff(img, ref["img_const_fp32"]) <= FP32_KERNEL_ROUNDING


@pytest.mark.parametrize("name,edit,recorded", [
    # Fewer fp16 blocks than the pickled ones ran in.
    ("sg3-stylegan2-32", lambda kw: kw.update(num_fp16_res=2), "use_fp16"),
    # A clamp the pickled layers did not have.
    ("ada-cond-32", lambda kw: kw["synthesis_kwargs"].update(conv_clamp=64), "conv_clamp"),
    # Nesting stylegan3's arguments gives them stylegan2-ada-pytorch's defaults (no clamp).
    ("sg3-stylegan2-32", lambda kw: kw.update(synthesis_kwargs={
        k: kw.pop(k) for k in ("channel_base", "channel_max", "fused_modconv_default")}),
     "conv_clamp"),
])
def test_arguments_that_contradict_the_pickled_modules_are_refused(rewrite, name, edit, recorded):
    path = rewrite(name, lambda data: edit(_g_ema_kwargs(data)))
    with pytest.raises(CheckpointError, match=f"pickled with {recorded}=") as err:
        load_generator(path)
    assert "\n" not in str(err.value)


def test_a_damaged_snapshot_is_refused_with_one_sentence(tmp_path):
    data = (FIXTURES / "ada-uncond-32.pkl").read_bytes()
    cut = tmp_path / "cut.pkl"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="Refusing to load .*cut.pkl") as err:
        load_generator(cut)
    message = str(err.value)
    assert "\n" not in message and "weights_only" not in message and message.endswith(".")


def test_arguments_of_a_stylegan3_t_or_r_generator_on_stylegan2_weights_are_refused(rewrite):
    path = rewrite("sg3-stylegan2-32", lambda data: _g_ema_kwargs(data).update(
        magnitude_ema_beta=0.999))
    with pytest.raises(CheckpointError) as err:
        load_generator(path)
    assert "\n" not in str(err.value)
