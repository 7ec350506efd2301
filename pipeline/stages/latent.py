"""Latent fingerprint stage: L latents per finger of the fingerprint stage, mates of its prints.

A latent of finger (subject s, position p) is made from that finger's master print, the very
one the fingerprint stage grows (its seed sequence is the fingerprint stage's), so its mates
are the finger's plain and rolled impressions. The latent stage covers the first
`latent.fingers` fingers of the fingerprint stage (0: all of them).

Seeding (CONVENTIONS §2, stage id 3, unit = ISO finger position):
  master of (s, p)               <- subject_seed_sequence(seed, 1, s, unit=p)   (fingerprint stage's)
  latent k of (s, p)             <- sample_seed_sequence(seed, 3, s, k, unit=p)
  gate attempt a > 0 of latent k <- that sequence's spawn key + (a,)
The procedural latent is drawn from the sample's generator; the diffusion noise of attempt a
from its derived seed. The print that may overlap the latent is the subject's next finger
(its master print), as when one hand leaves several touches on an object.

Identity gate: NBIS MINDTCT minutiae of the procedural latent and of its diffusion latent are
matched with the visible ground-truth minutiae; a diffusion latent that keeps less than
`gate_keep` of what its procedural start shows is redrawn with new noise, up to
`gate_attempts` times, then dropped and recorded in the shard stats.

Rows: modality `latent_fingerprint`, impression_type `latent`, sample ids fp-S-PP-lKK; truth
per latent: <id>.xyt (the visible mate minutiae), <id>.mask.png (the visible region),
<id>.orientation.npy (the mate's orientation per 8x8 block). Pairs: latent-rolled and
latent-plain against the fingerprint stage's rows (PAIR_SOURCES).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import math
import typing
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pyarrow as pa

from generators.latent.settings import LatentSettings
from pipeline.errors import CheckpointError, ConfigError
from pipeline.seeding import STAGE_IDS, derived_seed, sample_seed_sequence
from pipeline.stages import fingerprint as fingerprint_stage
from pipeline.stages.base import (StageContext, check_image_sizes, generator_version, image_png_bytes,
                                  relative_sample_dir, settings_config_fields, settings_from_config)

NAME = "latent"
STAGE_ID = STAGE_IDS["latent_fingerprint"]
MODALITY = "latent_fingerprint"
PAIR_KIND = "latent-rolled"
PAIR_SOURCES = ("fingerprint",)          # other stages' manifests whose rows the pairs name
GENERATOR = "biomint.generators.latent"
SAMPLERS = ("diffusion", "procedural")

_STRING_PARAMS = ("finger_class", "value_class", "target_class", "surface", "technique", "sampler", "checkpoint")
_FLOAT_PARAMS = ("visible_fraction_of_finger", "clarity", "transfer", "noise_sigma", "rotation_deg", "moisture",
                 "pressure", "smudge_length_px", "smudge_angle_deg", "warp_px", "resample_scale", "t0",
                 "recovered", "recovered_procedural", "mean_abs_difference")
_INT_PARAMS = ("class_attempts", "visible_area_px", "n_visible_minutiae", "jpeg_quality", "sampler_steps",
               "gate_attempts", "overlap_position")
_BOOL_PARAMS = ("double_tap", "overlap")
PARAMS_TYPE = pa.struct([(n, pa.string()) for n in _STRING_PARAMS] + [(n, pa.float64()) for n in _FLOAT_PARAMS]
                        + [(n, pa.int64()) for n in _INT_PARAMS] + [(n, pa.bool_()) for n in _BOOL_PARAMS])


def _config_fields() -> list[tuple]:
    """Stage fields, then every LatentSettings field with the generator's default."""
    fields = [
        ("per_finger", int, 0),                # latents per finger (0: the stage does not run)
        ("fingers", int, 0),                   # the first N fingers of the fingerprint stage (0: all)
        ("sampler", str, "diffusion"),         # diffusion (procedural start refined by the model) or procedural
        ("checkpoint", Optional[str], None),   # a biomint-train-latent directory; null: the shipped weights
        ("steps", int, 3),                     # DDIM steps
        ("t0", float, 0.2),                    # SDEdit start time (1: from pure noise; see README)
        ("gate_keep", float, 0.7),             # share of the procedural start's recovered minutiae to keep
        ("gate_attempts", int, 3),             # diffusion draws before a latent is dropped
        ("device", str, "auto"),
        ("write_truth", bool, True),           # .xyt, .mask.png, .orientation.npy
    ]
    fields += settings_config_fields(LatentSettings)
    # filled by bind() from the fingerprint group: not a key to set by hand
    fields.append(("fingerprint", Any, None))
    return fields


Config = dataclasses.make_dataclass("Config", _config_fields())
Config.__module__ = __name__
Config.__doc__ = "Hydra group `latent`: counts, sampler, gate, and every simulator knob."


def bind(config, configs: dict):
    """The config with the fingerprint stage's config attached (latents are its fingers')."""
    return dataclasses.replace(config, fingerprint=configs.get("fingerprint"))


def settings_from(config) -> LatentSettings:
    return settings_from_config(config, LatentSettings, "latent")


OFF = {"per_finger": 0}   # the config values that skip this stage (repair turns unrecorded stages off)


def skip_reason(config) -> str | None:
    return None if config.per_finger > 0 else "latent.per_finger=0 (set e.g. latent.per_finger=2 to mint latents)"


def check(config) -> None:
    if not 0 <= config.per_finger <= 999:
        raise ConfigError(f"latent.per_finger={config.per_finger} is not allowed: an integer in [0, 999]")
    if config.fingers < 0:
        raise ConfigError(f"latent.fingers={config.fingers} is not allowed: 0 (all) or the number of fingers")
    if config.sampler not in SAMPLERS:
        raise ConfigError(f"latent.sampler={config.sampler} is not allowed: one of {', '.join(SAMPLERS)}")
    if not 1 <= config.steps <= 100:
        raise ConfigError(f"latent.steps={config.steps} is not allowed: an integer in [1, 100]")
    if not 0.0 < config.t0 <= 1.0:
        raise ConfigError(f"latent.t0={config.t0} is not allowed: it must be in (0, 1]")
    if not 0.0 <= config.gate_keep <= 1.0 or config.gate_attempts < 1:
        raise ConfigError("latent.gate_keep must be in [0, 1] and latent.gate_attempts >= 1")
    check_image_sizes("latent", {"width": config.width, "height": config.height}, config.dpi)
    if config.device != "auto" and not config.device.startswith(("cpu", "cuda")):
        raise ConfigError(f"latent.device={config.device} is not allowed: auto, cpu, cuda or cuda:<n>")
    if config.fingerprint is None:
        raise ConfigError("the latent stage needs the fingerprint stage's config (fingerprint group)")
    if config.fingers > config.fingerprint.fingers:
        raise ConfigError(f"latent.fingers={config.fingers} is more than fingerprint.fingers="
                          f"{config.fingerprint.fingers}")
    settings_from(config)
    if config.sampler == "diffusion":
        checkpoint_dir(config)


def checkpoint_dir(config) -> Path:
    from generators.latent import SHIPPED_WEIGHTS

    path = Path(config.checkpoint).expanduser() if config.checkpoint else SHIPPED_WEIGHTS
    if not (path / "model.json").is_file() or not (path / "model.pt").is_file():
        raise CheckpointError(f"latent.checkpoint={path} holds no latent diffusion checkpoint (model.json and "
                              "model.pt); train one with biomint-train-latent or set latent.sampler=procedural")
    return path


def _finger_count(config) -> int:
    return config.fingers or config.fingerprint.fingers


def subject_count(config) -> int:
    return math.ceil(_finger_count(config) / len(config.fingerprint.positions))


def fingers_of(config, subject: int) -> list[int]:
    """ISO positions of the subject's fingers that get latents."""
    per = len(config.fingerprint.positions)
    return [int(p) for i, p in enumerate(config.fingerprint.positions) if subject * per + i < _finger_count(config)]


def expected_rows(config, start: int, stop: int) -> int:
    per = len(config.fingerprint.positions)
    return max(0, min(stop * per, _finger_count(config)) - start * per) * config.per_finger


def pair_kinds(config) -> list[tuple[str, str, str]]:
    kinds = []
    if config.fingerprint.rolled:
        kinds.append(("latent-rolled", "latent", "rolled"))
    if config.fingerprint.impressions:
        kinds.append(("latent-plain", "latent", "plain"))
    return kinds


def sample_id(subject: int, position: int, k: int) -> str:
    return fingerprint_stage.sample_id(subject, position, k, "latent")


def overlap_position(config, subject: int, position: int) -> int | None:
    """The subject's next finger (fingerprint stage order, cyclic) or None if it has one."""
    held = fingerprint_stage.fingers_of(config.fingerprint, subject)
    if len(held) < 2:
        return None
    return held[(held.index(position) + 1) % len(held)]


def _attempt_sequence(context: StageContext, subject: int, position: int, k: int, attempt: int):
    ss = sample_seed_sequence(context.seed, STAGE_ID, subject, k, unit=position)
    if attempt == 0:
        return ss
    return np.random.SeedSequence(entropy=ss.entropy, spawn_key=tuple(ss.spawn_key) + (attempt,))


@functools.lru_cache(maxsize=4)
def _model(path: str, device: str):
    from generators.latent.training import load_model

    return load_model(Path(path), device=device)


@functools.lru_cache(maxsize=4)
def _checkpoint_name(path: str) -> str:
    """Names the weights in params: the directory and a hash of model.pt."""
    digest = hashlib.sha256((Path(path) / "model.pt").read_bytes()).hexdigest()[:12]
    return f"{Path(path).name}@{digest}"


def _masters(config, context: StageContext, subject: int, positions: list[int], device: str) -> dict:
    import generators.fingerprint as fp

    settings = fingerprint_stage.settings_from(config.fingerprint)
    rngs = [fingerprint_stage._master_rng(context, subject, p) for p in positions]
    return dict(zip(positions, fp.make_masters(settings, positions, rngs, device=device)))


def _needed_positions(config, subject: int) -> list[int]:
    """Every finger of the subject, in the fingerprint stage's order: the same make_masters
    call as that stage's, so the masters are the same bytes on CUDA too (where the growth
    runs as one batch and a different batch could round differently)."""
    return fingerprint_stage.fingers_of(config.fingerprint, subject)


class _Made(typing.NamedTuple):
    image: np.ndarray
    latent: object          # generators.latent.Latent (the procedural one, with the ground truth)
    params: dict


def _make(config, context: StageContext, masters: dict, subject: int, position: int, k: int,
          only_attempt: int | None = None) -> _Made | None:
    """One latent through the gate; None if every attempt failed it. With `only_attempt`
    (regenerate) that attempt's image is returned without gating."""
    from generators.latent import make_latent

    settings = settings_from(config)
    other = overlap_position(config, subject, position)
    ss = _attempt_sequence(context, subject, position, k, 0)
    lat = make_latent(masters[position], settings, np.random.default_rng(ss),
                      overlap=masters[other] if other is not None else None)
    params = {**lat.params, "sampler": config.sampler, "overlap_position": other, "checkpoint": None,
              "sampler_steps": None, "t0": None, "gate_attempts": None, "recovered": None,
              "recovered_procedural": None, "mean_abs_difference": None}
    if config.sampler == "procedural":
        return _Made(lat.image, lat, params)
    from generators.latent.refine import refine_latent

    path = str(checkpoint_dir(config))
    model = _model(path, context.device)
    params.update(checkpoint=_checkpoint_name(path), sampler_steps=config.steps, t0=config.t0)

    def attempt_image(a: int) -> np.ndarray:
        seed = derived_seed(_attempt_sequence(context, subject, position, k, a))
        return refine_latent(model, lat, config.steps, config.t0, seed, context.device)

    def finish(image: np.ndarray, a: int, recovered, start) -> _Made:
        mad = float(np.abs(image.astype(np.float32) - lat.image.astype(np.float32)).mean())
        return _Made(image, lat, dict(params, gate_attempts=a + 1, recovered=recovered, recovered_procedural=start,
                                      mean_abs_difference=mad))

    if only_attempt is not None:
        return finish(attempt_image(only_attempt), only_attempt, None, None)
    from evaluation.fingerprint_matching import extract_minutiae
    from generators.latent.refine import recovered_fraction

    start = recovered_fraction(lat.minutiae, extract_minutiae(lat.image, settings.dpi))
    for a in range(config.gate_attempts):
        image = attempt_image(a)
        recovered = recovered_fraction(lat.minutiae, extract_minutiae(image, settings.dpi))
        if not np.isfinite(start) or recovered >= config.gate_keep * start:
            return finish(image, a, _finite(recovered), _finite(start))
    return None


def _finite(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def run_shard(shard, config, context: StageContext) -> list[dict]:
    rows: list[dict] = []
    for subject in range(shard.start, shard.stop):
        masters = _masters(config, context, subject, _needed_positions(config, subject), context.device)
        for position in fingers_of(config, subject):
            for k in range(config.per_finger):
                sid = sample_id(subject, position, k)
                made = _make(config, context, masters, subject, position, k)
                if made is None:
                    context.record_dropped(sid, f"identity gate: the diffusion latent kept less than "
                                                f"{config.gate_keep:.2f} of its procedural start's recovered "
                                                f"minutiae in {config.gate_attempts} attempts")
                    continue
                rows.append(_write_sample(config, context, subject, position, k, made))
    return rows


def warm_up() -> None:
    fingerprint_stage.warm_up()
    import generators.latent.refine  # noqa: F401


def current_generator_version() -> str:
    import generators.latent as latent

    return generator_version(str(Path(latent.__file__).parent))


def regenerate(row: dict, config, context: StageContext) -> bytes:
    subject, position, k = int(row["subject_id"]), int(row["finger_position"]), int(row["impression"])
    other = overlap_position(config, subject, position)
    masters = _masters(config, context, subject, sorted({position} | ({other} if other else set())), context.device)
    attempt = int(row["params"]["gate_attempts"]) - 1 if row["params"].get("gate_attempts") else None
    made = _make(config, context, masters, subject, position, k, only_attempt=attempt)
    return image_png_bytes(made.image)


def _row_params(params: dict) -> dict:
    """Every PARAMS_TYPE key; a generator key the struct does not know fails the shard."""
    names = [f.name for f in PARAMS_TYPE]
    unknown = set(params) - set(names)
    if unknown:
        raise RuntimeError(f"latent generator params {sorted(unknown)} are not in the manifest's params struct")
    return {name: params.get(name) for name in names}


def _write_sample(config, context: StageContext, subject: int, position: int, k: int, made: _Made) -> dict:
    import generators.fingerprint as fp

    settings = settings_from(config)
    sid = sample_id(subject, position, k)
    image_path = f"{relative_sample_dir('images', MODALITY, subject)}/{sid}.png"
    sha = context.write(image_path, image_png_bytes(made.image))
    truth_path = None
    if config.write_truth:
        stem = f"{relative_sample_dir('truth', MODALITY, subject)}/{sid}"
        truth_path = f"{stem}.xyt"
        context.write(truth_path, fp.xyt_bytes(made.latent.minutiae))
        context.write(f"{stem}.mask.png", image_png_bytes(made.latent.mask.astype(np.uint8) * 255))
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(made.latent.orientation, dtype=np.float32))
        context.write(f"{stem}.orientation.npy", buffer.getvalue())
    height, width = made.image.shape
    return {
        "sample_id": sid, "subject_id": subject, "modality": MODALITY, "finger_position": position,
        "impression_type": "latent", "impression": k, "path": image_path, "width": width, "height": height,
        "dpi": settings.dpi, "sha256": sha, "seed": derived_seed(_attempt_sequence(context, subject, position, k, 0)),
        "generator": GENERATOR, "generator_version": current_generator_version(),
        "params": _row_params(made.params),
        "truth_path": truth_path,
    }
