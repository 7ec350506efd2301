"""Read a minted dataset (manifest + pairs, CONVENTIONS §3–4) or a plain folder of images.

Only pyarrow.dataset is used, so any dataset laid out as in CONVENTIONS §3 is readable
without the pipeline's code.
"""
from __future__ import annotations

from itertools import combinations
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from evaluation.errors import DatasetNotFoundError, EvaluationInputError, UnreadableImageError

SAMPLE_COLUMNS = ["sample_id", "subject_id", "modality", "path"]
OPTIONAL_COLUMNS = ["finger_position", "impression_type", "impression", "width", "height", "dpi"]
PAIR_COLUMNS = ["pair_id", "a_sample_id", "b_sample_id", "mated", "kind"]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm", ".webp"}
FINGERPRINT_MODALITIES = ("fingerprint", "latent_fingerprint")
# impression_type of fingerprint rows from before the column existed (schema version 1)
DEFAULT_IMPRESSION_TYPE = {"fingerprint": "plain", "latent_fingerprint": "latent"}


def _read_parquet_dir(folder: Path, what: str, columns: list[str],
                      segments: bool = False) -> pd.DataFrame:
    """Only the ``columns`` present. Of the ``params`` struct only ``params.segments`` (slap
    segment boxes) is decoded, and only with ``segments=True`` and when the struct has it."""
    try:
        ds = pads.dataset(str(folder), format="parquet")
        names = ds.schema.names
        cols = {c: pc.field(c) for c in columns if c in names}
        if segments and "params" in names:
            params = ds.schema.field("params").type
            if isinstance(params, pa.StructType) and params.get_field_index("segments") >= 0:
                cols["segments"] = pc.field("params", "segments")
        return ds.to_table(columns=cols).to_pandas()
    except Exception as exc:  # pyarrow raises several types for corrupt/foreign files
        raise EvaluationInputError(
            f"Cannot read the {what} Parquet files in {folder} ({exc}); regenerate them "
            "with biomint or remove the broken part file.") from None


def read_manifest(root: Path, stages: tuple[str, ...] | None = None) -> pd.DataFrame:
    """All manifest rows of ``root`` (one per image) with a ``stage`` column added.

    ``impression_type`` is always there (plain / latent for fingerprint rows of datasets
    older than the column, null for faces) and ``segments`` holds a slap's boxes
    ``[(position, x0, y0, x1, y1)]`` from ``params.segments`` (None on other rows)."""
    root = Path(root)
    manifest_dir = root / "manifest"
    found = sorted(p for p in manifest_dir.glob("*") if p.is_dir()) if manifest_dir.is_dir() else []
    if stages is not None:
        missing = [s for s in stages if not (manifest_dir / s).is_dir()]
        if missing:
            raise DatasetNotFoundError(
                f"Manifest stage(s) {missing} not found under {manifest_dir}: "
                f"available are {[p.name for p in found]}.")
        found = [manifest_dir / s for s in stages]
    if not found:
        raise DatasetNotFoundError(
            f"No manifest found in {root}: expected {manifest_dir}/<stage>/part-*.parquet "
            "as written by `biomint`; point evaluate at a dataset root.")
    frames = []
    for stage_dir in found:
        df = _read_parquet_dir(stage_dir, f"manifest '{stage_dir.name}'",
                              SAMPLE_COLUMNS + OPTIONAL_COLUMNS, segments=True)
        missing = [c for c in SAMPLE_COLUMNS if c not in df.columns]
        if missing:
            raise EvaluationInputError(
                f"The manifest in {stage_dir} lacks column(s) {missing} (CONVENTIONS §4); "
                "it was not written by this biomint version.")
        keep = SAMPLE_COLUMNS + [c for c in OPTIONAL_COLUMNS + ["segments"] if c in df.columns]
        frames.append(df[keep].assign(stage=stage_dir.name))
    manifest = pd.concat(frames, ignore_index=True)
    manifest["impression_type"] = _impression_types(manifest)
    manifest["segments"] = [_segment_boxes(v) for v in manifest.get(
        "segments", pd.Series(None, index=manifest.index, dtype=object))]
    dup = manifest["sample_id"].duplicated()
    if dup.any():
        raise EvaluationInputError(
            f"sample_id {manifest.loc[dup, 'sample_id'].iloc[0]!r} appears more than once in "
            f"the manifests of {root}; sample ids must be unique.")
    return manifest


def _impression_types(manifest: pd.DataFrame) -> pd.Series:
    """``impression_type``, filled for fingerprint rows of datasets without the column (or
    with nulls): plain for ``fingerprint``, latent for ``latent_fingerprint``; null for faces."""
    default = manifest["modality"].map(DEFAULT_IMPRESSION_TYPE)
    if "impression_type" not in manifest.columns:
        return default.astype(object)
    return manifest["impression_type"].astype(object).where(
        manifest["impression_type"].notna(), default)


def _segment_boxes(value) -> list[tuple[int, int, int, int, int]] | None:
    """``params.segments`` of one row → [(position, x0, y0, x1, y1)] or None (not a slap)."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    return [(int(d["position"]), int(d["x0"]), int(d["y0"]), int(d["x1"]), int(d["y1"]))
            for d in value]


def manifest_sample_ids(root: Path) -> pd.Index:
    """``sample_id`` of every manifest stage of ``root`` (what pairs may name)."""
    manifest_dir = Path(root) / "manifest"
    stages = sorted(p for p in manifest_dir.glob("*") if p.is_dir()) if manifest_dir.is_dir() else []
    ids = [_read_parquet_dir(d, f"manifest '{d.name}'", ["sample_id"])["sample_id"] for d in stages]
    return pd.Index(pd.concat(ids, ignore_index=True) if ids else [], dtype=object)


def read_params(root: Path, stages, names: tuple[str, ...]) -> pd.DataFrame:
    """``sample_id``, ``truth_path`` and the ``params`` fields ``names`` (those the struct has)
    of the manifest rows of ``stages``; a missing field is left out, not invented."""
    frames = []
    for stage in stages:
        folder = Path(root) / "manifest" / str(stage)
        try:
            ds = pads.dataset(str(folder), format="parquet")
        except Exception as exc:
            raise EvaluationInputError(
                f"Cannot read the manifest '{stage}' Parquet files in {folder} ({exc}).") from None
        cols = {c: pc.field(c) for c in ("sample_id", "truth_path") if c in ds.schema.names}
        if "params" in ds.schema.names and isinstance(ds.schema.field("params").type, pa.StructType):
            params = ds.schema.field("params").type
            cols.update({n: pc.field("params", n) for n in names if params.get_field_index(n) >= 0})
        frames.append(ds.to_table(columns=cols).to_pandas())
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({"sample_id": []})


def read_pairs(root: Path, sample_ids: pd.Index, listed_ids: pd.Index | None = None
               ) -> pd.DataFrame:
    """All rows of ``root/pairs/<kind>/``; empty frame when the dataset has no pairs.

    ``listed_ids`` (every manifest's sample ids, when only some stages were read): a pair
    naming a sample of a stage not read is left out; one naming a sample that no manifest
    lists is an error either way."""
    pairs_dir = Path(root) / "pairs"
    kinds = sorted(p for p in pairs_dir.glob("*") if p.is_dir()) if pairs_dir.is_dir() else []
    _check_recorded_pairs(Path(root), {k.name for k in kinds if any(k.glob("part-*.parquet"))})
    frames = []
    for kind_dir in kinds:
        df = _read_parquet_dir(kind_dir, f"pairs '{kind_dir.name}'", PAIR_COLUMNS)
        missing = [c for c in PAIR_COLUMNS if c not in df.columns]
        if missing:
            raise EvaluationInputError(
                f"The pairs table in {kind_dir} lacks column(s) {missing} (CONVENTIONS §4).")
        frames.append(df[PAIR_COLUMNS])
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in
                             zip(PAIR_COLUMNS, ["str", "str", "str", "bool", "str"])})
    pairs = pd.concat(frames, ignore_index=True)
    if listed_ids is not None:
        unread = ~pairs["a_sample_id"].isin(sample_ids) | ~pairs["b_sample_id"].isin(sample_ids)
        elsewhere = pairs["a_sample_id"].isin(listed_ids) & pairs["b_sample_id"].isin(listed_ids)
        pairs = pairs[~(unread & elsewhere)].reset_index(drop=True)
    unknown = ~pairs["a_sample_id"].isin(sample_ids) | ~pairs["b_sample_id"].isin(sample_ids)
    if unknown.any():
        row = pairs[unknown].iloc[0]
        raise EvaluationInputError(
            f"Pair {row['pair_id']!r} refers to a sample that no manifest lists "
            f"({row['a_sample_id']!r} / {row['b_sample_id']!r}); the pairs and manifest "
            "tables are out of step.")
    pairs["mated"] = pairs["mated"].astype(bool)
    return pairs


def _check_recorded_pairs(root: Path, on_disk: set[str]) -> None:
    """A dataset whose dataset.json records pairs must still have them: scoring pairs built
    some other way would report on comparisons the dataset does not define."""
    import json

    try:
        recorded = json.loads((root / "dataset.json").read_text()).get("pairs") or {}
    except (OSError, ValueError, AttributeError):
        return      # a folder of images, or a dataset.json the manifest checks report on
    missing = sorted(set(recorded) - on_disk)
    if missing:
        kind = missing[0]
        raise EvaluationInputError(
            f"{root}/pairs/{kind} is missing, but dataset.json records {recorded[kind].get('mated')} mated + "
            f"{recorded[kind].get('non_mated')} non-mated {kind} pairs; rebuild them with `biomint repair {root}` "
            "(or rerun the minting command) before evaluating")


def all_pairs(samples: pd.DataFrame, kind: str, max_nonmated: int | None,
              seed: int = 0) -> pd.DataFrame:
    """Mated pairs = every two samples of a subject; non-mated = the first sample of every
    two subjects (seeded subsample of at most ``max_nonmated``). For folders and for
    manifests whose dataset has no pairs tables."""
    rows = []
    firsts = []
    for subject, grp in samples.groupby("subject_id", sort=True):
        ids = list(grp["sample_id"])
        firsts.append(ids[0])
        rows += [(a, b, True) for a, b in combinations(ids, 2)]
    nonmated = list(combinations(firsts, 2))
    if max_nonmated is not None and len(nonmated) > max_nonmated:
        pick = np.random.default_rng(seed).choice(len(nonmated), max_nonmated, replace=False)
        nonmated = [nonmated[k] for k in np.sort(pick)]
    rows += [(a, b, False) for a, b in nonmated]
    df = pd.DataFrame(rows, columns=["a_sample_id", "b_sample_id", "mated"])
    df.insert(0, "pair_id", [f"{kind}-{k:08d}" for k in range(len(df))])
    df["kind"] = kind
    df["mated"] = df["mated"].astype(bool)
    return df


def subsample_nonmated(pairs: pd.DataFrame, max_nonmated: int | None, seed: int) -> pd.DataFrame:
    """Keep every mated pair and at most ``max_nonmated`` non-mated ones (seeded)."""
    non = np.flatnonzero(~pairs["mated"].to_numpy())
    if max_nonmated is None or len(non) <= max_nonmated:
        return pairs
    drop = np.setdiff1d(non, np.random.default_rng(seed).choice(non, max_nonmated, replace=False))
    return pairs.drop(pairs.index[drop]).reset_index(drop=True)


def folder_samples(folder: Path, modality: str = "face") -> pd.DataFrame:
    """A manifest-like frame for a folder of images.

    ``folder/<identity>/<image>`` gives one subject per sub-folder; images directly in
    ``folder`` are each their own subject.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetNotFoundError(f"Image folder {folder} does not exist.")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DatasetNotFoundError(
            f"No images ({', '.join(sorted(IMAGE_SUFFIXES))}) found in {folder}.")
    labels = [p.parent.relative_to(folder).as_posix() if p.parent != folder else p.stem
              for p in files]
    subject_ids = {name: k for k, name in enumerate(dict.fromkeys(labels))}
    return pd.DataFrame({
        "sample_id": [p.relative_to(folder).as_posix() for p in files],
        "subject_id": [subject_ids[name] for name in labels],
        "subject_name": labels,
        "modality": modality,
        "path": [p.relative_to(folder).as_posix() for p in files],
    })


def imread(path: Path | str, flags: int) -> np.ndarray | None:
    """cv2.imread of a dataset file: a plain file or, with storage=tar, a member named
    `<shard>.tar#<member>` (pipeline.manifest.read_stored); None if it cannot be read."""
    from pipeline.manifest import read_stored, split_stored

    if split_stored(path)[1] is None:
        return cv2.imread(str(path), flags)
    try:
        data = read_stored(path)
    except OSError:
        return None
    return cv2.imdecode(np.frombuffer(data, np.uint8), flags)


def read_image(root: Path, rel_path: str, sample_id: str, grey: bool) -> np.ndarray:
    """uint8 [H, W] (grey) or [H, W, 3] RGB; UnreadableImageError if it cannot be decoded."""
    path = Path(root) / rel_path
    image = imread(path, cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR)
    if image is None:
        raise UnreadableImageError(
            f"Cannot read image {path} (sample {sample_id}): the file is missing or not a "
            "valid image; regenerate it (biomint regenerate) or fix the manifest row.")
    return image if grey else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
