"""evaluate_dataset end to end on small fixture datasets written in tmp_path (CONVENTIONS §3–4).

Fingerprint-like test prints: band-pass noise around a 9.5 px ridge period and one ridge
orientation per finger (parallel ridges with endings and bifurcations, ~90 MINDTCT minutiae),
impressions = rotation ±8°, shift ±12 px, pixel noise, elliptical contact region.
"""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from evaluation import EvaluationSettings, evaluate_dataset
from evaluation.errors import DatasetNotFoundError, EvaluationInputError, UnreadableImageError
from evaluation.report import format_summary
from evaluation.settings import bin_labels, quality_bin

H, W = 500, 400


def ridge_master(rng: np.random.Generator, period: float = 9.5) -> np.ndarray:
    spectrum = np.fft.fft2(rng.standard_normal((H, W)))
    fy, fx = np.fft.fftfreq(H)[:, None], np.fft.fftfreq(W)[None, :]
    radius, angle = np.hypot(fx, fy), np.arctan2(fy, fx)
    off = np.angle(np.exp(2j * (angle - rng.uniform(0, np.pi)))) / 2
    band = np.exp(-(radius - 1 / period) ** 2 / (2 * 0.008 ** 2)) * np.exp(-off ** 2 / 0.18)
    field = np.real(np.fft.ifft2(spectrum * band))
    return field / field.std()


def ridge_impression(field: np.ndarray, rng: np.random.Generator, noise: float = 0.3,
                     contrast: float = 90.0) -> np.ndarray:
    m = cv2.getRotationMatrix2D((W / 2, H / 2), rng.uniform(-8, 8), 1.0)
    m[:, 2] += rng.uniform(-12, 12, 2)
    f = cv2.warpAffine(field, m, (W, H), borderMode=cv2.BORDER_REFLECT)
    f = f + noise * rng.standard_normal(f.shape)
    yy, xx = np.mgrid[:H, :W]
    inside = ((xx - W / 2) / (0.42 * W)) ** 2 + ((yy - H / 2) / (0.45 * H)) ** 2 < 1
    img = np.where(inside, 128 + contrast * np.tanh(1.5 * f), 255).astype(np.float32)
    return cv2.GaussianBlur(img, (3, 3), 0.8).clip(0, 255).astype(np.uint8)


def write_dataset(root: Path, stage: str, modality: str, images: list[tuple[int, int | None, int, np.ndarray]],
                  pairs: pd.DataFrame | None = None, kind: str = "plain-plain") -> pd.DataFrame:
    """Write PNGs + manifest (+ pairs) as the pipeline lays them out; return the manifest."""
    rows = []
    for subject, position, impression, image in images:
        prefix = "fp" if modality != "face" else "face"
        sid = f"{prefix}-{subject:08d}-{position or 0:02d}-{impression:02d}"
        rel = f"images/{modality}/{subject:08d}/{sid}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / rel), image if image.ndim == 2 else image[:, :, ::-1])
        rows.append({"sample_id": sid, "subject_id": subject, "modality": modality,
                     "finger_position": position, "impression": impression, "path": rel,
                     "width": image.shape[1], "height": image.shape[0],
                     "dpi": 500 if modality != "face" else None,
                     "sha256": hashlib.sha256((root / rel).read_bytes()).hexdigest(),
                     "seed": 1000 + len(rows), "generator": "test", "generator_version": "0",
                     "params": {"rotation_deg": 0.0}, "truth_path": None})
    manifest = pd.DataFrame(rows)
    schema = pa.schema([("sample_id", pa.string()), ("subject_id", pa.int64()),
                        ("modality", pa.string()), ("finger_position", pa.int8()),
                        ("impression", pa.int16()), ("path", pa.string()),
                        ("width", pa.int32()), ("height", pa.int32()), ("dpi", pa.int16()),
                        ("sha256", pa.string()), ("seed", pa.uint64()), ("generator", pa.string()),
                        ("generator_version", pa.string()),
                        ("params", pa.struct([("rotation_deg", pa.float64())])),
                        ("truth_path", pa.string())])
    (root / "manifest" / stage).mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(manifest, schema=schema, preserve_index=False),
                   root / "manifest" / stage / "part-00000.parquet")
    if pairs is not None:
        (root / "pairs" / kind).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pandas(pairs, preserve_index=False),
                       root / "pairs" / kind / "part-00000.parquet")
    return manifest


def fingerprint_pairs(manifest: pd.DataFrame) -> pd.DataFrame:
    key = manifest["subject_id"].astype(str) + "-" + manifest["finger_position"].astype(str)
    rows = []
    ids = list(manifest["sample_id"])
    for a in range(len(ids)):
        for b in range(a + 1, len(ids)):
            rows.append((ids[a], ids[b], bool(key[a] == key[b])))
    df = pd.DataFrame(rows, columns=["a_sample_id", "b_sample_id", "mated"])
    df.insert(0, "pair_id", [f"pp-{k:06d}" for k in range(len(df))])
    df["kind"] = "plain-plain"
    return df


@pytest.fixture(scope="module")
def fp_root(tmp_path_factory) -> Path:
    """2 subjects × 2 fingers × 2 impressions, plus a smudged 3rd impression of one finger."""
    root = tmp_path_factory.mktemp("fpdata") / "ds"
    rng = np.random.default_rng(7)
    images = []
    for subject in (0, 1):
        for position in (1, 2):
            field = ridge_master(rng)
            images += [(subject, position, k, ridge_impression(field, rng)) for k in range(2)]
            if subject == 0 and position == 1:
                images.append((0, 1, 2, ridge_impression(field, rng, noise=1.0, contrast=10)))
    manifest = write_dataset(root, "fingerprint", "fingerprint", images)
    pairs = fingerprint_pairs(manifest)
    (root / "pairs" / "plain-plain").mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(pairs, preserve_index=False),
                   root / "pairs" / "plain-plain" / "part-00000.parquet")
    return root


@pytest.fixture(scope="module")
def fp_summary(fp_root):
    return evaluate_dataset(fp_root, EvaluationSettings(progress=False, workers=1))


def test_fingerprint_tables_keyed_and_complete(fp_root, fp_summary):
    quality = pd.read_parquet(fp_root / "eval" / "fingerprint_quality.parquet")
    manifest = pd.read_parquet(fp_root / "manifest" / "fingerprint")
    assert sorted(quality["sample_id"]) == sorted(manifest["sample_id"])
    assert (quality["quality_label"] == "NFIQ 2-style").all()
    assert quality["quality_score"].between(0, 100).all()
    for col in ("ocl_mean", "lcs_mean", "of_mean", "rvup_mean", "fda_mean", "minutiae_count",
                "roi_area_mean", "flag_too_few_minutiae", "flag_small_foreground", "quality_bin"):
        assert col in quality.columns
    assert quality["quality_bin"].isin(bin_labels((0, 20, 40, 60, 80, 100))).all()
    q = fp_summary["fingerprint"]["quality"]
    assert sum(q["bins"].values()) == len(manifest) == 9
    assert q["median"] == pytest.approx(quality["quality_score"].median())
    # the smudged low-contrast impression scores below every clean impression
    smudged = quality["sample_id"] == "fp-00000000-01-02"
    assert quality.loc[smudged, "quality_score"].iloc[0] < quality.loc[~smudged, "quality_score"].min()
    assert quality.loc[smudged, "flag_too_few_minutiae"].iloc[0]
    assert "too_few_minutiae" in quality.loc[smudged, "feedback"].iloc[0]
    assert (quality.loc[~smudged, "mindtct_minutiae"] > 20).all()
    assert not quality.loc[~smudged, "flag_too_few_minutiae"].any()
    pairs = pd.read_parquet(fp_root / "eval" / "fingerprint_pairs.parquet")
    assert len(pairs) == 36 and pairs["pair_id"].is_unique
    assert set(pairs.columns) >= {"pair_id", "a_sample_id", "b_sample_id", "mated", "kind", "score"}


def test_fingerprint_bozorth3_separates_fingers(fp_root, fp_summary):
    pairs = pd.read_parquet(fp_root / "eval" / "fingerprint_pairs.parquet")
    clean = ~pairs["a_sample_id"].str.endswith("-02") & ~pairs["b_sample_id"].str.endswith("-02")
    assert pairs.loc[clean & pairs["mated"], "score"].min() >= 40
    assert pairs.loc[~pairs["mated"], "score"].max() < 40
    m = fp_summary["fingerprint"]["matching"]
    assert m["n_genuine"] == 6 and m["n_impostor"] == 30 and m["native"]
    assert m["fmr_at_bozorth3_40"] == 0.0
    assert m["threshold"] == 40.0


def test_report_is_self_contained(fp_root, fp_summary):
    page = Path(fp_summary["report"]).read_text()
    thumbs = sum(min(6, n) for n in fp_summary["fingerprint"]["quality"]["bins"].values())
    assert page.count("data:image/png;base64,") == 3 + thumbs   # 3 plots + grid thumbnails
    assert "http://" not in page and "https://" not in page and "<script" not in page
    for text in ("NFIQ 2-style", "DET curve", "Bozorth3", "bin 41-60", "Actionable feedback"):
        assert text in page
    text = format_summary(fp_summary)
    assert "NFIQ 2-style median" in text and "EER" in text and len(text.splitlines()) < 25


def test_parallel_paths_give_the_serial_scores(fp_root, fp_summary, tmp_path):
    from distributed import Client, LocalCluster

    serial = pd.read_parquet(fp_root / "eval" / "fingerprint_pairs.parquet")
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        s = evaluate_dataset(fp_root, EvaluationSettings(progress=False, chunk_size=2,
                                                         write_report=False), client=client)
    dask_pairs = pd.read_parquet(fp_root / "eval" / "fingerprint_pairs.parquet")
    pd.testing.assert_series_equal(serial["score"], dask_pairs["score"])
    assert s["fingerprint"]["quality"]["bins"] == fp_summary["fingerprint"]["quality"]["bins"]


def test_quality_bins_and_edges():
    edges = (0, 20, 40, 60, 80, 100)
    assert bin_labels(edges) == ["0-20", "21-40", "41-60", "61-80", "81-100"]
    assert [quality_bin(v, edges) for v in (0, 20, 21, 60, 61, 100)] == \
        ["0-20", "0-20", "21-40", "41-60", "61-80", "81-100"]
    assert bin_labels((0, 50, 100)) == ["0-50", "51-100"]
    with pytest.raises(ValueError, match="quality_bin_edges"):
        EvaluationSettings(quality_bin_edges=(0, 60, 40, 100))


def test_dataset_without_manifest_is_one_clear_sentence(tmp_path):
    with pytest.raises(FileNotFoundError, match="No manifest found in"):
        evaluate_dataset(tmp_path, EvaluationSettings(progress=False))
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        evaluate_dataset(tmp_path / "nope", EvaluationSettings(progress=False))


def test_unreadable_image_is_one_clear_sentence(tmp_path):
    rng = np.random.default_rng(1)
    write_dataset(tmp_path, "fingerprint", "fingerprint",
                  [(0, 1, 0, ridge_impression(ridge_master(rng), rng))])
    (tmp_path / "images/fingerprint/00000000/fp-00000000-01-00.png").write_bytes(b"not a png")
    with pytest.raises(UnreadableImageError, match="Cannot read image .*fp-00000000-01-00"):
        evaluate_dataset(tmp_path, EvaluationSettings(progress=False))


def test_unknown_backend_names_are_rejected(fp_root):
    with pytest.raises(EvaluationInputError, match="Unknown quality_backend"):
        evaluate_dataset(fp_root, EvaluationSettings(quality_backend="nfiq3", progress=False))


def test_nist_binary_backend_parses_its_csv(tmp_path, monkeypatch):
    """A stand-in `nfiq2` on PATH writing NIST's CSV layout (Filename, QualityScore, …)."""
    from evaluation.fingerprint_quality import score_with_nist_binary

    exe = tmp_path / "bin" / "nfiq2"
    exe.parent.mkdir()
    exe.write_text(
        "#!/bin/sh\n"
        "out=''; files=''\n"
        "while [ $# -gt 0 ]; do case $1 in -o) out=$2; shift 2;; -*) shift;; "
        "*) files=\"$files $1\"; shift;; esac; done\n"
        "echo 'Filename,FingerCode,QualityScore,OptionalError,Quantized,Resampled,"
        "EmptyImageOrContrastTooLow,UniformImage,FingerprintImageWithMinutiae,"
        "SufficientFingerprintForeground,OCL_Bin10_Mean' > $out\n"
        "n=0; for f in $files; do n=$((n+1)); "
        "echo \"\\\"$f\\\",0,$((40+n)),NA,0,0,200.5,50.1,3,60000,0.7\" >> $out; done\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{exe.parent}{os.pathsep}{os.environ['PATH']}")
    img = np.full((120, 120), 128, np.uint8)
    res = score_with_nist_binary([img, img], [np.zeros((0, 5))] * 2)
    assert [r["score"] for r in res] == [41.0, 42.0]
    assert res[0]["actionable"]["FingerprintImageWithMinutiae"] == 3.0
    assert res[0]["features"]["OCL_Bin10_Mean"] == pytest.approx(0.7)


def test_pure_python_matcher_fallback_announces_itself_once(fp_root, monkeypatch):
    from evaluation import fingerprint_matching as fm

    quality = pd.read_parquet(fp_root / "eval" / "fingerprint_quality.parquet")
    assert len(quality)
    img = cv2.imread(str(fp_root / "images/fingerprint/00000001/fp-00000001-02-00.png"), 0)
    img2 = cv2.imread(str(fp_root / "images/fingerprint/00000001/fp-00000001-02-01.png"), 0)
    a, b = fm.extract_minutiae(img), fm.extract_minutiae(img2)
    native = fm.bozorth3(a, b, H, H, W, W)
    monkeypatch.setattr(fm, "native_available", lambda: False)
    monkeypatch.setattr(fm, "_FALLBACK_ANNOUNCED", False)
    with pytest.warns(RuntimeWarning, match="pure-Python"):
        python = fm.bozorth3(a, b, H, H, W, W)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fm.bozorth3(a[:40], b[:40], H, H, W, W)      # second call: no second warning
    assert python >= 40 and abs(python - native) <= 0.1 * native


def test_local_process_pool_gives_the_serial_results(fp_root, fp_summary):
    s = evaluate_dataset(fp_root, EvaluationSettings(progress=False, workers=2, chunk_size=3,
                                                     write_report=False))
    assert s["fingerprint"]["quality"]["bins"] == fp_summary["fingerprint"]["quality"]["bins"]
    for key in ("eer", "genuine_mean", "impostor_mean"):
        assert s["fingerprint"]["matching"][key] == fp_summary["fingerprint"]["matching"][key]


def test_settings_coerce_cli_strings_or_refuse():
    s = EvaluationSettings(progress="false", workers="2", quality_bin_edges="0,50,100",
                           max_nonmated_pairs="null", stages=["fingerprint"])
    assert s.progress is False and s.workers == 2 and s.quality_bin_edges == (0, 50, 100)
    assert s.max_nonmated_pairs is None and s.stages == ("fingerprint",)
    with pytest.raises(ValueError, match="progress='maybe' is not a valid bool"):
        EvaluationSettings(progress="maybe")


def test_single_finger_without_pairs_tables(tmp_path):
    """No pairs/ folder: mated pairs are built from the manifest; no impostors → no EER."""
    rng = np.random.default_rng(3)
    field = ridge_master(rng)
    write_dataset(tmp_path, "fingerprint", "fingerprint",
                  [(5, 3, k, ridge_impression(field, rng)) for k in range(3)])
    s = evaluate_dataset(tmp_path, EvaluationSettings(progress=False, workers=1))
    m = s["fingerprint"]["matching"]
    assert m["n_genuine"] == 3 and m["n_impostor"] == 0 and "eer" not in m
    assert "Fingerprint distinctness" in (tmp_path / "report" / "index.html").read_text()
    assert "EER" not in format_summary(s)


def test_nonmated_cap_keeps_every_mated_pair_and_is_seeded():
    from evaluation.dataset import subsample_nonmated

    pairs = pd.DataFrame({"pair_id": [f"p{k}" for k in range(40)],
                          "mated": [k < 10 for k in range(40)]})
    a = subsample_nonmated(pairs, 5, seed=1)
    assert a["mated"].sum() == 10 and (~a["mated"]).sum() == 5
    assert list(a["pair_id"]) == list(subsample_nonmated(pairs, 5, seed=1)["pair_id"])
    assert subsample_nonmated(pairs, None, seed=1).equals(pairs)
