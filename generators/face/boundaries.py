"""InterFaceGAN semantic boundaries (Shen et al., CVPR 2020): numpy in, numpy out.

* `fit_boundary`: keep the latents with the top / bottom `fraction` of an attribute score,
  fit a linear classifier (linear SVM as in the paper, or logistic regression), return the
  unit normal of its hyperplane — the direction along which the attribute increases.
* `project_conditional`: remove the components of a primal direction along condition
  directions so that editing one attribute leaves the others unchanged (paper section 2.2:
  n' = n1 - (n1 . n2) n2; the two-condition closed form of genforce/interfacegan's
  manipulator; least squares beyond two).
* `save_boundaries` / `load_boundaries`: one `.npz` with the normals, their names, the
  latent space and the SHA-256 of the generator checkpoint they belong to (no pickles).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class FittedBoundary:
    """A unit normal [D] and how well the hyperplane separates held-out extremes."""

    normal: np.ndarray          # float32 [D], unit length
    accuracy: float             # on the validation split of the selected extremes
    count: int                  # latents used (top + bottom)


def fit_boundary(latents: np.ndarray, scores: np.ndarray, fraction: float = 0.02,
                 method: str = "svm", validation: float = 0.3, min_per_side: int = 10,
                 seed: int = 0) -> FittedBoundary:
    """Fit the boundary of one attribute. latents [N, D], scores [N] (NaN = unlabelled).

    Returns the normal pointing towards high scores.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import LinearSVC

    latents = np.asarray(latents, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if latents.ndim != 2 or scores.shape != (latents.shape[0],):
        raise ValueError(f"latents must be [N, D] and scores [N], got {latents.shape}, {scores.shape}")
    keep = np.isfinite(scores)
    latents, scores = latents[keep], scores[keep]
    if not 0 < fraction <= 0.5:
        raise ValueError(f"fraction must be in (0, 0.5], got {fraction}")
    per_side = max(int(round(len(scores) * fraction)), min_per_side)
    if 2 * per_side > len(scores):
        raise ValueError(f"{len(scores)} labelled latents are too few for {per_side} per side; "
                         f"sample more latents or raise the fraction")
    order = np.argsort(scores, kind="stable")
    idx = np.concatenate([order[-per_side:], order[:per_side]])
    x = latents[idx]
    y = np.concatenate([np.ones(per_side), np.zeros(per_side)])
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))
    n_val = int(len(y) * validation)
    val, train = perm[:n_val], perm[n_val:]
    if method == "svm":
        clf = LinearSVC(C=1.0, dual="auto", max_iter=20000)
    elif method == "logistic":
        clf = LogisticRegression(C=1.0, max_iter=5000)
    else:
        raise ValueError(f"method must be 'svm' or 'logistic', got {method!r}")
    clf.fit(x[train], y[train])
    accuracy = float(clf.score(x[val], y[val])) if n_val else float("nan")
    normal = clf.coef_.reshape(-1)
    normal = normal / np.linalg.norm(normal)
    return FittedBoundary(normal.astype(np.float32), accuracy, int(len(y)))


def project_conditional(primal: np.ndarray, conditions: np.ndarray) -> np.ndarray:
    """Direction [D] = primal minus its projection on span(conditions [K, D]), unit length.

    Editing along the result changes none of the condition attributes to first order.
    """
    n = np.asarray(primal, dtype=np.float64).reshape(-1)
    c = np.asarray(conditions, dtype=np.float64).reshape(-1, n.shape[0])
    if c.shape[0] == 0:
        out = n
    elif c.shape[0] == 1:
        c1 = c[0] / np.linalg.norm(c[0])
        out = n - (n @ c1) * c1
    elif c.shape[0] == 2:
        c1, c2 = c[0] / np.linalg.norm(c[0]), c[1] / np.linalg.norm(c[1])
        p1, p2, c12 = n @ c1, n @ c2, c1 @ c2
        denom = 1 - c12 ** 2
        if denom < 1e-8:
            raise ValueError("the two condition directions are parallel")
        alpha = (p1 - p2 * c12) / denom
        beta = (p2 - p1 * c12) / denom
        out = n - alpha * c1 - beta * c2
    else:
        coef, *_ = np.linalg.lstsq(c.T, n, rcond=None)
        out = n - c.T @ coef
    norm = np.linalg.norm(out)
    if norm < 1e-6:
        raise ValueError("the primal direction lies in the span of the conditions")
    return (out / norm).astype(np.float32)


@dataclass
class BoundarySet:
    """Named unit directions in a latent space, tied to one checkpoint."""

    normals: dict[str, np.ndarray]          # name -> float32 [D]
    checkpoint_sha256: str
    space: str = "w"                        # the latent space the normals live in
    info: dict = field(default_factory=dict)  # per-attribute accuracy, counts, labeller

    def conditioned(self, name: str, conditions: list[str]) -> np.ndarray:
        """Normal of `name` with the `conditions` projected out."""
        missing = [n for n in [name, *conditions] if n not in self.normals]
        if missing:
            raise ValueError(f"unknown boundaries {missing}; available: {sorted(self.normals)}")
        others = [self.normals[c] for c in conditions if c != name]
        if not others:
            return self.normals[name]
        return project_conditional(self.normals[name], np.stack(others))


def save_boundaries(path: str | Path, boundaries: BoundarySet) -> Path:
    path = Path(path)
    names = sorted(boundaries.normals)
    np.savez(path, names=np.array(names), normals=np.stack([boundaries.normals[n] for n in names]),
             checkpoint_sha256=np.array(boundaries.checkpoint_sha256), space=np.array(boundaries.space),
             info=np.array(json.dumps(boundaries.info, sort_keys=True)))
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def load_boundaries(path: str | Path, checkpoint_sha256: str | None = None) -> BoundarySet:
    """Read a boundary file; with `checkpoint_sha256`, refuse one fitted for another checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Boundary file {path} does not exist; fit boundaries for this "
                                f"checkpoint first (biomint-face-boundaries).")
    with np.load(path, allow_pickle=False) as data:
        names = [str(n) for n in data["names"]]
        normals = {n: data["normals"][i].astype(np.float32) for i, n in enumerate(names)}
        sha = str(data["checkpoint_sha256"])
        space = str(data["space"])
        info = json.loads(str(data["info"]))
    if checkpoint_sha256 is not None and sha != checkpoint_sha256:
        raise ValueError(f"Boundary file {path} was fitted for checkpoint {sha[:12]}…, not for "
                         f"{checkpoint_sha256[:12]}…; refit the boundaries for this checkpoint.")
    return BoundarySet(normals, sha, space, info)
