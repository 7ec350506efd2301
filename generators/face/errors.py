"""Errors raised by the face generator.

`CheckpointError` is re-exported by `pipeline.errors` so that the CLI maps it to exit code 2.
It subclasses ValueError because generators/ must not import pipeline/ (CONVENTIONS §1).
"""

from __future__ import annotations


class CheckpointError(ValueError):
    """A face checkpoint is missing, unreadable, unsafe, or does not match the networks.

    The message is one sentence that names the file and says what to do.
    """
