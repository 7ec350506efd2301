"""`biomint export-ansi-nist <dir>`: one ANSI/NIST-ITL 1-2011 ten-print transaction per subject.

    <root>/export/ansi_nist/<subject:08d>.an2      (or --out DIR)

A transaction holds, in this order (record layouts: pipeline/ansi_nist.py):
- Type-1, then Type-2 with the user-defined fields of the BIOMINT domain (1.013):
    2.003 subject id    2.004 dataset seed    2.005 dataset name
- one Type-9 (EFS minutiae, the generator's ground truth) per finger of every image with
  truth: one for a rolled or plain print, one per segment of a slap (FGP = that finger, the
  ROI = its segment box, positions relative to it); its IDC is the image's;
- one Type-14 per image: every rolled print (IMP from params.ansi_nist_impression_code), every
  slap (FGP 13/14/15, 14.021 SEG = params.segments), and the first plain impression of each
  finger that has no rolled print. IDCs are 1, 2, ... in that order (fingers by position,
  then slaps); 14.020 COM is the image's sample_id.

With compression "png" 14.999 holds the dataset's PNG file byte for byte (its sha256 is the
manifest's); "wsq" re-encodes it with WSQ (lossy, CGA WSQ20). Dates (1.005, 1.014, 14.005)
come from the dataset, never from the clock, so exporting twice writes identical bytes.
Subjects are streamed one manifest part at a time: memory does not grow with the dataset.
"""
from __future__ import annotations

import datetime as dt
import io
import json
import re
import struct
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow.parquet as pq

from pipeline import ansi_nist
from pipeline.errors import ConfigError, ManifestError
from pipeline.manifest import load_dataset_json, manifest_dir, read_stored, sha256_bytes, write_bytes_atomic

STAGE = "fingerprint"
COLUMNS = ("sample_id", "subject_id", "finger_position", "impression_type", "impression", "path",
           "width", "height", "dpi", "sha256", "generator_version", "params", "truth_path")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# IMP (ANSI/NIST-ITL 1-2011 Table 7) when a row has no params.ansi_nist_impression_code:
# live-scan plain 0, live-scan rolled 1, nonlive-scan (ink) plain 2, rolled 3.
DEFAULT_IMPRESSION_CODE = {("plain", False): 0, ("rolled", False): 1, ("slap", False): 0,
                           ("plain", True): 2, ("rolled", True): 3, ("slap", True): 2}


def _png_as_is(data: bytes) -> bytes:
    return data


def _png_to_wsq(data: bytes) -> bytes:
    import wsq  # noqa: F401  (registers the WSQ plugin with Pillow)
    from PIL import Image

    out = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("L").save(out, "WSQ")
    return out.getvalue()


# --compression name → (14.011 CGA code, PNG bytes → transmitted bytes)
COMPRESSIONS: dict[str, tuple[str, Callable[[bytes], bytes]]] = {
    "png": ("PNG", _png_as_is),
    "wsq": ("WSQ20", _png_to_wsq),
}


def export_ansi_nist(root: Path, out_dir: Path | None = None, compression: str = "png",
                     progress: bool = True, when: dt.datetime | None = None) -> dict:
    """Write one transaction per subject of the dataset at `root`; returns counts and timing.
    `when` overrides the transaction date/time (default: the dataset's, see dataset_time)."""
    from tqdm import tqdm

    if compression not in COMPRESSIONS:
        raise ConfigError(f"unknown compression {compression!r} for ANSI/NIST-ITL export; "
                          f"choose one of {', '.join(COMPRESSIONS)}")
    root = Path(root)
    meta = load_dataset_json(root)
    if meta.get("status") != "complete":
        raise ManifestError(f"dataset {root} has status {meta.get('status')!r}, not 'complete'; "
                            "rerun the command that minted it before exporting")
    parts = sorted(manifest_dir(root, STAGE).glob("part-*.parquet"))
    if not parts:
        raise ManifestError(f"dataset {root} has no fingerprint manifest "
                            f"({manifest_dir(root, STAGE)}/part-*.parquet); nothing to export")
    out = Path(out_dir) if out_dir is not None else root / "export" / "ansi_nist"
    context = {"root": root, "meta": meta, "compression": COMPRESSIONS[compression],
               "time": when or dataset_time(root, meta)}
    transactions = records = size = 0
    start = time.perf_counter()
    with tqdm(total=_subject_count(parts), desc="ansi-nist", unit="transaction",
              disable=not progress, dynamic_ncols=True) as bar:
        for subject, rows in subjects(parts):
            try:
                data, count = subject_transaction(subject, rows, context)
            except ValueError as e:   # the encoder refuses a manifest value (ManifestError is one too)
                if isinstance(e, ManifestError):
                    raise
                raise ManifestError(f"subject {subject} cannot be encoded: {e}; run `biomint validate`") from None
            write_bytes_atomic(out / f"{subject:08d}.an2", data)
            transactions, records, size = transactions + 1, records + count, size + len(data)
            bar.update(1)
    seconds = time.perf_counter() - start
    return {"transactions": transactions, "records": records, "bytes": size, "directory": str(out),
            "compression": compression, "seconds": round(seconds, 3),
            "transactions_per_second": round(transactions / seconds, 1) if seconds > 0 else None}


def dataset_time(root: Path, meta: dict) -> dt.datetime:
    """The dataset's timestamp (UTC): dataset.json's `created_utc` (ISO 8601) when recorded,
    else the modification time of dataset.json (written last when minting completes)."""
    recorded = meta.get("created_utc")
    if recorded:
        try:
            stamp = dt.datetime.fromisoformat(str(recorded).replace("Z", "+00:00"))
        except ValueError:
            raise ManifestError(f"dataset.json created_utc {recorded!r} is not an ISO 8601 time") from None
        return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.timezone.utc)
    mtime = (Path(root) / "dataset.json").stat().st_mtime
    return dt.datetime.fromtimestamp(int(mtime), tz=dt.timezone.utc)


def _subject_count(parts: list[Path]) -> int:
    count, last = 0, None
    for part in parts:
        ids = np.unique(pq.ParquetFile(part).read(columns=["subject_id"])["subject_id"].to_numpy())
        count += len(ids) - int(len(ids) > 0 and ids[0] == last)
        last = ids[-1] if len(ids) else last
    return count


def subjects(parts: list[Path]) -> Iterator[tuple[int, list[dict]]]:
    """(subject_id, rows) in subject order, one part in memory at a time. Shards are
    contiguous subject ranges, so a subject lives in one part (or spills into the next)."""
    current, rows, highest = None, [], -1
    for part in parts:
        file = pq.ParquetFile(part)
        table = file.read(columns=[c for c in COLUMNS if c in file.schema_arrow.names])
        for row in sorted(table.to_pylist(), key=lambda r: (r["subject_id"], r["sample_id"])):
            subject = row["subject_id"]
            if subject != current:
                if rows:
                    yield current, rows
                if subject <= highest:
                    raise ManifestError(f"subject {subject} appears in non-adjacent manifest parts "
                                        f"(again in {part.name}); the manifest is corrupt, re-mint it")
                current, rows, highest = subject, [], subject
            rows.append(row)
    if rows:
        yield current, rows


def _kind(row: dict) -> str:
    return row.get("impression_type") or "plain"  # schema 1 manifests hold only plain prints


def transaction_images(rows: list[dict]) -> list[dict]:
    """The rows whose images go into the ten-print, in IDC order (see module docstring)."""
    rolled = [r for r in rows if _kind(r) == "rolled"]
    with_rolled = {r["finger_position"] for r in rolled}
    first_plain: dict[int, dict] = {}
    for r in sorted((r for r in rows if _kind(r) == "plain"), key=lambda r: r["impression"]):
        if r["finger_position"] not in with_rolled:
            first_plain.setdefault(r["finger_position"], r)
    fingers = sorted(rolled + list(first_plain.values()), key=lambda r: (r["finger_position"], r["impression"]))
    slaps = sorted((r for r in rows if _kind(r) == "slap"), key=lambda r: r["finger_position"])
    return fingers + slaps


def impression_code(row: dict) -> int:
    params = row.get("params") or {}
    code = params.get("ansi_nist_impression_code")
    if code is not None:
        return int(code)
    return DEFAULT_IMPRESSION_CODE[(_kind(row), params.get("rendering") == "ink")]


def subject_transaction(subject: int, rows: list[dict], context: dict) -> tuple[bytes, int]:
    """The transaction's bytes and its number of records (Type-1 included)."""
    meta, when = context["meta"], context["time"]
    cga, encode = context["compression"]
    images = transaction_images(rows)
    if len(images) > ansi_nist.MAX_IDC:
        raise ManifestError(f"subject {subject} has {len(images)} images, more than the "
                            f"{ansi_nist.MAX_IDC} IDCs a transaction can hold")
    minutiae, pictures = [], []
    for idc, row in enumerate(images, start=1):
        png = _image_bytes(context["root"], row)
        segments = tuple(ansi_nist.Segment(int(s["position"]), int(s["x0"]), int(s["x1"]), int(s["y0"]),
                                           int(s["y1"]))
                         for s in ((row.get("params") or {}).get("segments") or ()))
        pictures.append(ansi_nist.image_record(ansi_nist.FingerImage(
            idc=idc, position=int(row["finger_position"]), impression_code=impression_code(row),
            width=int(row["width"]), height=int(row["height"]), ppi=int(row["dpi"] or 500),
            compression=cga, data=encode(png), capture_date=when.date(), segments=segments,
            comment=row["sample_id"])))
        minutiae += [ansi_nist.minutiae_record(f) for f in finger_minutiae(context["root"], row, idc)]
    name = str(meta.get("name") or "biomint")
    user_text = ansi_nist.user_text_record({3: subject, 4: int(meta.get("seed", 0)),
                                            5: re.sub(r"[^\x20-\x7e]", "?", name)})
    header = ansi_nist.TransactionHeader(     # 1.009 TCN is alphanumeric
        tcn=re.sub(r"[^A-Za-z0-9]", "", name).upper() + f"{subject:08d}", time=when,
        domain_version=re.sub(r"[^\x20-\x7e]", "?", str((meta.get("versions") or {}).get("biomint", ""))))
    records = [user_text, *minutiae, *pictures]
    return ansi_nist.encode_transaction(header, records), len(records) + 1


def _image_bytes(root: Path, row: dict) -> bytes:
    """The manifest's PNG, checked against its sha256 and its 8-bit grey width x height."""
    path = root / row["path"]
    try:
        data = read_stored(path)
    except OSError as e:
        raise ManifestError(f"cannot read image {path} of {row['sample_id']} ({e.strerror}); "
                            "run `biomint validate` on the dataset") from None
    if sha256_bytes(data) != row["sha256"]:
        raise ManifestError(f"image {path} does not match the manifest sha256 of {row['sample_id']}; "
                            "run `biomint validate` on the dataset")
    if data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
        raise ManifestError(f"image {path} of {row['sample_id']} is not a PNG file")
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    if (width, height, depth, colour) != (row["width"], row["height"], 8, 0):
        raise ManifestError(f"image {path} is {width}x{height} (bit depth {depth}, colour type {colour}), "
                            f"not the manifest's 8-bit grey {row['width']}x{row['height']}")
    return data


def finger_minutiae(root: Path, row: dict, idc: int) -> list[ansi_nist.FingerMinutiae]:
    """Ground-truth minutiae of one image: one entry per finger (several for a slap)."""
    if not row.get("truth_path"):
        return []
    stem = str(row["truth_path"]).removesuffix(".ist")
    width, height, ppi = int(row["width"]), int(row["height"]), int(row["dpi"] or 500)
    common = {"idc": idc, "impression_code": impression_code(row), "ppi": ppi,
              "algorithm": f"ground truth {row.get('generator_version', '')}".strip(),
              "comment": f"ground-truth minutiae of {row['sample_id']}"}
    if _kind(row) == "slap":
        entries = json.loads(_truth_bytes(root / f"{stem}.segments.json", row))
        return [ansi_nist.FingerMinutiae(position=int(e["position"]),
                                         roi=_segment_roi(e["box"], e["minutiae"], width, height),
                                         minutiae=np.asarray(e["minutiae"], dtype=np.float64).reshape(-1, 4),
                                         **common)
                for e in entries]
    minutiae = plain_truth_minutiae(_truth_bytes(root / f"{stem}.xyt", row),
                                    _truth_bytes(root / row["truth_path"], row), row["sample_id"])
    return [ansi_nist.FingerMinutiae(position=int(row["finger_position"]), roi=(0, 0, width, height),
                                     minutiae=minutiae, **common)]


def _truth_bytes(path: Path, row: dict) -> bytes:
    try:
        return read_stored(path)
    except OSError as e:
        raise ManifestError(f"cannot read ground truth {path} of {row['sample_id']} ({e.strerror}); "
                            "run `biomint validate` on the dataset") from None


def _segment_roi(box, minutiae, width: int, height: int) -> tuple[int, int, int, int]:
    """The segment box, grown to hold every minutia of the finger, clipped to the image."""
    x0, y0, x1, y1 = (int(v) for v in box)
    m = np.asarray(minutiae, dtype=np.float64).reshape(-1, 4)
    if len(m):
        x0, y0 = min(x0, int(np.floor(m[:, 0].min()))), min(y0, int(np.floor(m[:, 1].min())))
        x1, y1 = max(x1, int(np.floor(m[:, 0].max())) + 1), max(y1, int(np.floor(m[:, 1].max())) + 1)
    return max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)


def plain_truth_minutiae(xyt: bytes, ist: bytes, sample_id: str) -> np.ndarray:
    """[N, 4] x, y (px), angle (rad), type from a print's .xyt (positions, whole degrees) and
    its ISO/IEC 19794-2 record (types; its angles are coarser, 360/256 degrees)."""
    lines = [line.split() for line in xyt.decode().splitlines() if line.strip()]
    views = iso19794_2_minutiae(ist)
    kinds = views[0][1][:, 3] if views else np.zeros(0)
    if len(kinds) != len(lines):
        raise ManifestError(f"ground truth of {sample_id}: the .xyt lists {len(lines)} minutiae, "
                            f"the .ist {len(kinds)}; re-mint the dataset")
    m = np.zeros((len(lines), 4))
    if lines:
        xyt_values = np.asarray([[float(v) for v in line[:3]] for line in lines])
        m[:, :2], m[:, 2], m[:, 3] = xyt_values[:, :2], np.radians(xyt_values[:, 2]), kinds
    return m


def iso19794_2_minutiae(data: bytes) -> list[tuple[int, np.ndarray]]:
    """Finger views of an ISO/IEC 19794-2:2005 record: (position, [N, 4] x, y, angle (rad),
    type (0 ridge ending, 1 bifurcation, -1 other)); layout in generators/fingerprint/truth_formats."""
    if data[:8] != b"FMR\x00 20\x00" or len(data) < 24:
        raise ManifestError("ground truth .ist is not an ISO/IEC 19794-2:2005 finger minutiae record")
    views, offset = [], 24
    for _ in range(data[22]):
        position, _view, _quality, count = struct.unpack_from(">BBBB", data, offset)
        offset += 4
        m = np.zeros((count, 4))
        for i in range(count):
            tx, ry, angle, _q = struct.unpack_from(">HHBB", data, offset + 6 * i)
            m[i] = (tx & 0x3FFF, ry & 0x3FFF, angle * 2 * np.pi / 256, {1: 0, 2: 1}.get(tx >> 14, -1))
        offset += 6 * count
        (extended,) = struct.unpack_from(">H", data, offset)
        offset += 2 + extended
        views.append((position, m))
    return views
