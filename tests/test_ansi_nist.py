"""ANSI/NIST-ITL 1-2011 export of a minted smoke dataset with rolled prints and slaps, read
back with the independent `nistitl` parser; the pure encoder on its own."""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import io
import json
import shutil
import subprocess
import sys

import nistitl
import numpy as np
import pytest
from PIL import Image

from conftest import BIOMINT, REPO, compose_overrides
from pipeline import ansi_nist
from pipeline.errors import ConfigError, ManifestError
from pipeline.export import dataset_time, export_ansi_nist, transaction_images
from pipeline.manifest import read_manifest


@pytest.fixture(scope="module")
def minted(tmp_path_factory):
    """The smoke preset (2 subjects, fingers 2 and 7: plain, rolled, slaps 13 and 14) and its
    PNG export."""
    from pipeline.runner import run

    root = tmp_path_factory.mktemp("ansi") / "smoke"
    run(compose_overrides("dataset=smoke", "fingerprint.slaps=true", "cluster.workers=1", f"output_dir={root}"))
    result = export_ansi_nist(root, progress=False)
    rows = read_manifest(root, "fingerprint").to_pylist()
    return root, result, {r["sample_id"]: r for r in rows}


def parse(path):
    message = nistitl.Message()
    message.parse(path.read_bytes())   # checks every LEN and that CNT lists every record
    return message


def items(field):
    """A parsed field as a list of subfields, each a list of strings."""
    value = field.value
    if isinstance(value, str):
        return [[value]]
    return [v if isinstance(v, list) else [v] for v in value]


def transactions(root):
    return sorted((root / "export" / "ansi_nist").glob("*.an2"))


def test_every_transaction_parses_and_cnt_lists_its_records(minted):
    root, result, rows = minted
    files = transactions(root)
    subjects = sorted({r["subject_id"] for r in rows.values()})
    assert [f.name for f in files] == [f"{s:08d}.an2" for s in subjects]
    assert result["transactions"] == len(files) == 2 and result["directory"] == str(root / "export" / "ansi_nist")
    total = 0
    for subject, path in zip(subjects, files):
        message = parse(path)
        records = list(message)
        total += len(records)
        header = records[0]
        cnt = items(header[3])
        assert cnt[0] == ["1", str(len(records) - 1)]
        assert [(int(t), int(i)) for t, i in cnt[1:]] == [(r.type, int(r.IDC)) for r in records[1:]]
        assert header[2].value == "0500" and header[4].value == "CAR" and header[9].value == f"SMOKE{subject:08d}"
        assert (header[11].value, header[12].value) == ("00.00", "19.69")
        assert [r.type for r in records[:2]] == [1, 2] and {r.type for r in records[2:]} == {9, 14}
        user = records[1]
        meta = json.loads((root / "dataset.json").read_text())
        assert (user[3].value, user[4].value, user[5].value) == (str(subject), str(meta["seed"]), "smoke")
    assert result["records"] == total


def test_images_are_the_dataset_files_and_slap_segments_match(minted):
    root, _, rows = minted
    for path in transactions(root):
        images = [r for r in parse(path) if r.type == 14]
        ids = [r[20].value for r in images]
        subject = int(path.stem)
        assert ids == [r["sample_id"] for r in transaction_images([r for r in rows.values()
                                                                    if r["subject_id"] == subject])]
        kinds = [rows[i]["impression_type"] for i in ids]
        assert kinds.count("slap") == 2 and "rolled" in kinds and "plain" not in kinds  # every finger rolled
        assert [int(r.IDC) for r in images] == list(range(1, len(images) + 1))
        for record in images:
            row = rows[record[20].value]
            data = record[999].value
            assert hashlib.sha256(data).hexdigest() == row["sha256"]
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))),
                                  np.asarray(Image.open(root / row["path"])))
            assert (record[6].value, record[7].value, record[11].value, record[12].value) == \
                (str(row["width"]), str(row["height"]), "PNG", "8")
            assert (record[8].value, record[9].value, record[10].value) == ("1", "500", "500")
            assert record[13].value == str(row["finger_position"])
            assert record[3].value == str(row["params"]["ansi_nist_impression_code"])
            if row["impression_type"] == "slap":
                assert record[13].value in ("13", "14") and record[3].value in ("0", "2")
                expected = [[str(s[k]) for k in ("position", "x0", "x1", "y0", "y1")]
                            for s in row["params"]["segments"]]
                assert items(record[21]) == expected and expected
            else:
                assert record[21] is None


def test_minutiae_records_hold_the_ground_truth(minted):
    root, _, rows = minted
    units = 2540 / 500
    for path in transactions(root):
        records = list(parse(path))
        image_of = {int(r.IDC): rows[r[20].value] for r in records if r.type == 14}
        seen: dict[int, list] = {}
        for record in (r for r in records if r.type == 9):
            row = image_of[int(record.IDC)]
            assert record[4].value == "U" and record[3].value == str(row["params"]["ansi_nist_impression_code"])
            position = int(record[302].value)
            minutiae = items(record[331]) if record[331] is not None else []
            roi = [int(v) for v in items(record[300])[0]]
            stem = root / row["truth_path"][: -len(".ist")]
            if row["impression_type"] == "slap":
                entries = json.loads(stem.with_name(stem.name + ".segments.json").read_text())
                truth = {e["position"]: e for e in entries}
                expected = np.asarray(truth[position]["minutiae"], dtype=float).reshape(-1, 4)
                offset = roi[2:4] or [0, 0]
            else:
                lines = stem.with_name(stem.name + ".xyt").read_text().split("\n")
                expected = np.asarray([[float(v) for v in line.split()] for line in lines if line], float)
                expected[:, 2] = np.radians(expected[:, 2])
                assert position == row["finger_position"] and len(roi) == 2
                offset = [0, 0]
            assert len(minutiae) == len(expected) > 0
            got = np.asarray([[int(m[0]) + offset[0], int(m[1]) + offset[1]] for m in minutiae])
            assert np.all(np.abs(got - expected[:, :2] * units) <= 1)   # 10 µm units, origin top-left
            theta = np.asarray([int(m[2]) for m in minutiae])
            assert np.all(np.abs((theta - np.degrees(expected[:, 2]) + 180) % 360 - 180) <= 0.5)
            assert all(m[3] in "EB" and m[4:] == ["0", "0"] for m in minutiae)
            seen.setdefault(int(record.IDC), []).append(position)
        for idc, row in image_of.items():   # one Type-9 per finger of every image
            fingers = [s["position"] for s in row["params"]["segments"]] if row["impression_type"] == "slap" \
                else [row["finger_position"]]
            assert sorted(seen[idc]) == sorted(fingers)


def test_export_is_deterministic_and_dated_by_the_dataset(minted, tmp_path):
    root, _, _ = minted
    export_ansi_nist(root, tmp_path / "again", progress=False)
    assert {p.name: p.read_bytes() for p in (tmp_path / "again").glob("*.an2")} == \
        {p.name: p.read_bytes() for p in transactions(root)}
    when = dataset_time(root, json.loads((root / "dataset.json").read_text()))
    header = parse(transactions(root)[0])[0]
    assert (header[5].value, header[14].value) == (when.strftime("%Y%m%d"), when.strftime("%Y%m%d%H%M%SZ"))
    fixed = dt.datetime(2020, 2, 29, 12, 0, tzinfo=dt.timezone.utc)
    export_ansi_nist(root, tmp_path / "dated", progress=False, when=fixed)
    message = parse(sorted((tmp_path / "dated").glob("*.an2"))[0])
    assert message[0][5].value == "20200229" and {r[5].value for r in message if r.type == 14} == {"20200229"}


def test_wsq_export_decodes_close_to_the_png(minted, tmp_path):
    import wsq  # noqa: F401  (the Pillow plugin)

    root, _, rows = minted
    result = export_ansi_nist(root, tmp_path, compression="wsq", progress=False)
    assert result["compression"] == "wsq" and result["transactions"] == 2
    for record in (r for r in parse(sorted(tmp_path.glob("*.an2"))[0]) if r.type == 14):
        row = rows[record[20].value]
        assert record[11].value == "WSQ20"
        decoded = np.asarray(Image.open(io.BytesIO(record[999].value)), dtype=float)
        assert decoded.shape == (row["height"], row["width"])
        assert np.abs(decoded - np.asarray(Image.open(root / row["path"]), dtype=float)).mean() < 8


def test_plain_print_only_for_a_finger_without_rolled(minted):
    _, _, rows = minted
    subject0 = [r for r in rows.values() if r["subject_id"] == 0]
    no_rolled_2 = [r for r in subject0 if not (r["impression_type"] == "rolled" and r["finger_position"] == 2)]
    chosen = [(r["finger_position"], r["impression_type"], r["impression"]) for r in transaction_images(no_rolled_2)]
    assert chosen == [(2, "plain", 0), (7, "rolled", 0), (13, "slap", 0), (14, "slap", 0)]


def test_bad_input_is_one_sentence(minted, tmp_path):
    root, _, rows = minted
    with pytest.raises(ManifestError, match="is not a biomint dataset"):
        export_ansi_nist(tmp_path, progress=False)
    with pytest.raises(ConfigError, match="unknown compression 'jpeg'.*png, wsq"):
        export_ansi_nist(root, tmp_path / "x", compression="jpeg", progress=False)
    (tmp_path / "dataset.json").write_text(json.dumps({"status": "in_progress"}))
    with pytest.raises(ManifestError, match="not 'complete'"):
        export_ansi_nist(tmp_path, progress=False)
    copy = tmp_path / "copy"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("export"))
    rolled = next(r for r in rows.values() if r["impression_type"] == "rolled")
    (copy / rolled["path"]).write_bytes((copy / rolled["path"]).read_bytes()[:-1])
    with pytest.raises(ManifestError, match=f"does not match the manifest sha256 of {rolled['sample_id']}"):
        export_ansi_nist(copy, progress=False)
    result = subprocess.run([*BIOMINT, "export-ansi-nist", str(root), "--compression", "jpeg"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("biomint: unknown compression 'jpeg'")


def test_cli_exports_and_refuses_a_folder_that_is_not_a_dataset(minted, tmp_path, monkeypatch, capsys):
    from pipeline import cli

    root, _, _ = minted
    monkeypatch.setattr(sys, "argv", ["biomint", "export-ansi-nist", str(root), "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 0 and "export-ansi-nist: 2 transactions" in capsys.readouterr().out
    assert len(list((tmp_path / "out").glob("*.an2"))) == 2
    monkeypatch.setattr(sys, "argv", ["biomint", "export-ansi-nist", str(tmp_path / "missing")])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("biomint: ") and "is not a biomint dataset" in err


def test_encoder_lengths_separators_and_limits():
    header = ansi_nist.TransactionHeader(tcn="T1", time=dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc))
    image = ansi_nist.FingerImage(idc=1, position=13, impression_code=0, width=40, height=30, ppi=500,
                                  compression="PNG", data=b"\x1c\x1d\x1e\x1f14.999:" * 50,
                                  capture_date=dt.date(2024, 5, 6),
                                  segments=(ansi_nist.Segment(2, 0, 20, 1, 29), ansi_nist.Segment(3, 20, 40, 0, 30)))
    finger = ansi_nist.FingerMinutiae(idc=1, position=2, impression_code=0, ppi=500, roi=(0, 1, 20, 29),
                                      minutiae=np.array([[10.0, 11.0, np.pi / 2, 1], [0.0, 1.0, 0.0, 0]]))
    empty = ansi_nist.FingerMinutiae(idc=1, position=3, impression_code=0, ppi=500, roi=(20, 0, 40, 30),
                                     minutiae=np.zeros((0, 4)))
    data = ansi_nist.encode_transaction(header, [ansi_nist.user_text_record({3: "x"}),
                                                 ansi_nist.minutiae_record(finger),
                                                 ansi_nist.minutiae_record(empty), ansi_nist.image_record(image)])
    message = nistitl.Message()
    message.parse(data)
    records = list(message)
    offset = 0
    for record in records:   # LEN counts the record's bytes, FS included
        length = int(record[1].value)
        assert data[offset:].startswith(f"{record.type}.001:{length}".encode())
        assert data[offset + length - 1:offset + length] == ansi_nist.FS
        offset += length
    assert offset == len(data)
    assert records[4][999].value == image.data
    assert items(records[2][300]) == [["102", "142", "0", "5"]]    # 20 x 28 px from (0, 1): 10 µm units
    assert items(records[2][331]) == [["51", "51", "90", "B", "0", "0"], ["0", "0", "0", "E", "0", "0"]]
    assert records[3][331] is None and records[3][334].value == "Y"
    with pytest.raises(ValueError, match="IDC 100"):
        ansi_nist.encode_record(ansi_nist.Record(14, 100, {3: 0}))
    with pytest.raises(ValueError, match="control character"):
        ansi_nist.encode_record(ansi_nist.user_text_record({3: "a\x1eb"}))
    with pytest.raises(ValueError, match="outside"):
        ansi_nist.image_record(dataclasses.replace(image, segments=(ansi_nist.Segment(2, 0, 41, 0, 30),)))
