"""`biomint validate <dir>` and `biomint regenerate <dir> <sample_id> <out>`."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from omegaconf import OmegaConf

from pipeline.errors import DISK_FULL_ERRNOS, ConfigError, DiskFull, ManifestError, disk_full_sentence
from pipeline.manifest import (FILE_TYPE, PAIRS_SCHEMA, first_line, load_dataset_json, manifest_dir, read_manifest,
                               sha256_file, shard_state, split_stored, tar_member_digests, write_bytes_atomic)
from pipeline.sharding import plan_shards
from pipeline.stages import StageContext, load_stages

MAX_LISTED = 20  # problems listed by name; the count covers all of them


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    unreadable_parts: int = 0      # manifest parts that could not be read: the id set is partial

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        head = "validate: OK" if self.ok else f"validate: FAILED — {len(self.problems)} problem(s)"
        listed = [f"  - {p}" for p in self.problems[:MAX_LISTED]]
        if len(self.problems) > MAX_LISTED:
            listed.append(f"  ... and {len(self.problems) - MAX_LISTED} more")
        return "\n".join([head, *[f"  {line}" for line in self.lines], *listed])


def stage_config_from(meta: dict, stage):
    """The typed stage config recorded in dataset.json (bound to the configs it builds on)."""
    try:
        recorded = meta["config"].get(stage.NAME)
        config = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(stage.Config), recorded))
    except Exception as e:  # omegaconf raises several types; a hand-edited file a KeyError
        raise ManifestError(f"dataset.json records a {stage.NAME} config this biomint cannot read "
                            f"({str(e).splitlines()[0]}); re-mint the dataset or use the biomint "
                            "version that minted it") from None
    if hasattr(stage, "bind"):
        stages = load_stages()
        others = {name: stage_config_from(meta, stages[name]) for name in getattr(stage, "PAIR_SOURCES", ())
                  if name in stages and meta["config"].get(name) is not None}
        config = stage.bind(config, others)
    return config


def validate_dataset(root: Path, workers: int = 8) -> Report:
    """Counts vs config, duplicate ids, every file (images, truth, shard files) exists with its
    sha256, parts and stats readable, pairs name real samples. Whatever is corrupt is reported
    by path, as a problem: nothing in the dataset makes this raise (dataset.json aside, whose
    ManifestError is one sentence)."""
    root = Path(root)
    meta = load_dataset_json(root)
    if not isinstance(meta.get("config"), dict):
        raise ManifestError(f"{root / 'dataset.json'} records no config, so nothing can be checked against it; "
                            "rerun the command that minted the dataset with overwrite=true")
    report = Report()
    if meta.get("status") != "complete":
        report.problems.append(f"dataset status is {meta.get('status')!r}, not 'complete': rerun the "
                               "command that minted it to finish")
    stages = load_stages()
    all_ids: set[str] = set()
    for name in meta.get("stages", {}):
        if name not in stages:
            report.problems.append(f"stage {name!r} of dataset.json is not installed; cannot check it")
            continue
        all_ids |= _check_stage(root, meta, stages[name], report, workers)
    _check_pairs(root, meta, all_ids, report)
    if meta.get("protocol"):
        from pipeline.protocol import check_protocol

        problems, lines = check_protocol(root, meta["protocol"], all_ids)
        report.problems.extend(problems)
        report.lines.extend(lines)
    return report


def _read_parts(root: Path, stage_name: str, report: Report) -> pa.Table:
    """The stage's manifest rows, part by part: an unreadable part is a problem, not an error."""
    import pyarrow.parquet as pq

    tables = []
    for part in sorted(manifest_dir(root, stage_name).glob("part-*.parquet")):
        try:
            table = pq.read_table(part)
        except (OSError, ValueError, pa.ArrowException) as e:
            report.problems.append(f"{stage_name}: manifest part {part.relative_to(root)} cannot be read "
                                   f"({first_line(e)})")
            report.unreadable_parts += 1
            continue
        if "files" not in table.column_names:   # written before schema 3: image and truth_path only
            table = table.append_column("files", pa.array([None] * table.num_rows, pa.list_(FILE_TYPE)))
        tables.append(table.select(["sample_id", "subject_id", "path", "sha256", "truth_path", "files"]))
    return pa.concat_tables(tables) if tables else pa.table({})


def _check_stage(root: Path, meta: dict, stage, report: Report, workers: int) -> set[str]:
    config = stage_config_from(meta, stage)
    shard_size = int(meta["config"]["dataset"]["shard_size"])
    dropped = 0
    shard_files: list[tuple[str, str, str]] = []
    for shard in plan_shards(stage.subject_count(config), shard_size):
        stats, why = shard_state(root, stage.NAME, shard.name, stage.expected_rows(config, shard.start, shard.stop),
                                 check_files=False)
        if stats is None:
            report.problems.append(f"{stage.NAME} {shard.describe()}: {why}")
        else:
            dropped += len(stats["dropped"])
            shard_files += [(f"{stage.NAME} {shard.describe()}", e["path"], e["sha256"]) for e in stats.get("files", [])]
    table = _read_parts(root, stage.NAME, report)
    expected = stage.expected_rows(config, 0, stage.subject_count(config))
    if table.num_rows + dropped != expected:
        report.problems.append(f"{stage.NAME}: {table.num_rows} rows + {dropped} dropped, but the config asks "
                               f"for {expected}")
    if table.num_rows == 0:
        report.lines.append(f"{stage.NAME}: 0 samples ({dropped} dropped)")
        return set()
    ids = table["sample_id"].to_pylist()
    counts = pc.value_counts(table["sample_id"])
    for item in counts.filter(pc.greater(counts.field("counts"), 1)).to_pylist():
        report.problems.append(f"sample {item['values']}: sample_id appears {item['counts']} times")
    checks = list(shard_files)
    for sid, path, sha, truth, files in zip(ids, *(table[c].to_pylist() for c in ("path", "sha256", "truth_path", "files"))):
        if files:
            checks += [(f"sample {sid}", e["path"], e["sha256"]) for e in files]
            if not any(e["path"] == path and e["sha256"] == sha for e in files):
                report.problems.append(f"sample {sid}: its image {path} is not in its files list")
        else:
            checks.append((f"sample {sid}", path, sha))
            if truth is not None:
                checks.append((f"sample {sid}", truth, None))

    report.problems.extend(_check_files(root, checks, workers))
    report.lines.append(f"{stage.NAME}: {table.num_rows} samples ({dropped} dropped), {len(checks)} files "
                        "and their sha256 checked")
    return set(ids)


def _check_files(root: Path, checks: list[tuple[str, str, str | None]], workers: int) -> list[str]:
    """Problems of (owner, path, sha256 or None) items: missing or changed files. Tar members
    (`<tar>#<member>`, storage=tar) are checked one tar at a time, each read once."""
    plain, by_tar = [], {}
    for item in checks:
        container, member = split_stored(item[1])
        if member is None:
            plain.append(item)
        else:
            by_tar.setdefault(container, []).append((item, member))

    def check(item) -> str | None:
        owner, path, sha = item
        file = root / path
        if not file.is_file():
            return f"{owner}: {path} does not exist"
        if sha is not None and sha256_file(file) != sha:
            return f"{owner}: sha256 of {path} differs from the manifest (file changed or corrupt)"
        return None

    def check_tar(container: str) -> list[str]:
        try:
            digests = tar_member_digests(root / container)
        except OSError as e:
            return [f"{container} cannot be read ({e.strerror or first_line(e)}), so none of its "
                    f"{len(by_tar[container])} members could be checked"]
        problems = []
        for (owner, path, sha), member in by_tar[container]:
            if member not in digests:
                problems.append(f"{owner}: {path} does not exist")
            elif sha is not None and digests[member][0] != sha:
                problems.append(f"{owner}: sha256 of {path} differs from the manifest (member changed or corrupt)")
        return problems

    with ThreadPoolExecutor(max_workers=workers) as pool:
        problems = [p for p in pool.map(check, plain, chunksize=64) if p]
        for found in pool.map(check_tar, sorted(by_tar)):
            problems.extend(found)
    return problems


def _check_pairs(root: Path, meta: dict, ids: set[str], report: Report) -> None:
    import pyarrow.parquet as pq

    for kind, counts in meta.get("pairs", {}).items():
        tables = []
        for part in sorted((root / "pairs" / kind).glob("part-*.parquet")):
            try:
                tables.append(pq.read_table(part))
            except (OSError, ValueError, pa.ArrowException) as e:
                report.problems.append(f"pairs {kind}: part {part.relative_to(root)} cannot be read ({first_line(e)})")
        pairs = pa.concat_tables(tables) if tables else PAIRS_SCHEMA.empty_table()
        mated = int(pc.sum(pairs["mated"]).as_py() or 0) if pairs.num_rows else 0
        if (mated, pairs.num_rows - mated) != (counts["mated"], counts["non_mated"]):
            report.problems.append(f"pairs {kind}: {mated} mated + {pairs.num_rows - mated} non-mated on disk, "
                                   f"dataset.json records {counts['mated']} + {counts['non_mated']}")
        if len(set(pairs["pair_id"].to_pylist())) != pairs.num_rows:
            report.problems.append(f"pairs {kind}: duplicate pair_id")
        known = pa.array(sorted(ids), pa.string())
        unknown = pc.or_(pc.invert(pc.is_in(pairs["a_sample_id"], value_set=known)),
                         pc.invert(pc.is_in(pairs["b_sample_id"], value_set=known)))
        n_unknown = int(pc.sum(unknown).as_py() or 0) if pairs.num_rows else 0
        if n_unknown and report.unreadable_parts:
            report.problems.append(f"pairs {kind}: {n_unknown} pairs name samples of the unreadable manifest "
                                   "parts; not checked further")
            continue
        if n_unknown:
            bad = pairs.filter(unknown).slice(0, MAX_LISTED)
            for pid, a, b in zip(*(bad[c].to_pylist() for c in ("pair_id", "a_sample_id", "b_sample_id"))):
                missing = [sid for sid in (a, b) if sid not in ids]
                report.problems.append(f"pair {pid}: sample {', '.join(missing)} is not in the manifest")
            if n_unknown > MAX_LISTED:
                report.problems.append(f"pairs {kind}: {n_unknown} pairs name samples not in the manifest")
            continue
        report.lines.append(f"pairs {kind}: {mated} mated + {pairs.num_rows - mated} non-mated, all name real samples")


def find_row(root: Path, sample_id: str) -> tuple[object, dict]:
    """(stage module, manifest row) of one sample; ManifestError if no stage has it."""
    meta = load_dataset_json(root)
    stages = load_stages()
    for name in meta.get("stages", {}):
        if name in stages:
            table = read_manifest(root, name, filter=ds.field("sample_id") == sample_id)
            if table.num_rows:
                return stages[name], table.to_pylist()[0]
    raise ManifestError(f"sample_id {sample_id} is not in the manifest of {root}; "
                        "list ids with e.g. duckdb \"select sample_id from 'manifest/*/*.parquet'\"")


def regenerate_sample(root: Path, sample_id: str, out_file: Path, device: str = "cpu") -> tuple[bool, dict, str]:
    """Rebuild one sample's image from its manifest row and dataset.json;
    (bytes match?, row, the generator_version of the code that rebuilt it)."""
    from pipeline.worker import one_thread_per_worker

    # the workers that minted the sample ran torch on one thread; CPU kernels may sum in
    # another order on several, so rebuild it the same way
    one_thread_per_worker()
    root = Path(root)
    out_file = Path(out_file)
    if out_file.is_dir():
        raise ConfigError(f"{out_file} is a directory; give the file to write, e.g. {out_file / (sample_id + '.png')}")
    meta = load_dataset_json(root)
    stage, row = find_row(root, sample_id)
    data = stage.regenerate(row, stage_config_from(meta, stage), StageContext(root=root, seed=int(meta["seed"]),
                                                                              device=device))
    try:
        write_bytes_atomic(out_file, data)
    except OSError as e:
        if e.errno in DISK_FULL_ERRNOS:
            raise DiskFull(disk_full_sentence(out_file, len(data), "the sample")) from None
        why = (f"{out_file.parent} is not a folder" if isinstance(e, (FileExistsError, NotADirectoryError))
               else e.strerror or first_line(e))
        raise ConfigError(f"cannot write {out_file} ({why}); give a path you can write to") from None
    from pipeline.manifest import sha256_bytes

    current = getattr(stage, "current_generator_version", lambda: row["generator_version"])()
    return sha256_bytes(data) == row["sha256"], row, current
