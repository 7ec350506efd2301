"""Nothing lost, nothing half-written: what a careful user tries (run twice at once, corrupt a
file, fill the disk, ask for a billion fingers, close the pipe) ends in a dataset that
validates or in one sentence with exit 2 (bad input) or 1 (failure), never a traceback.

Real processes, real files. The full-disk cases mount a small tmpfs, so they need root
(CI's containers run as root; elsewhere they are skipped with the reason)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyarrow.dataset as ds
import pytest

from conftest import BIOMINT, REPO, TINY, biomint_env, file_hashes, run_biomint
from pipeline.validate import validate_dataset


def manifest(root: Path):
    return ds.dataset(root / "manifest" / "fingerprint", format="parquet").to_table().sort_by("sample_id")


def fingerprint_of(root: Path) -> dict:
    """What must be identical between two mints of one config: every image and truth file,
    the manifest's key columns and the pairs."""
    table = manifest(root).select(["sample_id", "sha256", "seed", "path", "files"]).to_pylist()
    pairs = {kind.name: sorted(ds.dataset(kind, format="parquet").to_table().to_pylist(), key=lambda r: r["pair_id"])
             for kind in sorted((root / "pairs").iterdir())}
    return {"files": file_hashes(root), "manifest": table, "pairs": pairs}


def assert_one_sentence(result: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    err = result.stderr
    assert result.returncode == code, (result.returncode, result.stdout[-2000:], err[-2000:])
    assert "Traceback" not in err + result.stdout, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("biomint: ")]
    assert len(lines) == 1, err[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def said(result: subprocess.CompletedProcess) -> str:
    """Everything a run printed (Hydra logs to stdout, progress bars and errors go to stderr)."""
    return result.stdout + result.stderr


def leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob(".*.tmp"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict]:
    """The TINY dataset minted once, alone: what every fault case must end in."""
    root = tmp_path_factory.mktemp("faults") / "reference"
    result = run_biomint(*TINY, f"output_dir={root}")
    assert result.returncode == 0, result.stderr
    return root, fingerprint_of(root)


def copy_of(reference, tmp_path: Path) -> Path:
    root = tmp_path / "copy"
    shutil.copytree(reference[0], root)
    return root


# --- two runs at once -------------------------------------------------------------------------

def _race(root: Path, cwd: Path) -> list[subprocess.CompletedProcess]:
    args = [*BIOMINT, *TINY, f"output_dir={root}"]
    env = biomint_env()
    procs = [subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        results.append(subprocess.CompletedProcess(args, proc.returncode, out, err))
    return results


def _check_race(results, root: Path, reference) -> bool:
    """One run mints; the other exits 2 naming the holder (or, if it started after the first
    had finished, finds the dataset complete). True when the second was refused."""
    codes = sorted(r.returncode for r in results)
    assert codes in ([0, 0], [0, 2]), [(r.returncode, r.stderr[-1500:]) for r in results]
    for r in results:
        if r.returncode == 2:
            assert_one_sentence(r, 2, "is in use by biomint process", "wait for it to finish")
        assert "Traceback" not in r.stderr
    assert validate_dataset(root).ok
    assert fingerprint_of(root) == reference[1]
    return codes == [0, 2]


def test_two_runs_on_one_root_at_once_one_mints_and_the_other_exits_2(tmp_path, reference):
    refused = sum(_check_race(_race(tmp_path / f"ds{i}", tmp_path), tmp_path / f"ds{i}", reference)
                  for i in range(2))
    assert refused >= 1, "the two runs never overlapped: the lock was not exercised"


@pytest.mark.slow
def test_two_runs_at_once_ten_times_never_crash_and_end_byte_identical(tmp_path, reference):
    refused = sum(_check_race(_race(tmp_path / f"ds{i}", tmp_path), tmp_path / f"ds{i}", reference)
                  for i in range(10))
    print(f"two runs at once, ten times: the second was refused {refused} times, found the dataset complete {10 - refused}")
    assert refused >= 8


def test_while_another_process_holds_the_root_a_run_exits_2_or_with_wait_true_waits(tmp_path, reference):
    import fcntl

    root = tmp_path / "ds"
    root.mkdir()
    holder = os.open(root / ".biomint-lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)                      # this test is the other process
    os.write(holder, json.dumps({"pid": os.getpid(), "host": "here", "started": 0, "command": "biomint x"}).encode())
    try:
        assert_one_sentence(run_biomint(*TINY, f"output_dir={root}"), 2, f"is in use by biomint process {os.getpid()}",
                            "wait=true")
        env = biomint_env()
        waiting = subprocess.Popen([*BIOMINT, *TINY, f"output_dir={root}", "wait=true"], cwd=tmp_path, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(8)
        assert waiting.poll() is None, "the run with wait=true did not wait"
        assert not (root / "dataset.json").exists()
    finally:
        os.close(holder)                                     # released: the waiting run goes on
    out, _ = waiting.communicate(timeout=300)
    assert waiting.returncode == 0, out[-2000:]
    assert "waiting for it (wait=true)" in out
    assert validate_dataset(root).ok and fingerprint_of(root) == reference[1]


def test_a_lock_left_by_a_killed_run_never_blocks(tmp_path, reference):
    root = tmp_path / "ds"
    proc = subprocess.Popen([*BIOMINT, *TINY, f"output_dir={root}"], cwd=tmp_path, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (root / ".biomint-lock").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert json.loads((root / ".biomint-lock").read_text())["pid"] == proc.pid   # the stale record stays
    result = run_biomint(*TINY, f"output_dir={root}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert fingerprint_of(root) == reference[1]


# --- corruption ---------------------------------------------------------------------------------

def test_a_truncated_manifest_part_is_reported_by_path_and_the_rerun_repairs_it(tmp_path, reference):
    root = copy_of(reference, tmp_path)
    part = root / "manifest" / "fingerprint" / "part-00001.parquet"
    part.write_bytes(part.read_bytes()[:200])
    result = run_biomint("validate", str(root))
    assert result.returncode == 1 and "Traceback" not in result.stderr + result.stdout
    assert "manifest part manifest/fingerprint/part-00001.parquet cannot be read" in result.stdout
    rerun = run_biomint(*TINY, f"output_dir={root}")
    assert rerun.returncode == 0, rerun.stderr
    assert "was complete but is damaged" in said(rerun) and "part-00001.parquet" in said(rerun)
    assert validate_dataset(root).ok and fingerprint_of(root) == reference[1]


def test_corrupt_stats_pairs_and_dataset_json_are_reported_without_a_traceback(tmp_path, reference):
    root = copy_of(reference, tmp_path)
    (root / "manifest" / "fingerprint" / "_stats" / "part-00002.json").write_text("{not json")
    pairs = next((root / "pairs" / "plain-plain").glob("part-*.parquet"))
    pairs.write_bytes(b"PAR1 garbage")
    result = run_biomint("validate", str(root))
    assert result.returncode == 1 and "Traceback" not in result.stderr + result.stdout, result.stderr
    assert "shard 2 (subjects 2..2): manifest/fingerprint/part-00002.parquet or its stats cannot be read" in result.stdout
    assert f"pairs plain-plain: part pairs/plain-plain/{pairs.name} cannot be read" in result.stdout
    (root / "dataset.json").write_text('{"schema_version": 3, "status": "comp')      # cut in half
    assert_one_sentence(run_biomint("validate", str(root)), 2, "dataset.json cannot be read")


def test_a_damaged_complete_dataset_is_repaired_by_the_plain_rerun(tmp_path, reference):
    root = copy_of(reference, tmp_path)
    row = manifest(root).to_pylist()[4]
    (root / row["path"]).unlink()                                                 # an image deleted
    truth = root / row["files"][2]["path"]
    truth.write_bytes(truth.read_bytes()[:-3])                                    # a truth file truncated
    shutil.rmtree(root / "pairs" / "rolled-plain")                                # pairs deleted
    result = run_biomint(*TINY, f"output_dir={root}")
    assert result.returncode == 0, result.stderr
    assert "already complete" not in said(result) and "re-minting shard" in said(result)
    assert "resuming — 2 of 3 shards already minted" in said(result)
    assert validate_dataset(root).ok and fingerprint_of(root) == reference[1]


def test_flipped_or_deleted_truth_files_fail_validate_and_repair_restores_them(tmp_path, reference):
    root = copy_of(reference, tmp_path)
    rows = manifest(root).to_pylist()
    flipped = []
    for row, suffix in ((rows[1], ".ist"), (rows[len(rows) // 2], ".xyt")):
        path = root / next(f["path"] for f in row["files"] if f["path"].endswith(suffix))
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x10                                   # same size: only sha256 can tell
        path.write_bytes(bytes(data))
        flipped.append((row["sample_id"], path.relative_to(root)))
    deleted = next(f["path"] for f in rows[-1]["files"] if f["path"].endswith(".orientation.npy"))
    (root / deleted).unlink()
    result = run_biomint("validate", str(root))
    assert result.returncode == 1
    for sid, path in flipped:
        assert f"sample {sid}: sha256 of {path} differs" in result.stdout
    assert f"sample {rows[-1]['sample_id']}: {deleted} does not exist" in result.stdout
    repaired = run_biomint("repair", str(root))
    assert repaired.returncode == 0, repaired.stderr
    shards = {r["subject_id"] for r in (rows[1], rows[len(rows) // 2], rows[-1])}     # one subject per shard
    assert f"repair: {len(shards)} damaged shard(s) re-minted" in repaired.stdout
    assert validate_dataset(root).ok and fingerprint_of(root) == reference[1]


def test_a_cut_dataset_json_is_replaced_by_overwrite(tmp_path, reference):
    root = copy_of(reference, tmp_path)
    meta = (root / "dataset.json").read_text()
    (root / "dataset.json").write_text(meta[: len(meta) // 2])
    assert_one_sentence(run_biomint(*TINY, f"output_dir={root}"), 2, "cannot be read", "overwrite=true")
    result = run_biomint(*TINY, f"output_dir={root}", "overwrite=true")
    assert result.returncode == 0, result.stderr
    assert validate_dataset(root).ok and fingerprint_of(root) == reference[1]


def test_temporary_files_of_a_killed_run_are_cleaned_not_a_reason_to_refuse(tmp_path, reference):
    root = tmp_path / "ds"
    root.mkdir()
    (root / ".dataset.json.4242.deadbeef.tmp").write_bytes(b"{half")
    result = run_biomint(*TINY, f"output_dir={root}")
    assert result.returncode == 0, result.stderr
    stale = root / "images" / "fingerprint" / "00000001" / ".fp-00000001-02-00.png.4242.cafe.tmp"
    stale.write_bytes(b"\x89PNG half")
    (root / "manifest" / "fingerprint" / "_stats" / "part-00001.json").unlink()   # that shard is redone
    assert run_biomint(*TINY, f"output_dir={root}").returncode == 0
    assert leftovers(root) == []
    assert validate_dataset(root).ok and fingerprint_of(root) == reference[1]


# --- full disks ---------------------------------------------------------------------------------

def _can_mount() -> bool:
    return sys.platform == "linux" and os.geteuid() == 0 and shutil.which("mount") is not None


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs at tmp_path/disk whose size the test sets (and changes) with resize(bytes)."""
    if not _can_mount():
        pytest.skip("needs root to mount a small tmpfs")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")

    def resize(size: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(mount)], check=True)

    try:
        yield mount, resize
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_while_minting_is_one_sentence_and_a_rerun_finishes(small_disk, reference):
    mount, resize = small_disk
    root = mount / "ds"
    resize(600 * 1024)                      # about half of what the dataset needs
    result = run_biomint(*TINY, f"output_dir={root}")
    line = assert_one_sentence(result, 1, "disk full: could not write", "MB free", "rerun the same command")
    assert "more" in line                   # what the rest of the stage needs
    assert "Compute Failed" not in result.stderr and result.stderr.count("Error") <= 1, result.stderr[-3000:]
    assert leftovers(root) == []
    assert json.loads((root / "dataset.json").read_text())["status"] == "in_progress"
    resize(64 * 1024 * 1024)
    again = run_biomint(*TINY, f"output_dir={root}")
    assert again.returncode == 0, again.stderr
    assert validate_dataset(root).ok and fingerprint_of(root) == reference[1]


@pytest.mark.parametrize("left", [0, 8 * 1024], ids=["dataset.json", "pairs"])
def test_disk_full_while_writing_pairs_or_dataset_json(small_disk, tmp_path, left):
    """With the shards minted and the pairs to be (re)written, the disk is filled to `left`
    free bytes: dataset.json (0) or the 30,000-pair tables (8 KiB) cannot be written."""
    mount, resize = small_disk
    root = mount / "ds"
    args = [*TINY, f"output_dir={root}", "pairs.non_mated=30000"]
    assert run_biomint(*args).returncode == 0
    shutil.rmtree(root / "pairs")
    filler = mount / "filler"
    free = shutil.disk_usage(mount).free
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - left))
    result = run_biomint(*args)
    assert_one_sentence(result, 1, "disk full: could not write", "rerun the same command")
    assert leftovers(root) == []
    assert json.loads((root / "dataset.json").read_text())["status"] != "complete" or left == 0
    filler.unlink()
    again = run_biomint(*args)
    assert again.returncode == 0, again.stderr
    assert validate_dataset(root).ok


def test_disk_full_while_evaluating_is_one_sentence_and_leaves_no_half_table(small_disk, reference):
    mount, _ = small_disk
    root = mount / "ds"
    shutil.copytree(reference[0], root)
    filler = mount / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * (shutil.disk_usage(mount).free - 16 * 1024))
    result = run_biomint("evaluate", str(root), "progress=false")
    assert_one_sentence(result, 1, f"disk full: could not write {root}/eval", "MB free")
    assert leftovers(root) == [] and not list((root / "eval").glob("*.tmp"))
    filler.unlink()
    assert run_biomint("evaluate", str(root), "progress=false").returncode == 0
    assert (root / "report" / "index.html").is_file() and (root / "eval" / "summary.json").is_file()


# --- huge counts ---------------------------------------------------------------------------------

def test_a_billion_fingers_start_at_once_with_flat_client_memory(tmp_path):
    root = tmp_path / "huge"
    args = ["dataset=smoke", f"output_dir={root}", "fingerprint.fingers=1000000000",
            "fingerprint.positions=[1,2,3,4,5,6,7,8,9,10]", "cluster.workers=1"]
    proc = subprocess.Popen([*BIOMINT, *args], cwd=tmp_path, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    client = psutil.Process(proc.pid)
    rss, stats = [], root / "manifest" / "fingerprint" / "_stats"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and len(list(stats.glob("*.json"))) < 3:
            rss.append(client.memory_info().rss)
            time.sleep(0.2)
        for _ in range(10):                                        # and while it keeps minting
            rss.append(client.memory_info().rss)
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert len(list(stats.glob("*.json"))) >= 3, "no shard finished within 2 minutes"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["stages"]["fingerprint"]["expected_rows"] == 3 * 10 ** 9
    assert max(rss) < 600e6, f"client RSS peaked at {max(rss) / 1e6:.0f} MB"
    assert rss[-1] - rss[len(rss) // 2] < 50e6, "client memory grows while minting"


def test_counts_beyond_what_sample_ids_hold_are_refused_before_anything_is_written(tmp_path):
    root = tmp_path / "too-many"
    started = time.monotonic()
    result = run_biomint("dataset=smoke", f"output_dir={root}", "fingerprint.fingers=2000000000",
                         "fingerprint.positions=[1,2,3,4,5,6,7,8,9,10]")
    assert_one_sentence(result, 2, "200,000,000 subjects", "100,000,000")
    assert time.monotonic() - started < 60
    assert not (root / "dataset.json").exists()
    for key, value, needle in (("fingerprint.width", 3_000_000_000, "image sides are 1..16384 px"),
                               ("fingerprint.dpi", 40000, "the manifest's dpi is int16"),
                               ("latent.height", 100000, "image sides are 1..16384 px")):
        assert_one_sentence(run_biomint("dataset=smoke", f"output_dir={root}", f"{key}={value}",
                                        "latent.per_finger=1"), 2, f"{key}={value} is not allowed", needle)
    assert not root.exists() or not any(root.iterdir())


# --- commands -------------------------------------------------------------------------------------

def test_regenerate_to_a_directory_or_an_uncreatable_path_is_one_sentence(tmp_path, reference):
    sid = manifest(reference[0]).to_pylist()[0]["sample_id"]
    assert_one_sentence(run_biomint("regenerate", str(reference[0]), sid, str(tmp_path)), 2, "is a directory")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert_one_sentence(run_biomint("regenerate", str(reference[0]), sid, str(blocker / "x.png")), 2,
                        "cannot write", "give a path you can write to")


def test_evaluate_refuses_a_dataset_whose_recorded_pairs_are_missing(tmp_path, reference):
    root = copy_of(reference, tmp_path)
    shutil.rmtree(root / "pairs" / "plain-plain")
    assert_one_sentence(run_biomint("evaluate", str(root), "progress=false", "write_report=false"), 2,
                        "pairs/plain-plain is missing", "biomint repair")


def test_validate_into_a_closed_pipe_ends_quietly(reference):
    command = f"{sys.executable} -m pipeline.cli validate {reference[0]} | true"
    result = subprocess.run(["bash", "-c", f"set -o pipefail; {command}"], cwd=REPO, capture_output=True, text=True)
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr


def test_validate_and_help_start_without_torch(reference):
    # main(), not the script: the script leaves by os._exit (cli.console) before a print
    code = ("import sys; sys.argv = ['biomint', 'validate', %r]\n"
            "from pipeline.cli import main\n"
            "try:\n    main()\n"
            "except SystemExit:\n    pass\n"
            "print('torch imported:', 'torch' in sys.modules)") % str(reference[0])
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert "validate: OK" in out.stdout and "torch imported: False" in out.stdout, out.stdout + out.stderr
    started = time.monotonic()
    helped = run_biomint("--help")
    assert helped.returncode == 0 and "biomint repair" in helped.stdout
    assert time.monotonic() - started < 10


def test_an_atomic_write_makes_missing_folders_and_a_failed_one_leaves_nothing(tmp_path):
    from pipeline.manifest import write_bytes_atomic

    target = tmp_path / "images" / "fingerprint" / "00000001" / "fp.png"
    write_bytes_atomic(target, b"first")                   # folders that do not exist yet
    write_bytes_atomic(target, b"second")                  # folder exists: replaced whole
    assert target.read_bytes() == b"second"
    shutil.rmtree(tmp_path / "images")                      # removed between two writes
    write_bytes_atomic(target, b"third")
    assert target.read_bytes() == b"third"

    with pytest.raises(TypeError):
        write_bytes_atomic(target, ["not bytes"])           # the body fails after the open
    assert target.read_bytes() == b"third"
    assert sorted(p.name for p in target.parent.iterdir()) == ["fp.png"]   # no temporary left
