"""The bridge to evaluation/: `biomint evaluate` and `evaluation.after_mint=true` call this."""
from __future__ import annotations

from pathlib import Path


def evaluate_root(root: Path, settings: dict, client=None) -> dict:
    """Call the evaluation's entry point; its bad-input errors become exit 2 in the CLI."""
    from evaluation import EvaluationSettings, evaluate_dataset
    from evaluation.errors import EvaluationInputError

    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}
    try:
        evaluation_settings = EvaluationSettings(**settings)
    except TypeError as e:
        raise EvaluationInputError(f"evaluation settings are not valid: {e}") from None
    return evaluate_dataset(Path(root), evaluation_settings, client=client)
