"""`biomint evaluate sample=N`: a deterministic subset of whole subjects, and confidence
intervals on every error rate of the fingerprint matching."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import mint

from evaluation import EvaluationSettings, evaluate_dataset
from evaluation.errors import EvaluationInputError


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample") / "ds"
    mint(root, "fingerprint.fingers=12", "pairs.non_mated=200", "cluster.workers=1")   # 6 people x 2 fingers
    return root


def settings(**kw) -> EvaluationSettings:
    return EvaluationSettings(progress=False, workers=1, **kw)


def test_a_sample_is_whole_subjects_chosen_the_same_way_every_time(dataset):
    first = evaluate_dataset(dataset, settings(sample=12, write_report=False))
    kept = set(pd.read_parquet(dataset / "eval/fingerprint_quality.parquet")["sample_id"])
    second = evaluate_dataset(dataset, settings(sample=12, write_report=False))
    assert set(pd.read_parquet(dataset / "eval/fingerprint_quality.parquet")["sample_id"]) == kept
    assert first["sample"] == second["sample"]
    sm = first["sample"]
    assert sm["samples"] >= 12 and sm["of_samples"] == 36 and sm["of_subjects"] == 6 and sm["subjects"] == 2
    owners = {s.split("-")[1] for s in kept}
    assert len(owners) == 2 and len(kept) == 12                      # every print of two people
    pairs = pd.read_parquet(dataset / "eval/fingerprint_pairs.parquet")
    assert set(pairs["a_sample_id"]) | set(pairs["b_sample_id"]) <= kept and pairs["mated"].any()
    other = evaluate_dataset(dataset, settings(sample=12, seed=7, write_report=False))["sample"]
    assert other["samples"] >= 12                                   # another seed may pick other people


def test_every_error_rate_carries_a_subjects_bootstrap_interval(dataset):
    summary = evaluate_dataset(dataset, settings(confidence_replicates=100))
    m = summary["fingerprint"]["matching"]
    ci = m["intervals"]
    assert ci["unit"] == "person" and ci["units"] == 6 and ci["level"] == 0.95 and ci["replicates"] == 100
    op = f"bozorth3_{m['threshold']:g}"
    for name in ("eer", "fnmr_at_fmr_1pct", "fnmr_at_fmr_0.1pct", f"fmr_at_{op}", f"fnmr_at_{op}"):
        lo, hi = ci[name]
        assert 0.0 <= lo <= m[name] <= hi <= 1.0, (name, lo, m[name], hi)
    for kind in m["by_kind"].values():
        if kind["n_genuine"] and kind["n_impostor"]:
            assert "eer" in kind["intervals"]
    saved = json.loads((dataset / "eval/summary.json").read_text())
    assert saved["fingerprint"]["matching"]["intervals"]["eer"] == ci["eer"]
    html = (dataset / "report/index.html").read_text()
    assert "confidence intervals by the subjects bootstrap" in html
    none = evaluate_dataset(dataset, settings(confidence_replicates=0, write_report=False))
    assert none["fingerprint"]["matching"]["intervals"] == {}


def test_bad_sample_and_confidence_settings_are_one_sentence():
    with pytest.raises(EvaluationInputError, match="sample=0"):
        settings(sample=0)
    with pytest.raises(EvaluationInputError, match="confidence_level"):
        settings(confidence_level=1.5)
    assert settings(sample="40").sample == 40                       # CLI strings are coerced
