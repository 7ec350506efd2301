"""SFinGe-style synthetic fingerprints: master prints, impressions and ground truth.

    master = make_master(settings, finger_position, rng)
    impression = make_impression(master, settings, rng)          # plain (flat) touch
    rolled = make_rolled_impression(master, settings, rng)       # nail to nail
    slap = make_slap({position: master, ...}, 13, settings, rng)  # 4-4-2 slaps: 13, 14, 15

See README.md beside this file for the model and the interface, and each module's docstring.
"""
from generators.lazy_exports import lazy_exports

from .settings import (DIFFICULTY_PRESETS, FINGER_CLASSES, NATURAL_CLASS_PRIORS, FingerprintSettings,
                       with_difficulty)

# The generators are resolved on first use (PEP 562): the settings alone (what configs and
# commands such as `biomint validate` need) must not import torch, which costs seconds.
_WHERE = {
    "Impression": "impression", "make_impression": "impression",
    "MasterPrint": "master", "make_master": "master", "make_masters": "master",
    "ROLLED_IMPRESSION_CODES": "rolled", "make_rolled_impression": "rolled",
    "SLAP_FINGERS": "slap", "Slap": "slap", "SlapSegment": "slap", "make_slap": "slap",
    "iso19794_2_bytes": "truth_formats", "iso19794_2_views_bytes": "truth_formats",
    "write_iso19794_2": "truth_formats", "write_xyt": "truth_formats", "xyt_bytes": "truth_formats",
}


__getattr__ = lazy_exports(__name__, _WHERE, globals())


__all__ = [
    "FingerprintSettings", "MasterPrint", "Impression", "make_master", "make_masters", "make_impression",
    "make_rolled_impression", "ROLLED_IMPRESSION_CODES", "make_slap", "Slap", "SlapSegment", "SLAP_FINGERS",
    "write_xyt", "write_iso19794_2", "xyt_bytes", "iso19794_2_bytes", "iso19794_2_views_bytes",
    "FINGER_CLASSES", "NATURAL_CLASS_PRIORS", "DIFFICULTY_PRESETS", "with_difficulty",
]
