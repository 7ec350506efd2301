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

import contextlib
import errno
import functools
import hashlib
import itertools
import json
import os
import tarfile
import uuid
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA_VERSION = 3   # 2: impression_type column; 3: files (every file of a sample, with sha256 and size)

# One file of a sample: the image first, then its ground truth (path relative to the root).
FILE_TYPE = pa.struct([("path", pa.string()), ("sha256", pa.string()), ("bytes", pa.int64())])

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
    pa.field("files", pa.list_(FILE_TYPE)),      # every file of the sample: image, then truth
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
    fields.insert([f.name for f in fields].index("truth_path"), pa.field("params", params_type))
    return pa.schema(fields, metadata={b"biomint_schema_version": str(SCHEMA_VERSION).encode()})


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# storage=tar: a sample's files are members of its shard's tar, and `path` names one as
# "<tar path>#<member>" (e.g. shards/fingerprint/part-00001.tar#fp-00000004-02-00.png).
MEMBER_SEPARATOR = "#"


def split_stored(path: str | Path) -> tuple[str, str | None]:
    """(file, member) of a stored path: ("x/part-00001.tar", "fp-...png") for a tar member,
    (path, None) for a plain file."""
    text = str(path)
    container, sep, member = text.partition(".tar" + MEMBER_SEPARATOR)
    return (container + ".tar", member) if sep else (text, None)


@functools.lru_cache(maxsize=256)
def _tar_index(path: str, inode: int, mtime_ns: int, size: int) -> dict[str, tuple[int, int]]:
    try:
        with tarfile.open(path, mode="r:") as tar:
            return {m.name: (m.offset_data, m.size) for m in tar if m.isfile()}
    except tarfile.TarError as e:
        raise OSError(errno.EIO, f"not a readable tar ({first_line(e)})", path) from None


def tar_index(path: str | Path) -> dict[str, tuple[int, int]]:
    """{member name: (offset of its data, size)} of a tar, read once per version of the file
    (a re-minted tar is another inode), so that reading members costs one seek each."""
    st = os.stat(path)
    return _tar_index(str(path), st.st_ino, st.st_mtime_ns, st.st_size)


def read_stored(path: str | Path) -> bytes:
    """The bytes of a dataset file by its full path: a plain file, or `<tar>#<member>`.
    OSError (FileNotFoundError for a missing file or member) when it cannot be read."""
    container, member = split_stored(path)
    if member is None:
        return Path(container).read_bytes()
    found = tar_index(container).get(member)
    if found is None:
        raise FileNotFoundError(errno.ENOENT, f"no member {member} in {container}", str(path))
    offset, size = found
    with open(container, "rb") as f:
        f.seek(offset)
        data = f.read(size)
    if len(data) != size:
        raise OSError(errno.EIO, f"{container} is cut short in member {member}", str(path))
    return data


def stored_size(path: str | Path) -> int:
    """Size in bytes of a plain file or a tar member; OSError if it does not exist."""
    container, member = split_stored(path)
    if member is None:
        return os.stat(container).st_size
    found = tar_index(container).get(member)
    if found is None:
        raise FileNotFoundError(errno.ENOENT, f"no member {member} in {container}", str(path))
    return found[1]


def tar_member_digests(path: str | Path) -> dict[str, tuple[str, int]]:
    """{member: (sha256, size)} of every file in a tar, read in one pass (validate, repair).
    OSError when the tar cannot be read; a damaged header ends the listing there."""
    digests: dict[str, tuple[str, int]] = {}
    try:
        with tarfile.open(path, mode="r:") as tar:
            for member in tar:
                if member.isfile():
                    h = hashlib.sha256()
                    with tar.extractfile(member) as f:
                        while block := f.read(1 << 20):
                            h.update(block)
                    digests[member.name] = (h.hexdigest(), member.size)
    except tarfile.TarError as e:
        if not digests:
            raise OSError(errno.EIO, f"not a readable tar ({first_line(e)})", str(path)) from None
    return digests


def stored_sha256(root: Path, entries: list[dict]) -> dict[str, str | None]:
    """{path: sha256 of what is on disk, None if missing or unreadable} for file entries
    (`path` relative to the root, plain files or tar members); each tar is read once."""
    found: dict[str, str | None] = {}
    members: dict[str, list[str]] = {}
    for entry in entries:
        container, member = split_stored(entry["path"])
        if member is None:
            try:
                found[entry["path"]] = sha256_file(Path(root) / container)
            except OSError:
                found[entry["path"]] = None
        else:
            members.setdefault(container, []).append(member)
    for container, names in members.items():
        try:
            digests = tar_member_digests(Path(root) / container)
        except OSError:
            digests = {}
        for name in names:
            found[f"{container}{MEMBER_SEPARATOR}{name}"] = digests.get(name, (None, 0))[0]
    return found


_WRITER_TOKEN = uuid.uuid4().hex[:8]     # with the pid and a count: one name per write, per process
_WRITES = itertools.count()


def _temporary_name(path: str) -> str:
    # Unique per writer: a worker orphaned by a killed run may still be writing the same file
    # (the pid tells forked workers apart, the token processes that reuse a pid)
    folder, sep, name = path.rpartition(os.sep)
    return f"{folder}{sep}.{name}.{os.getpid()}.{_WRITER_TOKEN}{next(_WRITES):x}.tmp"


def _temporary_sibling(path: Path) -> Path:
    return Path(_temporary_name(str(path)))


def is_temporary(name: str) -> bool:
    """A temporary sibling left by a writer that died (see _temporary_name)."""
    return name.startswith(".") and name.endswith(".tmp")


def remove_temporaries(directory: Path) -> int:
    """Delete the temporary files a killed run left directly in `directory`; returns how many."""
    removed = 0
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return 0
    for entry in entries:
        if is_temporary(entry.name) and entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.path)
                removed += 1
            except FileNotFoundError:  # its writer finished (or cleaned up) meanwhile
                pass
    return removed


@contextlib.contextmanager
def _temporary(path: str | Path, make_folder: bool = True):
    """A unique temporary sibling of `path` (a str path), removed if the body fails (a full
    disk, a kill by exception), so that nothing half-written stays behind."""
    path = os.fspath(path)
    if make_folder:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = _temporary_name(path)
    try:
        yield tmp
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None:
            e.filename = path    # a full disk often surfaces at write() or close(), which name no file
        raise


@contextlib.contextmanager
def atomic_path(path: Path):
    """Write to the yielded temporary path; it becomes `path` when the body succeeds and is
    removed when it fails (evaluation tables and reports are written through this too)."""
    with _temporary(path) as tmp:
        yield Path(tmp)
        os.replace(tmp, path)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path = os.fspath(path)
    try:
        _write_replacing(path, data)
    except FileNotFoundError:
        # the folder is new: make it only then (a stage writes ~6 files per sample into folders
        # that mostly exist, and mkdir's checks were a fifth of the write)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        _write_replacing(path, data)


def _write_replacing(path: str, data: bytes) -> None:
    """Write a temporary sibling and rename it to `path`; on failure nothing is left behind.
    os-level calls: a stage writes five files per sample, and open()'s buffered file object
    and pathlib's parsing were a third of each small write's time."""
    with _temporary(path, make_folder=False) as tmp:
        # a missing folder raises FileNotFoundError here, before anything exists to clean up
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        try:
            with memoryview(data) as view:
                written = 0
                while written < len(view):     # os.write may write less than asked (signals)
                    written += os.write(fd, view[written:])
        finally:
            os.close(fd)
        os.replace(tmp, path)


def write_json_atomic(path: Path, obj: Any) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def write_table_atomic(path: Path, table: pa.Table) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


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
    return shard_state(root, stage, shard_name, expected_rows, check_files=False)[0]


def shard_state(root: Path, stage: str, shard_name: str, expected_rows: int,
                check_files: bool = True) -> tuple[dict | None, str | None]:
    """(stats, None) for a finished, whole shard, else (None, why it must be redone).

    The cheap check resume runs on every shard: the stats and the part can be read and agree,
    and (check_files) every file the part's rows and the stats list exists with its recorded
    size. `validate` adds the sha256 of every file."""
    stats_file, part = stats_path(root, stage, shard_name), part_path(root, stage, shard_name)
    if not stats_file.is_file():
        return None, "not minted"
    if not part.is_file():
        return None, f"{part.relative_to(root)} is missing"
    try:
        stats = json.loads(stats_file.read_text())
        parquet = pq.ParquetFile(part)
        rows_on_disk = parquet.metadata.num_rows
    except (OSError, ValueError, pa.ArrowException) as e:
        return None, f"{part.relative_to(root)} or its stats cannot be read ({first_line(e)})"
    if not isinstance(stats, dict) or stats.get("rows") != rows_on_disk:
        return None, f"{part.relative_to(root)} holds {rows_on_disk} rows, its stats say {stats.get('rows')}"
    if stats.get("rows", 0) + len(stats.get("dropped", [])) != expected_rows:
        return None, f"{part.relative_to(root)}: rows + dropped differ from the {expected_rows} configured"
    if check_files:
        try:
            files = listed_files(parquet)
        except (OSError, ValueError, pa.ArrowException) as e:
            return None, f"{part.relative_to(root)} cannot be read ({first_line(e)})"
        for entry in files + list(stats.get("files", [])):
            try:
                size = stored_size(Path(root) / entry["path"])
            except OSError:
                return None, f"{entry['path']} is missing"
            if entry.get("bytes") is not None and size != entry["bytes"]:
                return None, f"{entry['path']} has {size} bytes, the manifest records {entry['bytes']}"
    return stats, None


def listed_files(parquet: "pq.ParquetFile") -> list[dict]:
    """Every file a manifest part's rows name: their `files` lists (schema 3), or for parts
    written before that, the image and the truth_path (sizes unknown)."""
    names = parquet.schema_arrow.names
    if "files" in names:
        column = parquet.read(columns=["files"]).column("files")
        return [entry for files in column.to_pylist() if files for entry in files]
    table = parquet.read(columns=[c for c in ("path", "truth_path") if c in names])
    return [{"path": p, "bytes": None} for c in table.column_names for p in table.column(c).to_pylist() if p]


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


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
        meta = json.loads(path.read_text())
    except (ValueError, OSError) as e:
        raise ManifestError(f"{path} cannot be read ({first_line(e)}); rerun the command that minted it with "
                            "overwrite=true to mint it again") from None
    if not isinstance(meta, dict):
        raise ManifestError(f"{path} is not a biomint dataset description (not a JSON object); rerun the "
                            "command that minted it with overwrite=true to mint it again")
    return meta
