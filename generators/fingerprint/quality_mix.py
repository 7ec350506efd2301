"""Per-impression difficulty drawn so that a dataset hits a wanted mix of NFIQ 2 bins.

`FingerprintSettings.quality_mix` asks for a share of plain impressions in each NFIQ 2 bin
(0-20, 21-40, 41-60, 61-80, 81-100). Scoring images while minting would tie the generator to
the evaluation (and cost ~0.4 s per print), so the mix is reached through a calibration
shipped beside this file (`quality_calibration.json`, made by `make calibrate-quality`): for
each (profile, sensor) and each difficulty d_g of a grid, the measured share F[g, b] of
impressions that NBIS MINDTCT + afis' NFIQ 2 port put in bin b. Drawing each impression's
difficulty from weights w over the grid gives an expected mix F^T w, so the weights solve

    min_w ||F^T w - mix||^2 + eps ||w||^2     subject to  w >= 0,  sum(w) = 1

(the tiny ridge makes the minimiser unique, so the weights - and every byte minted with them -
do not depend on how the solver happens to walk a flat valley of equally good mixes).

The calibration is only valid for the generator that made it: each entry records a hash of
the generator's rendering source, a hash of what it draws (output_fingerprint.py: a few
reference prints) and a hash of the settings that shape a plain impression.
`calibration_mismatch` says when the settings differ, or when the source differs and so do
the reference prints (a change that draws the same bytes keeps the calibration); recalibrate
then.

Pure: numpy and the standard library only (CONVENTIONS §1).
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import json
from pathlib import Path

import numpy as np

from .profiles import profile_named
from .settings import FingerprintSettings, with_difficulty

CALIBRATION_PATH = Path(__file__).with_name("quality_calibration.json")
CALIBRATION_FORMAT = "biomint-quality-calibration/1"
MIX_EDGES: tuple[int, ...] = (0, 20, 40, 60, 80, 100)          # NFIQ 2 bins of quality_mix
MIX_BINS: tuple[str, ...] = ("0-20", "21-40", "41-60", "61-80", "81-100")
MAX_MIX_DEVIATION = 0.07     # a mix the calibration misses by more (in any bin) is refused
RIDGE = 1e-5                 # eps above: ~1e-3 points of bias, enough to pin a unique minimiser
# Fields a plain impression does not read (or that the calibration is indexed by / solves
# for): everything else is "a setting that matters" and enters the settings hash.
_NOT_CALIBRATED = ("difficulty", "quality_mix", "profile", "sensor", "rolled_width", "rolled_height",
                   "roll_angle", "roll_slip_probability", "rolled_ink_probability", "slap_width",
                   "slap_height")
# Sources that do not render anything (the package's re-exports, this module; profiles enter
# each entry's settings hash instead): editing them must not invalidate the calibration.
_NOT_RENDERING = ("quality_mix.py", "profiles.py", "__init__.py", "output_fingerprint.py")


def _code_of(source: str) -> str:
    """The code of a Python source without its comments and docstrings (the AST's dump), so
    that documenting the generator does not invalidate its calibration."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


def rendering_source_hash(package_dir: Path = Path(__file__).parent) -> str:
    """sha256 (12 hex) of the code of the generator's Python sources (comments and docstrings
    left out), this module excluded."""
    digest = hashlib.sha256()
    for source in sorted(Path(package_dir).glob("*.py")):
        if source.name not in _NOT_RENDERING:
            digest.update(source.name.encode() + b"\0" + _code_of(source.read_text()).encode())
    return digest.hexdigest()[:12]


def _jsonable(values: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def calibrated_settings(settings: FingerprintSettings) -> dict:
    """The settings that shape a plain impression's quality, as JSON-able values, with the
    values of the settings' profile (so that retuning one profile leaves the others' entries
    valid: profiles.py is not part of the source hash)."""
    values = _jsonable({f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)
                        if f.name not in _NOT_CALIBRATED})
    values["profile_values"] = _jsonable(dataclasses.asdict(profile_named(settings.profile)))
    return values


def settings_hash(settings: FingerprintSettings) -> str:
    """sha256 (12 hex) of `calibrated_settings`."""
    text = json.dumps(calibrated_settings(settings), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def entry_key(profile: str, sensor: str) -> str:
    return f"{profile}/{sensor}"


def load_calibration(path: Path | None = None) -> dict:
    """The calibration file's content (default: the shipped one; cached: workers read it once)."""
    return _read_calibration(Path(CALIBRATION_PATH if path is None else path))


@functools.lru_cache(maxsize=4)
def _read_calibration(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"quality_mix needs the calibration {path}, which cannot be read ({e}); "
                         "run `make calibrate-quality` to make it") from None
    if data.get("format") != CALIBRATION_FORMAT or tuple(data.get("bins", ())) != MIX_BINS:
        raise ValueError(f"quality_mix needs the calibration {path}, which is not a {CALIBRATION_FORMAT} "
                         f"file with bins {list(MIX_BINS)}; run `make calibrate-quality` to remake it")
    return data


def calibration_for(profile: str, sensor: str, calibration: dict | None = None) -> dict:
    """The calibration entry of one (profile, sensor); ValueError naming those calibrated."""
    calibration = load_calibration() if calibration is None else calibration
    entries = calibration.get("entries", {})
    key = entry_key(profile, sensor)
    if key not in entries:
        raise ValueError(f"quality_mix has no calibration for profile {profile!r} with sensor {sensor!r} "
                         f"(calibrated: {', '.join(sorted(entries)) or 'none'}); "
                         "run `make calibrate-quality` for it or leave quality_mix empty")
    return entries[key]


def _project_to_simplex(v: np.ndarray) -> np.ndarray:
    """Euclidean projection onto {w >= 0, sum w = 1} (Duchi et al., ICML 2008, fig. 1)."""
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1.0
    k = np.arange(1, len(v) + 1)
    rho = np.nonzero(u - css / k > 0)[0][-1]
    return np.maximum(v - css[rho] / (rho + 1.0), 0.0)


def simplex_least_squares(a: np.ndarray, b: np.ndarray, ridge: float = RIDGE,
                          iterations: int = 20000, tol: float = 1e-13) -> np.ndarray:
    """argmin_w ||a w - b||^2 + ridge ||w||^2 over the probability simplex: accelerated
    projected gradient (FISTA, Beck & Teboulle 2009) with adaptive restart (O'Donoghue &
    Candes 2015), from the uniform weights; deterministic. a: [B, G], b: [B] -> w: [G]."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    n = a.shape[1]
    gram, atb = a.T @ a + ridge * np.eye(n), a.T @ b
    step = 1.0 / np.linalg.eigvalsh(gram)[-1]      # 1 / Lipschitz constant of the half-gradient
    w = y = np.full(n, 1.0 / n)
    t = 1.0
    for _ in range(iterations):
        w_next = _project_to_simplex(y - step * (gram @ y - atb))
        if np.max(np.abs(w_next - w)) < tol:
            w = w_next
            break
        if (y - w_next) @ (w_next - w) > 0:          # momentum points uphill: restart it
            t = 1.0
        t_next = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
        y = w_next + ((t - 1.0) / t_next) * (w_next - w)
        w, t = w_next, t_next
    return w


def _fractions(entry: dict) -> np.ndarray:
    """[G, 5] measured share of each NFIQ 2 bin at each calibrated difficulty."""
    return np.asarray([p["fractions"] for p in entry["points"]], np.float64)


def achieved_mix(weights: np.ndarray, entry: dict) -> np.ndarray:
    """[5] the bin shares that drawing difficulties with `weights` is expected to give."""
    return np.asarray(weights, np.float64) @ _fractions(entry)


def _fmt(values) -> str:
    return "[" + ", ".join(f"{v:.2f}" for v in values) + "]"


def difficulty_weights(mix, entry: dict) -> np.ndarray:
    """[G] weights over the entry's difficulty grid whose expected bin shares are closest to
    `mix`; ValueError (one sentence, with the closest mix and the reachable bins) when that
    misses a bin by more than MAX_MIX_DEVIATION."""
    mix = np.asarray([float(v) for v in mix], np.float64)
    if mix.shape != (len(MIX_BINS),) or (mix < 0).any() or not 0.99 <= mix.sum() <= 1.01:
        raise ValueError(f"quality_mix needs {len(MIX_BINS)} non-negative fractions (NFIQ 2 bins "
                         f"{', '.join(MIX_BINS)}) that sum to 1, got {mix.tolist()}")
    fractions = _fractions(entry)
    weights = simplex_least_squares(fractions.T, mix / mix.sum())
    # rounding to 1e-12 keeps last-bit differences between BLAS builds out of the draws
    weights = np.round(weights, 12)
    weights /= weights.sum()
    got = weights @ fractions
    miss = np.abs(got - mix)
    if miss.max() > MAX_MIX_DEVIATION:
        worst = int(np.argmax(miss))
        reach = fractions.max(axis=0)
        reachable = ", ".join(f"{name} (up to {100 * r:.0f} %)" for name, r in zip(MIX_BINS, reach) if r > 0)
        raise ValueError(
            f"quality_mix {_fmt(mix)} cannot be reached with profile {entry.get('profile')!r} and sensor "
            f"{entry.get('sensor')!r}: the closest mix the calibration allows is {_fmt(got)}, "
            f"{100 * miss[worst]:.0f} points off in bin {MIX_BINS[worst]} (at most "
            f"{100 * MAX_MIX_DEVIATION:.0f} allowed); reachable bins: {reachable or 'none'}")
    return weights


@functools.lru_cache(maxsize=64)
def _shipped_weights(mix: tuple[float, ...], profile: str, sensor: str) -> tuple[np.ndarray, np.ndarray]:
    """(grid difficulties [G], cumulative weights [G]) from the shipped calibration, per
    (mix, profile, sensor): solved once per process, not once per impression."""
    entry = calibration_for(profile, sensor)
    weights = difficulty_weights(mix, entry)
    grid = np.asarray([p["difficulty"] for p in entry["points"]], np.float64)
    cdf = np.cumsum(weights)
    grid.setflags(write=False)
    cdf.setflags(write=False)
    return grid, cdf


def check_quality_mix(settings: FingerprintSettings) -> None:
    """Raise the ValueError that minting with `settings` would raise (unreachable mix, no
    calibration for its profile and sensor); nothing when quality_mix is empty."""
    if settings.quality_mix:
        _shipped_weights(tuple(float(v) for v in settings.quality_mix), settings.profile, settings.sensor)


def draw_difficulty(settings: FingerprintSettings, rng: np.random.Generator) -> float:
    """One calibrated grid difficulty, picked with the weights of settings.quality_mix, from
    exactly one rng.uniform() draw (so the rest of the impression's stream stays aligned)."""
    grid, cdf = _shipped_weights(tuple(float(v) for v in settings.quality_mix), settings.profile, settings.sensor)
    u = rng.uniform() * cdf[-1]
    # first grid point whose cumulative weight exceeds u: a zero-weight point is never picked
    return float(grid[min(int(np.searchsorted(cdf, u, side="right")), len(grid) - 1)])


def resolve_difficulty(settings: FingerprintSettings, rng: np.random.Generator) -> FingerprintSettings:
    """`settings` unchanged when quality_mix is empty (no draw: the stream is untouched), else
    a copy whose difficulty is drawn by `draw_difficulty`. The first line of make_impression."""
    if not settings.quality_mix:
        return settings
    return with_difficulty(settings, draw_difficulty(settings, rng))


def calibration_mismatch(settings: FingerprintSettings, calibration: dict | None = None) -> str | None:
    """A sentence when the calibration entry used for `settings` was made by another generator
    source or with other settings that shape a plain impression (the mix is then only
    approximate); None when it matches or quality_mix is empty."""
    if not settings.quality_mix:
        return None
    entry = calibration_for(settings.profile, settings.sensor, calibration)
    why = []
    same_settings = entry.get("settings_hash") == settings_hash(settings)
    if not same_settings:
        made = entry.get("settings", {})
        now = calibrated_settings(settings)
        diff = sorted(k for k in set(made) | set(now) if made.get(k) != now.get(k))
        why.append(f"other settings ({', '.join(diff) or 'hash differs'})")
    if entry.get("generator_source") != rendering_source_hash():
        # another source may still draw the same bytes (a refactor, a faster path): then the
        # calibration, which measured those bytes, holds. With other settings the reference
        # prints would differ anyway, so they are only drawn when the settings match.
        same_output = False
        if same_settings and entry.get("generator_output"):
            from .output_fingerprint import output_hash
            same_output = output_hash(settings) == entry["generator_output"]
        if not same_output:
            why.append(f"generator source {entry.get('generator_source')} (this one, {rendering_source_hash()}, "
                       "draws other reference prints)")
    if not why:
        return None
    return (f"the quality_mix calibration for {entry_key(settings.profile, settings.sensor)} was made with "
            f"{' and '.join(why)}, so the NFIQ 2 mix will only be approximate; "
            "run `make calibrate-quality` to remake it")
