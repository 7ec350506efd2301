"""Where a shard's files go: `storage=files` (one file per image and truth file, the layout of
CONVENTIONS §3) or `storage=tar` (one WebDataset-compatible tar per shard).

A stage writes every file through `StageContext.write(relative_path, data)`; the context hands
the bytes to the shard's storage, picked by name from `STORAGES`:

- `FilesStorage` writes each file at its path at once (temp file + rename).
- `TarStorage` appends the bytes to a spool file and, when the stage has made its rows
  (`finish`), writes `shards/<stage>/<shard>.tar`: per sample, sorted by sample id, its
  members `<sample_id>.<ext>` sorted by extension (the image `.png`, truth `.ist`, `.xyt`,
  `.orientation.npy`, ...) and `<sample_id>.json` (the sample's manifest row without
  `files`), with fixed headers (mtime 0, uid/gid 0, no user/group names, mode 0644), so the
  same seed gives the same bytes whatever the worker count. The tar is written to a
  temporary name and renamed when whole. The rows' `path`, `truth_path`, `files` (and params
  that name a file) then name members as `<tar>#<member>`. Files that belong to no sample
  (a face identity's latents, the face gate's counts) stay plain files; the stats list them
  and the tar itself.

A WebDataset key is the member's name up to its first dot, so sample ids never hold a dot.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pyarrow as pa

from pipeline.errors import ConfigError
from pipeline.manifest import (MEMBER_SEPARATOR, _temporary_sibling, atomic_path, is_temporary, rows_to_table,
                               sha256_bytes, write_bytes_atomic)

SHARDS_DIR = "shards"
TAR_MTIME = 0              # every header's mtime: the bytes must not depend on when a shard ran
TAR_MODE = 0o644
METADATA_EXTENSION = "json"   # <sample_id>.json: the sample's manifest row (WebDataset's metadata slot)


def tar_path(stage_name: str, shard_name: str) -> str:
    """The tar of a shard, relative to the dataset root: shards/<stage>/<shard>.tar."""
    return f"{SHARDS_DIR}/{stage_name}/{shard_name}.tar"


class FilesStorage:
    """storage=files: every file at its own path, written at once."""

    def __init__(self, root: Path, stage_name: str = "", shard_name: str = "") -> None:
        self.root = Path(root)

    def write(self, relative_path: str, data: bytes) -> None:
        write_bytes_atomic(self.root / relative_path, data)

    def location(self, relative_path: str) -> str:
        return relative_path

    def finish(self, rows: list[dict], shared: list[dict], params_type: pa.StructType) -> list[dict]:
        """The files the shard's stats list (those of no one sample)."""
        return shared

    def discard(self) -> None:
        pass

    def remove_leftovers(self) -> None:
        pass


class TarStorage:
    """storage=tar: the samples' files spooled, then one tar per shard (see the module doc)."""

    def __init__(self, root: Path, stage_name: str, shard_name: str) -> None:
        self.root = Path(root)
        self.tar = tar_path(stage_name, shard_name)
        self._spool_file = None
        self._spooled: dict[str, tuple[int, int]] = {}    # relative path -> (offset, size) in the spool

    def _spool(self):
        if self._spool_file is None:
            target = self.root / self.tar
            target.parent.mkdir(parents=True, exist_ok=True)
            self._spool_path = _temporary_sibling(target.with_name(target.name + ".spool"))
            self._spool_file = open(self._spool_path, "w+b")
        return self._spool_file

    def write(self, relative_path: str, data: bytes) -> None:
        spool = self._spool()
        spool.seek(0, os.SEEK_END)
        self._spooled[relative_path] = (spool.tell(), len(data))
        spool.write(data)

    def _read(self, relative_path: str) -> bytes:
        offset, size = self._spooled[relative_path]
        self._spool_file.seek(offset)
        return self._spool_file.read(size)

    @staticmethod
    def member_name(relative_path: str) -> str:
        """A file's member: its basename. A stage's own `<sample_id>.json` (faces' truth) becomes
        `<sample_id>.truth.json`, since `.json` holds the manifest row."""
        name = relative_path.rsplit("/", 1)[-1]
        key, _, extension = name.partition(".")
        return f"{key}.truth.json" if extension == METADATA_EXTENSION else name

    def location(self, relative_path: str) -> str:
        """Where a sample's file will be found: `<tar>#<member>`."""
        return f"{self.tar}{MEMBER_SEPARATOR}{self.member_name(relative_path)}"

    def finish(self, rows: list[dict], shared: list[dict], params_type: pa.StructType) -> list[dict]:
        """Write the tar (and the plain files of no one sample); point the rows at their members;
        returns the files the shard's stats list: those plain files and the tar."""
        for entry in shared:                  # e.g. a face identity's latents: not a sample's
            write_bytes_atomic(self.root / entry["path"], self._read(entry["path"]))
        members: list[tuple[str, str, bytes | None]] = []   # (sample id, member, bytes or None: spooled)
        sources: dict[str, str] = {}
        for row in rows:
            moved = {entry["path"]: self.location(entry["path"]) for entry in row["files"]}
            for entry in row["files"]:
                sources[moved[entry["path"]]] = entry["path"]
                entry["path"] = moved[entry["path"]]
            row["path"] = moved.get(row["path"], row["path"])
            if row.get("truth_path") is not None:
                row["truth_path"] = moved.get(row["truth_path"], row["truth_path"])
            if isinstance(row.get("params"), dict):
                row["params"] = {k: moved.get(v, v) if isinstance(v, str) else v for k, v in row["params"].items()}
        # the .json members: each row as the manifest will hold it (pyarrow's types), without files
        table = rows_to_table([{**row, "files": None} for row in rows], params_type).drop_columns(["files"])
        for row, described in zip(rows, table.to_pylist()):
            data = (json.dumps(described, sort_keys=True, default=str) + "\n").encode()
            name = f"{row['sample_id']}.{METADATA_EXTENSION}"
            row["files"].append({"path": f"{self.tar}{MEMBER_SEPARATOR}{name}", "sha256": sha256_bytes(data),
                                 "bytes": len(data)})
            members.append((row["sample_id"], name, data))
            members += [(row["sample_id"], entry["path"].split(MEMBER_SEPARATOR, 1)[1], None)
                        for entry in row["files"][:-1]]
        members.sort(key=lambda m: (m[0], m[1].partition(".")[2]))
        names = [m[1] for m in members]
        if len(set(names)) != len(names):
            raise RuntimeError(f"{self.tar}: two files of the shard have the same member name")
        target = self.root / self.tar
        with atomic_path(target) as tmp:     # renamed only when whole: a killed run leaves no half tar
            with open(tmp, "wb") as raw:
                hashed = _HashingWriter(raw)     # the tar's sha256 as it is written, not read back
                with tarfile.open(fileobj=hashed, mode="w", format=tarfile.PAX_FORMAT) as tar:
                    for _, name, data in members:
                        if data is None:
                            data = self._read(sources[f"{self.tar}{MEMBER_SEPARATOR}{name}"])
                        tar.addfile(_header(name, len(data)), io.BytesIO(data))
        self.discard()
        return [*shared, {"path": self.tar, "sha256": hashed.digest.hexdigest(), "bytes": hashed.size}]

    def discard(self) -> None:
        """Remove the spool (after the tar is written, or when the shard failed)."""
        if self._spool_file is not None:
            self._spool_file.close()
            self._spool_file = None
            self._spool_path.unlink(missing_ok=True)

    def remove_leftovers(self) -> None:
        """The temporary tar and spool a killed run left for this shard (never those of the
        other shards, which other workers may be writing now)."""
        folder = (self.root / self.tar).parent
        prefix = "." + (self.root / self.tar).name + "."
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return
        for entry in entries:
            if entry.name.startswith(prefix) and is_temporary(entry.name):
                Path(entry.path).unlink(missing_ok=True)


class _HashingWriter:
    """A write-only file that passes bytes on and keeps their sha256 and count (tarfile writes
    sequentially and only asks for tell())."""

    def __init__(self, raw) -> None:
        self.raw, self.digest, self.size = raw, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.raw.write(data)

    def tell(self) -> int:
        return self.size


def _header(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, TAR_MTIME, TAR_MODE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


STORAGES: dict[str, type] = {"files": FilesStorage, "tar": TarStorage}


def check_storage(name: str) -> None:
    if name not in STORAGES:
        raise ConfigError(f"storage={name} is not allowed: one of {', '.join(STORAGES)} "
                          "(files: one file per image and truth file; tar: one WebDataset tar per shard)")


def open_storage(name: str, root: Path, stage_name: str, shard_name: str):
    """The storage a shard writes through (STORAGES[name])."""
    check_storage(name)
    return STORAGES[name](root, stage_name, shard_name)
