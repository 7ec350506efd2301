"""Exceptions raised by evaluation/ for bad input.

Each one carries a single sentence that says what is wrong and what to do; the CLI prints it
and exits 2. They subclass ValueError / FileNotFoundError so callers that do not import this
module can still catch them by the builtin type.
"""
from __future__ import annotations


class EvaluationInputError(ValueError):
    """A setting or input value that evaluation cannot use (bad bin edges, unknown backend…)."""


class DatasetNotFoundError(FileNotFoundError):
    """The dataset root has no manifest (or no such folder)."""


class UnreadableImageError(ValueError):
    """An image file listed in a manifest or folder cannot be decoded."""


class ModelFileNotFoundError(FileNotFoundError):
    """A model file (ONNX) given by path does not exist."""


# What callers turn into one sentence and exit 2; anything else is a bug and keeps its traceback.
EVALUATION_INPUT_ERRORS = (EvaluationInputError, DatasetNotFoundError, UnreadableImageError,
                           ModelFileNotFoundError)
