"""StyleGAN3 (-T, -R): parity with NVIDIA's reference (bit-exact where the CPU's kernels sum as the
fixtures' machine did, else to float32 kernel rounding: conftest.py), names, safe loading, and the
StyleGAN2 call sites (edits, identities, mated images) working on it unchanged.

The fixtures in tests/fixtures/face_sg3/ were made once by make_fixtures.py with the reference
code on CPU (random weights, module_src blanked); see their README.
"""

from __future__ import annotations

import io
import json
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import FP32_KERNEL_ROUNDING
from pixel_embedder import PixelEmbedder
from generators.face.checkpoint_nvidia import PersistentRecord, ReadLimits, RestrictedUnpickler, \
    _EasyDict, read_nvidia_pickle
from generators.face.editing import EditRange, apply_edits, mix_styles
from generators.face.errors import CheckpointError
from generators.face.generator import Generator
from generators.face.identities import (IdentitySettings, identity_from_latent, map_latents,
                                        render, select_identity)
from generators.face.identity_gate import IdentityGate
from generators.face.mated import MatedSettings, generate_mated
from generators.face.stylegan3 import Generator3
from generators.face.stylegan3_filters import jinc_lowpass, kaiser_lowpass, upfirdn2d
from generators.face.stylegan3_checkpoint import (build_stylegan3, is_stylegan3, read_stylegan3,
                                                  stylegan3_nbytes)

FIXTURES = Path(__file__).parent / "fixtures" / "face_sg3"
INFO = json.loads((FIXTURES / "fixtures.json").read_text())
NAMES = ["sg3t", "sg3r"]
CPU = torch.device("cpu")


@pytest.fixture
def one_thread():
    """The references were computed on one thread: CPU convolutions may sum in another order
    on several (and the many small convolutions are faster on one)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _inputs(name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    z = torch.from_numpy(np.load(FIXTURES / f"{name}_z.npy"))
    c_path = FIXTURES / f"{name}_c.npy"
    return z, torch.from_numpy(np.load(c_path)) if c_path.is_file() else None


@pytest.mark.parametrize("name", NAMES)
def test_fixture_draws_what_the_reference_drew(name, one_thread):
    g = read_stylegan3(FIXTURES / f"{name}.pkl")
    z, c = _inputs(name)
    info = INFO[name]
    with torch.no_grad():
        ws = g.mapping(z, c, truncation_psi=info["truncation_psi"],
                       truncation_cutoff=info["truncation_cutoff"])
        img = g.synthesis(ws, noise_mode="const")
    ref_ws, ref_img = np.load(FIXTURES / f"{name}_ws.npy"), np.load(FIXTURES / f"{name}_img.npy")
    assert ws.shape == ref_ws.shape and img.shape == ref_img.shape
    assert np.abs(ws.numpy() - ref_ws).max() <= FP32_KERNEL_ROUNDING
    assert np.abs(img.numpy() - ref_img).max() <= FP32_KERNEL_ROUNDING
    # The one-call path is the same computation.
    with torch.no_grad():
        again = g(z, c, truncation_psi=info["truncation_psi"],
                  truncation_cutoff=info["truncation_cutoff"])
    assert torch.equal(again, img)


def _upfirdn_brute_force(x: np.ndarray, f2d: np.ndarray, up: int, down: int, pad, gain: float):
    """Zero insertion, zero padding (negative crops), true 2-D convolution, decimation."""
    b, c, h, w = x.shape
    z = np.zeros((b, c, h * up, w * up), np.float64)
    z[:, :, ::up, ::up] = x
    px0, px1, py0, py1 = pad
    z = np.pad(z, [(0, 0), (0, 0), (max(py0, 0), max(py1, 0)), (max(px0, 0), max(px1, 0))])
    z = z[:, :, max(-py0, 0): z.shape[2] - max(-py1, 0), max(-px0, 0): z.shape[3] - max(-px1, 0)]
    k = f2d[::-1, ::-1] * gain
    kh, kw = k.shape
    out = np.zeros((b, c, z.shape[2] - kh + 1, z.shape[3] - kw + 1))
    for i in range(kh):
        for j in range(kw):
            out += k[i, j] * z[:, :, i: i + out.shape[2], j: j + out.shape[3]]
    return out[:, :, ::down, ::down]


@pytest.mark.parametrize("up, down, pad", [(2, 2, (9, 8, 9, 8)), (4, 2, (-6, -9, -6, -9)),
                                           (1, 2, (3, 2, 3, 2)), (2, 1, (0, 1, 2, 3))])
def test_upfirdn2d_is_zero_insertion_filtering_and_decimation(up, down, pad, one_thread):
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(up * 10 + down))
    f = kaiser_lowpass(12, 3.0, 2.0, 16.0)
    got = upfirdn2d(x, f, up=up, down=down, pad=pad, gain=up ** 2)
    want = _upfirdn_brute_force(x.double().numpy(), np.outer(f, f), up, down, pad, up ** 2)
    assert got.shape == want.shape
    assert np.abs(got.numpy() - want).max() < 1e-5
    # The strided (decimating) convolution equals filtering everything, then keeping 1/down.
    full = upfirdn2d(x, f, up=up, pad=pad, gain=up ** 2)
    assert torch.equal(got, full[:, :, ::down, ::down])
    radial = jinc_lowpass(12, 3.0, 2.0, 16.0)
    assert torch.allclose(radial, radial.T) and torch.allclose(radial, radial.flip(0))
    got = upfirdn2d(x, radial, down=down)
    want = _upfirdn_brute_force(x.double().numpy(), radial.double().numpy(), 1, down, (0,) * 4, 1)
    assert np.abs(got.numpy() - want).max() < 1e-5


def test_clamping_is_exercised_by_the_r_fixture():
    # Otherwise a wrong clamp would pass the parity test unnoticed.
    assert INFO["sg3r"]["init_kwargs"]["conv_clamp"] is not None
    assert 0.01 < INFO["sg3r"]["clamped_output_fraction"] < 0.5


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_names_shapes_and_order_equal_the_snapshot(name):
    kwargs, state = read_nvidia_pickle(FIXTURES / f"{name}.pkl")
    ours = Generator3(**kwargs).state_dict()
    assert list(ours) == list(state)
    assert all(ours[k].shape == state[k].shape for k in state)
    g = build_stylegan3(kwargs, state)
    assert g.synthesis.layer_names == INFO[name]["layers"]
    assert g.num_ws == len(INFO[name]["layers"]) + 1
    assert g.num_ws == np.load(FIXTURES / f"{name}_ws.npy").shape[1]
    assert stylegan3_nbytes(kwargs) == 4 * sum(v.numel() for v in ours.values())


@pytest.mark.parametrize("name", NAMES)
def test_designed_filters_equal_the_snapshot_buffers(name):
    kwargs, state = read_nvidia_pickle(FIXTURES / f"{name}.pkl")
    fresh = Generator3(**kwargs).state_dict()
    filters = [k for k in state if k.endswith("_filter")]
    assert filters
    for k in filters:
        assert torch.allclose(fresh[k], state[k], rtol=0, atol=1e-7), k
        assert abs(float(state[k].sum()) - 1) < 1e-5  # unit DC gain
    radial = {k for k in filters if state[k].ndim == 2}
    if kwargs.get("use_radial_filters"):
        # -R: radial down filters except on the critically sampled last layers.
        critical = INFO[name]["layers"][-3:-1]
        assert radial and all(k.endswith("down_filter") for k in radial)
        assert not any(c in k for k in radial for c in critical)
    else:
        assert not radial


# Layer names of the reference's stylegan3-t/r-ffhq-1024x1024 generators (-R doubles channels).
FFHQ_T_LAYERS = ["L0_36_512", "L1_36_512", "L2_52_512", "L3_52_512", "L4_84_512", "L5_148_512",
                 "L6_148_512", "L7_276_323", "L8_276_203", "L9_532_128", "L10_1044_81",
                 "L11_1044_51", "L12_1044_32", "L13_1024_32", "L14_1024_3"]
FFHQ_R_LAYERS = ["L0_36_1024", "L1_36_1024", "L2_52_1024", "L3_52_1024", "L4_84_1024",
                 "L5_148_1024", "L6_148_1024", "L7_276_645", "L8_276_406", "L9_532_256",
                 "L10_1044_161", "L11_1044_102", "L12_1044_64", "L13_1024_64", "L14_1024_3"]


@pytest.mark.parametrize("cfg, layers, kernel, down0", [
    (dict(channel_base=32768, channel_max=512), FFHQ_T_LAYERS, 3, (12,)),
    (dict(channel_base=65536, channel_max=1024, conv_kernel=1, use_radial_filters=True),
     FFHQ_R_LAYERS, 1, (12, 12)),
])
def test_ffhq_1024_configurations_have_the_reference_layout(cfg, layers, kernel, down0):
    # train.py's arguments for --cfg=stylegan3-t / stylegan3-r at 1024x1024.
    g = Generator3(z_dim=512, c_dim=0, w_dim=512, img_resolution=1024, img_channels=3,
                   mapping_kwargs={"num_layers": 2}, magnitude_ema_beta=0.999, **cfg)
    sd = {k: tuple(v.shape) for k, v in g.state_dict().items()}
    ch, last = cfg["channel_max"], int(layers[-2].split("_")[-1])
    assert g.num_ws == 16 and len(sd) == 114 and g.synthesis.layer_names == layers
    assert sd["synthesis.input.freqs"] == (ch, 2) and sd["synthesis.input.transform"] == (3, 3)
    assert sd[f"synthesis.L0_36_{ch}.weight"] == (ch, ch, kernel, kernel)
    assert sd[f"synthesis.L0_36_{ch}.down_filter"] == down0
    assert sd[f"synthesis.L2_52_{ch}.up_filter"] == (24,)         # rate doubles: up x4
    assert sd[f"synthesis.L13_1024_{last}.down_filter"] == (12,)  # critical: never radial
    assert sd["synthesis.L14_1024_3.weight"] == (3, last, 1, 1)
    assert "synthesis.L14_1024_3.up_filter" not in sd
    assert sd["synthesis.L14_1024_3.magnitude_ema"] == ()
    assert sd["mapping.fc1.weight"] == (512, 512) and "mapping.fc2.weight" not in sd
    fp16 = [getattr(g.synthesis, n).use_fp16 for n in layers]
    assert fp16 == [False] * 5 + [True] * 10  # rates 128..1024: the 4 highest (num_fp16_res=4)
    assert stylegan3_nbytes(g.init_kwargs) == 4 * sum(v.numel() for v in g.state_dict().values())


def test_stylegan3_is_told_from_stylegan2():
    sg2 = Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=32, img_channels=3,
                    mapping_kwargs=dict(num_layers=2),
                    synthesis_kwargs=dict(channel_base=256, channel_max=16))
    assert not is_stylegan3(sg2.init_kwargs, sg2.state_dict())
    assert not is_stylegan3(sg2.init_kwargs)
    # The stylegan3 repository's StyleGAN2 keeps synthesis arguments at the top level too.
    assert not is_stylegan3({"z_dim": 512, "channel_base": 32768, "fused_modconv_default": "x"})
    for name in NAMES:
        kwargs, state = read_nvidia_pickle(FIXTURES / f"{name}.pkl")
        assert is_stylegan3(kwargs, state) and is_stylegan3(kwargs)


def test_init_kwargs_are_json_and_rebuild_the_same_network():
    kwargs, state = read_nvidia_pickle(FIXTURES / "sg3r.pkl")
    g = build_stylegan3(kwargs, state)
    again = Generator3(**json.loads(json.dumps(g.init_kwargs)))
    again.load_state_dict(g.state_dict(), strict=True)
    assert again.init_kwargs == g.init_kwargs


def test_bad_arguments_and_weights_are_one_sentence_checkpoint_errors():
    kwargs, state = read_nvidia_pickle(FIXTURES / "sg3t.pkl")
    no_ema = {k: v for k, v in state.items() if not k.endswith("magnitude_ema")}
    cases = [
        ({**kwargs, "fused_modconv_default": "inference_only"}, state,
         "cannot build: unsupported StyleGAN3 synthesis arguments"),
        ({**kwargs, "channel_max": 8}, state, r"does not match .*\(98 missing: synthesis.L0_36_8"),
        (kwargs, no_ema, "15 missing: synthesis.L0_36_16.magnitude_ema"),
        # Sized from the arguments before anything is built: a few bytes asking for terabytes.
        ({**kwargs, "channel_max": 1 << 20, "channel_base": 1 << 30}, state, "over the .* limit"),
        ({**kwargs, "channel_max": 512, "channel_base": 32768}, state, "holds only"),
        ({**kwargs, "num_layers": 10 ** 9}, state, "cannot build: num_layers must be in 1..256"),
    ]
    for bad_kwargs, bad_state, match in cases:
        with pytest.raises(CheckpointError, match=match) as err:
            build_stylegan3(bad_kwargs, bad_state, "x.pkl", ReadLimits())
        message = str(err.value)
        assert message.startswith("x.pkl") or message.startswith("Refusing to load x.pkl")
        assert "\n" not in message and message.endswith(".")


# --- booby-trapped snapshots -------------------------------------------------------------

def _plain_dicts(value):
    """EasyDict stand-ins back to dicts, so the re-pickled stream names no biomint class."""
    if isinstance(value, _EasyDict):
        return {k: _plain_dicts(v) for k, v in value.items()}
    if isinstance(value, dict):
        return type(value)((k, _plain_dicts(v)) for k, v in value.items())
    if isinstance(value, list):
        return [_plain_dicts(v) for v in value]
    return value


@pytest.fixture
def persistence(monkeypatch):
    """A stand-in `torch_utils.persistence` that does what NVIDIA's does with a record: run its
    `module_src` (here just exec). Used to write snapshots, and to show that their traps fire
    when a snapshot is loaded the usual way."""
    mod = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):
        exec(meta["module_src"], {})
        return meta

    _reconstruct_persistent_obj.__module__ = mod.__name__
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    mod._reconstruct_persistent_obj = _reconstruct_persistent_obj
    monkeypatch.setitem(sys.modules, "torch_utils", types.ModuleType("torch_utils"))
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    return mod


class _ExecOnLoad:
    """Pickles as `builtins.exec(code)`: a reduce that runs code when unpickled."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self):
        return exec, (self.code,)


def _dump_snapshot(persistence, snapshot: dict, module_src: str) -> bytes:
    """Pickle a snapshot dict whose networks are PersistentRecords the way NVIDIA's persistence
    does: `torch_utils.persistence._reconstruct_persistent_obj(meta)`, `module_src` in each."""

    class SnapshotPickler(pickle.Pickler):
        def reducer_override(self, obj):
            if isinstance(obj, PersistentRecord):
                meta = dict(type="class", version=obj.version, module_src=module_src,
                            class_name=obj.class_name, state=_plain_dicts(obj.state))
                return persistence._reconstruct_persistent_obj, (meta,)
            return NotImplemented

    buf = io.BytesIO()
    SnapshotPickler(buf, protocol=4).dump(snapshot)
    return buf.getvalue()


def _trapped_snapshot(persistence, module_src: str, extra: object = None) -> bytes:
    """The -T fixture re-pickled with `module_src` in every record (and `extra` as a value)."""
    with open(FIXTURES / "sg3t.pkl", "rb") as fh:
        snapshot = RestrictedUnpickler(fh).load()
    return _dump_snapshot(persistence, {**snapshot, "augment_pipe": extra}, module_src)


def _record_of(module: torch.nn.Module, init_kwargs: dict | None = None) -> PersistentRecord:
    """What a persistent module pickles as (its __dict__ essentials), for our own networks."""
    state = dict(training=False, _parameters=dict(module._parameters),
                 _buffers=dict(module._buffers), _non_persistent_buffers_set=set(),
                 _modules={n: _record_of(m) for n, m in module._modules.items()},
                 _init_kwargs=init_kwargs or {})
    return PersistentRecord(dict(type="class", version=6, class_name=type(module).__name__,
                                 state=state))


def test_stylegan2_snapshot_is_not_read_as_stylegan3(tmp_path, persistence):
    sg2 = Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=32, img_channels=3,
                    mapping_kwargs=dict(num_layers=2),
                    synthesis_kwargs=dict(channel_base=256, channel_max=16))
    path = tmp_path / "sg2.pkl"
    path.write_bytes(_dump_snapshot(persistence, {"G_ema": _record_of(sg2, sg2.init_kwargs)}, ""))
    kwargs, state = read_nvidia_pickle(path)
    assert list(state) == list(sg2.state_dict()) and not is_stylegan3(kwargs, state)
    with pytest.raises(CheckpointError, match="StyleGAN2 generator, not a StyleGAN3 one"):
        read_stylegan3(path)


def test_module_source_trap_runs_nothing(tmp_path, persistence, one_thread):
    marker = tmp_path / "ran.txt"
    data = _trapped_snapshot(persistence, f"open({str(marker)!r}, 'w').write('ran')")
    path = tmp_path / "trap.pkl"
    path.write_bytes(data)
    pickle.loads(data)                     # what NVIDIA's loader does: the trap is live
    assert marker.is_file()
    marker.unlink()
    g = read_stylegan3(path)               # the source is dropped unread; the weights load
    assert not marker.exists()
    z, _ = _inputs("sg3t")
    with torch.no_grad():
        img = g.synthesis(g.mapping(z, None, truncation_psi=INFO["sg3t"]["truncation_psi"]))
    assert np.abs(img.numpy() - np.load(FIXTURES / "sg3t_img.npy")).max() <= FP32_KERNEL_ROUNDING


def test_reduce_trap_is_refused_and_runs_nothing(tmp_path, persistence):
    marker = tmp_path / "ran.txt"
    data = _trapped_snapshot(persistence, "", _ExecOnLoad(f"open({str(marker)!r}, 'w').write('x')"))
    path = tmp_path / "trap.pkl"
    path.write_bytes(data)
    pickle.loads(data)
    assert marker.is_file()
    marker.unlink()
    with pytest.raises(CheckpointError, match="builtins.exec' is not allowed") as err:
        read_stylegan3(path)
    assert "\n" not in str(err.value)
    assert not marker.exists()
    # and through the console script: exit 2, one sentence, nothing ran
    from conftest import run_biomint

    result = run_biomint("dataset=smoke", f"output_dir={tmp_path / 'ds'}", f"face.checkpoint={path}")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert [line for line in result.stderr.splitlines() if line.startswith("biomint: ")]
    assert not marker.exists()


# --- the StyleGAN2 call sites on a StyleGAN3 generator -----------------------------------

@pytest.fixture(scope="module")
def sg3t() -> Generator3:
    return read_stylegan3(FIXTURES / "sg3t.pkl")


def test_noise_mode_is_accepted_and_changes_nothing(sg3t, one_thread):
    ws = torch.from_numpy(np.load(FIXTURES / "sg3t_ws.npy"))[:1]
    with torch.no_grad():
        const = sg3t.synthesis(ws, noise_mode="const")
        rand = sg3t.synthesis(ws, noise_mode="random", generator=[torch.Generator().manual_seed(1)])
        none = sg3t.synthesis(ws, noise_mode="none", force_fp32=True)
    assert torch.equal(const, rand) and torch.equal(const, none)
    with pytest.raises(ValueError, match="noise_mode"):
        sg3t.synthesis(ws, noise_mode="fresh")
    with pytest.raises(ValueError, match=r"ws must be \[B, 16, 16\]"):
        sg3t.synthesis(ws[:, :3])


def test_interfacegan_edits_and_style_mixing_render(sg3t, one_thread):
    z = np.random.default_rng(7).standard_normal((2, sg3t.z_dim)).astype(np.float32)
    ws = map_latents(sg3t, z, 0.7, None, CPU)
    assert ws.shape == (2, sg3t.num_ws, sg3t.w_dim)
    d = np.random.default_rng(8).standard_normal(sg3t.w_dim).astype(np.float32)
    d /= np.linalg.norm(d)
    ranges = {"smile": EditRange(-3, 3, first_layer=2, last_layer=6)}
    edited = apply_edits(ws[0], {"smile": d}, {"smile": 2.5}, ranges)
    assert np.array_equal(edited[:2], ws[0, :2]) and np.array_equal(edited[6:], ws[0, 6:])
    mixed = mix_styles(edited, ws[1], from_layer=10, strength=0.5)
    images = render(sg3t, np.stack([ws[0], edited, mixed]), CPU)
    assert images.shape == (3, 32, 32, 3) and images.dtype == np.uint8
    assert not np.array_equal(images[0], images[1]) and not np.array_equal(images[1], images[2])
    assert np.array_equal(render(sg3t, edited[None], CPU)[0], render(sg3t, edited[None], CPU)[0])


def test_identities_and_mated_images_on_stylegan3(sg3t, one_thread):
    emb = PixelEmbedder()
    settings = IdentitySettings()
    ident, tried = select_identity(sg3t, emb, IdentityGate(threshold=0.99),
                                   np.random.default_rng(2), settings)
    assert ident is not None and tried == 1
    assert ident.ws.shape == (sg3t.num_ws, sg3t.w_dim) and ident.image.shape == (32, 32, 3)
    again = identity_from_latent(sg3t, emb, ident.z, ident.candidate, ident.gate, settings)
    assert np.array_equal(again.image, ident.image)
    rng = np.random.default_rng(5)
    dirs = {"a": (v := rng.standard_normal(16).astype(np.float32)) / np.linalg.norm(v)}
    mated = MatedSettings(edit_ranges={"a": EditRange(0.5, 1.0)}, similarity_floor=-1.0,
                          mixing_strength_max=0.3)  # random_noise on: StyleGAN3 has none
    rngs = lambda: [np.random.default_rng(100 + k) for k in range(3)]  # noqa: E731
    out = generate_mated(sg3t, emb, ident, dirs, rngs(), mated)
    assert len(out) == 3 and all(m.accepted and m.image.shape == (32, 32, 3) for m in out)
    repeat = generate_mated(sg3t, emb, ident, dirs, rngs(), mated)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(out, repeat))


def test_fresh_network_runs_and_starts_from_an_identity_input_transform(one_thread):
    torch.manual_seed(0)
    g = Generator3(z_dim=8, c_dim=2, w_dim=8, img_resolution=16, img_channels=1,
                   channel_base=128, channel_max=8, num_layers=4, num_critical=1,
                   conv_kernel=1, use_radial_filters=True)
    assert g.num_ws == 6
    with torch.no_grad():
        img = g(torch.randn(2, 8), torch.eye(2), truncation_psi=0.5)
    assert img.shape == (2, 1, 16, 16) and torch.isfinite(img).all()
    f = g.synthesis.input.freqs
    assert (f.norm(dim=1) <= g.synthesis.input.bandwidth + 1e-6).all()  # inside the band
    assert torch.equal(g.synthesis.input.affine.weight, torch.zeros(4, 8))
    with pytest.raises(ValueError, match="conditional"):
        g(torch.randn(1, 8))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", NAMES)
def test_cuda_fp32_and_fp16_stay_close_to_the_reference(name):
    kwargs, state = read_nvidia_pickle(FIXTURES / f"{name}.pkl")
    ws = torch.from_numpy(np.load(FIXTURES / f"{name}_ws.npy")).cuda()
    ref = np.load(FIXTURES / f"{name}_img.npy")
    for fp16_res, tol in ((0, 1e-4), (4, 1e-2)):  # CPU-emulated fp16: max 2.4e-3
        g = build_stylegan3({**kwargs, "num_fp16_res": fp16_res}, state).cuda()
        with torch.no_grad():
            img = g.synthesis(ws).cpu().numpy()
        assert np.abs(img - ref).max() < tol, (fp16_res, np.abs(img - ref).max())
