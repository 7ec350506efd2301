"""Generators whose every output is one real face, for tests that run the real detector and
recognizer (YuNet + SFace) through the face stage: random weights draw nothing a real detector
finds, and no trained face model may be downloaded.

The face is insightface's sample portrait (installed with the wheel); every identity candidate
is the same person, so the real distinctness gate keeps exactly one identity and its mated
images score as that person. Latents only tint the picture through the RGB layer's styles.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from generators.face import Generator, Generator3, save_generator

PORTRAIT = "Tom_Hanks_54745.png"     # one person; t1.jpg is a group photo


def insightface_images() -> Path | None:
    """The folder of insightface's sample photos (installed with its wheel), or None."""
    spec = importlib.util.find_spec("insightface")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "data" / "images"
    return folder if (folder / "t1.jpg").is_file() and (folder / PORTRAIT).is_file() else None


def portrait_gray(size: int = 128) -> np.ndarray:
    """insightface's sample portrait, grey, size x size, in [0, 1]; skips the test without it."""
    from PIL import Image

    folder = insightface_images()
    if folder is None:
        pytest.skip("insightface's sample photos are not installed (pip install --no-deps insightface)")
    return np.asarray(Image.open(folder / PORTRAIT).convert("L").resize((size, size)), np.float32) / 255.0


def photo_generator(photo_gray: np.ndarray, channels: int = 8) -> Generator:
    """A 128² StyleGAN2 whose every output is `photo_gray` (it sits in the last layer's
    noise_const; z only tints it through the ToRGB styles)."""
    torch.manual_seed(0)
    g = Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=128, img_channels=3,
                  mapping_kwargs=dict(num_layers=2),
                  synthesis_kwargs=dict(channel_base=1024, channel_max=channels))
    with torch.no_grad():
        for res in g.synthesis.block_resolutions:
            getattr(g.synthesis, f"b{res}").torgb.weight.zero_()
            getattr(g.synthesis, f"b{res}").torgb.bias.zero_()
        last = g.synthesis.b128
        last.conv1.weight.zero_()
        last.conv1.bias.zero_()
        last.conv1.noise_strength.fill_(1.0)
        last.conv1.noise_const.copy_(torch.from_numpy(photo_gray))
        last.torgb.affine.weight.normal_(0, 0.02)
        last.torgb.affine.bias.fill_(1.0)
        # lrelu gain sqrt(2), styles 1/sqrt(C): these weights make the image 2 * photo - 1.
        last.torgb.weight.fill_(2.0 / np.sqrt(2) * np.sqrt(channels) / channels)
        last.torgb.bias.fill_(-1.0)
    return g


def photo_generator3(photo_gray: np.ndarray, sinusoids: int = 100) -> Generator3:
    """A StyleGAN3-T whose every output is `photo_gray`, drawn by its Fourier-feature input.

    StyleGAN3 has no noise input to hold a picture, but its input layer is a sum of sinusoids
    (Karras et al. 2021, section 3, "Fourier features"), so the photo's `sinusoids` strongest
    Fourier components (plus a constant) are put there: `freqs` are the photo's own integer
    frequencies (the input grid spans exactly one unit), `phases` and the mixing `weight` are
    the least-squares amplitudes and phases, and every mixed channel carries the whole photo.
    One 1x1 layer passes it on (identity weights; a positive bias keeps the filtered leaky ReLU
    linear; its band limit, R / 2, is above every chosen frequency) and ToRGB maps it to
    2 * photo - 1, its styles tinting it by z.
    """
    size = photo_gray.shape[0]
    if photo_gray.shape != (size, size):
        raise ValueError(f"the photo must be square, got {photo_gray.shape}")
    photo = 0.1 + 0.8 * photo_gray.astype(np.float64)  # headroom for the fit's ringing
    channels = sinusoids + 1
    torch.manual_seed(0)
    g = Generator3(z_dim=16, c_dim=0, w_dim=16, img_resolution=size, img_channels=3,
                   mapping_kwargs=dict(num_layers=2), num_layers=1, num_critical=0,
                   first_cutoff=size / 2, first_stopband=size / 2 * 2 ** 0.3,
                   channel_base=size * channels, channel_max=channels, conv_kernel=1,
                   num_fp16_res=0, margin_size=0)
    fourier = g.synthesis.input
    if fourier.size != size or fourier.sampling_rate != size:
        raise AssertionError("the input grid must be the image's pixels, one unit across")
    # The strongest coefficients of one half-plane (a real image's spectrum is symmetric),
    # below 3/4 of the band limit so that the layer's filters pass them untouched.
    k = np.fft.fftfreq(size, 1 / size)
    ky, kx = np.meshgrid(k, k, indexing="ij")
    half = (ky > 0) | ((ky == 0) & (kx > 0))
    strength = np.abs(np.fft.fft2(photo)) * half * (np.hypot(kx, ky) < 0.75 * size / 2)
    chosen = np.argsort(strength.ravel())[::-1][:sinusoids]
    freqs = np.stack([kx.ravel()[chosen], ky.ravel()[chosen]], 1)

    def features(phase: float) -> np.ndarray:
        """[pixels, channels]: each sinusoid at `phase` (cycles), the constant last."""
        fourier.phases.copy_(torch.tensor(np.r_[np.full(sinusoids, phase), 0.25], dtype=torch.float32))
        fourier.weight.copy_(torch.eye(channels) * math.sqrt(channels))
        return fourier(torch.zeros(1, g.w_dim))[0].reshape(channels, -1).T.double().numpy()

    with torch.no_grad():
        fourier.freqs.copy_(torch.tensor(np.concatenate([freqs, [[0.0, 0.0]]]), dtype=torch.float32))
        sines, cosines = features(0.0), features(0.25)
        design = np.concatenate([sines[:, :sinusoids], cosines[:, :sinusoids], sines[:, -1:]], 1)
        coef = np.linalg.lstsq(design, photo.ravel(), rcond=None)[0]
        a, b = coef[:sinusoids], coef[sinusoids:-1]
        # a sin(t) + b cos(t) = hypot(a, b) sin(t + atan2(b, a))
        fourier.phases.copy_(torch.tensor(np.r_[np.arctan2(b, a) / (2 * np.pi), 0.25], dtype=torch.float32))
        amplitudes = np.r_[np.hypot(a, b), coef[-1]]
        fourier.weight.copy_(torch.tensor(np.tile(amplitudes, (channels, 1)) * math.sqrt(channels),
                                          dtype=torch.float32))
        layer, torgb = (getattr(g.synthesis, name) for name in g.synthesis.layer_names)
        layer.weight.copy_(torch.eye(channels).reshape(channels, channels, 1, 1))
        layer.affine.weight.zero_()
        layer.affine.bias.fill_(1.0)
        lift = 0.05
        layer.bias.fill_(lift)
        torgb.affine.weight.normal_(0, 0.02)
        torgb.affine.bias.fill_(1.0)
        # ToRGB sums C channels of sqrt(2) (photo + lift) at style 1 / sqrt(C), then the output
        # is scaled by output_scale: these weights and bias make it 2 * photo - 1.
        scale = g.synthesis.output_scale
        torgb.weight.fill_(2.0 / (math.sqrt(channels) * math.sqrt(2) * scale))
        torgb.bias.fill_((-1.0 - 2.0 * lift) / scale)
    return g


def one_face_checkpoint(folder: Path, network: str = "stylegan2") -> Path:
    """photo_generator (or photo_generator3 for network="stylegan3") of insightface's sample
    portrait, saved in biomint's format in `folder`; skips the test without the photos."""
    builders = {"stylegan2": photo_generator, "stylegan3": photo_generator3}
    g = builders[network](portrait_gray(128))
    return save_generator(g, Path(folder) / f"one_face_{network}.pt")[0]
