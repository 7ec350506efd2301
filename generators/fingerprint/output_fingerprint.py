"""A fingerprint of what the generator draws: the sha256 of a few reference prints.

The quality-mix calibration (quality_mix.py) measures the generator's output, so it stays
valid for as long as that output is byte-identical, whatever its source code looks like. A
source hash alone would call every refactor or speed-up stale, even one that draws the same
bytes (and carrying a hash over by hand is an error waiting to happen); this hash says
whether the prints themselves changed. It costs two masters and two impressions (~0.4 s on
one core), so it is only computed when the source hash no longer matches.
"""
from __future__ import annotations

import functools
import hashlib
from dataclasses import replace

import numpy as np

from .settings import FingerprintSettings, with_difficulty

# (finger position, difficulty) of the reference prints: a thumb and a ring finger (different
# classes are likely), an easy and a hard impression (so that the noise and damage paths run)
REFERENCE_PRINTS: tuple[tuple[int, float], ...] = ((1, 0.1), (9, 0.7))
REFERENCE_SEED = 0x0F1E7D


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(entropy=REFERENCE_SEED, spawn_key=key))


@functools.lru_cache(maxsize=16)
def output_hash(settings: FingerprintSettings) -> str:
    """sha256 (16 hex) of the reference masters' ridges and printing surfaces, and of their
    impressions' images and ground-truth minutiae, drawn with `settings` (its quality_mix and
    difficulty aside). Torch runs on one thread meanwhile, as in the workers: the bytes of a
    master are promised for one thread."""
    import torch

    from .impression import make_impression
    from .master import make_master

    plain = replace(settings, quality_mix=())
    digest = hashlib.sha256()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for i, (position, difficulty) in enumerate(REFERENCE_PRINTS):
            master = make_master(plain, position, _rng(i, 0))
            impression = make_impression(master, with_difficulty(plain, difficulty), _rng(i, 1))
            for array in (master.ridges, master.surface, master.minutiae, impression.image, impression.minutiae):
                array = np.ascontiguousarray(array)
                digest.update(f"{array.dtype}{array.shape}".encode())
                digest.update(array.tobytes())
    finally:
        torch.set_num_threads(threads)
    return digest.hexdigest()[:16]
