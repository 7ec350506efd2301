"""The exceptions the CLI turns into one sentence and exit code 2 (CONVENTIONS §5).

`CheckpointError` is defined by the face generator (generators/ must not import pipeline/)
and re-exported here so that callers catch every bad-input error from one module.
"""
from __future__ import annotations

from generators.face.errors import CheckpointError


class BiomintError(Exception):
    """Bad input: the message is one sentence saying what is wrong and what to do."""


class ConfigError(BiomintError, ValueError):
    """A config value or a command-line argument that the pipeline cannot use."""


class ManifestError(BiomintError, ValueError):
    """A dataset on disk that is missing, corrupt, or does not match its dataset.json."""


# Bad-input exceptions raised outside pipeline/ (generators raise ValueError subclasses).
BAD_INPUT_ERRORS: tuple[type[BaseException], ...] = (BiomintError, CheckpointError)

__all__ = ["BiomintError", "ConfigError", "ManifestError", "CheckpointError", "BAD_INPUT_ERRORS"]
