"""Evaluation of rolled prints, slaps and pair kinds on a small dataset written by hand
(manifest schema version 2, issue 8's interface): real prints from generators.fingerprint,
real PNGs and Parquet, no mocks.

Two subjects × fingers 2 and 3 (right index, middle); per finger two plain impressions and two
"rolled" ones (wider canvas, same master); per subject one right slap (code 13) that pastes a
third impression of each finger side by side on white, with its segment boxes.
"""
from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from evaluation import EvaluationSettings, evaluate_dataset
from evaluation.fingerprint_evaluation import _matching_summary, pair_kind
from evaluation.metrics import score_summary
from evaluation.report import format_summary
from evaluation.settings import QUALITY_NOTES
from evaluation.slap_segments import box_iou, check_segments, foreground_mask

SUBJECTS, POSITIONS = (0, 1), (2, 3)
SEGMENT = pa.struct([("position", pa.int8()), ("x0", pa.int32()), ("y0", pa.int32()),
                     ("x1", pa.int32()), ("y1", pa.int32())])
PARAMS = pa.struct([("ansi_nist_impression_code", pa.int64()), ("rendering", pa.string()),
                    ("segments", pa.list_(SEGMENT))])


def _settings():
    from generators.fingerprint import FingerprintSettings

    plain = FingerprintSettings(width=240, height=300, master_width=300, master_height=360,
                                difficulty=0.1, profile="clean")
    return plain, replace(plain, width=320, height=340, profile="clean")


def make_prints(seed: int = 3) -> dict:
    """{(subject, position): {"plain": [img, img], "rolled": [img, img], "slap": img}}."""
    from generators.fingerprint import make_impression, make_master

    plain, rolled = _settings()
    out = {}
    for subject in SUBJECTS:
        for position in POSITIONS:
            rng = np.random.default_rng([seed, subject, position])
            master = make_master(plain, position, rng)
            out[subject, position] = {
                "plain": [make_impression(master, plain, rng).image for _ in range(2)],
                "rolled": [make_impression(master, rolled, rng).image for _ in range(2)],
                "slap": make_impression(master, plain, rng).image}
    return out


def paste_slap(fingers: list[tuple[int, np.ndarray]], gap: int = 20
               ) -> tuple[np.ndarray, list[dict]]:
    """Fingers side by side on white: each finger's contact area (where its smoothed grey is
    below 200, dilated) is pasted; its box is that area's bounding box."""
    h = max(f.shape[0] for _, f in fingers) + 2 * gap
    w = sum(f.shape[1] for _, f in fingers) + gap * (len(fingers) + 1)
    canvas = np.full((h, w), 255, np.uint8)
    boxes, x = [], gap
    for position, finger in fingers:
        fh, fw = finger.shape
        y = gap + 4 * len(boxes)          # a little vertical stagger
        contact = cv2.blur(finger.astype(np.float32), (15, 15)) < 200
        contact = cv2.dilate(contact.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
        region = canvas[y:y + fh, x:x + fw]
        region[contact] = finger[contact]
        ys, xs = np.nonzero(contact)
        boxes.append({"position": position, "x0": int(x + xs.min()), "y0": int(y + ys.min()),
                      "x1": int(x + xs.max() + 1), "y1": int(y + ys.max() + 1)})
        x += fw + gap
    return canvas, boxes


def write_v2_dataset(root: Path, prints: dict, with_types: bool = True) -> pd.DataFrame:
    """PNGs, manifest/fingerprint/part-00000.parquet and pairs/<kind>/ as issue 8 lays them out."""
    rows = []

    def add(sid, subject, position, itype, impression, image, code, segments=None):
        rel = f"images/fingerprint/{subject:08d}/{sid}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / rel), image)
        rows.append({"sample_id": sid, "subject_id": subject, "modality": "fingerprint",
                     "finger_position": position, "impression_type": itype,
                     "impression": impression, "path": rel, "width": image.shape[1],
                     "height": image.shape[0], "dpi": 500,
                     "sha256": hashlib.sha256((root / rel).read_bytes()).hexdigest(),
                     "seed": 7 + len(rows), "generator": "test", "generator_version": "0",
                     "params": {"ansi_nist_impression_code": code, "rendering": "live_scan",
                                "segments": segments}, "truth_path": None})

    for (subject, position), imgs in prints.items():
        for k, image in enumerate(imgs["plain"]):
            add(f"fp-{subject:08d}-{position:02d}-{k:02d}", subject, position, "plain", k, image, 0)
        if with_types:
            for r, image in enumerate(imgs["rolled"]):
                add(f"fp-{subject:08d}-{position:02d}-r{r:02d}", subject, position, "rolled", r,
                    image, 1)
    if with_types:
        for subject in SUBJECTS:
            slap, boxes = paste_slap([(p, prints[subject, p]["slap"]) for p in POSITIONS])
            add(f"fp-{subject:08d}-13-s00", subject, 13, "slap", 0, slap, 0, boxes)
    manifest = pd.DataFrame(rows)
    fields = [("sample_id", pa.string()), ("subject_id", pa.int64()), ("modality", pa.string()),
              ("finger_position", pa.int8()), ("impression_type", pa.string()),
              ("impression", pa.int16()), ("path", pa.string()), ("width", pa.int32()),
              ("height", pa.int32()), ("dpi", pa.int16()), ("sha256", pa.string()),
              ("seed", pa.uint64()), ("generator", pa.string()),
              ("generator_version", pa.string()), ("params", PARAMS), ("truth_path", pa.string())]
    if not with_types:     # schema version 1: no impression_type, no segments
        fields = [f for f in fields if f[0] != "impression_type"]
        fields[fields.index(("params", PARAMS))] = ("params", pa.struct(
            [("ansi_nist_impression_code", pa.int64())]))
        manifest = manifest.drop(columns="impression_type")
        manifest["params"] = [{"ansi_nist_impression_code": 0}] * len(manifest)
    (root / "manifest" / "fingerprint").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(manifest, schema=pa.schema(fields), preserve_index=False),
                   root / "manifest" / "fingerprint" / "part-00000.parquet")
    for kind, pairs in build_pairs(manifest, with_types).items():
        (root / "pairs" / kind).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pandas(pairs, preserve_index=False),
                       root / "pairs" / kind / "part-00000.parquet")
    return manifest


def build_pairs(manifest: pd.DataFrame, with_types: bool) -> dict[str, pd.DataFrame]:
    """Every comparison of each kind (the dataset is tiny); slap-plain only for the slap's
    fingers, as the spec guarantees."""
    m = manifest.assign(impression_type=manifest.get("impression_type", "plain"))
    by_type = {t: m[m["impression_type"] == t] for t in ("plain", "rolled", "slap")}
    out = {}

    def table(kind, rows):
        rows = sorted(rows, key=lambda r: not r[2])    # mated first, as pipeline/pairs does
        n_m = sum(r[2] for r in rows)
        ids = [f"{kind}-m{k:09d}" if r[2] else f"{kind}-n{k - n_m:09d}" for k, r in enumerate(rows)]
        out[kind] = pd.DataFrame({"pair_id": ids, "a_sample_id": [r[0] for r in rows],
                                  "b_sample_id": [r[1] for r in rows],
                                  "mated": [bool(r[2]) for r in rows], "kind": kind})

    def same(a, b):
        return a.subject_id == b.subject_id and a.finger_position == b.finger_position

    def within(df):
        recs = list(df.itertuples())
        return [(a.sample_id, b.sample_id, same(a, b)) for k, a in enumerate(recs)
                for b in recs[k + 1:]]

    table("plain-plain", within(by_type["plain"]))
    if with_types:
        table("rolled-rolled", within(by_type["rolled"]))
        table("rolled-plain", [(a.sample_id, b.sample_id, same(a, b))
                               for a in by_type["rolled"].itertuples()
                               for b in by_type["plain"].itertuples()])
        table("slap-plain", [(a.sample_id, b.sample_id, a.subject_id == b.subject_id)
                             for a in by_type["slap"].itertuples()
                             for b in by_type["plain"].itertuples()])
    return out


@pytest.fixture(scope="module")
def prints():
    return make_prints()


@pytest.fixture(scope="module")
def v2(tmp_path_factory, prints):
    root = tmp_path_factory.mktemp("v2") / "ds"
    write_v2_dataset(root, prints)
    summary = evaluate_dataset(root, EvaluationSettings(progress=False, workers=1))
    return root, summary


def test_pairs_are_scored_per_kind(v2):
    root, summary = v2
    pairs = pd.read_parquet(root / "eval" / "fingerprint_pairs.parquet")
    m = summary["fingerprint"]["matching"]
    assert m["kinds"] == ["plain-plain", "rolled-plain", "rolled-rolled", "slap-plain"]
    expected = {"plain-plain": (4, 24), "rolled-plain": (16, 48), "rolled-rolled": (4, 24),
                "slap-plain": (8, 8)}
    for kind, (n_g, n_i) in expected.items():
        k = m["by_kind"][kind]
        assert (k["n_genuine"], k["n_impostor"], k["unscored_pairs"]) == (n_g, n_i, 0), kind
        p = pairs[pairs["kind"] == kind]
        assert k["genuine_mean"] == pytest.approx(p.loc[p["mated"], "score"].mean())
        for key in ("eer", "fmr_at_bozorth3_40", "fnmr_at_bozorth3_40", "fnmr_at_fmr_1pct",
                    "fnmr_at_fmr_0.1pct", "d_prime"):
            assert key in k
        assert k["genuine_mean"] > 40 > k["impostor_mean"] and k["d_prime"] > 2, kind
        assert k["eer"] == pytest.approx(score_summary(p.loc[p["mated"], "score"],
                                                       p.loc[~p["mated"], "score"])["eer"])
    assert m["n_genuine"] == 32 and m["n_impostor"] == 104
    assert pairs["pair_id"].is_unique and pairs["score"].notna().all()


def test_slap_plain_pairs_use_the_plain_fingers_segment(v2):
    root, _ = v2
    pairs = pd.read_parquet(root / "eval" / "fingerprint_pairs.parquet")
    slap = pairs[pairs["kind"] == "slap-plain"]
    position = slap["b_sample_id"].str.slice(12, 14).astype(int)
    assert (slap["segment_position"] == position).all()
    assert pairs.loc[pairs["kind"] != "slap-plain", "segment_position"].isna().all()
    # the mated crop matches its own finger (index and middle alike), the others' do not ...
    assert (slap.loc[slap["mated"], "score"] >= 40).all()
    assert (slap.loc[~slap["mated"], "score"] < 40).all()
    # ... and the slap's *other* finger does not: compare the crops with the wrong plain
    from evaluation.fingerprint_matching import bozorth3, extract_minutiae
    from evaluation.slap_segments import crop

    manifest = pd.read_parquet(root / "manifest" / "fingerprint")
    row = manifest[manifest["sample_id"] == "fp-00000000-13-s00"].iloc[0]
    image = cv2.imread(str(root / row["path"]), cv2.IMREAD_GRAYSCALE)
    boxes = {int(s["position"]): (int(s["position"]), s["x0"], s["y0"], s["x1"], s["y1"])
             for s in row["params"]["segments"]}
    plain3 = cv2.imread(str(root / "images/fingerprint/00000000/fp-00000000-03-00.png"), 0)
    m3 = extract_minutiae(plain3)
    crops = {p: np.ascontiguousarray(crop(image, boxes[p])) for p in (2, 3)}
    own, other = (extract_minutiae(crops[p]) for p in (3, 2))
    listed = slap.loc[slap["b_sample_id"] == "fp-00000000-03-00", "score"].iloc[0]
    h3, w3 = crops[3].shape
    h2, w2 = crops[2].shape
    assert bozorth3(own, m3, h3, 300, w3, 240) == pytest.approx(listed)
    assert bozorth3(other, m3, h2, 300, w2, 240) < 40 <= listed


def test_quality_per_impression_type(v2):
    root, summary = v2
    quality = pd.read_parquet(root / "eval" / "fingerprint_quality.parquet")
    assert quality["sample_id"].is_unique
    assert quality.groupby("impression_type").size().to_dict() == {"plain": 8, "rolled": 8}
    assert quality["quality_score"].between(0, 100).all()
    q = summary["fingerprint"]["quality"]
    assert q["impression_type"] == "plain" and q["n_images"] == 8
    assert set(q["by_type"]) == {"plain", "rolled", "slap"}
    rolled = q["by_type"]["rolled"]
    assert rolled["note"] == QUALITY_NOTES["rolled"] == \
        "rolled — NIST's NFIQ 2 model targets plain impressions"
    assert rolled["median"] == pytest.approx(
        quality.loc[quality["impression_type"] == "rolled", "quality_score"].median())
    assert sum(rolled["bins"].values()) == 8 and "note" not in q["by_type"]["plain"]
    segments = pd.read_parquet(root / "eval" / "fingerprint_slap_segments.parquet")
    assert len(segments) == 4 and q["by_type"]["slap"]["n_slaps"] == 2
    assert sorted(segments["segment_position"]) == [2, 2, 3, 3]
    assert segments["quality_score"].between(1, 100).all()
    assert (segments["mindtct_minutiae"] > 10).all()
    assert summary["fingerprint"]["impression_types"] == {"plain": 8, "rolled": 8, "slap": 2}


def test_slap_segment_checks(v2):
    root, summary = v2
    slaps = pd.read_parquet(root / "eval" / "fingerprint_slaps.parquet")
    assert list(slaps["sample_id"]) == ["fp-00000000-13-s00", "fp-00000001-13-s00"]
    assert slaps["boxes_inside"].all() and (slaps["max_iou"] == 0).all()
    assert (slaps["foreground_in_boxes"] > 0.95).all()
    s = summary["fingerprint"]["slaps"]
    assert s["n_slaps"] == 2 and s["n_segments"] == 4 and s["boxes_outside"] == 0
    assert s["foreground_in_boxes_min"] == pytest.approx(slaps["foreground_in_boxes"].min())


def test_segment_checks_flag_bad_boxes(prints):
    slap, boxes = paste_slap([(p, prints[0, p]["slap"]) for p in POSITIONS])
    good = [(b["position"], b["x0"], b["y0"], b["x1"], b["y1"]) for b in boxes]
    fg = foreground_mask(slap)
    assert 0.2 < fg.mean() < 0.8 and not fg[:8, :8].any()          # white margin is background
    row, per_box = check_segments("s", slap, good)
    assert row["boxes_inside"] and row["max_iou"] == 0.0 and row["foreground_in_boxes"] > 0.95
    assert all(b["box_foreground"] > 0.5 for b in per_box)
    # box 2 slid right past the image edge: overlaps box 3, leaves finger 2's ink out
    (p2, x0, y0, x1, y1), (p3, *box3) = good
    shift = slap.shape[1] - x1 + 10
    bad = [(p2, x0 + shift, y0, x1 + shift, y1), good[1]]
    inter = max(0, min(bad[0][3], box3[2]) - max(bad[0][1], box3[0])) * \
        max(0, min(bad[0][4], box3[3]) - max(bad[0][2], box3[1]))
    row, per_box = check_segments("s", slap, bad)
    assert row["max_iou"] == pytest.approx(box_iou(bad[0], bad[1])) and row["max_iou"] > 0
    assert box_iou(bad[0], bad[1]) == pytest.approx(
        inter / ((x1 - x0) * (y1 - y0) + (box3[2] - box3[0]) * (box3[3] - box3[1]) - inter))
    assert not row["boxes_inside"] and not per_box[0]["box_inside"] and per_box[1]["box_inside"]
    assert row["foreground_in_boxes"] < 0.7
    assert box_iou((1, 0, 0, 10, 10), (2, 5, 0, 15, 10)) == pytest.approx(50 / 150)


def test_report_and_terminal_summary_per_kind(v2):
    root, summary = v2
    page = Path(summary["report"]).read_text()
    for text in ("Metrics per pair kind", "Pair kind: plain-plain", "Pair kind: rolled-plain",
                 "Pair kind: rolled-rolled", "Pair kind: slap-plain", "DET curves",
                 "Quality per impression type", "Rolled prints",
                 "rolled — NIST&#x27;s NFIQ 2 model targets plain impressions",
                 "Slap segment crops", "Slap segment checks", "foreground in boxes",
                 "fp-00000001-13-s00", "FNMR@FMR 0.1%"):
        assert text in page, text
    assert "http://" not in page and "<script" not in page
    text = format_summary(summary)
    for kind in ("plain-plain", "rolled-plain", "rolled-rolled", "slap-plain"):
        assert f"    {kind}: " in text
    assert "rolled: 8 images" in text and "slaps: 2 (4 boxes)" in text
    assert len(text.splitlines()) < 25


def test_toy_scores_per_kind_by_hand():
    """Two kinds with known scores: every figure by hand."""
    from evaluation.settings import EvaluationSettings as S

    rows = [("plain-plain", True, 50), ("plain-plain", True, 60), ("plain-plain", True, 70),
            ("plain-plain", True, 30), ("plain-plain", False, 5), ("plain-plain", False, 10),
            ("plain-plain", False, 45), ("plain-plain", False, 0),
            ("slap-plain", True, 80), ("slap-plain", True, 20), ("slap-plain", False, 10),
            ("slap-plain", False, 30), ("slap-plain", False, np.nan)]
    pairs = pd.DataFrame(rows, columns=["kind", "mated", "score"])
    m = _matching_summary(pairs, {"plain-plain": 4, "slap-plain": 3}, S(progress=False), 1.0)
    pp, sp = m["by_kind"]["plain-plain"], m["by_kind"]["slap-plain"]
    # plain-plain: g = 30 50 60 70, i = 0 5 10 45; at 40: FMR 1/4 (45), FNMR 1/4 (30) = EER
    assert (pp["n_genuine"], pp["n_impostor"]) == (4, 4)
    assert pp["fmr_at_bozorth3_40"] == 0.25 and pp["fnmr_at_bozorth3_40"] == 0.25
    assert pp["eer"] == pytest.approx(0.25)
    # FMR <= 1 % needs t > 45: FNMR = 1/4 (30 rejected)
    assert pp["fnmr_at_fmr_1pct"] == 0.25 and pp["fnmr_at_fmr_0.1pct"] == 0.25
    assert pp["d_prime"] == pytest.approx(
        abs(52.5 - 15.0) / np.sqrt((np.var([30, 50, 60, 70]) + np.var([0, 5, 10, 45])) / 2))
    # slap-plain: g = 20 80, i = 10 30 (+1 unscored); at 40: FMR 0, FNMR 1/2;
    # t = 30: FMR 1/2, FNMR 1/2 → EER 1/2; FMR <= 1 % at t = 30⁺ → FNMR 1/2
    assert sp["unscored_pairs"] == 1 and (sp["n_genuine"], sp["n_impostor"]) == (2, 2)
    assert sp["fmr_at_bozorth3_40"] == 0.0 and sp["fnmr_at_bozorth3_40"] == 0.5
    assert sp["eer"] == pytest.approx(0.5) and sp["fnmr_at_fmr_1pct"] == 0.5
    assert sp["genuine_mean"] == 50.0 and sp["impostor_mean"] == 20.0
    assert sp["nonmated_pairs_listed"] == 3 and m["nonmated_pairs_listed"] == 7
    assert m["kinds"] == ["plain-plain", "slap-plain"]
    assert (m["n_genuine"], m["n_impostor"]) == (6, 6)      # overall: every scored pair


def test_pair_kind_names():
    assert pair_kind("plain", "plain") == "plain-plain"
    assert pair_kind("plain", "rolled") == pair_kind("rolled", "plain") == "rolled-plain"
    assert pair_kind("plain", "slap") == "slap-plain" and pair_kind("rolled", "latent") == "latent-rolled"


def test_dataset_without_impression_type_is_plain(tmp_path, prints):
    root = tmp_path / "v1"
    write_v2_dataset(root, prints, with_types=False)
    s = evaluate_dataset(root, EvaluationSettings(progress=False, workers=1, write_report=False))
    quality = pd.read_parquet(root / "eval" / "fingerprint_quality.parquet")
    assert (quality["impression_type"] == "plain").all() and len(quality) == 8
    m = s["fingerprint"]["matching"]
    assert m["kinds"] == ["plain-plain"] and m["by_kind"]["plain-plain"]["n_genuine"] == 4
    assert set(s["fingerprint"]["quality"]["by_type"]) == {"plain"}
    assert "slaps" not in s["fingerprint"]


def test_smoke_preset_with_rolled_prints_and_slaps_end_to_end(tmp_path):
    """The real fingerprint stage (smoke preset, rolled prints, slaps) → evaluate."""
    from conftest import mint

    root = tmp_path / "smoke"
    info = mint(root, "fingerprint.slaps=true")
    s = evaluate_dataset(root, EvaluationSettings(progress=False, workers=1))
    fp = s["fingerprint"]
    manifest = pd.read_parquet(root / "manifest" / "fingerprint")
    assert fp["impression_types"] == manifest["impression_type"].value_counts().to_dict()
    assert {"plain", "rolled", "slap"} <= set(fp["impression_types"])
    listed = pd.concat([pd.read_parquet(p) for p in (root / "pairs").glob("*/*.parquet")])
    m = fp["matching"]
    assert set(m["kinds"]) == set(listed["kind"]) >= {"plain-plain", "rolled-plain", "slap-plain"}
    for kind, k in m["by_kind"].items():
        mine = listed[listed["kind"] == kind]
        assert (k["n_genuine"], k["n_impostor"]) == (mine["mated"].sum(), (~mine["mated"]).sum())
        assert k["unscored_pairs"] == 0 and k["genuine_mean"] > k["impostor_mean"], kind
    pairs = pd.read_parquet(root / "eval" / "fingerprint_pairs.parquet")
    slap = pairs[pairs["kind"] == "slap-plain"]
    plain_position = slap["b_sample_id"].map(dict(zip(manifest["sample_id"], manifest["finger_position"])))
    assert len(slap) and (slap["segment_position"] == plain_position).all()
    q = fp["quality"]["by_type"]
    assert q["rolled"]["note"] == QUALITY_NOTES["rolled"] and q["slap"]["n_slaps"] == fp["slaps"]["n_slaps"]
    assert fp["slaps"]["n_slaps"] == fp["impression_types"]["slap"]
    assert fp["slaps"]["boxes_outside"] == 0 and fp["slaps"]["foreground_in_boxes_min"] > 0.9
    page = Path(s["report"]).read_text()
    assert "Pair kind: slap-plain" in page and "Slap segment checks" in page
    assert info["status"] == "complete"
