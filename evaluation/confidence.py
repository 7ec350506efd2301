"""Confidence intervals on verification error rates by the subjects bootstrap.

Comparisons are not independent: every mated pair of a finger shares that finger, every
non-mated pair two fingers. Resampling pairs would make the intervals far too narrow, so we
resample *subjects* (ISO/IEC 19795-1's "subsets bootstrap"; Bolle, Ratha and Pankanti, "Error
analysis of pattern recognition systems: the subsets bootstrap", CVIU 2004): each replicate
draws the subjects with replacement, a subject drawn m times counts m times in its mated pairs
and a pair of subjects drawn m_a and m_b times counts m_a m_b times. The figures of every
replicate are computed at once from weighted cumulative sums over a shared threshold grid,
so B = 1,000 replicates of 10^6 pairs cost seconds, not a Python loop per replicate.

Pure numpy (no pandas): arrays in, {figure: (low, high)} out.
"""
from __future__ import annotations

import numpy as np

MAX_GRID = 4096          # thresholds evaluated per replicate: every distinct score, or quantiles
REPLICATE_CHUNK = 64     # replicates per vectorised block at most ...
BLOCK_ELEMENTS = 8_000_000   # ... and at most this many pair weights per block (64 MB per array)


def _grid(scores: np.ndarray) -> np.ndarray:
    t = np.unique(scores)
    if t.size > MAX_GRID:
        t = np.unique(np.quantile(scores, np.linspace(0.0, 1.0, MAX_GRID)))
    return np.append(t, np.nextafter(t[-1], np.inf))


def _eer_rows(f_m: np.ndarray, f_n: np.ndarray) -> np.ndarray:
    """EER per row of FMR [B, T] (non-increasing) and FNMR [B, T] (non-decreasing), with the
    interpolation of metrics.eer."""
    k = np.argmax(f_n >= f_m, axis=1)
    rows = np.arange(len(k))
    km = np.maximum(k - 1, 0)
    da, db = f_m[rows, km] - f_n[rows, km], f_m[rows, k] - f_n[rows, k]
    with np.errstate(invalid="ignore", divide="ignore"):
        alpha = np.where(da - db != 0, da / (da - db), 0.0)
    interpolated = f_m[rows, km] + alpha * (f_m[rows, k] - f_m[rows, km])
    exact = f_n[rows, k] == f_m[rows, k]
    return np.where(k == 0, np.maximum(f_m[rows, k], f_n[rows, k]), np.where(exact, f_m[rows, k], interpolated))


def bootstrap_error_rates(genuine: np.ndarray, genuine_subject: np.ndarray,
                          impostor: np.ndarray, impostor_subject_a: np.ndarray, impostor_subject_b: np.ndarray,
                          thresholds: dict[str, float] | None = None, fmr_targets=(0.01, 0.001),
                          replicates: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """Percentile intervals {figure: [low, high]} of eer, fnmr_at_fmr_<x>, fmr_at_<name> and
    fnmr_at_<name> (the names of metrics.score_summary), from `replicates` subject-bootstrap
    replicates. Subjects are any hashable labels; genuine pairs carry one, impostor pairs two.
    Non-finite scores are left out, as score_summary does."""
    g = np.asarray(genuine, np.float64)
    i = np.asarray(impostor, np.float64)
    keep_g, keep_i = np.isfinite(g), np.isfinite(i)
    g, i = g[keep_g], i[keep_i]
    if g.size == 0 or i.size == 0:
        return {}
    labels, codes = np.unique(np.concatenate([np.asarray(genuine_subject)[keep_g],
                                              np.asarray(impostor_subject_a)[keep_i],
                                              np.asarray(impostor_subject_b)[keep_i]]), return_inverse=True)
    sg, sa, sb = codes[:g.size], codes[g.size:g.size + i.size], codes[g.size + i.size:]
    n_subjects = len(labels)
    og, oi = np.argsort(g, kind="stable"), np.argsort(i, kind="stable")
    g, sg, i, sa, sb = g[og], sg[og], i[oi], sa[oi], sb[oi]
    grid = _grid(np.concatenate([g, i]))
    at_g = np.searchsorted(g, grid, side="left")      # genuine scores below each threshold
    at_i = np.searchsorted(i, grid, side="left")
    named = dict(thresholds or {})
    at_named_g = {n: int(np.searchsorted(g, t, side="left")) for n, t in named.items()}
    at_named_i = {n: int(np.searchsorted(i, t, side="left")) for n, t in named.items()}

    rng = np.random.default_rng(seed)
    figures: dict[str, list[np.ndarray]] = {"eer": []}
    for x in fmr_targets:
        figures[f"fnmr_at_fmr_{_pct(x)}"] = []
    for n in named:
        figures[f"fmr_at_{n}"], figures[f"fnmr_at_{n}"] = [], []
    done = 0
    while done < replicates:
        b = min(REPLICATE_CHUNK, max(1, BLOCK_ELEMENTS // max(g.size, i.size)), replicates - done)
        m = _multiplicities(rng, n_subjects, b)
        wg, wi = m[:, sg], m[:, sa] * m[:, sb]                      # [b, n_g], [b, n_i]
        cg = np.concatenate([np.zeros((b, 1)), np.cumsum(wg, axis=1)], axis=1)
        ci = np.concatenate([np.zeros((b, 1)), np.cumsum(wi, axis=1)], axis=1)
        tg, ti = cg[:, -1:], ci[:, -1:]
        ok = (tg[:, 0] > 0) & (ti[:, 0] > 0)            # a replicate without mated or non-mated pairs is skipped
        with np.errstate(invalid="ignore", divide="ignore"):
            f_n = cg[:, at_g] / tg                        # FNMR(t): weight of genuine scores < t
            f_m = 1.0 - ci[:, at_i] / ti                  # FMR(t): weight of impostor scores >= t
        figures["eer"].append(_eer_rows(f_m, f_n)[ok])
        for x in fmr_targets:
            k = np.argmax(f_m <= x + 1e-12, axis=1)       # lowest threshold with FMR <= x (exists: FMR = 0 at the top)
            figures[f"fnmr_at_fmr_{_pct(x)}"].append(f_n[np.arange(b), k][ok])
        for n in named:
            with np.errstate(invalid="ignore", divide="ignore"):
                figures[f"fmr_at_{n}"].append((1.0 - ci[:, at_named_i[n]] / ti[:, 0])[ok])
                figures[f"fnmr_at_{n}"].append((cg[:, at_named_g[n]] / tg[:, 0])[ok])
        done += b
    lo, hi = (1.0 - level) / 2.0, 1.0 - (1.0 - level) / 2.0
    out = {}
    for name, parts in figures.items():
        values = np.concatenate(parts)
        if values.size:
            out[name] = [float(np.quantile(values, lo)), float(np.quantile(values, hi))]
    return out


def _multiplicities(rng: np.random.Generator, n_subjects: int, replicates: int) -> np.ndarray:
    """How often each subject is drawn [replicates, n_subjects]: n_subjects draws with
    replacement, as counts."""
    return rng.multinomial(n_subjects, np.full(n_subjects, 1.0 / n_subjects), size=replicates).astype(np.float64)


def _pct(x: float) -> str:
    """0.01 -> '1pct', 0.001 -> '0.1pct' (score_summary's key names)."""
    return f"{100 * x:g}pct"


def wilson_interval(successes: int, trials: int, level: float = 0.95) -> list[float]:
    """Wilson score interval of a binomial proportion (rank-k identification rates, where each
    search is one independent trial); [nan, nan] without trials."""
    if trials <= 0:
        return [float("nan"), float("nan")]
    from statistics import NormalDist

    z = NormalDist().inv_cdf(1.0 - (1.0 - level) / 2.0)
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * np.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    # at p = 0 (or 1) the bound is exactly 0 (or 1); the formula leaves a rounding residue
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return [float(low), float(high)]
