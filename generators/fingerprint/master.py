"""Master prints: the whole clean fingertip of one finger, from which impressions are taken."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from .finger_shape import FingerShape, draw_finger_shape, silhouette
from .minutiae import extract_minutiae, valid_region
from .orientation_field import orientation_at, orientation_grid
from .ridge_frequency import ridge_period_grid
from .ridge_growth import filter_weights, gabor_bank, grow_ridges
from .settings import FingerprintSettings
from .singularities import SingularLayout, draw_class, place_singularities
from .skin_features import SkinFeatures, draw_skin_features

GROWTH_STEP = 2     # ridges grow at half resolution (period 9-11 px -> 4.5-5.5 px)
KERNEL_SIZE = 11    # Gabor support at half resolution: ~2.3 ridge periods (the envelope is elongated)
BORDER_MARGIN = 14  # px: skeleton endings this close to the silhouette are cuts, not minutiae
# the ridge field level whose skeleton is the ground truth: impressions print a ridge where the
# field exceeds ~0.18 on average (impression.ink_layer), so its endings and forks sit there
GT_LEVEL = 0.18


@dataclass(frozen=True)
class MasterPrint:
    """The clean fingertip; coordinates are master-canvas pixels (x right, y down)."""

    finger_class: str
    finger_position: int
    ridges: np.ndarray        # [Hm, Wm] float32 in [-1, 1]; > 0 on ridges (the ground truth's pattern)
    mask: np.ndarray          # [Hm, Wm] float32 silhouette in [0, 1]
    orientation: np.ndarray   # [Hm/2, Wm/2] float32 ridge orientation (rad, ISO convention, [0, pi))
    period: np.ndarray        # [Hm/2, Wm/2] float32 ridge period (master px)
    minutiae: np.ndarray      # [N, 4] float32 x, y, angle (rad, ISO), type (0 ending, 1 bifurcation)
    layout: SingularLayout    # class, cores, deltas, Vizcaya-Gerhardt corrections
    growth_iterations: int
    shape: FingerShape        # the silhouette's parameters (rolled prints unwrap it nail to nail)
    skin: SkinFeatures        # counts of pores, creases, scars
    surface: np.ndarray       # [Hm, Wm] float32: ridges with pores, incipient ridges, creases, scars: what prints

    @property
    def cores(self) -> np.ndarray:
        return self.layout.cores

    @property
    def deltas(self) -> np.ndarray:
        return self.layout.deltas

    @property
    def centre(self) -> tuple[float, float]:
        return self.layout.centre


@dataclass(frozen=True)
class _Plan:
    """Everything numpy draws for one master before the batched torch growth."""

    finger_class: str
    finger_position: int
    layout: SingularLayout
    shape: FingerShape
    mask: np.ndarray
    theta: np.ndarray
    period: np.ndarray
    init: np.ndarray
    skin_seed: int            # the skin features are drawn after growth, from their own stream


def _bank_periods(settings: FingerprintSettings) -> np.ndarray:
    lo, hi = settings.ridge_period
    return np.linspace(0.9 * lo, 1.15 * hi, settings.growth_periods) / GROWTH_STEP


def _plan(settings: FingerprintSettings, finger_position: int, rng: np.random.Generator) -> _Plan:
    if not 1 <= int(finger_position) <= 10:
        raise ValueError(f"finger_position must be an ISO/IEC 19794 code 1-10, got {finger_position}")
    hm, wm = settings.master_height, settings.master_width
    h2, w2 = hm // GROWTH_STEP, wm // GROWTH_STEP
    cls = draw_class(rng, settings.class_priors, int(finger_position), settings.adjust_priors_by_position)
    layout = place_singularities(rng, cls, wm, hm)
    shape = draw_finger_shape(rng, wm, hm)
    period = ridge_period_grid(rng, layout, h2, w2, GROWTH_STEP, settings.ridge_period)
    theta = orientation_grid(layout, h2, w2, GROWTH_STEP)
    init = rng.standard_normal((h2, w2)).astype(np.float32)
    skin_seed = int(rng.integers(0, 2 ** 63 - 1))
    return _Plan(cls, int(finger_position), layout, shape, silhouette(shape, hm, wm), theta, period, init, skin_seed)


def _finish(plan: _Plan, grown: torch.Tensor, iterations: int) -> MasterPrint:
    half = np.ascontiguousarray(grown.detach().to("cpu").numpy()[0], dtype=np.float32)
    # back to full resolution: the half-resolution pattern is band-limited well below its
    # Nyquist rate (period >= 4 px), so bicubic interpolation reconstructs it smoothly.
    # OpenCV's cubic (a = -0.75, half-pixel centres, edges replicated) is torch's bicubic
    # (align_corners=False) to 2.4e-7 at 1/17 of its time; on CUDA only the half-resolution
    # pattern crosses to the host
    h2, w2 = half.shape
    ridges = cv2.resize(half, (GROWTH_STEP * w2, GROWTH_STEP * h2), interpolation=cv2.INTER_CUBIC)
    np.clip(ridges, -1.0, 1.0, out=ridges)
    layout = plan.layout

    def orientation(x, y):
        return orientation_at(layout, x, y)

    minutiae = extract_minutiae(ridges - GT_LEVEL, valid_region(plan.mask, BORDER_MARGIN), orientation)
    surface, skin = draw_skin_features(np.random.default_rng(plan.skin_seed), ridges, plan.mask, plan.shape,
                                       float(np.median(plan.period)))
    return MasterPrint(plan.finger_class, plan.finger_position, ridges, plan.mask, plan.theta,
                       plan.period, minutiae, layout, int(iterations), plan.shape, skin, surface)


def _grow(settings: FingerprintSettings, plans: list[_Plan], device) -> tuple[torch.Tensor, torch.Tensor]:
    periods = _bank_periods(settings)
    bank = gabor_bank(settings.growth_orientations, periods, KERNEL_SIZE, settings.growth_anisotropy).to(device)
    chosen = [filter_weights(p.theta, p.period / GROWTH_STEP, settings.growth_orientations, periods) for p in plans]
    index = torch.from_numpy(np.stack([c[0] for c in chosen])).to(device)
    weights = torch.from_numpy(np.stack([c[1] for c in chosen])).to(device)
    init = np.stack([p.init for p in plans])[:, None]
    x, used = grow_ridges(torch.from_numpy(init).to(device), index, weights, bank,
                          min_iterations=settings.growth_min_iterations,
                          max_iterations=settings.growth_max_iterations,
                          tolerance=settings.growth_tolerance, bias=settings.growth_bias)
    return x, used          # half resolution [B, 1, H/2, W/2]; _finish upsamples


def make_master(settings: FingerprintSettings, finger_position: int, rng: np.random.Generator,
                device: str | torch.device = "cpu") -> MasterPrint:
    """One master print; same settings and rng state -> same bytes on CPU."""
    plan = _plan(settings, finger_position, rng)
    grown, used = _grow(settings, [plan], device)
    return _finish(plan, grown[0], int(used[0]))


def make_masters(settings: FingerprintSettings, finger_positions: list[int], rngs: list[np.random.Generator],
                 device: str | torch.device = "cpu") -> list[MasterPrint]:
    """Several master prints. On CUDA the growth runs as one batch; on CPU each finger is grown
    on its own, because CPU convolution kernels may pick a different summation order for a
    different batch size and the contract promises the bytes of make_master."""
    if len(finger_positions) != len(rngs):
        raise ValueError(f"need one rng per finger: {len(finger_positions)} positions, {len(rngs)} rngs")
    plans = [_plan(settings, pos, rng) for pos, rng in zip(finger_positions, rngs)]
    if torch.device(device).type == "cpu":
        grown = [_grow(settings, [p], device) for p in plans]
        return [_finish(p, g[0][0], int(g[1][0])) for p, g in zip(plans, grown)]
    batch, used = _grow(settings, plans, device)
    return [_finish(p, batch[i], int(used[i])) for i, p in enumerate(plans)]
