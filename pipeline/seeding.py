"""The seeding rule of CONVENTIONS §2: every sample is a pure function of
(dataset seed, stage id, subject index, sample index).

    spawn_key = (stage_id, subject_index, unit, SUBJECT_SLOT)               subject level
    spawn_key = (stage_id, subject_index, unit, SAMPLE_SLOT, sample_index)  one sample

`unit` names a part of a subject that has its own subject-level properties: the ISO finger
position for fingerprints (each finger has its own master print), 0 for faces. The
"sample_index = -1" of the conventions is the separate SUBJECT_SLOT, because spawn keys
must be non-negative. Stage ids are fixed small integers (never Python's salted `hash()`).
"""
from __future__ import annotations

import numpy as np

SUBJECT_SLOT = 0
SAMPLE_SLOT = 1
# A second kind of sample of the same unit gets its own slot, so that adding it changes no
# byte of the first kind: rolled impressions of a finger (plain ones use SAMPLE_SLOT).
ROLLED_SLOT = 2

# Fixed stage ids: changing one changes every byte the stage mints.
STAGE_IDS: dict[str, int] = {
    "fingerprint": 1,
    "face": 2,
    "latent_fingerprint": 3,
    "pairs": 100,
    "protocol": 101,      # 1:N protocols: which fingers are held out as non-mated probes
}


def subject_seed_sequence(dataset_seed: int, stage_id: int, subject_index: int,
                          unit: int = 0) -> np.random.SeedSequence:
    """SeedSequence of a subject-level property (a finger's master print, a face identity)."""
    return np.random.SeedSequence(entropy=int(dataset_seed),
                                  spawn_key=(int(stage_id), int(subject_index), int(unit), SUBJECT_SLOT))


def sample_seed_sequence(dataset_seed: int, stage_id: int, subject_index: int,
                         sample_index: int, unit: int = 0, slot: int = SAMPLE_SLOT) -> np.random.SeedSequence:
    """SeedSequence of one sample (one impression, one face image)."""
    return np.random.SeedSequence(entropy=int(dataset_seed),
                                  spawn_key=(int(stage_id), int(subject_index), int(unit),
                                             int(slot), int(sample_index)))


def derived_seed(ss: np.random.SeedSequence) -> int:
    """The uint64 recorded in the manifest's `seed` column (also seeds torch generators)."""
    return int(ss.generate_state(1, np.uint64)[0])
