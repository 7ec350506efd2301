"""fingerprint.quality_mix: the weights solve, the per-impression difficulty draw, errors, the
config key through the pipeline, and the wanted-vs-achieved check of `biomint evaluate`."""
from __future__ import annotations

import inspect
import json
from math import erf, sqrt

import numpy as np
import pandas as pd
import pytest
from conftest import TINY, compose_overrides, mint

from generators.fingerprint import FingerprintSettings
from generators.fingerprint import quality_mix as qm
from pipeline.config import to_config
from pipeline.errors import ConfigError
from pipeline.stages import fingerprint as fp_stage

GRID = [round(float(d), 4) for d in np.linspace(0.0, 1.0, 11)]
EXAMPLE_MIX = "fingerprint.quality_mix=[0,0.25,0.25,0.25,0.25]"


def synthetic_entry(centre=lambda d: 85.0 - 70.0 * d, spread=10.0, top=100.0, profile="default",
                    sensor="optical") -> dict:
    """A calibration entry whose scores at difficulty d are normal(centre(d), spread), clipped
    to at most `top` (top < 81 makes the 81-100 bin unreachable)."""
    def cdf(x, m):
        return 0.5 * (1.0 + erf((x - m) / (spread * sqrt(2.0))))

    upper = [20.5, 40.5, 60.5, 80.5, np.inf]
    points = []
    for d in GRID:
        m, cum = centre(d), []
        for hi in upper:
            cum.append(1.0 if min(hi, top + 0.5) >= top + 0.5 else cdf(hi, m) / cdf(top + 0.5, m))
        fractions = np.diff([0.0, *cum])
        points.append({"difficulty": d, "n": 1000, "n_unscored": 0, "median": m,
                       "fractions": (fractions / fractions.sum()).round(6).tolist()})
    return {"profile": profile, "sensor": sensor, "points": points}


@pytest.fixture
def shipped_is(tmp_path, monkeypatch):
    """shipped_is(calibration dict): make it the calibration this process loads."""
    def install(calibration: dict):
        path = tmp_path / "quality_calibration.json"
        path.write_text(json.dumps(calibration))
        monkeypatch.setattr(qm, "CALIBRATION_PATH", path)
        qm._read_calibration.cache_clear()
        qm._shipped_weights.cache_clear()

    yield install
    qm._read_calibration.cache_clear()
    qm._shipped_weights.cache_clear()


def calibration_of(*entries: dict) -> dict:
    return {"format": qm.CALIBRATION_FORMAT, "bins": list(qm.MIX_BINS),
            "entries": {qm.entry_key(e["profile"], e["sensor"]): e for e in entries}}


# --- the weights solve ----------------------------------------------------------------------

def test_weights_recover_mixes_made_from_known_weights():
    entry = synthetic_entry()
    fractions = np.asarray([p["fractions"] for p in entry["points"]])
    rng = np.random.default_rng(4)
    for _ in range(6):
        true = rng.dirichlet(np.full(len(GRID), 0.3))
        mix = true @ fractions
        w = qm.difficulty_weights(mix, entry)
        assert w.shape == (len(GRID),) and (w >= 0).all() and abs(w.sum() - 1.0) < 1e-12
        assert np.abs(qm.achieved_mix(w, entry) - mix).max() < 2e-3
        assert np.array_equal(w, qm.difficulty_weights(mix, entry))      # deterministic


def test_weights_are_the_closest_feasible_mix():
    """Off the reachable set (but within 7 points) the solve is as good as scipy's NNLS with
    a heavily weighted sum-to-one row, an independent solver of the same problem."""
    from scipy.optimize import nnls

    entry = synthetic_entry(centre=lambda d: 70.0 - 45.0 * d)
    fractions = np.asarray([p["fractions"] for p in entry["points"]])
    mix = np.array([0.0, 0.3, 0.3, 0.3, 0.1])
    w = qm.difficulty_weights(mix, entry)
    ref, _ = nnls(np.vstack([fractions.T, 1e3 * np.ones(len(GRID))]), np.append(mix, 1e3))
    ours, theirs = np.sum((w @ fractions - mix) ** 2), np.sum((ref / ref.sum() @ fractions - mix) ** 2)
    assert ours <= theirs + 1e-5
    assert ours > 1e-4              # this mix is not reachable exactly: the test means something


def test_simplex_projection_and_solver_respect_the_constraints():
    v = np.array([0.7, -0.2, 0.9, 0.1])
    p = qm._project_to_simplex(v)
    assert (p >= 0).all() and abs(p.sum() - 1.0) < 1e-12
    # the projection is the closest simplex point: no random simplex point is closer
    others = np.random.default_rng(0).dirichlet(np.ones(4), 2000)
    assert np.linalg.norm(v - p) <= np.linalg.norm(v - others, axis=1).min() + 1e-12
    w = qm.simplex_least_squares(np.eye(3), np.array([2.0, -1.0, 0.0]))
    assert np.allclose(w, [1.0, 0.0, 0.0], atol=1e-6)


# --- errors ---------------------------------------------------------------------------------

def test_unreachable_bin_is_one_sentence_with_the_closest_mix_and_the_reachable_bins():
    entry = synthetic_entry(centre=lambda d: 62.0 - 40.0 * d, top=78.0)   # nothing scores 81+
    with pytest.raises(ValueError) as info:
        qm.difficulty_weights([0.0, 0.0, 0.2, 0.4, 0.4], entry)
    msg = str(info.value)
    assert msg.startswith("quality_mix [0.00, 0.00, 0.20, 0.40, 0.40] cannot be reached with profile 'default'")
    assert "closest mix the calibration allows is [" in msg and "points off in bin 81-100" in msg
    reachable = msg.split("reachable bins: ")[1]
    assert "61-80 (up to" in reachable and "81-100" not in reachable
    assert "\n" not in msg and ". " not in msg                             # one sentence
    # best effort inside the tolerance: 81-100 missed by 5 points is accepted
    w = qm.difficulty_weights([0.0, 0.25, 0.35, 0.35, 0.05], entry)
    assert qm.achieved_mix(w, entry)[4] == pytest.approx(0.0, abs=1e-6)


def test_bad_mixes_and_missing_calibrations_are_clear_errors():
    entry = synthetic_entry()
    for bad in ([0.5, 0.5], [0.5, 0.5, 0.5, 0.0, 0.0], [-0.1, 0.3, 0.3, 0.3, 0.2]):
        with pytest.raises(ValueError, match=r"quality_mix needs 5 non-negative fractions"):
            qm.difficulty_weights(bad, entry)
        with pytest.raises(ValueError, match=r"quality_mix needs 5 non-negative fractions"):
            FingerprintSettings(quality_mix=tuple(bad))
    with pytest.raises(ValueError, match=r"^quality_mix has no calibration for profile 'fvc2004' with sensor "
                                         r"'ink' \(calibrated: default/optical\); run `make calibrate-quality`"):
        qm.calibration_for("fvc2004", "ink", calibration_of(entry))


def test_unreadable_or_foreign_calibration_file(tmp_path):
    with pytest.raises(ValueError, match=r"quality_mix needs the calibration .* cannot be read"):
        qm.load_calibration(tmp_path / "missing.json")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "something-else", "entries": {}}))
    with pytest.raises(ValueError, match=r"is not a biomint-quality-calibration/1 file"):
        qm.load_calibration(other)


# --- the draw -------------------------------------------------------------------------------

def test_draw_is_deterministic_one_uniform_and_follows_the_weights(shipped_is):
    entry = synthetic_entry()
    shipped_is(calibration_of(entry))
    mix = (0.1, 0.2, 0.4, 0.2, 0.1)
    settings = FingerprintSettings(quality_mix=mix)
    weights = qm.difficulty_weights(mix, entry)

    a, b, ref = np.random.default_rng(11), np.random.default_rng(11), np.random.default_rng(11)
    assert qm.draw_difficulty(settings, a) == qm.draw_difficulty(settings, b)
    ref.uniform()
    assert a.bit_generator.state == ref.bit_generator.state           # exactly one draw

    rng = np.random.default_rng(12)
    n = 40000
    draws = np.array([qm.draw_difficulty(settings, rng) for _ in range(n)])
    assert set(np.unique(draws)) <= set(np.asarray(GRID)[weights > 0])
    freq = np.array([(draws == d).mean() for d in GRID])
    sd = np.sqrt(weights * (1 - weights) / n)
    assert (np.abs(freq - weights) <= 5 * sd + 1e-9).all()
    # and so the drawn difficulties give the wanted mix under the calibration
    assert np.abs(freq @ np.asarray([p["fractions"] for p in entry["points"]]) - mix).max() < 0.01


def test_resolve_difficulty(shipped_is):
    entry = synthetic_entry()
    shipped_is(calibration_of(entry))
    plain = FingerprintSettings(difficulty=0.45)
    rng, ref = np.random.default_rng(3), np.random.default_rng(3)
    assert qm.resolve_difficulty(plain, rng) is plain
    assert rng.bit_generator.state == ref.bit_generator.state           # no mix: no draw
    # the mix of the easiest grid point alone: drawn difficulties stay (almost all) there
    mixed = FingerprintSettings(quality_mix=tuple(entry["points"][0]["fractions"]))
    weights = qm.difficulty_weights(mixed.quality_mix, entry)
    assert weights[0] > 0.95
    got = [qm.resolve_difficulty(mixed, rng).difficulty for _ in range(200)]
    assert set(got) <= {d for d, w in zip(GRID, weights) if w > 0} and got.count(0.0) > 180
    out = qm.resolve_difficulty(mixed, rng)
    assert out.quality_mix == mixed.quality_mix and out.profile == mixed.profile
    with pytest.raises(ValueError, match="no calibration for profile 'clean' with sensor 'optical'"):
        qm.draw_difficulty(FingerprintSettings(quality_mix=(0, 0, 1, 0, 0), profile="clean"), rng)


def test_calibration_mismatch_names_what_differs(shipped_is):
    settings = FingerprintSettings(quality_mix=(0, 0, 1, 0, 0))
    entry = {**synthetic_entry(), "generator_source": qm.rendering_source_hash(),
             "settings_hash": qm.settings_hash(settings), "settings": qm.calibrated_settings(settings)}
    calibration = calibration_of(entry)
    assert qm.calibration_mismatch(settings, calibration) is None
    assert qm.calibration_mismatch(FingerprintSettings(), calibration) is None       # no mix, no check
    small = FingerprintSettings(quality_mix=(0, 0, 1, 0, 0), width=160, height=192)
    msg = qm.calibration_mismatch(small, calibration)
    assert "other settings (height, width)" in msg and "make calibrate-quality" in msg
    # settings a plain impression never reads do not invalidate it
    assert qm.calibration_mismatch(FingerprintSettings(quality_mix=(0, 0, 1, 0, 0), slap_height=2000),
                                   calibration) is None
    stale = calibration_of({**entry, "generator_source": "000000000000"})
    assert "generator source 000000000000" in qm.calibration_mismatch(settings, stale)


def test_a_new_source_that_draws_the_same_prints_keeps_the_calibration(shipped_is):
    from generators.fingerprint.output_fingerprint import output_hash

    settings = FingerprintSettings(quality_mix=(0, 0, 1, 0, 0))
    moved = {**synthetic_entry(), "generator_source": "000000000000", "generator_output": output_hash(settings),
             "settings_hash": qm.settings_hash(settings), "settings": qm.calibrated_settings(settings)}
    assert qm.calibration_mismatch(settings, calibration_of(moved)) is None
    redrawn = calibration_of({**moved, "generator_output": "0" * 16})
    msg = qm.calibration_mismatch(settings, redrawn)
    assert "generator source 000000000000" in msg and "draws other reference prints" in msg
    # other settings are named as such, the reference prints are not drawn for them
    small = FingerprintSettings(quality_mix=(0, 0, 1, 0, 0), width=160, height=192)
    assert "other settings (height, width)" in qm.calibration_mismatch(small, calibration_of(moved))


def test_the_reference_prints_hash_follows_what_is_drawn():
    from generators.fingerprint.output_fingerprint import output_hash

    optical = FingerprintSettings(sensor="optical")
    assert output_hash.__wrapped__(optical) == output_hash(optical)          # drawn again: same bytes
    assert output_hash(FingerprintSettings(sensor="ink")) != output_hash(optical)
    # neither the wanted mix nor the difficulty enters: the reference prints set their own
    assert output_hash(FingerprintSettings(quality_mix=(0, 1, 0, 0, 0), difficulty=0.9)) == output_hash(optical)


def test_the_shipped_calibration_was_measured_on_this_generator():
    """Every entry matches the running generator: its source, or the prints it draws. A change
    to the rendering that moves a byte fails here until `make calibrate-quality` is rerun."""
    import dataclasses

    from generators.fingerprint.profiles import PROFILES
    from generators.fingerprint.sensors import SENSORS

    for profile in PROFILES:
        for sensor in SENSORS:
            settings = dataclasses.replace(FingerprintSettings(quality_mix=(0, 0, 1, 0, 0)), profile=profile,
                                           sensor=sensor)
            assert qm.calibration_mismatch(settings) is None, (profile, sensor)


def test_shipped_calibration_covers_every_profile_and_sensor():
    from generators.fingerprint.profiles import PROFILES
    from generators.fingerprint.sensors import SENSORS

    calibration = qm.load_calibration()
    for profile in PROFILES:
        for sensor in SENSORS:
            entry = qm.calibration_for(profile, sensor, calibration)
            grid = [p["difficulty"] for p in entry["points"]]
            assert grid[0] == 0.0 and grid[-1] == 1.0 and grid == sorted(grid)
            assert all(abs(sum(p["fractions"]) - 1.0) < 1e-4 and p["n"] > 0 for p in entry["points"])
            assert entry["generator_source"] and entry["settings_hash"]


# --- the pipeline ---------------------------------------------------------------------------

def test_quality_mix_is_a_config_key(shipped_is):
    config = to_config(compose_overrides("dataset=smoke", EXAMPLE_MIX)).fingerprint
    assert list(config.quality_mix) == [0, 0.25, 0.25, 0.25, 0.25]
    assert fp_stage.settings_from(config).quality_mix == (0.0, 0.25, 0.25, 0.25, 0.25)
    assert list(to_config(compose_overrides("dataset=smoke")).fingerprint.quality_mix) == []
    # the stage check asks the calibration: reachable is accepted, unreachable refused in a sentence
    shipped_is(calibration_of(synthetic_entry()))
    fp_stage.check(config)
    shipped_is(calibration_of(synthetic_entry(top=78.0)))
    with pytest.raises(ConfigError, match=r"^fingerprint\.quality_mix \[0\.00, 0\.25, 0\.25, 0\.25, 0\.25\] cannot "
                                          r"be reached .* points off in bin 81-100"):
        fp_stage.check(config)


def test_unreachable_mix_is_exit_2_before_anything_is_written(shipped_is, tmp_path, monkeypatch, capsys):
    from pipeline.cli import main

    shipped_is(calibration_of(synthetic_entry(top=78.0)))
    out = tmp_path / "ds"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["biomint", *TINY, EXAMPLE_MIX, f"output_dir={out}"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    stderr = capsys.readouterr().err
    assert exit_info.value.code == 2, stderr
    assert stderr.startswith("biomint: fingerprint.quality_mix [0.00, 0.25") and len(stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_biomint_precheck_on_the_example_mix_agrees_with_the_shipped_calibration(tmp_path):
    """`biomint ... fingerprint.quality_mix=[0,0.25,0.25,0.25,0.25]` with the shipped
    calibration: accepted exactly when the calibration reaches it within 7 points."""
    from pipeline.precheck import precheck_overrides

    entry = qm.calibration_for("default", "optical")
    try:
        qm.difficulty_weights([0, 0.25, 0.25, 0.25, 0.25], entry)
        reachable = True
    except ValueError as e:
        reachable, reason = False, str(e)
    args = [*TINY, EXAMPLE_MIX, f"output_dir={tmp_path / 'ds'}"]
    if reachable:
        precheck_overrides(args)
    else:
        with pytest.raises(ConfigError) as info:
            precheck_overrides(args)
        assert str(info.value) == f"fingerprint.{reason}"


def _impression_draws_difficulty() -> bool:
    from generators.fingerprint import impression

    return "resolve_difficulty" in inspect.getsource(impression.make_impression)


@pytest.fixture(scope="module")
def mixed_dataset(tmp_path_factory):
    """TINY minted with a mix the shipped calibration reaches exactly: half the grid's first
    point, half its last; evaluated in-process."""
    from evaluation import EvaluationSettings, evaluate_dataset

    points = qm.calibration_for("default", "optical")["points"]
    mix = (0.5 * np.asarray(points[0]["fractions"]) + 0.5 * np.asarray(points[-1]["fractions"])).round(4)
    mix[np.argmax(mix)] += 1.0 - mix.sum()
    root = tmp_path_factory.mktemp("qmix") / "ds"
    meta = mint(root, "cluster.workers=1", "fingerprint.quality_mix=[" + ",".join(f"{v:g}" for v in mix) + "]")
    summary = evaluate_dataset(root, EvaluationSettings(workers=1, progress=False, latent_search=False))
    return root, meta, mix, summary


def test_mix_is_recorded_and_evaluate_reports_wanted_vs_achieved(mixed_dataset):
    from evaluation.report import format_summary

    root, meta, mix, summary = mixed_dataset
    assert meta["config"]["fingerprint"]["quality_mix"] == pytest.approx(list(mix))
    check = summary["fingerprint"]["quality"]["quality_mix"]
    quality = pd.read_parquet(root / "eval" / "fingerprint_quality.parquet")
    plain = quality.loc[quality["impression_type"] == "plain", "quality_score"]
    assert check["bins"] == list(qm.MIX_BINS) and check["wanted"] == pytest.approx(list(mix))
    assert check["n_images"] == len(plain) == 12
    by_hand = [((plain >= lo + (k > 0)) & (plain <= hi)).mean()
               for k, (lo, hi) in enumerate(zip(qm.MIX_EDGES, qm.MIX_EDGES[1:]))]
    assert check["achieved"] == pytest.approx(by_hand)
    assert check["max_deviation_points"] == pytest.approx(100 * np.abs(np.subtract(by_hand, mix)).max())
    assert "quality_mix wanted/achieved" in format_summary(summary)
    page = (root / "report" / "index.html").read_text()
    assert "wanted vs achieved share per NFIQ 2 bin" in page and "Max deviation" in page


@pytest.mark.xfail(not _impression_draws_difficulty(), strict=True,
                   reason="make_impression does not call quality_mix.resolve_difficulty yet")
def test_plain_impressions_draw_their_difficulty_from_the_weights(mixed_dataset):
    import pyarrow.dataset as ds

    root, _, mix, _ = mixed_dataset
    rows = ds.dataset(root / "manifest" / "fingerprint", format="parquet").to_table().to_pylist()
    drawn = [r["params"]["difficulty"] for r in rows if r["impression_type"] == "plain"]
    entry = qm.calibration_for("default", "optical")
    weights = qm.difficulty_weights(mix, entry)
    support = {p["difficulty"] for p, w in zip(entry["points"], weights) if w > 0}
    assert set(drawn) <= support and len(set(drawn)) >= 2


def test_quality_mix_check_by_hand(tmp_path):
    from evaluation.fingerprint_evaluation import quality_mix_check, wanted_quality_mix

    quality = pd.DataFrame({"impression_type": ["plain"] * 5 + ["rolled"],
                            "quality_score": [25.0, 35.0, 45.0, 90.0, np.nan, 10.0]})
    check = quality_mix_check(quality, [0.0, 0.5, 0.5, 0.0, 0.0])
    assert check["achieved"] == [0.0, 0.5, 0.25, 0.0, 0.25]            # the rolled print is not counted
    assert (check["n_images"], check["n_unscored"]) == (4, 1)
    assert check["max_deviation_points"] == pytest.approx(25.0)
    assert wanted_quality_mix(tmp_path) is None                          # no dataset.json
    (tmp_path / "dataset.json").write_text(json.dumps({"config": {"fingerprint": {"quality_mix": []}}}))
    assert wanted_quality_mix(tmp_path) is None
    (tmp_path / "dataset.json").write_text(json.dumps({"config": {"fingerprint": {"quality_mix": [0, 0, 1, 0, 0]}}}))
    assert wanted_quality_mix(tmp_path) == [0.0, 0.0, 1.0, 0.0, 0.0]


def test_the_calibration_follows_the_code_not_its_comments(tmp_path):
    a, b, c = (tmp_path / n for n in "abc")
    for d in (a, b, c):
        d.mkdir()
    (a / "render.py").write_text('"""Doc."""\nX = 1  # one\n\ndef f():\n    """Say."""\n    return X\n')
    (b / "render.py").write_text('"""Other doc."""\n# a new comment\nX = 1\n\ndef f():\n    return X\n')
    (c / "render.py").write_text('"""Doc."""\nX = 2  # one\n\ndef f():\n    """Say."""\n    return X\n')
    assert qm.rendering_source_hash(a) == qm.rendering_source_hash(b)
    assert qm.rendering_source_hash(a) != qm.rendering_source_hash(c)
