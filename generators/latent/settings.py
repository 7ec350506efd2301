"""Every knob of the procedural latent simulator (generators.latent), with its defaults."""
from __future__ import annotations

from dataclasses import dataclass

VALUE_CLASSES: tuple[str, ...] = ("good", "bad", "ugly")      # SD27's Good / Bad / Ugly
SURFACES: tuple[str, ...] = ("paper", "glass", "plastic", "wood", "metal")
TECHNIQUES: tuple[str, ...] = ("powder", "ninhydrin", "cyanoacrylate")
# which development techniques suit which surface (ninhydrin reacts with amino acids absorbed
# by porous paper; cyanoacrylate fuming and powder are for non-porous surfaces; powder works
# on almost anything)
SURFACE_TECHNIQUES: dict[str, tuple[str, ...]] = {
    "paper": ("powder", "ninhydrin"), "glass": ("powder", "cyanoacrylate"),
    "plastic": ("powder", "cyanoacrylate"), "wood": ("powder",), "metal": ("powder", "cyanoacrylate"),
}
# Value classes are defined by what a latent shows (SD27's examiner labels): the number of
# mate minutiae in the visible region and how clearly its ridges print. The commonly cited
# minutiae bins are Good > 21, Bad 14-21, Ugly <= 13 (REFERENCE.md, latent prints).
GOOD_MIN_MINUTIAE = 22
UGLY_MAX_MINUTIAE = 13
GOOD_MIN_CLARITY = 0.5
UGLY_MAX_CLARITY = 0.25
# A flat touch presses the finger's pad: the visible region centres on the touch's contact
# centre (Gaussian, sd in units of the finger's half width), not on the finger's sides, which
# curve away from a flat surface (and which a rolled print stretches by up to ~1.8x). Measured
# on 80 good latents against their rolled mates: with centres anywhere on the silhouette, 12
# regions (mean |x| 0.42 half widths off the centre) scored < 15 with Bozorth3 even on
# ground-truth minutiae (median pair-distance error 5.6 %, 3.2 % elsewhere) and 10 % of the
# visible minutiae lay outside the rolled print; centred on the pad, 4 and 4 %.
REGION_CENTRE_SD = 0.35


@dataclass(frozen=True)
class LatentSettings:
    """Lengths in pixels at `dpi`; angles in degrees."""

    width: int = 512                       # latent canvas (px)
    height: int = 512
    dpi: int = 500
    class_mix: tuple[float, float, float] = (0.34, 0.33, 0.33)   # good, bad, ugly
    surface_weights: tuple[float, ...] = (0.4, 0.15, 0.15, 0.15, 0.15)  # paper, glass, plastic, wood, metal
    max_rotation: float = 30.0             # |rotation of the finger on the surface| bound
    max_translation: float = 40.0
    jpeg_probability: float = 0.7          # chance that the latent went through JPEG
    class_attempts: int = 12               # visible regions drawn until one shows the target class

    def __post_init__(self) -> None:
        if self.width < 128 or self.height < 128:
            raise ValueError(f"latent canvas must be at least 128x128 px, got {self.width}x{self.height}")
        for name, values, n in (("class_mix", self.class_mix, len(VALUE_CLASSES)),
                                ("surface_weights", self.surface_weights, len(SURFACES))):
            if len(values) != n or any(v < 0 for v in values) or sum(values) <= 0:
                raise ValueError(f"{name} needs {n} non-negative weights, not all zero, got {values}")
        if not 0.0 <= self.jpeg_probability <= 1.0:
            raise ValueError(f"jpeg_probability must be in [0, 1], got {self.jpeg_probability}")
        if self.class_attempts < 1:
            raise ValueError("class_attempts must be >= 1")
