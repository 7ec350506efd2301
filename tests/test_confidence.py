"""Subject-bootstrap intervals on verification error rates: they contain the point figure,
shrink with more subjects, follow the subjects (not the pairs), and agree with the plain
figures of metrics.score_summary when every subject is drawn once."""
from __future__ import annotations

import numpy as np
import pytest

from evaluation import confidence
from evaluation.confidence import bootstrap_error_rates, wilson_interval
from evaluation.metrics import score_summary


def synthetic(n_subjects: int, per_subject: int = 6, seed: int = 0, spread: float = 1.0):
    """Mated scores with a per-subject offset (correlated within a subject), non-mated pairs
    between consecutive subjects."""
    rng = np.random.default_rng(seed)
    offset = rng.normal(0.0, spread, n_subjects)
    gs = np.repeat(np.arange(n_subjects), per_subject)
    g = 3.0 + offset[gs] + rng.normal(0.0, 1.0, gs.size)
    a = rng.integers(0, n_subjects, 20 * n_subjects)
    b = (a + 1 + rng.integers(0, n_subjects - 1, a.size)) % n_subjects
    i = rng.normal(0.0, 1.0, a.size)
    return np.round(g, 2), gs, np.round(i, 2), a, b


def test_the_intervals_contain_the_point_figures_and_shrink_with_more_subjects():
    widths = []
    for n in (40, 640):
        g, gs, i, a, b = synthetic(n)
        point = score_summary(g, i, thresholds={"t2": 2.0})
        ci = bootstrap_error_rates(g, gs, i, a, b, thresholds={"t2": 2.0}, replicates=300, seed=1)
        for name in ("eer", "fnmr_at_fmr_1pct", "fnmr_at_fmr_0.1pct", "fmr_at_t2", "fnmr_at_t2"):
            lo, hi = ci[name]
            assert lo <= point[name] <= hi, (n, name, lo, point[name], hi)
        widths.append(ci["eer"][1] - ci["eer"][0])
    assert widths[1] < widths[0] / 2.5          # 16x the subjects: ~1/4 the width


def test_correlated_subjects_widen_the_interval_beyond_what_pair_resampling_would_give():
    g, gs, i, a, b = synthetic(200, spread=2.0)
    by_subject = bootstrap_error_rates(g, gs, i, a, b, replicates=300, seed=2)
    # every pair its own subject: the independent-pairs bootstrap
    as_pairs = bootstrap_error_rates(g, np.arange(g.size), i, g.size + 2 * np.arange(i.size),
                                     g.size + 2 * np.arange(i.size) + 1, replicates=300, seed=2)
    width = lambda c: c["eer"][1] - c["eer"][0]      # noqa: E731
    assert width(by_subject) > 1.3 * width(as_pairs)


def test_a_replicate_that_draws_every_subject_once_gives_score_summarys_figures(monkeypatch):
    g, gs, i, a, b = synthetic(30)
    monkeypatch.setattr(confidence, "_multiplicities", lambda rng, n, b: np.ones((b, n)))
    ci = bootstrap_error_rates(g, gs, i, a, b, thresholds={"t1": 1.0}, replicates=3)
    point = score_summary(g, i, thresholds={"t1": 1.0})
    for name in ("eer", "fnmr_at_fmr_1pct", "fnmr_at_fmr_0.1pct", "fmr_at_t1", "fnmr_at_t1"):
        assert ci[name] == pytest.approx([point[name]] * 2, abs=1e-12), name


def test_intervals_are_deterministic_for_a_seed_and_empty_without_scores():
    g, gs, i, a, b = synthetic(50)
    assert bootstrap_error_rates(g, gs, i, a, b, replicates=100, seed=5) == \
        bootstrap_error_rates(g, gs, i, a, b, replicates=100, seed=5)
    assert bootstrap_error_rates(g[:0], gs[:0], i, a, b) == {}
    g[:3] = np.nan                               # unscored pairs are left out, as score_summary does
    assert "eer" in bootstrap_error_rates(g, gs, i, a, b, replicates=50)


def test_wilson_interval_of_a_proportion():
    lo, hi = wilson_interval(80, 100)
    assert lo < 0.8 < hi and lo == pytest.approx(0.7112, abs=1e-3) and hi == pytest.approx(0.8666, abs=1e-3)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    assert np.isnan(wilson_interval(0, 0)).all()
