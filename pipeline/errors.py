"""The exceptions the CLI turns into one sentence and exit code 2 (CONVENTIONS §5).

`CheckpointError` is defined by the face generator (generators/ must not import pipeline/)
and re-exported here so that callers catch every bad-input error from one module.
"""
from __future__ import annotations

import errno

from generators.face.errors import CheckpointError


class BiomintError(Exception):
    """Bad input: the message is one sentence saying what is wrong and what to do."""


class ConfigError(BiomintError, ValueError):
    """A config value or a command-line argument that the pipeline cannot use."""


class ManifestError(BiomintError, ValueError):
    """A dataset on disk that is missing, corrupt, or does not match its dataset.json."""


class DiskFull(RuntimeError):
    """A write failed for lack of space: the message names the path, the free space and what
    the run still needs; exit 1, and a rerun after freeing space finishes the dataset."""


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)   # no space left, or the user's quota is used up


def free_bytes(path) -> int | None:
    """Free bytes on the file system that holds `path` (or its nearest existing parent)."""
    import shutil
    from pathlib import Path

    here = Path(path)
    while not here.exists() and here != here.parent:
        here = here.parent
    try:
        return shutil.disk_usage(here).free
    except OSError:
        return None


def disk_full_sentence(path, needed_bytes: int | None = None, what: str = "") -> str:
    """One sentence for a full disk: the path, the free space, and what is still needed."""
    free = free_bytes(path)
    have = f"{free / 1e6:.1f} MB free" if free is not None else "no free space"
    need = f"; about {needed_bytes / 1e6:.1f} MB more are needed for {what or 'the rest of the run'}" \
        if needed_bytes else ""
    return f"disk full: could not write {path} ({have}{need}); free space and rerun the same command to finish"


# Bad-input exceptions raised outside pipeline/ (generators raise ValueError subclasses).
BAD_INPUT_ERRORS: tuple[type[BaseException], ...] = (BiomintError, CheckpointError)

__all__ = ["BiomintError", "ConfigError", "ManifestError", "CheckpointError", "BAD_INPUT_ERRORS", "DiskFull",
           "DISK_FULL_ERRNOS", "disk_full_sentence", "free_bytes"]
