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


class PreparedMatcher:
    """A matcher that works on prepared templates: prepare(minutiae, height, width) once per
    print, compare(a, b) per pair (what a pair chunk or a 1:N search does many times over).
    The generic form prepares nothing and calls the pairwise matcher."""

    def __init__(self, name: str) -> None:
        self._match = FINGERPRINT_MATCHERS[name]

    def prepare(self, minutiae: np.ndarray, height: int, width: int):
        return np.asarray(minutiae, np.float64), int(height), int(width)

    def compare(self, a, b) -> float:
        (ma, ha, wa), (mb, hb, wb) = a, b
        return self._match(ma, mb, ha, hb, wa, wb)

    def session(self):
        """A context for many compare() calls (the native library's lock, taken once)."""
        import contextlib

        return contextlib.nullcontext()


class NativeBozorth3(PreparedMatcher):
    """NBIS Bozorth3 on templates packed once for the native library.

    afis' per-pair API packs both templates of every comparison in a Python loop over their
    minutiae (~1 ms of a ~10 ms comparison) and takes afis' process-wide lock each time; a
    chunk of pairs or a search over a gallery packs each print once and holds the lock for
    the chunk. Same library call, same scores as bozorth3() (tested)."""

    def __init__(self) -> None:
        from afis._native import template_from_array
        from afis._native.loader import _load_lib

        self._pack, self._lib = template_from_array, _load_lib()

    def prepare(self, minutiae: np.ndarray, height: int, width: int):
        minutiae = np.asarray(minutiae, np.float64)
        return None if len(minutiae) == 0 else self._pack(minutiae, int(width), int(height))

    def compare(self, a, b) -> float:
        import ctypes

        if a is None or b is None:
            return 0.0
        return float(self._lib.afis_bozorth3_match(ctypes.byref(a), ctypes.byref(b)))

    def session(self):
        from afis.op_lock import afis_op_lock

        return afis_op_lock()


def prepared_matcher(name: str) -> PreparedMatcher:
    """The fastest prepared form of matcher `name` available here."""
    if name == "bozorth3" and native_available():
        try:
            return NativeBozorth3()
        except (ImportError, AttributeError):    # an afis without these internals: per-pair API
            pass
    return PreparedMatcher(name)


def score_pair_chunk(task: tuple[str, dict[str, tuple[np.ndarray, tuple[int, int]]],
                                 list[tuple[str, str, str]]]) -> list[tuple[str, float]]:
    """Worker: (matcher name, {sample_id: (minutiae [N, 5], (height, width))},
    [(pair_id, a_sample_id, b_sample_id)]) → [(pair_id, score)]. Each chunk carries only the
    templates its pairs use, once; each is prepared for the matcher once."""
    name, templates, pairs = task
    matcher = prepared_matcher(name)
    prepared = {sid: matcher.prepare(m, h, w) for sid, (m, (h, w)) in templates.items()}
    with matcher.session():
        return [(pid, matcher.compare(prepared[a], prepared[b])) for pid, a, b in pairs]
