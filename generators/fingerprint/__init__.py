"""SFinGe-style synthetic fingerprints: master prints, impressions and ground truth.

    master = make_master(settings, finger_position, rng)
    impression = make_impression(master, settings, rng)          # plain (flat) touch
    rolled = make_rolled_impression(master, settings, rng)       # nail to nail
    slap = make_slap({position: master, ...}, 13, settings, rng)  # 4-4-2 slaps: 13, 14, 15

See README.md beside this file for the model and the interface, and each module's docstring.
"""
from .impression import Impression, make_impression
from .master import MasterPrint, make_master, make_masters
from .rolled import ROLLED_IMPRESSION_CODES, make_rolled_impression
from .slap import SLAP_FINGERS, Slap, SlapSegment, make_slap
from .settings import (DIFFICULTY_PRESETS, FINGER_CLASSES, NATURAL_CLASS_PRIORS, FingerprintSettings,
                       with_difficulty)
from .truth_formats import iso19794_2_bytes, iso19794_2_views_bytes, write_iso19794_2, write_xyt, xyt_bytes

__all__ = [
    "FingerprintSettings", "MasterPrint", "Impression", "make_master", "make_masters", "make_impression",
    "make_rolled_impression", "ROLLED_IMPRESSION_CODES", "make_slap", "Slap", "SlapSegment", "SLAP_FINGERS",
    "write_xyt", "write_iso19794_2", "xyt_bytes", "iso19794_2_bytes", "iso19794_2_views_bytes",
    "FINGER_CLASSES", "NATURAL_CLASS_PRIORS", "DIFFICULTY_PRESETS", "with_difficulty",
]
