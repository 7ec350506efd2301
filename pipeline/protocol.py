"""1:N protocol files: protocol/gallery.parquet and protocol/probes.parquet.

Built after every stage has finished (and after the pairs) from the manifests, so they name
only samples that exist; a 1:N harness loads them directly (pyarrow, pandas, polars, DuckDB):

    protocol/gallery.parquet   one row per gallery entry (one finger):
        gallery_id       g-<subject:08d>-<position:02d>   (one entry per finger)
        sample_id, path  the enrolled print (the manifest's row and image)
        finger_id        fp-<subject:08d>-<position:02d>  (the finger: sample ids start with it)
        subject_id, finger_position, impression_type
        distractor       true for the protocol stage's distractor fingers (no probe searches them)
        stage            manifest/<stage>/ that holds the sample
    protocol/probes.parquet    one row per search:
        probe_id         p-<rest of the sample_id>        (p-00000042-07-03, p-00000042-07-l00)
        sample_id, path, finger_id, subject_id, finger_position, impression_type, stage
        mated            whether the probe's finger is in the gallery
        mate_gallery_id  its gallery_id, null for a non-mated probe

Gallery: per finger of the fingerprint stage its rolled r00 (protocol.gallery=auto with rolled
prints; plain 00 without), plus every distractor finger (pipeline/stages/protocol.py). Probes:
every other plain and rolled impression and every latent (protocol.probe_types) of the
fingerprint stage's fingers. With `non_mated_share` > 0 (protocol=open_set) a deterministic
set of M = round(share * fingers) fingers is held out of the gallery: all their impressions
(the r00 too) and latents are non-mated probes. The held-out fingers are the M with the smallest keyed
hash of their finger index f (the fingerprint stage's numbering: subject f // P, position
positions[f % P]); the hash is a bijection on uint64 (splitmix64's finaliser of f + key, key
from SeedSequence(seed, spawn_key=(STAGE_IDS["protocol"], 0))), so M is exact, and any one row
is decided without the others. Slaps are neither gallery nor probes (one slap, several fingers).

Memory: the manifest parts are read one at a time (in part order, each sorted by subject,
position, impression type, impression) and written through a ParquetWriter in row groups of
ROW_GROUP rows; ids are built by pyarrow compute, never as Python lists. Only the held-out
selection needs an array over all fingers (8 bytes a finger, when non_mated_share > 0). Both
files are written to temporary names and renamed (pipeline.manifest.atomic_path); their
sha256 and row counts go into dataset.json's "protocol".
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.manifest import atomic_path, first_line, manifest_dir, sha256_file
from pipeline.seeding import STAGE_IDS

log = logging.getLogger("biomint")

PROTOCOL_DIR = "protocol"
ROW_GROUP = 1 << 18
READ_COLUMNS = ["sample_id", "subject_id", "finger_position", "impression_type", "impression", "path"]
# what a gallery entry and a probe both say about their print (between their id and their role)
_PRINT_FIELDS = [
    pa.field("sample_id", pa.string(), nullable=False),
    pa.field("path", pa.string(), nullable=False),
    pa.field("finger_id", pa.string(), nullable=False),
    pa.field("subject_id", pa.int64(), nullable=False),
    pa.field("finger_position", pa.int8()),
    pa.field("impression_type", pa.string()),
]
GALLERY_SCHEMA = pa.schema([
    pa.field("gallery_id", pa.string(), nullable=False), *_PRINT_FIELDS,
    pa.field("distractor", pa.bool_(), nullable=False),
    pa.field("stage", pa.string(), nullable=False),
])
PROBES_SCHEMA = pa.schema([
    pa.field("probe_id", pa.string(), nullable=False), *_PRINT_FIELDS,
    pa.field("mated", pa.bool_(), nullable=False),
    pa.field("mate_gallery_id", pa.string()),
    pa.field("stage", pa.string(), nullable=False),
])
FILES = {"gallery": GALLERY_SCHEMA, "probes": PROBES_SCHEMA}


def protocol_path(root: Path, name: str) -> Path:
    return Path(root) / PROTOCOL_DIR / f"{name}.parquet"


def finger_hash(index: np.ndarray, key: int) -> np.ndarray:
    """uint64 [N] splitmix64 finaliser of index + key: a bijection, so distinct fingers never tie."""
    z = np.asarray(index).astype(np.uint64) + np.uint64(key)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def held_out_key(dataset_seed: int) -> int:
    ss = np.random.SeedSequence(entropy=int(dataset_seed), spawn_key=(STAGE_IDS["protocol"], 0))
    return int(ss.generate_state(1, np.uint64)[0])


def held_out_threshold(fingers: int, share: float, key: int) -> tuple[int, np.uint64 | None]:
    """(M, the largest hash of a held-out finger) or (0, None): finger f is held out iff
    f < fingers and finger_hash(f) <= that value."""
    count = int(round(float(share) * fingers))
    if count == 0:
        return 0, None
    hashes = finger_hash(np.arange(fingers, dtype=np.uint64), key)
    return count, np.partition(hashes, count - 1)[count - 1]


class _BufferedWriter:
    """A ParquetWriter that writes row groups of ROW_GROUP rows whatever the parts' sizes."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.schema, self.buffer, self.buffered, self.rows = schema, [], 0, 0
        self.writer = pq.ParquetWriter(path, schema, compression="zstd")

    def add(self, table: pa.Table) -> None:
        if table.num_rows:
            self.buffer.append(table.cast(self.schema))
            self.buffered += table.num_rows
            self.rows += table.num_rows
            if self.buffered >= ROW_GROUP:
                self.flush()

    def flush(self) -> None:
        if self.buffer:
            self.writer.write_table(pa.concat_tables(self.buffer), row_group_size=ROW_GROUP)
            self.buffer, self.buffered = [], 0

    def close(self) -> None:
        self.flush()
        self.writer.close()


def _sorted_parts(root: Path, stage_name: str):
    """The stage's manifest parts one at a time, each sorted by subject, position, type, impression."""
    for part in sorted(manifest_dir(root, stage_name).glob("part-*.parquet")):
        table = pq.read_table(part, columns=READ_COLUMNS)
        order = pc.sort_indices(table, sort_keys=[("subject_id", "ascending"), ("finger_position", "ascending"),
                                                  ("impression_type", "ascending"), ("impression", "ascending")])
        yield table.take(order)


def _prefixed(prefix: str, ids: pa.ChunkedArray, start: int, stop: int | None = None) -> pa.Array:
    """prefix + ids[start:stop] per row, in pyarrow (e.g. "g" + "-00000042-07")."""
    cut = pc.utf8_slice_codeunits(ids, start, stop) if stop is not None else pc.utf8_slice_codeunits(ids, start)
    return pc.binary_join_element_wise(pa.scalar(prefix), cut, "")


def _finger_index(table: pa.Table, positions: list[int]) -> np.ndarray:
    """The fingerprint stage's finger number f = subject * P + (index of the position)."""
    lookup = np.full(16, -1, dtype=np.int64)
    lookup[np.asarray(positions, dtype=np.int64)] = np.arange(len(positions))
    position = table["finger_position"].fill_null(0).to_numpy().astype(np.int64)
    return table["subject_id"].to_numpy().astype(np.int64) * len(positions) + lookup[position]


def _counts(tally: dict, types: pa.ChunkedArray) -> None:
    for item in pc.value_counts(types).to_pylist():
        tally[item["values"]] = tally.get(item["values"], 0) + int(item["counts"])


def write_protocol(root: Path, config, dataset_seed: int) -> dict:
    """Write protocol/gallery.parquet and protocol/probes.parquet; returns what dataset.json records."""
    from pipeline.stages.protocol import gallery_type

    root = Path(root)
    fingerprint = config.fingerprint
    positions = [int(p) for p in fingerprint.positions]
    gtype = gallery_type(config)
    probe_types = pa.array(sorted(set(config.probe_types)), pa.string())
    key = held_out_key(dataset_seed)
    held_count, threshold = held_out_threshold(fingerprint.fingers, config.non_mated_share, key)
    counts = {"gallery": {"enrolled": 0, "distractors": 0}, "probes": {"mated": {}, "non_mated": {}}}
    directory = root / PROTOCOL_DIR
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(protocol_path(root, "gallery")) as gallery_tmp, \
            atomic_path(protocol_path(root, "probes")) as probes_tmp:
        gallery = _BufferedWriter(gallery_tmp, GALLERY_SCHEMA)
        probes = _BufferedWriter(probes_tmp, PROBES_SCHEMA)
        try:
            sources = [("fingerprint", False)] + [("latent", False)] * ("latent" in config.probe_types) \
                + [("protocol", True)]
            for stage_name, distractor in sources:
                for table in _sorted_parts(root, stage_name):
                    ids = table["sample_id"]
                    finger_id = pc.utf8_slice_codeunits(ids, 0, 14)
                    gallery_id = _prefixed("g", ids, 2, 14)
                    n = table.num_rows
                    if distractor:
                        entry = np.ones(n, bool)
                        held = np.zeros(n, bool)
                    else:
                        entry = (pc.and_(pc.equal(table["impression_type"], gtype),
                                         pc.equal(table["impression"], 0)).to_numpy(zero_copy_only=False))
                        held = (finger_hash(_finger_index(table, positions), key) <= threshold) \
                            if threshold is not None else np.zeros(n, bool)
                    enrolled_np = entry & ~held
                    enrolled = pa.array(enrolled_np)
                    if pc.any(enrolled).as_py():
                        rows = table.filter(enrolled)
                        gallery.add(pa.table({
                            "gallery_id": gallery_id.filter(enrolled), "sample_id": rows["sample_id"],
                            "path": rows["path"], "finger_id": finger_id.filter(enrolled),
                            "subject_id": rows["subject_id"], "finger_position": rows["finger_position"],
                            "impression_type": rows["impression_type"],
                            "distractor": pa.array(np.full(rows.num_rows, distractor)),
                            "stage": pa.repeat(pa.scalar(stage_name), rows.num_rows)}))
                        counts["gallery"]["distractors" if distractor else "enrolled"] += rows.num_rows
                    if distractor:
                        continue
                    # every print that is not enrolled: a held-out finger's r00 is a non-mated probe too
                    probe = pa.array(pc.is_in(table["impression_type"], value_set=probe_types).to_numpy(
                        zero_copy_only=False) & ~enrolled_np)
                    if not pc.any(probe).as_py():
                        continue
                    rows = table.filter(probe)
                    mated = ~held[probe.to_numpy(zero_copy_only=False)]
                    mate = pc.if_else(pa.array(mated), gallery_id.filter(probe), pa.scalar(None, pa.string()))
                    probes.add(pa.table({
                        "probe_id": _prefixed("p", rows["sample_id"], 2), "sample_id": rows["sample_id"],
                        "path": rows["path"], "finger_id": finger_id.filter(probe), "subject_id": rows["subject_id"],
                        "finger_position": rows["finger_position"], "impression_type": rows["impression_type"],
                        "mated": pa.array(mated), "mate_gallery_id": mate,
                        "stage": pa.repeat(pa.scalar(stage_name), rows.num_rows)}))
                    _counts(counts["probes"]["mated"], rows["impression_type"].filter(pa.array(mated)))
                    _counts(counts["probes"]["non_mated"], rows["impression_type"].filter(pa.array(~mated)))
        finally:
            gallery.close()
            probes.close()
    files = {name: {"path": f"{PROTOCOL_DIR}/{name}.parquet", "rows": writer.rows,
                    "sha256": sha256_file(protocol_path(root, name))}
             for name, writer in (("gallery", gallery), ("probes", probes))}
    n_mated, n_non = (sum(counts["probes"][k].values()) for k in ("mated", "non_mated"))
    log.info("protocol: gallery of %d fingers (%d enrolled + %d distractors, %s prints), %d probes "
             "(%d mated, %d non-mated) → %s", files["gallery"]["rows"], counts["gallery"]["enrolled"],
             counts["gallery"]["distractors"], gtype, files["probes"]["rows"], n_mated, n_non, directory)
    return {"kind": config.kind, "gallery_type": gtype, "held_out_fingers": held_count, "files": files, **counts}


def protocol_state(root: Path, recorded: dict) -> str | None:
    """Why the protocol files are not the ones dataset.json records (the cheap check: both
    readable with the recorded row counts), or None."""
    for name, entry in (recorded.get("files") or {}).items():
        path = Path(root) / entry["path"]
        if not path.is_file():
            return f"{entry['path']} is missing"
        try:
            rows = pq.ParquetFile(path).metadata.num_rows
        except (OSError, ValueError, pa.ArrowException) as e:
            return f"{entry['path']} cannot be read ({first_line(e)})"
        if rows != entry.get("rows"):
            return f"{entry['path']} holds {rows} rows, dataset.json records {entry.get('rows')}"
    return None


def check_protocol(root: Path, recorded: dict, ids: set[str]) -> tuple[list[str], list[str]]:
    """(problems, lines) for `biomint validate`: both files exist with their sha256, ids are
    unique, every gallery and probe sample is in the manifest, every mated probe's mate is its
    own finger's gallery entry, no probe searches a distractor, non-mated probes' fingers are
    not in the gallery."""
    problems: list[str] = []
    tables = {}
    for name in FILES:
        entry = (recorded.get("files") or {}).get(name)
        if entry is None:
            problems.append(f"protocol: dataset.json records no {name} file")
            continue
        path = Path(root) / entry["path"]
        if not path.is_file():
            problems.append(f"protocol: {entry['path']} does not exist")
            continue
        if sha256_file(path) != entry.get("sha256"):
            problems.append(f"protocol: sha256 of {entry['path']} differs from dataset.json (file changed or corrupt)")
        try:
            tables[name] = pq.read_table(path)
        except (OSError, ValueError, pa.ArrowException) as e:
            problems.append(f"protocol: {entry['path']} cannot be read ({first_line(e)})")
    if len(tables) < len(FILES):
        return problems, []
    gallery, probes = tables["gallery"], tables["probes"]
    known = pa.array(sorted(ids), pa.string())
    for name, table, id_column in (("gallery", gallery, "gallery_id"), ("probes", probes, "probe_id")):
        if pc.count_distinct(table[id_column]).as_py() != table.num_rows:
            problems.append(f"protocol {name}: duplicate {id_column}")
        missing = table.filter(pc.invert(pc.is_in(table["sample_id"], value_set=known)))
        for sid in missing["sample_id"].slice(0, 5).to_pylist():
            problems.append(f"protocol {name}: sample {sid} is not in the manifest")
        if missing.num_rows > 5:
            problems.append(f"protocol {name}: {missing.num_rows} samples are not in the manifest")
    mated = probes.filter(probes["mated"])
    expected = _prefixed("g", mated["finger_id"], 2)
    wrong = int(pc.sum(pc.invert(pc.fill_null(pc.equal(mated["mate_gallery_id"], expected), False))).as_py() or 0)
    if wrong:
        problems.append(f"protocol probes: {wrong} mated probes do not name their finger's gallery entry")
    absent = int(pc.sum(pc.invert(pc.is_in(mated["mate_gallery_id"], value_set=gallery["gallery_id"]))).as_py() or 0)
    if absent:
        problems.append(f"protocol probes: {absent} mated probes name a gallery_id the gallery does not hold")
    distractors = gallery.filter(gallery["distractor"])["finger_id"]
    searched = int(pc.sum(pc.is_in(probes["finger_id"], value_set=distractors)).as_py() or 0)
    if searched:
        problems.append(f"protocol probes: {searched} probes are of distractor fingers")
    non_mated = probes.filter(pc.invert(probes["mated"]))
    enrolled = int(pc.sum(pc.is_in(non_mated["finger_id"], value_set=gallery["finger_id"])).as_py() or 0)
    if enrolled or non_mated["mate_gallery_id"].null_count != non_mated.num_rows:
        problems.append(f"protocol probes: {enrolled} non-mated probes are of gallery fingers or name a mate")
    line = (f"protocol: gallery {gallery.num_rows} ({len(distractors)} distractors), probes {probes.num_rows} "
            f"({mated.num_rows} mated), all name real samples")
    return problems, [] if problems else [line]
