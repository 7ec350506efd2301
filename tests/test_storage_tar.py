"""storage=tar: one WebDataset tar per shard, readable by `webdataset` and plain `tarfile`
(no biomint code), byte-identical in its images and truth to storage=files, and checked,
regenerated, evaluated, repaired and resumed like it.

Smoke-sized datasets minted in-process (cluster.workers=1) with fingerprints and latents."""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from conftest import TINY, compose_overrides, kill_after_shards, run_biomint
from pipeline.errors import ConfigError
from pipeline.manifest import load_dataset_json, split_stored
from pipeline.validate import regenerate_sample, validate_dataset

LATENTS = ["latent.per_finger=1", "latent.class_mix=[1,0,0]"]
STAGES = ("fingerprint", "latent")


def mint(root: Path, *overrides: str) -> dict:
    from pipeline.runner import run

    return run(compose_overrides(*TINY, *LATENTS, f"output_dir={root}", "cluster.workers=1", *overrides))


def rows(root: Path, stage: str = "fingerprint") -> list[dict]:
    return ds.dataset(root / "manifest" / stage, format="parquet").to_table().sort_by("sample_id").to_pylist()


def all_rows(root: Path) -> list[dict]:
    return [row for stage in STAGES for row in rows(root, stage)]


def tars(root: Path) -> list[Path]:
    return sorted((root / "shards").rglob("*.tar"))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def tar_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("storage") / "tar"
    mint(root, "storage=tar")
    return root


@pytest.fixture(scope="module")
def files_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("storage") / "files"
    mint(root)
    return root


# --- layout and what a reader without biomint sees -------------------------------------------

def test_a_tar_dataset_validates_and_holds_one_tar_per_shard_and_no_image_files(tar_root):
    report = validate_dataset(tar_root)
    assert report.ok, report.summary()
    meta = load_dataset_json(tar_root)
    assert meta["config"]["storage"] == "tar"
    for stage in STAGES:
        assert [p.name for p in (tar_root / "shards" / stage).glob("*.tar")] and \
            sorted(p.stem for p in (tar_root / "shards" / stage).glob("*.tar")) == \
            sorted(p.stem for p in (tar_root / "manifest" / stage).glob("part-*.parquet"))
    assert not (tar_root / "images").exists() and not (tar_root / "truth").exists()
    for row in all_rows(tar_root):
        tar, member = split_stored(row["path"])
        stage = "latent" if row["modality"] == "latent_fingerprint" else "fingerprint"
        assert tar.startswith(f"shards/{stage}/part-") and tar.endswith(".tar")
        assert member == f"{row['sample_id']}.png"
        assert row["files"][0] == {"path": row["path"], "sha256": row["sha256"], "bytes": row["files"][0]["bytes"]}
        assert row["files"][-1]["path"] == f"{tar}#{row['sample_id']}.json"
        assert row["truth_path"] in [f["path"] for f in row["files"]]


def test_webdataset_iterates_every_sample_and_each_member_has_the_manifest_sha256(tar_root):
    import webdataset as wds

    expected = {row["sample_id"]: {split_stored(f["path"])[1].split(".", 1)[1]: f["sha256"] for f in row["files"]}
                for row in all_rows(tar_root)}
    seen = {}
    for sample in wds.WebDataset([str(p) for p in tars(tar_root)], shardshuffle=False):
        members = {k: v for k, v in sample.items() if not k.startswith("__")}
        seen[sample["__key__"]] = {ext: sha(data) for ext, data in members.items()}
        assert json.loads(members["json"])["sample_id"] == sample["__key__"]
    assert seen == expected
    assert {"png", "ist", "xyt", "json", "orientation.npy", "singularities.json"} <= set(seen["fp-00000000-02-00"])
    assert {"png", "xyt", "json", "mask.png", "orientation.npy"} <= set(seen["fp-00000000-02-l00"])


def test_plain_tarfile_reads_every_member_sorted_by_sample_with_fixed_headers(tar_root):
    by_path = {f["path"]: f for row in all_rows(tar_root) for f in row["files"]}
    listed = 0
    for path in tars(tar_root):
        relative = path.relative_to(tar_root).as_posix()
        with tarfile.open(path) as tar:
            members = tar.getmembers()
            names = [m.name for m in members]
            assert names == sorted(names, key=lambda n: (n.split(".", 1)[0], n.split(".", 1)[1]))
            for m in members:
                assert (m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode, m.type) == \
                    (0, 0, 0, "", "", 0o644, tarfile.REGTYPE)
                entry = by_path[f"{relative}#{m.name}"]
                data = tar.extractfile(m).read()
                assert (sha(data), len(data)) == (entry["sha256"], entry["bytes"])
                listed += 1
    assert listed == len(by_path)


def test_the_json_member_is_the_manifest_row_without_files(tar_root):
    row = rows(tar_root)[3]
    tar, member = split_stored(row["path"])
    with tarfile.open(tar_root / tar) as t:
        described = json.loads(t.extractfile(f"{row['sample_id']}.json").read())
    assert described == json.loads(json.dumps({k: v for k, v in row.items() if k != "files"}, default=str))


def test_images_and_truth_are_byte_identical_to_a_files_run_of_the_same_seed(tar_root, files_root):
    def by_member(root):
        return {row["sample_id"]: {f["path"].rsplit("/", 1)[-1].split("#")[-1]: f["sha256"] for f in row["files"]}
                for row in all_rows(root)}

    in_tars, in_files = by_member(tar_root), by_member(files_root)
    assert in_tars.keys() == in_files.keys()
    for sid, files in in_files.items():
        tar_files = dict(in_tars[sid])
        assert tar_files.pop(f"{sid}.json")          # the manifest row: only in a tar
        assert tar_files == files, sid
    keep = ("sample_id", "sha256", "seed", "width", "height", "params")
    for stage in STAGES:
        assert [{k: r[k] for k in keep} for r in rows(tar_root, stage)] == \
               [{k: r[k] for k in keep} for r in rows(files_root, stage)]
    for kind in sorted(p.name for p in (files_root / "pairs").iterdir()):
        assert ds.dataset(tar_root / "pairs" / kind).to_table().to_pylist() == \
               ds.dataset(files_root / "pairs" / kind).to_table().to_pylist()


@pytest.mark.slow      # a LocalCluster of two worker processes: 8-25 s on a shared machine
def test_two_workers_write_byte_identical_tars(tar_root, tmp_path):
    mint(tmp_path / "two", "storage=tar", "cluster.workers=2")
    assert [(p.relative_to(tmp_path / "two"), sha(p.read_bytes())) for p in tars(tmp_path / "two")] == \
           [(p.relative_to(tar_root), sha(p.read_bytes())) for p in tars(tar_root)]


def test_a_second_mint_writes_byte_identical_tars(tar_root, tmp_path):
    mint(tmp_path / "again", "storage=tar")
    assert [(p.relative_to(tmp_path / "again"), p.read_bytes()) for p in tars(tmp_path / "again")] == \
           [(p.relative_to(tar_root), p.read_bytes()) for p in tars(tar_root)]


# --- the commands ---------------------------------------------------------------------------

def test_regenerate_of_a_tar_sample_is_byte_identical(tar_root, tmp_path):
    for sid in ("fp-00000001-07-r00", "fp-00000002-02-01", "fp-00000000-07-l00"):
        ok, row, _ = regenerate_sample(tar_root, sid, tmp_path / f"{sid}.png")
        assert ok, sid
        tar, member = split_stored(row["path"])
        with tarfile.open(tar_root / tar) as t:
            assert (tmp_path / f"{sid}.png").read_bytes() == t.extractfile(member).read()


def test_evaluate_scores_a_tar_dataset_as_the_same_files_dataset(tar_root, files_root, tmp_path):
    from evaluation import EvaluationSettings, evaluate_dataset

    scores = {}
    for name, root in (("tar", tar_root), ("files", files_root)):
        copy = tmp_path / name
        shutil.copytree(root, copy)
        evaluate_dataset(copy, EvaluationSettings(progress=False, workers=1))
        quality = ds.dataset(copy / "eval" / "fingerprint_quality.parquet").to_table().drop_columns(["seconds"])
        scores[name] = (quality.sort_by("sample_id").to_pylist(),
                        ds.dataset(copy / "eval" / "fingerprint_pairs.parquet").to_table().sort_by("pair_id").to_pylist())
        assert (copy / "report" / "index.html").is_file()
    assert scores["tar"] == scores["files"]


def test_ansi_nist_export_of_a_tar_dataset_is_byte_identical_to_the_files_one(tar_root, files_root, tmp_path):
    import datetime as dt

    from pipeline.export import export_ansi_nist

    when = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    for name, root in (("tar", tar_root), ("files", files_root)):
        export_ansi_nist(root, out_dir=tmp_path / name, progress=False, when=when)
    exported = {name: {p.name: p.read_bytes() for p in sorted((tmp_path / name).glob("*.an2"))} for name in ("tar", "files")}
    assert exported["tar"] and exported["tar"] == exported["files"]


def _flip_member_byte(root: Path, path: str) -> None:
    tar, member = split_stored(path)
    with tarfile.open(root / tar) as t:
        info = t.getmember(member)
    with open(root / tar, "r+b") as f:                 # same size: only a sha256 can tell
        f.seek(info.offset_data + info.size // 2)
        byte = f.read(1)
        f.seek(-1, io.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x10]))


def test_a_corrupted_member_is_reported_by_validate_and_fixed_by_repair(tar_root, tmp_path):
    from pipeline.repair import repair_dataset

    root = tmp_path / "damaged"
    shutil.copytree(tar_root, root)
    row = rows(root)[4]
    xyt = next(f["path"] for f in row["files"] if f["path"].endswith(".xyt"))
    _flip_member_byte(root, xyt)
    report = validate_dataset(root)
    assert f"sample {row['sample_id']}: sha256 of {xyt} differs from the manifest (member changed or corrupt)" \
        in report.problems, report.summary()
    summary = repair_dataset(root, ["cluster.workers=1"])
    assert "repair: 1 damaged shard(s) re-minted (fingerprint 1)" in summary
    assert validate_dataset(root).ok
    assert [p.read_bytes() for p in tars(root)] == [p.read_bytes() for p in tars(tar_root)]


def test_a_truncated_tar_is_re_minted_by_the_plain_rerun(tar_root, tmp_path):
    root = tmp_path / "cut"
    shutil.copytree(tar_root, root)
    cut = tars(root)[1]
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 3])
    assert not validate_dataset(root).ok
    mint(root, "storage=tar")
    assert validate_dataset(root).ok
    assert [p.read_bytes() for p in tars(root)] == [p.read_bytes() for p in tars(tar_root)]


def test_a_shard_that_fails_while_writing_its_tar_leaves_neither_tar_nor_temporary(tmp_path, monkeypatch):
    from pipeline.sharding import Shard
    from pipeline.worker import mint_shard

    config = compose_overrides(*TINY, f"output_dir={tmp_path / 'ds'}")
    from pipeline.config import to_config

    stage_config = to_config(config).fingerprint
    written = []

    def fail_after_two(self, info, fileobj=None):
        if len(written) == 2:
            raise OSError(28, "No space left on device")
        written.append(info.name)
        return original(self, info, fileobj)

    original = tarfile.TarFile.addfile
    monkeypatch.setattr(tarfile.TarFile, "addfile", fail_after_two)
    with pytest.raises(OSError):
        mint_shard("fingerprint", stage_config, str(tmp_path / "ds"), 0, Shard(0, 0, 1), "tar")
    assert written and not list((tmp_path / "ds").rglob("*.tar"))
    assert not [p for p in (tmp_path / "ds").rglob("*") if p.is_file()]   # no spool, no temporary, no part
    monkeypatch.setattr(tarfile.TarFile, "addfile", original)
    stats = mint_shard("fingerprint", stage_config, str(tmp_path / "ds"), 0, Shard(0, 0, 1), "tar")
    assert stats["files"][-1]["path"] == "shards/fingerprint/part-00000.tar"


def test_a_run_killed_mid_way_resumes_and_validates(tmp_path):
    root, fingers = tmp_path / "ds", 10
    args = [*TINY, f"output_dir={root}", f"fingerprint.fingers={fingers}", "fingerprint.positions=[2]",
            "dataset.shard_size=1", "cluster.workers=1", "storage=tar"]
    stats_dir = root / "manifest" / "fingerprint" / "_stats"
    done = kill_after_shards(args, stats_dir, 3, tmp_path, timeout=120)
    assert 3 <= done < fingers, "the run was not killed half-way"
    assert load_dataset_json(root)["status"] == "in_progress"
    result = run_biomint(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"resuming — {done} of {fingers} shards already minted" in result.stdout + result.stderr
    assert validate_dataset(root).ok
    assert len(tars(root)) == fingers and not list(root.rglob(".*.tmp"))
    assert len(rows(root)) == fingers * 3


# --- the config -----------------------------------------------------------------------------

def test_a_bad_storage_value_is_one_sentence_listing_the_choices():
    from pipeline.precheck import precheck_overrides

    with pytest.raises(ConfigError) as error:
        precheck_overrides([*TINY, "storage=zip", "output_dir=/tmp/biomint-never-written"])
    assert str(error.value).startswith("storage=zip is not allowed: one of files, tar")
    assert "\n" not in str(error.value)


def test_a_root_minted_with_tar_refuses_storage_files_without_overwrite(tar_root, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(tar_root, root)
    with pytest.raises(ConfigError, match=r"storage: 'tar' → 'files'"):
        mint(root)


# --- faces: a stage with its own .json truth and files of no one sample ----------------------

from test_face_stage import tiny_face_config  # noqa: E402,F401  (the fixture: a tiny random network)


def test_a_face_shard_in_a_tar_keeps_its_truth_json_beside_the_manifest_row(tmp_path, tiny_face_config):
    import webdataset as wds

    from pipeline.manifest import read_stored
    from pipeline.sharding import Shard
    from pipeline.worker import mint_shard

    root = tmp_path / "faces"
    stats = mint_shard("face", tiny_face_config, str(root), 7, Shard(0, 0, 3), "tar")
    face_rows = ds.dataset(root / "manifest" / "face", format="parquet").to_table().to_pylist()
    shard_files = [f["path"] for f in stats["files"]]
    assert shard_files[-1] == "shards/face/part-00000.tar"
    assert {"truth/face/00000000/identity.npz", "truth/face/_gate/part-00000.json"} <= set(shard_files)
    for path in shard_files[:-1]:                        # files of no one sample stay plain files
        assert (root / path).is_file()
    by_key = {s["__key__"]: s for s in wds.WebDataset([str(root / shard_files[-1])], shardshuffle=False)}
    assert set(by_key) == {r["sample_id"] for r in face_rows}
    for row in face_rows:
        sample = by_key[row["sample_id"]]
        assert {"png", "aligned112.png", "truth.json", "json"} <= set(sample)
        assert sha(sample["png"]) == row["sha256"]
        assert row["truth_path"].endswith(f"#{row['sample_id']}.truth.json")
        truth = json.loads(read_stored(root / row["truth_path"]))
        assert truth["aligned_112"] == row["params"]["aligned_path"] == \
            f"shards/face/part-00000.tar#{row['sample_id']}.aligned112.png"
        assert read_stored(root / truth["aligned_112"]) == sample["aligned112.png"]
        assert json.loads(sample["json"])["params"]["aligned_path"] == truth["aligned_112"]


def test_plan_counts_one_tar_and_one_stats_file_per_shard(tar_root, tmp_path):
    import re

    planned = run_biomint("plan", *TINY, *LATENTS, "storage=tar", f"output_dir={tmp_path / 'never'}")
    assert planned.returncode == 0, planned.stderr
    for stage in STAGES:
        line = next(x for x in planned.stdout.splitlines() if x.strip().startswith(f"{stage}:"))
        files = int(re.search(r"([\d,]+) files", line).group(1).replace(",", ""))
        size = float(re.search(r"files, ([\d.,]+) kB on disk", line).group(1).replace(",", ""))
        on_disk = list((tar_root / "shards" / stage).glob("*.tar")) + \
            list((tar_root / "manifest" / stage / "_stats").glob("*.json"))
        assert files == len(on_disk)
        written = sum(p.stat().st_size for p in on_disk) / 1000
        assert 0.6 * written < size < 1.5 * written, (stage, size, written)
