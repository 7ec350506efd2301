"""Named difficulty profiles: how much two impressions of one finger differ.

A profile holds the variation *between* impressions that makes matching hard on real data:
placement on the sensor (translation, rotation, partial contact), plastic distortion
(Cappelli, Maio, Maltoni, ICAPR 2001), the spread of skin moisture and pressure, and how much
of the fingertip touches. `difficulty` (and `quality_mix`) still act within a profile: they
set image quality (contrast, noise, blur, blobs), not the geometry.

- `clean`: easy prints: small placement changes, mild distortion, the finger always centred
  and fully in contact. Matchers separate mated and non-mated pairs almost perfectly.
- `default`: a typical live-scan plain capture by a cooperative user: the finger lands within
  ~1/10 of the sensor of its previous place, turns by up to ~20 degrees, is pressed with
  varying force (smaller or larger contact), and skin ranges from dry to wet.
- `fvc2004`: FVC2004's collection protocol (Maio et al., ICBA 2004), which asked volunteers to
  exaggerate: placement changes, rotation, strong plastic distortion ("press and twist"), dry
  and wet fingers. Matchers do about as badly on these as on FVC2004 DB1-4.

Figures measured for each profile are in the package README.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ImpressionProfile:
    name: str
    max_rotation: float                 # |global rotation| bound (deg); normal with sd = bound / 2.5
    max_translation: float              # |shift of the finger centre| bound (px); sd = bound / 2.5
    partial_probability: float          # chance that the finger lands off-centre (partial print)
    partial_offset: tuple[float, float]  # ... by this fraction of the canvas
    distortion_max_rotation: float      # rigid outer-region rotation bound (deg)
    distortion_max_translation: float   # rigid outer-region translation bound (px)
    distortion_core_radius: tuple[float, float]   # radius of the undistorted contact core (px)
    distortion_transition: tuple[float, float]    # width of the elastic transition (px)
    contact_size: tuple[float, float]   # contact ellipse semi-axes as a fraction of the canvas
    pressure_sd: float                  # spread of pressure (-1 light .. +1 hard)
    moisture_sd: float                  # spread of moisture at difficulty 0 (-1 dry .. +1 wet)
    moisture_sd_per_difficulty: float   # ... added at difficulty 1


PROFILES: dict[str, ImpressionProfile] = {
    "clean": ImpressionProfile(
        name="clean", max_rotation=10.0, max_translation=15.0, partial_probability=0.0,
        partial_offset=(0.12, 0.22), distortion_max_rotation=3.0, distortion_max_translation=6.0,
        distortion_core_radius=(60.0, 90.0), distortion_transition=(100.0, 150.0),
        contact_size=(0.38, 0.45), pressure_sd=0.3, moisture_sd=0.15, moisture_sd_per_difficulty=0.5),
    "default": ImpressionProfile(
        name="default", max_rotation=20.0, max_translation=55.0, partial_probability=0.3,
        partial_offset=(0.12, 0.26), distortion_max_rotation=10.0, distortion_max_translation=22.0,
        distortion_core_radius=(35.0, 70.0), distortion_transition=(65.0, 115.0),
        contact_size=(0.28, 0.44), pressure_sd=0.5, moisture_sd=0.35, moisture_sd_per_difficulty=0.45),
    "fvc2004": ImpressionProfile(
        name="fvc2004", max_rotation=30.0, max_translation=60.0, partial_probability=0.3,
        partial_offset=(0.14, 0.3), distortion_max_rotation=12.0, distortion_max_translation=24.0,
        distortion_core_radius=(30.0, 60.0), distortion_transition=(55.0, 100.0),
        contact_size=(0.24, 0.44), pressure_sd=0.6, moisture_sd=0.55, moisture_sd_per_difficulty=0.35),
}


def profile_named(name: str) -> ImpressionProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown fingerprint profile {name!r}; use one of {sorted(PROFILES)}") from None
