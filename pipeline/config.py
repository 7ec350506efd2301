"""Structured configs (dataclasses registered in Hydra's ConfigStore) and their checks.

Group options registered here: fingerprint/default, latent/default, cluster/{local,address,slurm} and the
face group's schema (face/face_schema, extended by conf/face/*.yaml). Presets live in conf/dataset/*.yaml.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from pipeline.errors import ConfigError
from pipeline.stages import face as face_stage
from pipeline.stages import fingerprint as fingerprint_stage
from pipeline.stages import latent as latent_stage
from pipeline.stages import protocol as protocol_stage
from pipeline.storage import check_storage


@dataclass
class DatasetConfig:
    name: str = "default"                 # names the default output_dir and the logs
    shard_size: int = 4                   # subjects per shard: the unit of work, retry and resume


@dataclass
class PairsConfig:
    max_mated: int = 100_000              # all mated pairs, or a deterministic subset of this size
    non_mated: int = 10_000               # non-mated pairs drawn deterministically per stage
    part_rows: int = 1_000_000            # rows per pairs/<kind>/part-*.parquet


@dataclass
class EvaluationHookConfig:
    after_mint: bool = False              # run `biomint evaluate` right after minting
    settings: Dict[str, Any] = field(default_factory=dict)  # evaluation.EvaluationSettings fields


@dataclass
class ExportConfig:
    ansi_nist: bool = False               # one ANSI/NIST-ITL ten-print transaction per subject
    compression: str = "png"              # png (the dataset's bytes) or wsq (lossy)


@dataclass
class ClusterConfig:
    kind: str = "local"
    workers: int = 0                      # 0: one per core (one per GPU when the stage uses CUDA); a
                                          # local run of <= 48 samples then mints in the client process
    retries: int = 2                      # extra attempts for a failing shard


@dataclass
class LocalClusterConfig(ClusterConfig):
    kind: str = "local"
    threads_per_worker: int = 1           # 1: generation is CPU-bound numpy/torch, one per core
    memory_limit: str = "auto"
    dashboard: bool = False


@dataclass
class AddressClusterConfig(ClusterConfig):
    kind: str = "address"
    address: str = MISSING                # e.g. tcp://scheduler-host:8786


@dataclass
class SlurmClusterConfig(ClusterConfig):
    kind: str = "slurm"
    workers: int = 4                      # SLURM jobs to start (each runs `processes` Dask workers)
    queue: Optional[str] = None           # partition
    account: Optional[str] = None
    cores: int = 4                        # cores per job
    processes: int = 4                    # Dask workers per job (= cores: one thread per worker)
    memory: str = "16GB"
    walltime: str = "02:00:00"
    gpus_per_job: int = 0                 # adds --gres=gpu:N
    job_extra_directives: List[str] = field(default_factory=list)
    job_script_prologue: List[str] = field(default_factory=list)  # e.g. module load / source venv
    log_directory: Optional[str] = None
    local_directory: Optional[str] = None


@dataclass
class BiomintConfig:
    output_dir: str = "data/${dataset.name}-seed${seed}"  # the dataset root
    seed: int = 0
    overwrite: bool = False               # replace a dataset minted with another config
    wait: bool = False                    # another run holds output_dir: wait for it (else exit 2)
    storage: str = "files"                # files (one per image and truth file) or tar (a WebDataset tar per shard)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    fingerprint: Any = MISSING
    latent: Any = MISSING                 # latent prints of the fingerprint stage's fingers
    cluster: Any = MISSING
    pairs: PairsConfig = field(default_factory=PairsConfig)
    evaluation: EvaluationHookConfig = field(default_factory=EvaluationHookConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    face: Any = None                      # the face group (null when no face stage is installed)
    protocol: Any = None                  # the 1:N protocol group (conf/protocol: none, open_set, closed_set)


CLUSTER_CONFIGS: dict[str, type] = {"local": LocalClusterConfig, "address": AddressClusterConfig,
                                    "slurm": SlurmClusterConfig}


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="biomint_schema", node=BiomintConfig)
    cs.store(group="fingerprint", name="default", node=fingerprint_stage.Config)
    cs.store(group="latent", name="default", node=latent_stage.Config)
    # The face group's YAML options extend this schema, so a mistyped face key or value fails
    # when the command line is checked, before any cluster starts.
    cs.store(group="face", name="face_schema", node=face_stage.Config)
    cs.store(group="protocol", name="protocol_schema", node=protocol_stage.Config)
    for name, node in CLUSTER_CONFIGS.items():
        cs.store(group="cluster", name=name, node=node)


register_configs()

# Keys that only say how/where to run, not what is minted: they may change on resume.
RUNTIME_KEYS = ("output_dir", "overwrite", "wait", "cluster", "evaluation", "export")


def to_config(cfg: DictConfig) -> BiomintConfig:
    """The typed config tree (dataclass instances all the way down)."""
    try:
        return OmegaConf.to_object(cfg)
    except Exception as e:  # omegaconf raises several types for missing/invalid values
        raise ConfigError(f"the config is not complete or not valid: {str(e).splitlines()[0]}") from None


def generation_config(cfg: DictConfig, skipped_stages: tuple[str, ...] = ()) -> dict:
    """The resolved config minus runtime keys and the configs of skipped stages (they mint
    nothing): what dataset.json records and resume compares."""
    container = OmegaConf.to_container(cfg, resolve=True)
    drop = set(RUNTIME_KEYS) | set(skipped_stages) | {"hydra"}
    return {k: v for k, v in container.items() if k not in drop}


def check_config(config: BiomintConfig) -> None:
    """Range checks the dataclass types cannot express; raises ConfigError (one sentence)."""
    if config.seed < 0 or config.seed >= 2**63:
        raise ConfigError(f"seed={config.seed} is not allowed: it must be an integer in [0, 2**63)")
    if config.dataset.shard_size < 1:
        raise ConfigError(f"dataset.shard_size={config.dataset.shard_size} is not allowed: it must be >= 1")
    for key in ("max_mated", "non_mated"):
        if getattr(config.pairs, key) < 0:
            raise ConfigError(f"pairs.{key}={getattr(config.pairs, key)} is not allowed: it must be >= 0")
    check_storage(config.storage)
    if config.export.compression not in ("png", "wsq"):
        raise ConfigError(f"export.compression={config.export.compression} is not allowed: png or wsq")
    if config.pairs.part_rows < 1:
        raise ConfigError(f"pairs.part_rows={config.pairs.part_rows} is not allowed: it must be >= 1")
    cluster = config.cluster
    if cluster.kind not in CLUSTER_CONFIGS:
        raise ConfigError(f"cluster.kind={cluster.kind} is not allowed: one of {', '.join(CLUSTER_CONFIGS)}")
    if cluster.workers < 0:
        raise ConfigError(f"cluster.workers={cluster.workers} is not allowed: 0 (one per core) or more")
    if cluster.retries < 0:
        raise ConfigError(f"cluster.retries={cluster.retries} is not allowed: it must be >= 0")


def resolve_output_dir(output_dir: str) -> Path:
    """Absolute dataset root; relative paths are relative to where biomint was started."""
    path = Path(os.path.expanduser(output_dir))
    if path.is_absolute():
        return path
    try:
        from hydra.core.hydra_config import HydraConfig

        base = Path(HydraConfig.get().runtime.cwd)
    except ValueError:  # not inside a Hydra run (tests call run(cfg) directly)
        base = Path.cwd()
    return base / path


def check_writable(root: Path) -> None:
    """ConfigError unless `root` can be created and written to."""
    probe = root / f".biomint-write-test-{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"output_dir={root} is not writable ({e.strerror or e}); "
                          "choose a directory you can write to") from None
