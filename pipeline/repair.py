"""`biomint repair <dir>`: find every damaged shard by sha256, then re-mint exactly those.

A plain rerun of the minting command already re-mints shards whose parts, stats or files are
missing, truncated or of the wrong size (the cheap check of pipeline.manifest.shard_state).
A file changed in place at the same size (a flipped bit) needs its sha256: repair reads every
file once, forgets the stats of each shard that holds a bad one (so that it counts as not
minted), and then runs the recorded config like the rerun. Samples depend only on their own
indices and the seed (CONVENTIONS §2), so the re-minted shards are byte-identical to the lost
ones; `validate` passes at the end.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import ConfigError
from pipeline.lock import dataset_lock
from pipeline.manifest import listed_files, load_dataset_json, part_path, shard_state, stats_path, stored_sha256
from pipeline.sharding import plan_shards
from pipeline.stages import load_stages

log = logging.getLogger("biomint")


def damaged_shards(root: Path, meta: dict, workers: int = 8) -> dict[str, list]:
    """{stage name: [(shard, why)]} of every shard with a missing, unreadable or changed file."""
    from pipeline.validate import stage_config_from

    stages = load_stages()
    shard_size = int(meta["config"]["dataset"]["shard_size"])
    found: dict[str, list] = {}
    for name in meta.get("stages", {}):
        if name not in stages:
            raise ConfigError(f"stage {name!r} of {root}/dataset.json is not installed; cannot repair it")
        stage = stages[name]
        config = stage_config_from(meta, stage)

        def check(shard, stage=stage, config=config) -> str | None:
            stats, why = shard_state(root, stage.NAME, shard.name, stage.expected_rows(config, shard.start, shard.stop))
            if why:
                return why
            try:
                files = listed_files(pq.ParquetFile(part_path(root, stage.NAME, shard.name)))
            except (OSError, ValueError, pa.ArrowException) as e:
                return f"its manifest part cannot be read ({e})"
            entries = [e for e in files + list(stats.get("files", [])) if e.get("sha256") is not None]
            on_disk = stored_sha256(Path(root), entries)      # each tar (storage=tar) read once
            for entry in entries:
                if on_disk[entry["path"]] != entry["sha256"]:
                    return f"{entry['path']} differs from its sha256"
            return None

        shards = plan_shards(stage.subject_count(config), shard_size)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            bad = [(shard, why) for shard, why in zip(shards, pool.map(check, shards)) if why]
        if bad:
            found[name] = bad
    return found


def repair_dataset(root: Path, overrides: list[str]) -> str:
    """Re-mint the damaged shards of the dataset at `root` (and its pairs); returns a summary."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    import pipeline.config  # noqa: F401  (registers the structured configs)
    from conf import CONF_DIR
    from pipeline.runner import run

    root = Path(root).resolve()
    meta = load_dataset_json(root)
    with dataset_lock(root, "repair"):
        bad = damaged_shards(root, meta)
        for name, shards in bad.items():
            for shard, why in shards[:5]:
                log.warning("%s %s: %s", name, shard.describe(), why)
            if len(shards) > 5:
                log.warning("%s: ... and %d more damaged shards", name, len(shards) - 5)
            for shard, _ in shards:
                stats_path(root, name, shard.name).unlink(missing_ok=True)   # now counted as not minted
    # run() takes the lock again itself: a lock is per open file, even within one process
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=[f"output_dir={root}", *overrides])
        cfg = OmegaConf.merge(cfg, OmegaConf.create(meta["config"]))
        for name, stage in load_stages().items():
            # a stage dataset.json does not record was skipped when the dataset was minted
            if name not in meta["config"] and getattr(stage, "OFF", None) and cfg.get(name) is not None:
                for key, value in stage.OFF.items():
                    cfg[name][key] = value
    except Exception as e:  # hydra and omegaconf raise several types for a bad override
        raise ConfigError(f"cannot rebuild the config recorded in {root}/dataset.json with {overrides} "
                          f"({str(e).splitlines()[0]})") from None
    run(cfg)
    count = sum(len(v) for v in bad.values())
    return (f"repair: {count} damaged shard(s) re-minted ({', '.join(f'{k} {len(v)}' for k, v in bad.items())})"
            if count else "repair: every file matched its sha256; pairs and status checked") + f" → {root}"
