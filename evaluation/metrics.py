"""Verification and distinctness metrics as pure functions on score / embedding arrays.

Convention: a higher score means "more likely the same identity" (cosine similarity,
Bozorth3 score). A comparison is accepted when ``score >= threshold``. So, over the
genuine (mated) scores ``g`` and impostor (non-mated) scores ``i``:

    FMR(t)  = #{i >= t} / |i|          (false match rate)
    FNMR(t) = #{g <  t} / |g|          (false non-match rate)

(ISO/IEC 19795-1 definitions, at the comparison level.)
"""
from __future__ import annotations

import numpy as np


def _scores(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).ravel()
    return x[np.isfinite(x)]


def fmr(impostor, threshold: float) -> float:
    """Fraction of impostor scores accepted at ``threshold`` (score >= threshold)."""
    i = _scores(impostor)
    return float((i >= threshold).mean()) if i.size else float("nan")


def fnmr(genuine, threshold: float) -> float:
    """Fraction of genuine scores rejected at ``threshold`` (score < threshold)."""
    g = _scores(genuine)
    return float((g < threshold).mean()) if g.size else float("nan")


def error_curves(genuine, impostor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FMR and FNMR at every distinct score (plus one threshold above all scores).

    Returns (thresholds [T] ascending, fmr [T] non-increasing, fnmr [T] non-decreasing).
    """
    g, i = np.sort(_scores(genuine)), np.sort(_scores(impostor))
    if g.size == 0 or i.size == 0:
        raise ValueError("error curves need at least one genuine and one impostor score.")
    t = np.unique(np.concatenate([g, i]))
    t = np.append(t, np.nextafter(t[-1], np.inf))
    fmr_t = (i.size - np.searchsorted(i, t, side="left")) / i.size
    fnmr_t = np.searchsorted(g, t, side="left") / g.size
    return t, fmr_t, fnmr_t


def eer(genuine, impostor) -> float:
    """Equal error rate: where FMR and FNMR cross.

    At the first threshold where FNMR >= FMR: if they are equal that value is the EER;
    otherwise the EER is where the straight lines between this threshold's (FMR, FNMR)
    and the previous one's meet (linear interpolation of the DET steps).
    """
    _, f_m, f_n = error_curves(genuine, impostor)
    k = int(np.argmax(f_n >= f_m))          # exists: the last threshold has FMR = 0
    if f_n[k] == f_m[k] or k == 0:
        return float(max(f_m[k], f_n[k]) if k == 0 else f_m[k])
    da, db = f_m[k - 1] - f_n[k - 1], f_m[k] - f_n[k]       # da > 0 > db
    alpha = da / (da - db)
    return float(f_m[k - 1] + alpha * (f_m[k] - f_m[k - 1]))


def threshold_at_fmr(impostor, target_fmr: float) -> float:
    """Lowest threshold whose FMR is at most ``target_fmr``."""
    i = np.sort(_scores(impostor))
    if i.size == 0:
        raise ValueError("threshold_at_fmr needs impostor scores.")
    t = np.append(np.unique(i), np.nextafter(i[-1], np.inf))
    f = (i.size - np.searchsorted(i, t, side="left")) / i.size
    return float(t[int(np.argmax(f <= target_fmr))])


def fnmr_at_fmr(genuine, impostor, target_fmr: float) -> float:
    """FNMR at the lowest threshold whose FMR is at most ``target_fmr`` (e.g. FMR100 = 0.01).

    With fewer than 1/target_fmr impostor scores this is the FNMR at zero false matches.
    """
    return fnmr(genuine, threshold_at_fmr(impostor, target_fmr))


def d_prime(genuine, impostor) -> float:
    """Decidability d' = |μg − μi| / √((σg² + σi²) / 2), population std (ddof = 0)."""
    g, i = _scores(genuine), _scores(impostor)
    denom = np.sqrt((g.var() + i.var()) / 2.0)
    diff = abs(g.mean() - i.mean())
    return float(diff / denom) if denom > 0 else (float("inf") if diff > 0 else 0.0)


def score_summary(genuine, impostor, thresholds: dict[str, float] | None = None) -> dict:
    """Every verification figure for one score set, as a flat JSON-able dict.

    ``thresholds`` names operating points to report FMR/FNMR at, e.g. {"bozorth3_40": 40}.
    """
    g, i = _scores(genuine), _scores(impostor)
    out: dict = {"n_genuine": int(g.size), "n_impostor": int(i.size)}
    for name, s in (("genuine", g), ("impostor", i)):
        out[f"{name}_mean"] = float(s.mean()) if s.size else float("nan")
        out[f"{name}_std"] = float(s.std()) if s.size else float("nan")
    if g.size and i.size:
        out["eer"] = eer(g, i)
        out["d_prime"] = d_prime(g, i)
        out["fnmr_at_fmr_1pct"] = fnmr_at_fmr(g, i, 0.01)
        out["fnmr_at_fmr_0.1pct"] = fnmr_at_fmr(g, i, 0.001)
        out["threshold_at_fmr_1pct"] = threshold_at_fmr(i, 0.01)
        out["threshold_at_fmr_0.1pct"] = threshold_at_fmr(i, 0.001)
    for name, t in (thresholds or {}).items():
        out[f"fmr_at_{name}"] = fmr(i, t)
        out[f"fnmr_at_{name}"] = fnmr(g, t)
    return out


# ---------------------------------------------------------------- embedding-space metrics

def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def class_centres(embeddings: np.ndarray, labels) -> tuple[np.ndarray, np.ndarray]:
    """Unit-length mean embedding of each class. Returns (classes [C], centres [C, D])."""
    emb = _unit(embeddings)
    labels = np.asarray(labels)
    classes, inverse = np.unique(labels, return_inverse=True)
    sums = np.zeros((len(classes), emb.shape[1]))
    np.add.at(sums, inverse, emb)
    return classes, _unit(sums)


def uniqueness(centres: np.ndarray, r: float = 0.3) -> float:
    """DCFace uniqueness (Kim et al., CVPR 2023): greedily keep class centres (in the given
    order) whose cosine distance to every centre kept so far is > r; return kept / classes."""
    c = _unit(centres)
    if len(c) == 0:
        return float("nan")
    kept: list[int] = []
    for k in range(len(c)):
        if not kept or (1.0 - c[kept] @ c[k]).min() > r:
            kept.append(k)
    return len(kept) / len(c)


def intra_class_consistency(embeddings: np.ndarray, labels, r: float = 0.3) -> float:
    """Mean over classes of the fraction of a class's samples within cosine distance r of
    the class centre (DCFace's consistency measure)."""
    emb = _unit(embeddings)
    labels = np.asarray(labels)
    classes, centres = class_centres(emb, labels)
    inverse = np.searchsorted(classes, labels)
    close = (1.0 - (emb * centres[inverse]).sum(1)) <= r
    per_class = np.bincount(inverse, weights=close, minlength=len(classes)) / np.bincount(
        inverse, minlength=len(classes))
    return float(per_class.mean())


def look_alike_rate(synthetic: np.ndarray, gallery: np.ndarray, threshold: float) -> float:
    """Fraction of synthetic embeddings (e.g. identity centres) whose best cosine match in a
    real gallery reaches ``threshold`` — synthetic identities that look like a real person."""
    s, g = _unit(synthetic), _unit(gallery)
    if len(s) == 0 or len(g) == 0:
        return float("nan")
    return float(((s @ g.T).max(axis=1) >= threshold).mean())
