"""`biomint plan <overrides>`: what a run would cost, before it starts.

For each stage that would run: samples, shards, files, bytes on disk, pairs, and the CPU time,
extrapolated from a probe: one finger of subject 0 (the whole subject when it has slaps)
minted in a temporary folder on this machine, exactly as a worker mints it (about a second;
nothing is written to the output_dir). Worker-hours are
CPU-seconds per sample times samples; the wall-clock estimate divides them by the workers the
cluster config would start. Files and bytes count what `files` lists per sample (plus the
shard files), and the Parquet manifest and pairs are a few hundred bytes per row.
"""
from __future__ import annotations

import dataclasses
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.sharding import Shard, plan_shards

MANIFEST_BYTES_PER_ROW = 600    # zstd Parquet of one manifest row with its params (measured: 450-700)
PAIR_BYTES_PER_ROW = 12         # zstd Parquet of one pair row (ids compress well: measured 8-15)
# storage=tar: a 512-byte header and on average 256 bytes of padding per member, and each
# sample's <sample_id>.json (its manifest row: 1.6-1.7 kB measured on fingerprints)
TAR_BYTES_PER_MEMBER = 768
TAR_JSON_BYTES = 1700


@dataclass(frozen=True)
class StagePlan:
    name: str
    subjects: int
    samples: int
    shards: int
    files_per_sample: float
    bytes_per_sample: float
    cpu_seconds_per_sample: float
    pairs: dict[str, int]          # kind -> about this many pairs (mated + non-mated)
    storage: str = "files"         # storage=tar: one tar per shard instead of the samples' files
    shared_files_per_sample: float = 0.0   # files of no one sample (plain files in both storages)

    @property
    def files(self) -> int:
        if self.storage == "tar":                 # the tar and the stats file of each shard
            return int(round(self.samples * self.shared_files_per_sample)) + 2 * self.shards
        return int(round(self.samples * self.files_per_sample)) + self.shards   # + one stats file per shard

    @property
    def bytes(self) -> int:
        return int(self.samples * (self.bytes_per_sample + MANIFEST_BYTES_PER_ROW)
                   + sum(self.pairs.values()) * PAIR_BYTES_PER_ROW)

    @property
    def worker_hours(self) -> float:
        return self.samples * self.cpu_seconds_per_sample / 3600.0


def probe(stage, stage_config, seed: int) -> tuple[float, float, float, list[dict], float]:
    """(files, bytes, CPU seconds) per sample of subject 0, minted in a temporary folder, its
    rows (what the pair estimate counts), and files of no one sample per sample."""
    from pipeline.stages import StageContext, stage_device
    from pipeline.stages.base import assign_files
    from pipeline.worker import one_thread_per_worker, resolve_device

    one_thread_per_worker()
    with tempfile.TemporaryDirectory(prefix="biomint-plan-") as tmp:
        context = StageContext(root=Path(tmp), seed=seed, device=resolve_device(stage_device(stage_config)))
        getattr(stage, "warm_up", lambda: None)()
        start = time.process_time()
        rows = stage.run_shard(Shard(0, 0, 1), stage_config, context)
        cpu = time.process_time() - start
        shared = assign_files(rows, context.written)
    made = max(1, len(rows) + len(context.dropped))
    kept = max(1, len(rows))
    files = sum(len(r["files"]) for r in rows) / kept + len(shared) / made
    size = sum(e["bytes"] for e in context.written) / kept
    return files, size, cpu / made, rows, len(shared) / made


def _one_finger(config):
    """The probe's config: subject 0 with one finger instead of all its positions, where the
    stage's samples are per finger (plain, rolled, latent): per-sample figures are the same and
    the probe takes a tenth of the time. Slaps need a subject's fingers together: kept whole."""
    if hasattr(config, "distractors") and getattr(config, "fingerprint", None) is not None:   # protocol
        return dataclasses.replace(config, distractors=1, fingerprint=_one_finger(config.fingerprint))
    if hasattr(config, "fingerprint") and getattr(config, "fingerprint", None) is not None:   # latents
        return dataclasses.replace(config, fingers=1, fingerprint=_one_finger(config.fingerprint))
    if hasattr(config, "positions") and not getattr(config, "slaps", False):
        return dataclasses.replace(config, positions=[config.positions[0]], fingers=1)
    return config


def pair_estimate(kinds, rows: list[dict], identities: int, pairs_config) -> dict[str, int]:
    """Pairs per kind: mated ones are every same-identity pair (identity = subject, finger
    position), counted on subject 0's rows and scaled to `identities`, capped at
    pairs.max_mated; non-mated ones are pairs.non_mated."""
    per_identity: dict[tuple, dict[str, int]] = {}
    for row in rows:
        key = (row["subject_id"], row.get("finger_position"))
        kind = row.get("impression_type") or "plain"
        per_identity.setdefault(key, {}).setdefault(kind, 0)
        per_identity[key][kind] += 1
    out = {}
    for kind, a_type, b_type in kinds:
        pairs_per_identity = 0.0
        for counts in per_identity.values():
            a, b = counts.get(a_type or "plain", 0), counts.get(b_type or "plain", 0)
            pairs_per_identity += a * (a - 1) / 2 if a_type == b_type else a * b
        mean = pairs_per_identity / max(1, len(per_identity))
        out[kind] = int(min(pairs_config.max_mated, mean * identities)) + pairs_config.non_mated
    return out


def plan_run(config, stages: list[tuple], workers: int) -> list[StagePlan]:
    probes = {stage.NAME: probe(stage, _one_finger(stage_config), config.seed) for stage, stage_config in stages}
    rows = [row for p in probes.values() for row in p[3]]      # kinds may pair one stage's rows with another's
    out = []
    for stage, stage_config in stages:
        subjects = stage.subject_count(stage_config)
        files, size, cpu, own, shared = probes[stage.NAME]
        if config.storage == "tar":
            size += (files - shared) * TAR_BYTES_PER_MEMBER + TAR_JSON_BYTES + TAR_BYTES_PER_MEMBER
        samples = stage.expected_rows(stage_config, 0, subjects)
        per_identity = len(own) / max(1, len({(r["subject_id"], r.get("finger_position")) for r in own}))
        identities = int(round(samples / max(per_identity, 1e-9)))
        kinds = (stage.pair_kinds(stage_config) if hasattr(stage, "pair_kinds") else [(stage.PAIR_KIND, None, None)])
        out.append(StagePlan(stage.NAME, subjects, samples,
                             len(plan_shards(subjects, config.dataset.shard_size)), files, size, cpu,
                             pair_estimate(kinds, rows, identities, config.pairs), config.storage, shared))
    return out


def _human(n: float, unit: str = "B") -> str:
    for prefix in ("", "k", "M", "G", "T", "P"):
        if abs(n) < 1000 or prefix == "P":
            return f"{n:,.1f} {prefix}{unit}" if prefix else f"{n:,.0f} {unit}"
        n /= 1000.0
    return f"{n:.1f} {unit}"


def _duration(hours: float) -> str:
    if hours < 1 / 60:
        return f"{hours * 3600:.0f} s"
    if hours < 1:
        return f"{hours * 60:.0f} min"
    if hours < 48:
        return f"{hours:.1f} h"
    return f"{hours / 24:.1f} days"


def format_plan(root: Path, plans: list[StagePlan], workers: int) -> str:
    lines = [f"plan for {root} ({workers} worker(s); per-sample figures from one finger minted on this machine)"]
    for p in plans:
        pairs = ", ".join(f"{kind} ~{n:,}" for kind, n in p.pairs.items()) or "none"
        lines.append(f"  {p.name}: {p.samples:,} samples of {p.subjects:,} subjects in {p.shards:,} shards; "
                     f"{p.files:,} files, {_human(p.bytes)} on disk; {p.cpu_seconds_per_sample * 1000:.0f} ms CPU "
                     f"per sample → {_duration(p.worker_hours)} worker time, {_duration(p.worker_hours / workers)} "
                     f"wall; pairs {pairs}")
    total_h = sum(p.worker_hours for p in plans)
    lines.append(f"  total: {sum(p.samples for p in plans):,} samples, {sum(p.files for p in plans):,} files, "
                 f"{_human(sum(p.bytes for p in plans))} on disk, {_duration(total_h)} worker time, "
                 f"about {_duration(total_h / workers)} on {workers} worker(s)")
    return "\n".join(lines)


def workers_of(cluster) -> int:
    from pipeline.cluster import available_cores

    if getattr(cluster, "kind", "local") == "slurm":
        return max(1, cluster.workers * cluster.processes)
    return cluster.workers if cluster.workers > 0 else available_cores()


def plan_command(overrides: list[str]) -> str:
    """The plan of `biomint <overrides>` as text (ConfigError for bad overrides)."""
    import pipeline.config  # noqa: F401  (registers the structured configs)
    from pipeline.config import check_config, resolve_output_dir, to_config
    from pipeline.errors import ConfigError
    from pipeline.precheck import compose_checked
    from pipeline.runner import active_stages

    if any(o.startswith("-") for o in overrides):
        raise ConfigError(f"biomint plan takes key=value overrides only, got {[o for o in overrides if o.startswith('-')]}")
    config = to_config(compose_checked(list(overrides)))
    check_config(config)
    stages = active_stages(config)
    if not stages:
        raise ConfigError("no stage would run: enable at least one (e.g. fingerprint.fingers=100)")
    workers = workers_of(config.cluster)
    return format_plan(resolve_output_dir(config.output_dir), plan_run(config, stages, workers), workers)

