"""Fingerprint stage: per finger K plain and R rolled impressions, per subject the 4-4-2 slaps.

Fingers are numbered 0..fingers-1 and fill subjects in order: finger f belongs to subject
f // P at position positions[f % P] (P = len(positions)); the last subject may hold fewer.
Seeding (CONVENTIONS §2, unit = ISO finger position):
  master print of (subject s, position p)  ← subject_seed_sequence(seed, 1, s, unit=p)
  plain impression k of that finger       ← sample_seed_sequence(seed, 1, s, k, unit=p)
  rolled impression r of that finger      ← sample_seed_sequence(seed, 1, s, r, unit=p, slot=ROLLED_SLOT)
  slap q (13, 14, 15) of subject s        ← sample_seed_sequence(seed, 1, s, 0, unit=q)
so a sample depends on nothing but its own indices, whatever the shard layout, and adding
rolled prints or slaps changes no byte of the plain ones.

Rows of a subject, in order: each finger's plain impressions then its rolled ones, then the
slaps that hold at least one of the subject's fingers (`impression_type` plain/rolled/slap).

`quality_mix` (wanted share of plain impressions per NFIQ 2 bin) draws each impression's
difficulty from the calibration shipped beside the generator (quality_calibration.json, made
by `make calibrate-quality`). That calibration is valid only for the generator source and the
settings it records: `check` refuses a mix it cannot reach and warns when it was made for
another generator or other settings; `biomint evaluate` shows wanted vs achieved shares.
"""
from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
from dataclasses import field
from pathlib import Path
from typing import List

import numpy as np
import pyarrow as pa

from generators.fingerprint.settings import FingerprintSettings
from pipeline.errors import ConfigError
from pipeline.seeding import ROLLED_SLOT, SAMPLE_SLOT, STAGE_IDS, derived_seed, sample_seed_sequence, subject_seed_sequence
from pipeline.stages.base import (StageContext, check_image_sizes, generator_version, image_png_bytes,
                                  relative_sample_dir, settings_config_fields, settings_from_config)

NAME = "fingerprint"
STAGE_ID = STAGE_IDS[NAME]
MODALITY = "fingerprint"
PAIR_KIND = "plain-plain"
GENERATOR = "biomint.generators.fingerprint"
log = logging.getLogger("biomint")

# The manifest `params` struct: the union of the generators' params over impression types
# (plain Impression.params, rolled Impression.params, Slap.params), less finger_position, which
# is a manifest column (a duplicate name would break e.g. polars' unnest("params")). A key that
# one type does not have is null on its rows; a key the struct does not know is refused.
_FLOAT_PARAMS = ("difficulty", "rotation_deg", "dx", "dy", "distortion_rotation_deg", "distortion_dx",
                 "distortion_dy", "distortion_core_radius", "distortion_transition", "contact_cx",
                 "contact_cy", "contact_rx", "contact_ry", "contact_fraction", "moisture", "pressure",
                 "contrast", "background", "blur_sigma", "noise_sigma", "break_amount",
                 # rolled only
                 "roll_angle_deg", "roll_radius", "roll_edge_stretch", "slip_shift_px", "slip_band_start",
                 "slip_band_width")
_INT_PARAMS = ("n_blobs", "n_scratches", "n_minutiae", "n_cores", "n_deltas", "n_creases", "n_scars",
               "ansi_nist_impression_code")
SEGMENT_TYPE = pa.struct([("position", pa.int8()), ("x0", pa.int32()), ("y0", pa.int32()),
                          ("x1", pa.int32()), ("y1", pa.int32())])
PARAMS_TYPE = pa.struct(
    [("finger_class", pa.string()), ("rendering", pa.string()), ("profile", pa.string())]
    + [(name, pa.float64()) for name in _FLOAT_PARAMS]
    + [(name, pa.int64()) for name in _INT_PARAMS]
    + [("segments", pa.list_(SEGMENT_TYPE))]      # slaps only: ANSI/NIST-ITL 14.021 boxes
)
_PARAM_NAMES = tuple(f.name for f in PARAMS_TYPE)

def _config_fields() -> list[tuple]:
    """Pipeline fields, then every FingerprintSettings field with the generator's default
    (tuples become lists: Hydra has no tuples), so each generator knob is a config key."""
    fields = [
        ("fingers", int, 300),                 # distinct fingers in the dataset
        ("impressions", int, 8),               # plain impressions per finger
        ("rolled", int, 1),                    # rolled impressions per finger (0: none)
        ("slaps", bool, False),                # per subject the 4-4-2 slaps (FGP 13, 14, 15)
        ("positions", List[int], field(default_factory=lambda: list(range(1, 11)))),  # ISO codes 1-10
        ("device", str, "auto"),               # auto: CUDA when the worker has it, else cpu
        ("write_truth", bool, True),           # .ist, .xyt, orientation .npy, singularities .json
    ]
    return fields + settings_config_fields(FingerprintSettings)


Config = dataclasses.make_dataclass("Config", _config_fields())
Config.__module__ = __name__  # so that Dask can pickle instances by reference
Config.__doc__ = "Hydra group `fingerprint`: counts, positions, device, and every generator knob."
SLAP_FINGERS = {13: (2, 3, 4, 5), 14: (10, 9, 8, 7), 15: (6, 1)}   # generators.fingerprint.slap, without torch


def settings_from(config) -> FingerprintSettings:
    return settings_from_config(config, FingerprintSettings, "fingerprint")


def check(config) -> None:
    if config.fingers < 1:
        raise ConfigError(f"fingerprint.fingers={config.fingers} is not allowed: it must be an integer >= 1")
    if config.impressions < 1:
        raise ConfigError(f"fingerprint.impressions={config.impressions} is not allowed: it must be an integer >= 1")
    if config.impressions > 9999:
        raise ConfigError(f"fingerprint.impressions={config.impressions} is not allowed: at most 9999")
    if not 0 <= config.rolled <= 9999:
        raise ConfigError(f"fingerprint.rolled={config.rolled} is not allowed: an integer in [0, 9999]")
    positions = list(config.positions)
    if not positions or any(not 1 <= int(p) <= 10 for p in positions) or len(set(positions)) != len(positions):
        raise ConfigError(f"fingerprint.positions={positions} is not allowed: distinct ISO finger codes 1-10")
    if not 0.0 <= float(config.difficulty) <= 1.0:
        raise ConfigError(f"fingerprint.difficulty={config.difficulty} is not allowed: it must be in [0, 1]")
    if config.device != "auto" and not config.device.startswith(("cpu", "cuda")):
        raise ConfigError(f"fingerprint.device={config.device} is not allowed: auto, cpu, cuda or cuda:<n>")
    check_image_sizes("fingerprint", {key: getattr(config, key) for key in (
        "width", "height", "master_width", "master_height", "rolled_width", "rolled_height", "slap_width",
        "slap_height")}, config.dpi)
    _check_quality_mix(settings_from(config))


def _check_quality_mix(settings: FingerprintSettings) -> None:
    """Refuse an unreachable quality_mix before anything is minted (the workers would fail
    every shard with the same sentence), and say when the shipped calibration was made for
    another generator or other settings: it is only valid for the generator that made it."""
    from generators.fingerprint.quality_mix import calibration_mismatch, check_quality_mix

    try:
        check_quality_mix(settings)
    except ValueError as e:
        raise ConfigError(f"fingerprint.{e}") from None
    mismatch = calibration_mismatch(settings)
    if mismatch:
        log.warning("fingerprint: %s", mismatch)


def skip_reason(config) -> str | None:
    return None


def subject_count(config) -> int:
    return math.ceil(config.fingers / len(config.positions))


def fingers_of(config, subject: int) -> list[int]:
    """ISO finger positions that subject `subject` holds."""
    per = len(config.positions)
    return [int(p) for i, p in enumerate(config.positions) if subject * per + i < config.fingers]


def pair_kinds(config) -> list[tuple[str, str, str]]:
    """(kind, type of a, type of b) of the comparison lists this config calls for."""
    kinds = [("plain-plain", "plain", "plain")] if config.impressions else []
    if config.rolled and config.impressions:
        kinds.append(("rolled-plain", "rolled", "plain"))
    if config.rolled >= 2:
        kinds.append(("rolled-rolled", "rolled", "rolled"))
    if config.slaps and config.impressions:
        kinds.append(("slap-plain", "slap", "plain"))
    return kinds


def slaps_of(config, subject: int) -> list[int]:
    """Slap codes (13, 14, 15) the subject gets: those holding at least one of its fingers."""
    if not config.slaps:
        return []
    held = set(fingers_of(config, subject))
    return [code for code, fingers in SLAP_FINGERS.items() if held & set(fingers)]


def expected_rows(config, start: int, stop: int) -> int:
    """Rows of subjects [start, stop): O(1) in the count, since every subject but the last
    holds all of config.positions (and so the same slaps)."""
    per = len(config.positions)
    fingers = max(0, min(stop * per, config.fingers) - start * per)
    rows = fingers * (config.impressions + config.rolled)
    if config.slaps:
        last = subject_count(config) - 1
        stop = min(stop, last + 1)
        if stop > start:
            full = stop - start - (1 if stop - 1 == last else 0)
            rows += full * len(slaps_of(config, 0)) + (len(slaps_of(config, last)) if stop - 1 == last else 0)
    return rows


def sample_id(subject: int, position: int, impression: int, impression_type: str = "plain") -> str:
    """fp-<subject>-<position>-<k> (plain), ...-r<k> (rolled), ...-s<k> (slap, position 13-15),
    ...-l<k> (latent, the latent stage's)."""
    prefix = {"plain": "", "rolled": "r", "slap": "s", "latent": "l"}[impression_type]
    return f"fp-{subject:08d}-{position:02d}-{prefix}{impression:02d}"


def _master_rng(context: StageContext, subject: int, position: int) -> np.random.Generator:
    return np.random.default_rng(subject_seed_sequence(context.seed, STAGE_ID, subject, unit=position))


def _sample_sequence(context: StageContext, subject: int, position: int, k: int, impression_type: str):
    """Plain impressions and slaps (unit 13-15) use the sample slot, rolled ones their own."""
    slot = ROLLED_SLOT if impression_type == "rolled" else SAMPLE_SLOT
    return sample_seed_sequence(context.seed, STAGE_ID, subject, k, unit=position, slot=slot)


def _make(fp, settings: FingerprintSettings, masters: dict, position: int, k: int, impression_type: str, ss):
    rng = np.random.default_rng(ss)
    if impression_type == "plain":
        return fp.make_impression(masters[position], settings, rng)
    if impression_type == "rolled":
        return fp.make_rolled_impression(masters[position], settings, rng)
    return fp.make_slap(masters, position, settings, rng)


def run_shard(shard, config, context: StageContext) -> list[dict]:
    import generators.fingerprint as fp

    settings = settings_from(config)
    rows: list[dict] = []
    for subject in range(shard.start, shard.stop):
        positions = fingers_of(config, subject)
        rngs = [_master_rng(context, subject, p) for p in positions]
        masters = dict(zip(positions, fp.make_masters(settings, positions, rngs, device=context.device)))
        jobs = [(p, k, kind) for p in positions
                for kind, count in (("plain", config.impressions), ("rolled", config.rolled)) for k in range(count)]
        jobs += [(code, 0, "slap") for code in slaps_of(config, subject)]
        for position, k, kind in jobs:
            ss = _sample_sequence(context, subject, position, k, kind)
            made = _make(fp, settings, masters, position, k, kind, ss)
            rows.append(_write_sample(fp, config, settings, context, subject, position, k, kind,
                                      derived_seed(ss), made))
    return rows


def warm_up() -> None:
    """Import the generator (torch and every module a shard calls: seconds on a cold worker).
    The package resolves its names on first use, so importing it alone imports none of them."""
    import generators.fingerprint as fp
    from generators.lazy_exports import resolve_all

    resolve_all(fp)


def current_generator_version() -> str:
    import generators.fingerprint as fp

    return generator_version(str(Path(fp.__file__).parent))


def regenerate(row: dict, config, context: StageContext) -> bytes:
    """The PNG bytes of one manifest row, rebuilt from its indices and the dataset seed."""
    import generators.fingerprint as fp

    settings = settings_from(config)
    subject, position, k = int(row["subject_id"]), int(row["finger_position"]), int(row["impression"])
    kind = row.get("impression_type") or "plain"
    fingers = [f for f in SLAP_FINGERS[position] if f in fingers_of(config, subject)] if kind == "slap" else [position]
    masters = {f: fp.make_master(settings, f, _master_rng(context, subject, f), device=context.device) for f in fingers}
    ss = _sample_sequence(context, subject, position, k, kind)
    return image_png_bytes(_make(fp, settings, masters, position, k, kind, ss).image)


def _row_params(made, kind: str) -> dict:
    """The manifest params of one sample: every PARAMS_TYPE key, null where it does not apply."""
    params = {key: value for key, value in made.params.items() if key != "finger_position"}
    unknown = set(params) - set(_PARAM_NAMES)
    if unknown:
        raise RuntimeError(f"{kind} generator params {sorted(unknown)} are not in the manifest's params struct")
    if kind == "slap":
        params["segments"] = [{"position": seg.position, "x0": seg.box[0], "y0": seg.box[1], "x1": seg.box[2],
                               "y1": seg.box[3]} for seg in made.segments]
    return {key: params.get(key) for key in _PARAM_NAMES}


def _write_sample(fp, config, settings: FingerprintSettings, context: StageContext, subject: int, position: int,
                  k: int, kind: str, seed: int, made) -> dict:
    sid = sample_id(subject, position, k, kind)
    image_path = f"{relative_sample_dir('images', MODALITY, subject)}/{sid}.png"
    sha = context.write(image_path, image_png_bytes(made.image))
    truth_path = None
    if config.write_truth:
        truth_path = f"{relative_sample_dir('truth', MODALITY, subject)}/{sid}.ist"
        if kind == "slap":
            _write_slap_truth(fp, settings, context, truth_path, made)
        else:
            _write_truth(fp, settings, context, truth_path, made)
    height, width = made.image.shape[:2]
    return {
        "sample_id": sid, "subject_id": subject, "modality": MODALITY, "finger_position": position,
        "impression_type": kind, "impression": k, "path": image_path, "width": width, "height": height,
        "dpi": settings.dpi, "sha256": sha, "seed": seed, "generator": GENERATOR,
        "generator_version": current_generator_version(), "params": _row_params(made, kind),
        "truth_path": truth_path,
    }


def _write_slap_truth(fp, settings: FingerprintSettings, context: StageContext, iso_path: str, slap) -> None:
    """<id>.ist (ISO 19794-2, one finger view per finger), <id>.xyt (every minutia of the slap)
    and <id>.segments.json (per finger: position, box, minutiae, cores, deltas), slap pixels;
    each atomically, listed with its hash in the sample's manifest `files`."""
    stem = iso_path[: -len(".ist")]
    h, w = slap.image.shape[:2]
    views = [(seg.minutiae, seg.position) for seg in slap.segments]
    context.write(f"{stem}.ist", fp.iso19794_2_views_bytes(views, w, h, settings.dpi,
                                                           impression_type=int(slap.params["ansi_nist_impression_code"])))
    context.write(f"{stem}.xyt", fp.xyt_bytes(slap.minutiae))
    segments = [{"position": seg.position, "box": list(seg.box),
                 "minutiae": [[round(float(v), 4) for v in m] for m in seg.minutiae],
                 "cores": [[float(x), float(y)] for x, y in seg.cores],
                 "deltas": [[float(x), float(y)] for x, y in seg.deltas],
                 "ink_in_box": round(float(seg.ink_in_box), 6)} for seg in slap.segments]
    context.write(f"{stem}.segments.json", json.dumps(segments, sort_keys=True).encode())


def _write_truth(fp, settings: FingerprintSettings, context: StageContext, iso_path: str, impression) -> None:
    """Ground truth next to each other: <id>.ist (ISO 19794-2), <id>.xyt, <id>.orientation.npy,
    <id>.singularities.json, each written atomically (a file that exists is whole) and listed
    with its hash in the sample's manifest `files`."""
    stem = iso_path[: -len(".ist")]
    h, w = impression.image.shape[:2]
    context.write(f"{stem}.ist", fp.iso19794_2_bytes(impression.minutiae, w, h, settings.dpi,
                                                     finger_position=int(impression.params["finger_position"]),
                                                     impression_type=int(impression.params["ansi_nist_impression_code"])))
    context.write(f"{stem}.xyt", fp.xyt_bytes(impression.minutiae))
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(impression.orientation, dtype=np.float32))
    context.write(f"{stem}.orientation.npy", buffer.getvalue())
    singular = {k: [[float(x), float(y)] for x, y in v] for k, v in impression.singularities.items()}
    context.write(f"{stem}.singularities.json", json.dumps(singular, sort_keys=True).encode())

