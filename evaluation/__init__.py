"""Evaluation of minted datasets: NFIQ 2-style quality, identity distinctness, reports.

``evaluate_dataset`` and ``EvaluationSettings`` are loaded lazily so that importing
``evaluation.face_embedding`` (used by the face generator's identity gate) stays light.
"""
from __future__ import annotations

__all__ = ["evaluate_dataset", "EvaluationSettings", "format_summary"]


def __getattr__(name: str):
    if name in __all__:
        from evaluation import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'evaluation' has no attribute {name!r}")
