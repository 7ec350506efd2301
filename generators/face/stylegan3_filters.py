"""Low-pass filter design and filtered leaky ReLU for the alias-free generator (StyleGAN3).

Karras et al. 2021, "Alias-Free Generative Adversarial Networks" (NeurIPS), sections 2.1
("nonlinearity") and 3 ("filtered nonlinearities"): a nonlinearity makes new frequencies, so
each layer evaluates it on a temporarily upsampled signal and low-passes the result before
going back to the layer's sampling rate. Everything here is plain PyTorch (zero insertion,
padding, depthwise convolutions), so it runs on CPU and CUDA alike. The steps are unfused and
in the order of the reference's own unfused path (bias, upsample, gain, leaky ReLU, clamp,
low-pass, decimate), which is what makes float32 images on CPU equal to its to the last bit.

Filters: `[taps]` separable (applied along x, then along y) or `[taps, taps]` radial;
`None` is the identity (a one-tap filter: ToRGB, which does not resample).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from generators.face.layers import upfirdn2d


def kaiser_lowpass(numtaps: int, cutoff: float, width: float, fs: float) -> torch.Tensor | None:
    """Separable Kaiser-windowed sinc low-pass [numtaps] with unit DC gain.

    `cutoff` f_c and the transition `width` 2 f_h are in the units of the sampling rate `fs`;
    the Kaiser window's beta follows from the attenuation that `numtaps` and `width` allow
    (Kaiser's formulas, as in scipy.signal.firwin). A single tap is the identity: None.
    """
    if numtaps < 1:
        raise ValueError(f"a filter needs at least one tap, got {numtaps}")
    if numtaps == 1:
        return None
    import scipy.signal

    taps = scipy.signal.firwin(numtaps=numtaps, cutoff=cutoff, width=width, fs=fs)
    return torch.as_tensor(taps, dtype=torch.float32)


def jinc_lowpass(numtaps: int, cutoff: float, width: float, fs: float) -> torch.Tensor | None:
    """Radially symmetric low-pass [numtaps, numtaps] for StyleGAN3-R (section 3.1).

    The ideal disc-shaped low-pass of radius f_c has the impulse response
    J1(2 pi f_c r) / (pi r) (the jinc); it is windowed by the outer product of the separable
    Kaiser window and normalised to unit DC gain. Rotating the image then commutes with the
    filter, which is what the rotation-equivariant configuration needs.
    """
    if numtaps < 1:
        raise ValueError(f"a filter needs at least one tap, got {numtaps}")
    if numtaps == 1:
        return None
    import scipy.signal
    import scipy.special

    x = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = np.hypot(*np.meshgrid(x, x))
    safe = np.where(r > 0, r, 1.0)
    # J1(u) ~ u / 2 near 0, so the response tends to f_c at the centre (odd tap counts only).
    jinc = np.where(r > 0, scipy.special.j1(2 * cutoff * (np.pi * safe)) / (np.pi * safe), cutoff)
    beta = scipy.signal.kaiser_beta(scipy.signal.kaiser_atten(numtaps, width / (fs / 2)))
    window = np.kaiser(numtaps, beta)
    jinc = jinc * np.outer(window, window)
    return torch.as_tensor(jinc / np.sum(jinc), dtype=torch.float32)


def filtered_lrelu(
    x: torch.Tensor,                    # [B, C, H, W] output of the modulated convolution
    up_filter: torch.Tensor | None,     # interpolation filter at the temporary rate
    down_filter: torch.Tensor | None,   # anti-aliasing filter at the temporary rate
    bias: torch.Tensor | None,          # [C]
    up: int,
    down: int,
    padding: tuple[int, int, int, int],
    gain: float,
    slope: float,
    clamp: float | None,
) -> torch.Tensor:
    """bias -> upsample by `up` -> gain * leaky ReLU(slope) -> clamp -> low-pass -> keep 1/`down`.

    Sections 2.1 and 3 ("filtered nonlinearities"): the pointwise nonlinearity is applied at a
    higher sampling rate (2x the larger of the in/out rates) so that the frequencies it
    creates above the output band are removed by the down filter instead of aliasing.
    The up step carries gain up**2 to undo the energy lost to zero insertion.
    float16 inputs (CUDA) are filtered in float32 and rounded once at the end, as a fused
    kernel that accumulates in float32 would.
    """
    dtype = x.dtype
    if dtype == torch.float16:
        x = x.float()
        bias = bias.float() if bias is not None else None
    if bias is not None:
        x = x + bias.reshape(1, -1, 1, 1)
    x = upfirdn2d(x, up_filter, up=up, pad=padding, gain=up ** 2)
    if slope != 1:
        x = F.leaky_relu(x, slope)
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    x = upfirdn2d(x, down_filter, down=down)
    return x.to(dtype)
