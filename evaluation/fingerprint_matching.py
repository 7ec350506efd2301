"""NBIS minutiae (MINDTCT) and Bozorth3 comparison scores, via the ``afis`` package.

The native NBIS library (``libafis_lfs``, built at install) is used when it loads; otherwise
afis' pure-Python ports of MINDTCT and Bozorth3 are used: same algorithms, ~100× slower,
announced once per process. Bozorth3 scores are raw (unnormalised) NBIS scores; ≥ 40 is the
customary match threshold.
"""
from __future__ import annotations

import warnings
from typing import Callable

import numpy as np

_FALLBACK_ANNOUNCED = False
_EXTRACTORS: dict[tuple[bool, int], object] = {}


def native_available() -> bool:
    import afis

    return bool(afis.available_native())


def _announce_fallback() -> None:
    global _FALLBACK_ANNOUNCED
    if not _FALLBACK_ANNOUNCED:
        _FALLBACK_ANNOUNCED = True
        warnings.warn(
            "afis' native NBIS library is not available: using its pure-Python MINDTCT and "
            "Bozorth3 (same algorithms, much slower). Build it with `make install`.",
            RuntimeWarning, stacklevel=3)


def _extractor(ppi: int):
    from afis.pipeline import NbisExtractor

    native = native_available()
    if not native:
        _announce_fallback()
    key = (native, int(ppi))
    if key not in _EXTRACTORS:
        _EXTRACTORS[key] = NbisExtractor(
            extractor="nbis_mindtct" if native else "mindtct", quality_mode="none",
            resolution_ppi=int(ppi))
    return _EXTRACTORS[key]


def extract_minutiae(image: np.ndarray, ppi: int = 500) -> np.ndarray:
    """NBIS MINDTCT minutiae of a uint8 [H, W] print → float64 [N, 5]: x, y, theta (rad),
    kind, reliability (afis' template layout, what compute_nfiq2 and Bozorth3 take)."""
    return np.asarray(_extractor(ppi).extract_minutiae(image).minutiae, np.float64)


def bozorth3(minutiae_a: np.ndarray, minutiae_b: np.ndarray, height_a: int, height_b: int,
             width_a: int = 0, width_b: int = 0) -> float:
    """Raw Bozorth3 score of two minutiae sets (symmetric max as NBIS computes it)."""
    from afis.algorithms.matcher import match_templates

    if len(minutiae_a) == 0 or len(minutiae_b) == 0:
        return 0.0
    native = native_available()
    if not native:
        _announce_fallback()
    res = match_templates(np.asarray(minutiae_a, np.float64), np.asarray(minutiae_b, np.float64),
                          method="nbis_bozorth3" if native else "bozorth3",
                          height_a=int(height_a), height_b=int(height_b),
                          width_a=int(width_a), width_b=int(width_b))
    return float(res.raw_score)


# Pluggable fingerprint matchers, by name (EvaluationSettings.fingerprint_matcher).
FINGERPRINT_MATCHERS: dict[str, Callable[..., float]] = {"bozorth3": bozorth3}


def score_pair_chunk(task: tuple[str, dict[str, tuple[np.ndarray, tuple[int, int]]],
                                 list[tuple[str, str, str]]]) -> list[tuple[str, float]]:
    """Worker: (matcher name, {sample_id: (minutiae [N, 5], (height, width))},
    [(pair_id, a_sample_id, b_sample_id)]) → [(pair_id, score)]. Each chunk carries only the
    templates its pairs use, once."""
    name, templates, pairs = task
    match = FINGERPRINT_MATCHERS[name]
    out = []
    for pid, a, b in pairs:
        (ma, (ha, wa)), (mb, (hb, wb)) = templates[a], templates[b]
        out.append((pid, match(ma, mb, ha, hb, wa, wb)))
    return out
