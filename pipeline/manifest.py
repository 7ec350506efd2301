"""The manifest: one pyarrow schema for the common columns (CONVENTIONS §4), atomic writers,
and the readers the rest of biomint uses. Anyone else reads the Parquet files directly.

Layout of one stage's manifest (CONVENTIONS §3):

    manifest/<stage>/part-<shard>.parquet      rows of one shard (written atomically)
    manifest/<stage>/_stats/part-<shard>.json  shard statistics, written LAST: a shard is
                                               finished iff this file exists and agrees
Names starting with "_" or "." are skipped by pyarrow.dataset, pandas, polars and DuckDB
globs, so the stats and temporary files never disturb a reader of the manifest.
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA_VERSION = 2   # 2: impression_type column

# Common columns, in order; `params` is each stage's own struct (inserted by sample_schema).
COMMON_FIELDS: list[pa.Field] = [
    pa.field("sample_id", pa.string(), nullable=False),
    pa.field("subject_id", pa.int64(), nullable=False),
    pa.field("modality", pa.string(), nullable=False),
    pa.field("finger_position", pa.int8()),
    pa.field("impression_type", pa.string()),   # plain, rolled, slap (latent); null for faces
    pa.field("impression", pa.int16(), nullable=False),
    pa.field("path", pa.string(), nullable=False),
    pa.field("width", pa.int32(), nullable=False),
    pa.field("height", pa.int32(), nullable=False),
    pa.field("dpi", pa.int16()),
    pa.field("sha256", pa.string(), nullable=False),
    pa.field("seed", pa.uint64(), nullable=False),
    pa.field("generator", pa.string(), nullable=False),
    pa.field("generator_version", pa.string(), nullable=False),
    # params goes here
    pa.field("truth_path", pa.string()),
]

PAIRS_SCHEMA = pa.schema([
    pa.field("pair_id", pa.string(), nullable=False),
    pa.field("a_sample_id", pa.string(), nullable=False),
    pa.field("b_sample_id", pa.string(), nullable=False),
    pa.field("mated", pa.bool_(), nullable=False),
    pa.field("kind", pa.string(), nullable=False),
])


def sample_schema(params_type: pa.StructType) -> pa.Schema:
    """The manifest schema of a stage: the common columns plus its `params` struct."""
    fields = list(COMMON_FIELDS)
    fields.insert(len(fields) - 1, pa.field("params", params_type))
    return pa.schema(fields, metadata={b"biomint_schema_version": str(SCHEMA_VERSION).encode()})


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _temporary_sibling(path: Path) -> Path:
    # Unique per writer: a worker orphaned by a killed run may still be writing the same file.
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(path)
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_json_atomic(path: Path, obj: Any) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def write_table_atomic(path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(path)
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)


def manifest_dir(root: Path, stage: str) -> Path:
    return Path(root) / "manifest" / stage


def part_path(root: Path, stage: str, shard_name: str) -> Path:
    return manifest_dir(root, stage) / f"{shard_name}.parquet"


def stats_path(root: Path, stage: str, shard_name: str) -> Path:
    return manifest_dir(root, stage) / "_stats" / f"{shard_name}.json"


def rows_to_table(rows: Iterable[dict[str, Any]], params_type: pa.StructType) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=sample_schema(params_type))


def finished_shard_stats(root: Path, stage: str, shard_name: str, expected_rows: int) -> dict | None:
    """The stats of a shard that is finished and whole, else None (it must be redone)."""
    stats_file, part = stats_path(root, stage, shard_name), part_path(root, stage, shard_name)
    if not stats_file.is_file() or not part.is_file():
        return None
    try:
        stats = json.loads(stats_file.read_text())
        rows_on_disk = pq.ParquetFile(part).metadata.num_rows
    except (OSError, ValueError, pa.ArrowException):
        return None
    if stats.get("rows") != rows_on_disk or stats.get("rows", 0) + len(stats.get("dropped", [])) != expected_rows:
        return None
    return stats


def read_manifest(root: Path, stage: str, columns: list[str] | None = None, filter=None) -> pa.Table:
    """All rows of a stage's manifest (only biomint uses this; anyone else reads the Parquet)."""
    import pyarrow.dataset as ds

    directory = manifest_dir(root, stage)
    if not directory.is_dir() or not any(directory.glob("part-*.parquet")):
        return pa.table({})
    return ds.dataset(directory, format="parquet").to_table(columns=columns, filter=filter)


def read_pairs(root: Path, kind: str | None = None) -> pa.Table:
    import pyarrow.dataset as ds

    base = Path(root) / "pairs"
    dirs = [base / kind] if kind else sorted(p for p in base.glob("*") if p.is_dir())
    tables = [ds.dataset(d, format="parquet").to_table() for d in dirs if any(d.glob("part-*.parquet"))]
    return pa.concat_tables(tables) if tables else PAIRS_SCHEMA.empty_table()


def load_dataset_json(root: Path) -> dict:
    """dataset.json of a dataset root; ManifestError (a clear sentence) if missing or corrupt."""
    from pipeline.errors import ManifestError

    path = Path(root) / "dataset.json"
    if not path.is_file():
        raise ManifestError(f"{root} is not a biomint dataset: {path} does not exist; "
                            "mint one with `biomint output_dir=...` or pass the dataset root")
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise ManifestError(f"{path} is not valid JSON ({e}); re-mint the dataset with overwrite=true") from None
