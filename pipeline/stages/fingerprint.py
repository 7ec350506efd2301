"""Fingerprint stage: K impressions of every finger of every subject in a shard.

Fingers are numbered 0..fingers-1 and fill subjects in order: finger f belongs to subject
f // P at position positions[f % P] (P = len(positions)); the last subject may hold fewer.
Seeding (CONVENTIONS §2, unit = ISO finger position):
  master print of (subject s, position p)  ← subject_seed_sequence(seed, 1, s, unit=p)
  impression k of that finger             ← sample_seed_sequence(seed, 1, s, k, unit=p)
so a sample depends on nothing but its own indices, whatever the shard layout.
"""
from __future__ import annotations

import dataclasses
import io
import json
import math
import typing
from dataclasses import field
from pathlib import Path
from typing import List

import numpy as np
import pyarrow as pa

from generators.fingerprint.settings import FingerprintSettings
from pipeline.errors import ConfigError
from pipeline.manifest import write_bytes_atomic
from pipeline.seeding import STAGE_IDS, derived_seed, sample_seed_sequence, subject_seed_sequence
from pipeline.stages.base import StageContext, generator_version, image_png_bytes, relative_sample_dir

NAME = "fingerprint"
STAGE_ID = STAGE_IDS[NAME]
MODALITY = "fingerprint"
PAIR_KIND = "plain-plain"
GENERATOR = "biomint.generators.fingerprint"

# The manifest `params` struct: Impression.params of the generator (same keys for every
# impression; the worker refuses rows whose keys differ from this list), less finger_position,
# which is a manifest column (a duplicate name would break e.g. polars' unnest("params")).
_FLOAT_PARAMS = ("difficulty", "rotation_deg", "dx", "dy", "distortion_rotation_deg", "distortion_dx",
                 "distortion_dy", "distortion_core_radius", "distortion_transition", "contact_cx",
                 "contact_cy", "contact_rx", "contact_ry", "contact_fraction", "moisture", "pressure",
                 "contrast", "background", "blur_sigma", "noise_sigma", "break_amount")
PARAMS_TYPE = pa.struct(
    [("finger_class", pa.string())]
    + [(name, pa.float64()) for name in _FLOAT_PARAMS]
    + [(name, pa.int64()) for name in ("n_blobs", "n_scratches", "n_minutiae", "n_cores", "n_deltas")]
)

def _config_fields() -> list[tuple]:
    """Pipeline fields, then every FingerprintSettings field with the generator's default
    (tuples become lists: Hydra has no tuples), so each generator knob is a config key."""
    hints = typing.get_type_hints(FingerprintSettings)
    fields = [
        ("fingers", int, 300),                 # distinct fingers in the dataset
        ("impressions", int, 8),               # impressions per finger
        ("positions", List[int], field(default_factory=lambda: list(range(1, 11)))),  # ISO codes 1-10
        ("device", str, "auto"),               # auto: CUDA when the worker has it, else cpu
        ("write_truth", bool, True),           # .ist, .xyt, orientation .npy, singularities .json
    ]
    for f in dataclasses.fields(FingerprintSettings):
        default = getattr(FingerprintSettings(), f.name)
        kind = hints[f.name]
        if typing.get_origin(kind) is tuple:
            kind = List[typing.get_args(kind)[0]]
            fields.append((f.name, kind, field(default_factory=lambda d=default: list(d))))
        else:
            fields.append((f.name, kind, default))
    return fields


Config = dataclasses.make_dataclass("Config", _config_fields())
Config.__module__ = __name__  # so that Dask can pickle instances by reference
Config.__doc__ = "Hydra group `fingerprint`: counts, positions, device, and every generator knob."
SETTINGS_FIELDS = tuple(f.name for f in dataclasses.fields(FingerprintSettings))


def settings_from(config) -> FingerprintSettings:
    values = {name: getattr(config, name) for name in SETTINGS_FIELDS}
    values = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in values.items()}
    try:
        return FingerprintSettings(**values)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"fingerprint settings are not valid: {e}") from None


def check(config) -> None:
    if config.fingers < 1:
        raise ConfigError(f"fingerprint.fingers={config.fingers} is not allowed: it must be an integer >= 1")
    if config.impressions < 1:
        raise ConfigError(f"fingerprint.impressions={config.impressions} is not allowed: it must be an integer >= 1")
    if config.impressions > 9999:
        raise ConfigError(f"fingerprint.impressions={config.impressions} is not allowed: at most 9999")
    positions = list(config.positions)
    if not positions or any(not 1 <= int(p) <= 10 for p in positions) or len(set(positions)) != len(positions):
        raise ConfigError(f"fingerprint.positions={positions} is not allowed: distinct ISO finger codes 1-10")
    if not 0.0 <= float(config.difficulty) <= 1.0:
        raise ConfigError(f"fingerprint.difficulty={config.difficulty} is not allowed: it must be in [0, 1]")
    if config.device != "auto" and not config.device.startswith(("cpu", "cuda")):
        raise ConfigError(f"fingerprint.device={config.device} is not allowed: auto, cpu, cuda or cuda:<n>")
    settings_from(config)


def skip_reason(config) -> str | None:
    return None


def subject_count(config) -> int:
    return math.ceil(config.fingers / len(config.positions))


def fingers_of(config, subject: int) -> list[int]:
    """ISO finger positions that subject `subject` holds."""
    per = len(config.positions)
    return [int(p) for i, p in enumerate(config.positions) if subject * per + i < config.fingers]


def expected_rows(config, start: int, stop: int) -> int:
    per = len(config.positions)
    fingers = max(0, min(stop * per, config.fingers) - start * per)
    return fingers * config.impressions


def sample_id(subject: int, position: int, impression: int) -> str:
    return f"fp-{subject:08d}-{position:02d}-{impression:02d}"


def run_shard(shard, config, context: StageContext) -> list[dict]:
    import generators.fingerprint as fp

    settings = settings_from(config)
    rows: list[dict] = []
    for subject in range(shard.start, shard.stop):
        positions = fingers_of(config, subject)
        rngs = [np.random.default_rng(subject_seed_sequence(context.seed, STAGE_ID, subject, unit=p))
                for p in positions]
        masters = fp.make_masters(settings, positions, rngs, device=context.device)
        for position, master in zip(positions, masters):
            for k in range(config.impressions):
                ss = sample_seed_sequence(context.seed, STAGE_ID, subject, k, unit=position)
                impression = fp.make_impression(master, settings, np.random.default_rng(ss))
                rows.append(_write_sample(fp, config, settings, context, subject, position, k,
                                          derived_seed(ss), impression))
    return rows


def warm_up() -> None:
    import generators.fingerprint  # noqa: F401  (torch and the generator: seconds on a cold worker)


def current_generator_version() -> str:
    import generators.fingerprint as fp

    return generator_version(str(Path(fp.__file__).parent))


def regenerate(row: dict, config, context: StageContext) -> bytes:
    """The PNG bytes of one manifest row, rebuilt from its indices and the dataset seed."""
    import generators.fingerprint as fp

    settings = settings_from(config)
    subject, position, k = int(row["subject_id"]), int(row["finger_position"]), int(row["impression"])
    rng = np.random.default_rng(subject_seed_sequence(context.seed, STAGE_ID, subject, unit=position))
    master = fp.make_master(settings, position, rng, device=context.device)
    ss = sample_seed_sequence(context.seed, STAGE_ID, subject, k, unit=position)
    return image_png_bytes(fp.make_impression(master, settings, np.random.default_rng(ss)).image)


def _write_sample(fp, config, settings: FingerprintSettings, context: StageContext,
                  subject: int, position: int, k: int, seed: int, impression) -> dict:
    sid = sample_id(subject, position, k)
    image_path = f"{relative_sample_dir('images', MODALITY, subject)}/{sid}.png"
    sha = context.write(image_path, image_png_bytes(impression.image))
    truth_path = None
    if config.write_truth:
        truth_path = f"{relative_sample_dir('truth', MODALITY, subject)}/{sid}.ist"
        _write_truth(fp, settings, context, truth_path, impression)
    height, width = impression.image.shape[:2]
    return {
        "sample_id": sid, "subject_id": subject, "modality": MODALITY, "finger_position": position,
        "impression": k, "path": image_path, "width": width, "height": height, "dpi": settings.dpi,
        "sha256": sha, "seed": seed, "generator": GENERATOR, "generator_version": current_generator_version(),
        "params": {key: value for key, value in impression.params.items() if key != "finger_position"},
        "truth_path": truth_path,
    }


def _write_truth(fp, settings: FingerprintSettings, context: StageContext, iso_path: str, impression) -> None:
    """Ground truth next to each other: <id>.ist (ISO 19794-2), <id>.xyt, <id>.orientation.npy,
    <id>.singularities.json, each written atomically (a file that exists is whole)."""
    stem = iso_path[: -len(".ist")]
    h, w = impression.image.shape[:2]
    write_bytes_atomic(context.root / f"{stem}.ist",
                       fp.iso19794_2_bytes(impression.minutiae, w, h, settings.dpi))
    write_bytes_atomic(context.root / f"{stem}.xyt", fp.xyt_bytes(impression.minutiae))
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(impression.orientation, dtype=np.float32))
    write_bytes_atomic(context.root / f"{stem}.orientation.npy", buffer.getvalue())
    singular = {k: [[float(x), float(y)] for x, y in v] for k, v in impression.singularities.items()}
    write_bytes_atomic(context.root / f"{stem}.singularities.json", json.dumps(singular, sort_keys=True).encode())

