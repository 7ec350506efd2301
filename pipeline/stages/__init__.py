"""Stages: each turns a shard (a contiguous range of subject indices) into files and rows.

A stage is a module with this shape (see pipeline/stages/fingerprint.py, the first one):

    NAME: str                      config group, manifest/<NAME>/, stage name in logs
    STAGE_ID: int                  fixed seeding id (pipeline.seeding.STAGE_IDS)
    MODALITY: str                  manifest `modality` value
    PAIR_KIND: str                 pairs/<PAIR_KIND>/: comparison lists among its samples
    Config: type                   its typed config dataclass (Hydra group NAME)
    PARAMS_TYPE: pa.StructType     the manifest `params` struct of its rows

    skip_reason(config) -> str | None      one line why the stage does not run, None if it runs
    check(config) -> None                  raise ConfigError/CheckpointError before anything is
                                           written (paths, ranges the dataclass cannot express)
    subject_count(config) -> int           subjects [0, n) the stage covers
    expected_rows(config, start, stop) -> int   rows of subjects [start, stop)
    run_shard(shard, config, context) -> list[dict]   write files, return manifest rows
    regenerate(row, config, context) -> bytes         the image file of one manifest row
    current_generator_version() -> str     optional: the `generator_version` today's code writes
    warm_up() -> None                       optional: heavy imports, run on every worker at start
    bind(config, configs) -> config         optional: attach other stages' typed configs (by group
                                           name) that this stage builds on (latents: the fingerprint
                                           stage's fingers); runs before check()
    max_drop_fraction(config) -> float      optional: the share of its samples the stage may drop
                                            (`<NAME>.max_drop_fraction`, not recorded in dataset.json);
                                            more fails the run with one sentence (exit 1) before pairs
                                            and `complete`, and a rerun with a higher value finishes it
    drop_cause(reason) -> str | None        optional: the likely cause of many drops for a reason (the
                                            most frequent one), named in that sentence
    PAIR_SOURCES: tuple[str, ...]           optional: other stages whose rows its pairs may name
    finish(root, config, seed) -> dict      optional: files built from every stage's manifest after the
                                           pairs (the 1:N protocol); dataset.json records the dict
                                           under the stage's NAME
    finish_state(root, recorded) -> str | None   optional: why those files differ from the record
    OFF: dict                               optional (stages that can be skipped): config values
                                           that make skip_reason() say so; `repair` sets them on
                                           stages a dataset.json does not record

Every file a stage writes goes through `context.write(relative_path, data)`: the manifest then
lists it, with its sha256 and size, in the `files` of the sample whose id starts its name (or in
the shard's stats when it belongs to no one sample), and validate, resume and repair check it.
With storage=tar a sample's files become members of the shard's tar and the worker points the
rows' paths at them; truth that names another file writes `context.location(path)`.

`context` is a StageContext. A stage that gives up on a sample on purpose (e.g. a face whose
identity similarity stays under the floor) calls `context.record_dropped(sample_id, reason)`;
the shard then counts rows + dropped against expected_rows, so nothing is lost silently, and the
stage's summary line counts the drops by reason. Without `max_drop_fraction` a stage may drop any
share of its samples.
Identities for pairs are (subject_id, finger_position): for faces finger_position is null.
"""
from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from pipeline.stages.base import StageContext, image_png_bytes, relative_sample_dir, stage_device

# Stage modules in run order. A module that does not exist in this checkout is left out.
STAGE_MODULES: tuple[str, ...] = ("pipeline.stages.fingerprint", "pipeline.stages.latent", "pipeline.stages.face",
                                  "pipeline.stages.protocol")


def load_stages() -> dict[str, ModuleType]:
    stages: dict[str, ModuleType] = {}
    for name in STAGE_MODULES:
        if importlib.util.find_spec(name) is not None:
            module = importlib.import_module(name)
            stages[module.NAME] = module
    return stages


__all__ = ["StageContext", "image_png_bytes", "relative_sample_dir", "stage_device", "load_stages",
           "STAGE_MODULES"]
