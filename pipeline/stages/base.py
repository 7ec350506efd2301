"""What every stage shares: the per-shard context and the file writers."""
from __future__ import annotations

import functools
import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.manifest import sha256_bytes, write_bytes_atomic


@dataclass
class StageContext:
    root: Path                     # dataset root
    seed: int                      # dataset seed
    device: str = "cpu"            # resolved torch device of this worker ("cpu", "cuda:0")
    dropped: list[dict] = field(default_factory=list)

    def record_dropped(self, sample_id: str, reason: str) -> None:
        self.dropped.append({"sample_id": sample_id, "reason": reason})

    def write(self, relative_path: str, data: bytes) -> str:
        """Write a file of the dataset atomically; returns its sha256."""
        write_bytes_atomic(self.root / relative_path, data)
        return sha256_bytes(data)


def stage_device(config) -> str:
    """The `device` a stage config asks for ("auto" when it has none); configs may be dicts."""
    value = config.get("device") if isinstance(config, dict) else getattr(config, "device", None)
    return str(value or "auto")


def image_png_bytes(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 image [H, W] (grey) or [H, W, 3] (RGB); deterministic."""
    from PIL import Image

    if image.dtype != np.uint8:
        raise TypeError(f"images must be uint8, got {image.dtype}")
    buffer = io.BytesIO()
    # Level 1 halves the encoding time of level 6 (the default) for ~3 % larger files: on
    # noisy 500-dpi prints deflate finds little more at higher levels.
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def relative_sample_dir(kind: str, modality: str, subject_id: int) -> str:
    """images/<modality>/<subject_id>/ or truth/<modality>/<subject_id>/ (CONVENTIONS §3)."""
    return f"{kind}/{modality}/{subject_id:08d}"


@functools.lru_cache(maxsize=None)
def generator_version(package_dir: str) -> str:
    """biomint's version plus a hash of the generator package's source (`package_dir`): bytes
    change with the code, and `regenerate` can tell a changed generator from a corrupt file.
    Cached: every manifest row carries it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        release = version("biomint")
    except PackageNotFoundError:  # a source tree on sys.path, not installed
        release = "0+unknown"
    digest = hashlib.sha256()
    for source in sorted(Path(package_dir).glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    return f"{release}+src.{digest.hexdigest()[:12]}"
