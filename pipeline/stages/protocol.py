"""Protocol stage: the distractor fingers of a 1:N protocol (`protocol=open_set|closed_set`).

A 1:N gallery holds one print per enrolled finger plus `protocol.distractors` fingers that no
probe searches for. Distractors are minted here as further fingers of the fingerprint stage's
population: distractor d is finger F + d of a dataset that would have more fingers, placed in
whole subjects after the fingerprint stage's last one (S = its subject count, P = its number of
positions):

    distractor d  ->  subject S + d // P, position positions[d % P]

and grown with the fingerprint stage's seeds (stage id 1, CONVENTIONS §2): master
`subject_seed_sequence(seed, 1, s, unit=p)`, gallery impression the rolled r00 (or, without
rolled prints, the plain 00) of that finger. So a distractor is byte-identical to the print
`fingerprint.fingers=F + D` would mint for it, shares no subject with an enrolled finger, and
is the same whatever the shard layout or the number of workers. Only that one impression is
minted per distractor (its master is the costly part).

Rows: modality `fingerprint`, manifest `manifest/protocol/`, files under
`images/fingerprint/<subject>/` as the fingerprint stage writes them. No pairs. After every
stage, `pipeline.protocol.write_protocol` (the `finish` hook) writes `protocol/gallery.parquet`
and `protocol/probes.parquet`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, List

from pipeline.errors import ConfigError
from pipeline.seeding import derived_seed
from pipeline.stages import fingerprint as fingerprint_stage

NAME = "protocol"
STAGE_ID = fingerprint_stage.STAGE_ID          # distractors are fingerprint-stage fingers (module docstring)
MODALITY = fingerprint_stage.MODALITY
PAIR_KIND = "none"
PAIR_SOURCES = ("fingerprint",)                # the gallery and probes name the fingerprint stage's rows
PARAMS_TYPE = fingerprint_stage.PARAMS_TYPE
KINDS = ("none", "open_set", "closed_set")
GALLERY_CHOICES = ("auto", "rolled", "plain")
PROBE_TYPES = ("plain", "rolled", "latent")
MAX_SUBJECTS = 10 ** 8                         # sample ids hold 8 subject digits


@dataclass
class Config:
    """Hydra group `protocol` (conf/protocol/*.yaml): what the 1:N protocol holds."""
    kind: str = "none"                     # none | open_set | closed_set
    distractors: int = 0                   # gallery-only fingers, minted by this stage
    non_mated_share: float = 0.0           # share of the dataset's fingers held out: their prints are non-mated probes
    gallery: str = "auto"                  # auto: rolled r00 when fingerprint.rolled >= 1, else plain 00
    probe_types: List[str] = field(default_factory=lambda: list(PROBE_TYPES))
    fingerprint: Any = None                # filled by bind() from the fingerprint group

    @property
    def device(self) -> str:
        return getattr(self.fingerprint, "device", "auto")


OFF = {"kind": "none"}


def bind(config, configs: dict):
    return dataclasses.replace(config, fingerprint=configs.get("fingerprint"))


def skip_reason(config) -> str | None:
    if config.kind == "none":
        return "protocol=none (protocol=open_set or closed_set writes a 1:N gallery and probes)"
    if config.fingerprint is None:
        return "no fingerprint stage: a 1:N protocol needs its prints"
    return None


def gallery_type(config) -> str:
    """The impression type of each finger's gallery print: rolled or plain."""
    if config.gallery == "auto":
        return "rolled" if config.fingerprint.rolled >= 1 else "plain"
    return config.gallery


def check(config) -> None:
    if config.kind not in KINDS:
        raise ConfigError(f"protocol.kind={config.kind} is not allowed: one of {', '.join(KINDS)}")
    if config.distractors < 0:
        raise ConfigError(f"protocol.distractors={config.distractors} is not allowed: an integer >= 0")
    if not 0.0 <= float(config.non_mated_share) < 1.0:
        raise ConfigError(f"protocol.non_mated_share={config.non_mated_share} is not allowed: it must be in [0, 1)")
    if config.gallery not in GALLERY_CHOICES:
        raise ConfigError(f"protocol.gallery={config.gallery} is not allowed: one of {', '.join(GALLERY_CHOICES)}")
    if config.gallery == "rolled" and config.fingerprint.rolled < 1:
        raise ConfigError("protocol.gallery=rolled needs rolled prints: set fingerprint.rolled=1 or protocol.gallery=auto")
    unknown = [t for t in config.probe_types if t not in PROBE_TYPES]
    if unknown or not config.probe_types:
        raise ConfigError(f"protocol.probe_types={list(config.probe_types)} is not allowed: "
                          f"a non-empty list of {', '.join(PROBE_TYPES)}")
    if first_subject(config) + subject_count(config) > MAX_SUBJECTS:
        raise ConfigError(f"protocol.distractors={config.distractors:,} needs subjects beyond the "
                          f"{MAX_SUBJECTS:,} that sample ids can number")


def first_subject(config) -> int:
    """Distractor subjects come after the fingerprint stage's last subject."""
    return fingerprint_stage.subject_count(config.fingerprint)


def subject_count(config) -> int:
    return math.ceil(config.distractors / len(config.fingerprint.positions))


def positions_of(config, local_subject: int) -> list[int]:
    """ISO positions of the distractor fingers of the stage's subject `local_subject`."""
    positions = config.fingerprint.positions
    per = len(positions)
    return [int(p) for i, p in enumerate(positions) if local_subject * per + i < config.distractors]


def expected_rows(config, start: int, stop: int) -> int:
    per = len(config.fingerprint.positions)
    return max(0, min(stop * per, config.distractors) - start * per)


def pair_kinds(config) -> list:
    return []          # distractors are compared in the 1:N protocol only


def run_shard(shard, config, context) -> list[dict]:
    import generators.fingerprint as fp

    fingerprint = config.fingerprint
    settings = fingerprint_stage.settings_from(fingerprint)
    kind = gallery_type(config)
    rows: list[dict] = []
    for local in range(shard.start, shard.stop):
        subject = first_subject(config) + local
        positions = positions_of(config, local)
        rngs = [fingerprint_stage._master_rng(context, subject, p) for p in positions]
        masters = dict(zip(positions, fp.make_masters(settings, positions, rngs, device=context.device)))
        for position in positions:
            ss = fingerprint_stage._sample_sequence(context, subject, position, 0, kind)
            made = fingerprint_stage._make(fp, settings, masters, position, 0, kind, ss)
            rows.append(fingerprint_stage._write_sample(fp, fingerprint, settings, context, subject, position, 0, kind,
                                                        derived_seed(ss), made))
    return rows


def regenerate(row: dict, config, context) -> bytes:
    return fingerprint_stage.regenerate(row, config.fingerprint, context)


def warm_up() -> None:
    fingerprint_stage.warm_up()


def current_generator_version() -> str:
    return fingerprint_stage.current_generator_version()


def finish(root, config, dataset_seed: int) -> dict:
    """Write protocol/gallery.parquet and protocol/probes.parquet (after every stage and the pairs)."""
    from pipeline.protocol import write_protocol

    return write_protocol(root, config, dataset_seed)


def finish_state(root, recorded: dict) -> str | None:
    """Why the protocol files on disk are not the ones dataset.json records, or None."""
    from pipeline.protocol import protocol_state

    return protocol_state(root, recorded)
