"""`biomint-face-boundaries`: fit InterFaceGAN boundaries for a face checkpoint.

The fitting lives in generators/face/fit_boundaries.py; this command only joins it to the
evaluation's face embedder (generators/ does not import evaluation/) and maps bad input to
exit 2 with one sentence.
"""
from __future__ import annotations

import sys

from pipeline.errors import CheckpointError, ConfigError


def fit_boundaries_main(argv: list[str] | None = None) -> int:
    """Parse `argv` (see `biomint-face-boundaries --help`), fit, save; 0 on success, 2 on bad input."""
    from evaluation.face_embedding import make_face_embedder
    from generators.face.fit_boundaries import main

    try:
        return main(argv, lambda name, onnx: make_face_embedder(name, onnx_path=onnx))
    except (CheckpointError, ConfigError, FileNotFoundError, ValueError) as e:
        print(f"biomint-face-boundaries: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(fit_boundaries_main())
