"""1:N protocol files at scale: gallery and probes of 200,000 fingers (8 plain + 1 rolled each,
1.8 M manifest rows) plus 1,000,000 distractor fingers, written by `write_protocol` from
manifest parts the way a minted dataset holds them, in a fresh process (its peak RSS is the
client's cost). The manifest is synthetic (ids, paths, columns as the stages write them), made
in another process first.

Run:  .venv/bin/python -m pytest -m bench tests/bench/bench_protocol.py -s
Writes tests/bench/results/protocol.json.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.bench

RESULTS = Path(__file__).parent / "results"
FINGERS, DISTRACTORS, PLAIN, SUBJECTS_PER_PART = 200_000, 1_000_000, 8, 1_000

MAKE = r"""
import sys
from pathlib import Path
import numpy as np, pyarrow as pa, pyarrow.parquet as pq
root, fingers, distractors, plain, per_part = Path(sys.argv[1]), *map(int, sys.argv[2:6])
def part(stage, index, first, last, types):
    subject = np.repeat(np.arange(first, last), 10 * len(types))
    position = np.tile(np.repeat(np.arange(1, 11), len(types)), last - first)
    kind = [t for t, _ in types] * (10 * (last - first))
    k = [i for _, i in types] * (10 * (last - first))
    prefix = {"plain": "", "rolled": "r"}
    sid = [f"fp-{s:08d}-{p:02d}-{prefix[t]}{i:02d}" for s, p, t, i in zip(subject.tolist(), position.tolist(), kind, k)]
    table = pa.table({"sample_id": sid, "subject_id": pa.array(subject, pa.int64()),
                      "finger_position": pa.array(position, pa.int8()), "impression_type": kind,
                      "impression": pa.array(k, pa.int16()),
                      "path": [f"images/fingerprint/{s:08d}/{i}.png" for s, i in zip(subject.tolist(), sid)]})
    out = root / "manifest" / stage / f"part-{index:05d}.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out, compression="zstd")
types = [("plain", i) for i in range(plain)] + [("rolled", 0)]
s = fingers // 10
for i, first in enumerate(range(0, s, per_part)):
    part("fingerprint", i, first, min(first + per_part, s), types)
for i, first in enumerate(range(s, s + distractors // 10, per_part)):
    part("protocol", i, first, min(first + per_part, s + distractors // 10), [("rolled", 0)])
"""

RUN = r"""
import json, resource, sys, time
from pathlib import Path
from pipeline.protocol import write_protocol
from pipeline.stages import fingerprint, protocol
root, fingers, distractors, plain = Path(sys.argv[1]), *map(int, sys.argv[2:5])
config = protocol.Config(kind="open_set", distractors=distractors, non_mated_share=0.1,
                         fingerprint=fingerprint.Config(fingers=fingers, impressions=plain, rolled=1))
t, cpu = time.perf_counter(), time.process_time()
meta = write_protocol(root, config, 0)
seconds = time.perf_counter() - t
print(json.dumps({"seconds": round(seconds, 2), "cpu_seconds": round(time.process_time() - cpu, 2),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                  "gallery_rows": meta["files"]["gallery"]["rows"], "probe_rows": meta["files"]["probes"]["rows"],
                  "held_out_fingers": meta["held_out_fingers"],
                  "bytes": {n: (root / e["path"]).stat().st_size for n, e in meta["files"].items()}}))
"""


def test_protocol_files_at_scale(tmp_path):
    args = [str(tmp_path), str(FINGERS), str(DISTRACTORS), str(PLAIN)]
    subprocess.run([sys.executable, "-c", MAKE, *args, str(SUBJECTS_PER_PART)], check=True)
    out = subprocess.run([sys.executable, "-c", RUN, *args], check=True, capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result.update({"fingers": FINGERS, "distractors": DISTRACTORS, "manifest_rows": FINGERS * (PLAIN + 1) + DISTRACTORS,
                   "rows_per_second": round((FINGERS * (PLAIN + 1) + DISTRACTORS) / result["seconds"])})
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "protocol.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    assert result["gallery_rows"] == FINGERS - FINGERS // 10 + DISTRACTORS
    assert result["probe_rows"] == FINGERS * PLAIN + FINGERS // 10       # + the held-out fingers' rolled prints
    assert result["peak_rss_mb"] < 1024
