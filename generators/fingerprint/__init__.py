"""SFinGe-style synthetic fingerprints: master prints, impressions and ground truth.

    master = make_master(settings, finger_position, rng)
    impression = make_impression(master, settings, rng)

See README.md beside this file for the model and the interface, and each module's docstring.
"""
from .impression import Impression, make_impression
from .master import MasterPrint, make_master, make_masters
from .settings import (DIFFICULTY_PRESETS, FINGER_CLASSES, NATURAL_CLASS_PRIORS, FingerprintSettings,
                       with_difficulty)
from .truth_formats import iso19794_2_bytes, write_iso19794_2, write_xyt, xyt_bytes

__all__ = [
    "FingerprintSettings", "MasterPrint", "Impression", "make_master", "make_masters", "make_impression",
    "write_xyt", "write_iso19794_2", "xyt_bytes", "iso19794_2_bytes",
    "FINGER_CLASSES", "NATURAL_CLASS_PRIORS", "DIFFICULTY_PRESETS", "with_difficulty",
]
