"""StyleGAN2 networks: G_ema names/shapes, resampling maths, truncation, mixing, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from generators.face.editing import mix_styles
from generators.face.generator import (Generator, images_to_uint8, latents_from_rng,
                                       nested_init_kwargs)
from generators.face.layers import conv2d_resample, modulated_conv2d, setup_filter, upsample2d
from generators.face.mapping import truncate

TINY = dict(z_dim=16, c_dim=0, w_dim=16, img_resolution=32, img_channels=3,
            mapping_kwargs=dict(num_layers=2),
            synthesis_kwargs=dict(channel_base=256, channel_max=16))


def test_ffhq_1024_state_dict_names_and_shapes():
    # FFHQ-1024 snapshot kwargs of stylegan2-ada-pytorch (cfg paper1024 / stylegan2).
    g = Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=1024, img_channels=3,
                  mapping_kwargs=dict(num_layers=8),
                  synthesis_kwargs=dict(channel_base=32768, channel_max=512, num_fp16_res=4,
                                        conv_clamp=256))
    sd = {k: tuple(v.shape) for k, v in g.state_dict().items()}
    assert g.num_ws == 18
    assert sd["mapping.w_avg"] == (512,) and sd["mapping.fc7.weight"] == (512, 512)
    assert sd["synthesis.b4.const"] == (512, 4, 4)
    assert sd["synthesis.b4.conv1.noise_strength"] == ()
    assert sd["synthesis.b4.resample_filter"] == (4, 4)
    assert sd["synthesis.b128.conv0.weight"] == (256, 512, 3, 3)
    assert sd["synthesis.b1024.conv1.noise_const"] == (1024, 1024)
    assert sd["synthesis.b1024.torgb.weight"] == (3, 32, 1, 1)
    assert sd["synthesis.b1024.torgb.affine.weight"] == (32, 512)
    assert "synthesis.b4.conv0.weight" not in sd and "mapping.fc8.weight" not in sd
    per_block = {"resample_filter", "conv0", "conv1", "torgb"}
    assert {k.split(".")[2] for k in sd if k.startswith("synthesis.b8.")} == per_block
    assert g.synthesis.b128.use_fp16 and not g.synthesis.b64.use_fp16  # 4 highest resolutions


def test_fir_upsampling_matches_zero_insertion_reference():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 5)
    f = setup_filter()
    # Reference: insert zeros, then a full 'same' convolution with the separable [1,3,3,1]*2 taps.
    z = torch.zeros(2, 3, 10, 10)
    z[:, :, ::2, ::2] = x
    k = (f * 4)[None, None].repeat(3, 1, 1, 1)
    ref = F.conv2d(F.pad(z, [2, 1, 2, 1]), k, groups=3)
    assert torch.allclose(upsample2d(x, f), ref, atol=1e-6)
    # Transposed-conv upsampling of a 3x3 conv equals conv on the zero-inserted, filtered input.
    w = torch.randn(4, 3, 3, 3)
    up = conv2d_resample(x, w, f, up=2, padding=1, flip_weight=False)
    assert up.shape == (2, 4, 10, 10)
    # = zero insertion (9x9 for 5 samples), full true convolution with w, then the FIR filter.
    zi = torch.zeros(2, 3, 9, 9)
    zi[:, :, ::2, ::2] = x
    full = F.conv2d(F.pad(zi, [2, 2, 2, 2]), w.flip([2, 3]))          # [2, 4, 11, 11]
    k4 = (f * 4)[None, None].repeat(4, 1, 1, 1)
    ref2 = F.conv2d(F.pad(full, [1, 1, 1, 1]), k4, groups=4)
    assert torch.allclose(up, ref2, atol=1e-4)


def test_fused_and_unfused_modulated_conv_agree():
    torch.manual_seed(1)
    x, w, s = torch.randn(3, 8, 6, 6), torch.randn(5, 8, 3, 3), torch.randn(3, 8)
    noise = torch.randn(3, 1, 12, 12)
    f = setup_filter()
    a = modulated_conv2d(x, w, s, noise=noise, up=2, padding=1, resample_filter=f,
                         flip_weight=False, fused_modconv=True)
    b = modulated_conv2d(x, w, s, noise=noise, up=2, padding=1, resample_filter=f,
                         flip_weight=False, fused_modconv=False)
    assert torch.allclose(a, b, atol=1e-4)
    # Demodulation: each output map has unit expected weight norm -> scale-free in styles.
    c = modulated_conv2d(x, w, s * 7.0)
    d = modulated_conv2d(x, w, s)
    assert torch.allclose(c, d, atol=1e-4)


def test_truncation_cutoff_and_style_mixing():
    torch.manual_seed(2)
    g = Generator(**TINY).eval()
    g.mapping.w_avg.normal_()
    z = torch.randn(2, 16)
    with torch.no_grad():
        ws = g.mapping(z, None)
        full = g.mapping(z, None, truncation_psi=0.0)
        cut = g.mapping(z, None, truncation_psi=0.5, truncation_cutoff=3)
    assert torch.allclose(full, g.mapping.w_avg.expand_as(full))
    assert torch.allclose(cut[:, 3:], ws[:, 3:])
    assert torch.allclose(cut[:, :3], truncate(ws, g.mapping.w_avg, 0.5)[:, :3])
    mixed = mix_styles(ws[0].numpy(), ws[1].numpy(), from_layer=4)
    assert np.allclose(mixed[:4], ws[0, :4].numpy()) and np.allclose(mixed[4:], ws[1, 4:].numpy())


def test_same_seed_same_images_and_noise_per_row():
    torch.manual_seed(3)
    g = Generator(**TINY).eval()
    for name, p in g.named_parameters():
        if name.endswith("noise_strength"):
            p.data.fill_(0.5)
    z = torch.from_numpy(latents_from_rng(np.random.default_rng(7), 16, 3))
    assert torch.equal(z, torch.from_numpy(latents_from_rng(np.random.default_rng(7), 16, 3)))
    gens = lambda: [torch.Generator().manual_seed(s) for s in (11, 12, 13)]  # noqa: E731
    with torch.no_grad():
        a = images_to_uint8(g(z, noise_mode="random", generator=gens()))
        b = images_to_uint8(g(z, noise_mode="random", generator=gens()))
        # Row 1 alone, with its own generator: same pixels as inside the batch.
        c = images_to_uint8(g(z[1:2], noise_mode="random", generator=gens()[1:2]))
        const = images_to_uint8(g(z, noise_mode="const"))
    assert a.shape == (3, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert np.abs(a[1].astype(int) - c[0].astype(int)).max() <= 1
    assert not np.array_equal(a, const)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fp32_matches_cpu_and_fp16_is_close():
    torch.manual_seed(4)
    kw = dict(TINY, img_resolution=64,
              synthesis_kwargs=dict(channel_base=1024, channel_max=32, num_fp16_res=2, conv_clamp=256))
    g = Generator(**kw).eval()
    z = torch.randn(4, 16)
    with torch.no_grad():
        cpu = g(z, noise_mode="const")
        g = g.cuda()
        fp32 = g(z.cuda(), noise_mode="const", force_fp32=True).cpu()
        fp16 = g(z.cuda(), noise_mode="const").cpu()
    assert torch.allclose(cpu, fp32, atol=1e-3)
    assert (fp16 - fp32).abs().mean() < 0.05


def test_accepts_kwargs_of_converted_nvidia_pickles_and_conditional_mapping():
    # What stylegan2-ada-pytorch's legacy.py stores for the converted FFHQ/MetFaces pickles.
    g = Generator(z_dim=16, c_dim=3, w_dim=16, img_resolution=16, img_channels=3,
                  mapping_kwargs=dict(num_layers=2, embed_features=None, layer_features=None,
                                      activation="lrelu", lr_multiplier=0.01, w_avg_beta=0.995),
                  synthesis_kwargs=dict(channel_base=128, channel_max=16, num_fp16_res=0,
                                        conv_clamp=None, architecture="skip",
                                        resample_filter=[1, 3, 3, 1], use_noise=True,
                                        activation="lrelu"))
    sd = g.state_dict()
    assert sd["mapping.embed.weight"].shape == (16, 3) and sd["mapping.fc0.weight"].shape == (16, 32)
    with torch.no_grad():
        assert g(torch.randn(2, 16), torch.eye(3)[:2]).shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="conditional"):
        g(torch.randn(2, 16))
    for bad in (dict(architecture="resnet"), dict(resample_filter=[1, 2, 1]), dict(foo=1)):
        with pytest.raises(ValueError):
            Generator(**{**TINY, "synthesis_kwargs": {**TINY["synthesis_kwargs"], **bad}})


def test_fp16_block_paths_agree_with_fp32():
    """The fp16 code path (pre-normalised styles, unfused modconv for batches) run on CPU at
    block level; whole networks only use it on CUDA."""
    from generators.face.synthesis import SynthesisBlock

    torch.manual_seed(0)
    b = SynthesisBlock(16, 16, 16, 16, 3, use_fp16=True, conv_clamp=256).eval()
    with torch.no_grad():
        for name, p in b.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.1)
        x, img, ws = torch.randn(3, 16, 8, 8), torch.randn(3, 3, 8, 8), torch.randn(3, 3, 16)
        x32, i32 = b(x, img, ws, force_fp32=True)
        x16, i16 = b(x, img, ws)              # batch 3: unfused
        _, i16one = b(x[:1], img[:1], ws[:1])  # batch 1: fused
    assert x16.dtype == torch.float16 and i16.dtype == torch.float32
    assert (x16.float() - x32).abs().mean() < 0.01 * x32.abs().mean()
    assert (i16 - i32).abs().max() < 0.02 and (i16one - i32[:1]).abs().max() < 0.02


def test_stylegan3_repository_layout_is_the_nested_one_with_that_codes_defaults():
    # The stylegan3 repository's train.py --cfg=stylegan2 stores synthesis arguments at the top
    # level and leaves num_fp16_res and conv_clamp to its defaults, 4 and 256.
    flat = dict(z_dim=16, c_dim=0, w_dim=16, img_resolution=32, img_channels=3,
                mapping_kwargs=dict(num_layers=2), channel_base=256, channel_max=16,
                fused_modconv_default="inference_only")
    nested = nested_init_kwargs(flat)
    assert nested["synthesis_kwargs"] == dict(
        channel_base=256, channel_max=16, num_fp16_res=4, conv_clamp=256,
        fused_modconv_default="inference_only")
    torch.manual_seed(0)
    a = Generator(**flat).eval()
    b = Generator(**nested).eval()
    b.load_state_dict(a.state_dict())
    assert a.init_kwargs == b.init_kwargs
    assert a.init_kwargs["synthesis_kwargs"] == nested["synthesis_kwargs"]
    fp16 = [getattr(a.synthesis, f"b{r}").use_fp16 for r in (4, 8, 16, 32)]
    assert fp16 == [False, True, True, True]
    z = torch.randn(2, 16)
    with torch.no_grad():
        assert torch.equal(a(z), b(z))
    # stylegan2-ada-pytorch's nesting keeps its own defaults; a caller who knows the code may
    # ask for stylegan3's even without a synthesis argument to show it.
    assert nested_init_kwargs({**TINY})["synthesis_kwargs"] == TINY["synthesis_kwargs"]
    bare = {k: v for k, v in TINY.items() if k != "synthesis_kwargs"}
    assert "synthesis_kwargs" not in nested_init_kwargs(bare)
    assert nested_init_kwargs(bare, stylegan3=True)["synthesis_kwargs"]["num_fp16_res"] == 4
    with pytest.raises(ValueError, match="both"):
        Generator(**{**TINY, "channel_base": 256})
    with pytest.raises(ValueError, match="fused_modconv_default"):
        Generator(**{**flat, "fused_modconv_default": "sometimes"})


def test_fp16_noise_is_added_with_the_references_single_rounding():
    """stylegan2-ada-pytorch's fp16 recipe, written out: weights and styles pre-normalised, then
    unfused, noise cast to fp16 and fused with the demodulation in one addcmul; fused, noise
    added in fp32 in place and rounded once."""
    torch.manual_seed(5)
    b, i, o = 2, 6, 5
    x = torch.randn(b, i, 8, 8).half()
    w, s, noise = torch.randn(o, i, 3, 3), torch.randn(b, i), 0.4 * torch.randn(b, 1, 8, 8)
    wn = w * (1 / (i * 9) ** 0.5 / w.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
    sn = s / s.norm(float("inf"), dim=1, keepdim=True)
    ws = wn[None] * sn[:, None, :, None, None]
    d = (ws.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()

    y = F.conv2d(x * sn.half()[:, :, None, None], wn.half(), padding=1)
    unfused = torch.addcmul(noise.half(), y, d.half()[:, :, None, None])
    assert torch.equal(modulated_conv2d(x, w, s, noise=noise, padding=1, fused_modconv=False),
                       unfused)
    assert not torch.equal(unfused, y * d.half()[:, :, None, None] + noise.half())  # 2 roundings

    wf = (ws * d[:, :, None, None, None]).reshape(-1, i, 3, 3).half()
    y = F.conv2d(x.reshape(1, -1, 8, 8), wf, padding=1, groups=b).reshape(b, o, 8, 8)
    fused = (y.float() + noise).half()
    assert torch.equal(modulated_conv2d(x, w, s, noise=noise, padding=1, fused_modconv=True), fused)
    assert not torch.equal(fused, y + noise.half())
