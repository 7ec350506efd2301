"""Face stage: distinct synthetic identities from a user's StyleGAN2 checkpoint, K images each.

Subject s is one identity. Image 0 is its anchor (truncated w, constant noise); images
1..K-1 are mated images (attribute edits along InterFaceGAN boundaries when `face.boundaries`
is given, fine-layer style mixing, fresh noise), each kept only if its embedder similarity to
the anchor reaches `face.similarity_floor` (else smaller edits are retried, then the sample is
dropped and recorded). Dropping more than `face.max_drop_fraction` of the samples fails the run,
naming the likely cause (`drop_cause`): most often a checkpoint that does not draw faces.

Seeding (CONVENTIONS §2, unit 0):
  identity candidates of subject s  <- subject_seed_sequence(seed, 2, s)   (drawn in order)
  mated image k of subject s        <- sample_seed_sequence(seed, 2, s, k)
Distinctness gate: a candidate is rejected when its embedding is within face.gate_threshold
(cosine) of any accepted identity of an earlier subject in its gate block (subjects
[b*G, (b+1)*G), G = face.gate_block; 0 = one block for the whole dataset). The gate is
sequential, so a shard first runs the earlier subjects of its block (no files written) and
identities do not depend on shard layout. Each worker keeps its last blocks (embeddings and
latents only), so consecutive shards extend a block instead of re-running it: with W workers
the anchors cost about W times one pass over the identities; a smaller G bounds that.
Without `face.checkpoint` the stage is skipped with one line.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import io
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import pyarrow as pa
from omegaconf import OmegaConf

from pipeline.errors import CheckpointError, ConfigError
from pipeline.seeding import STAGE_IDS, derived_seed, sample_seed_sequence, subject_seed_sequence
from pipeline.stages.base import StageContext, generator_version, image_png_bytes, relative_sample_dir

NAME = "face"
STAGE_ID = STAGE_IDS[NAME]
MODALITY = "face"
PAIR_KIND = "face-face"
GENERATOR = "biomint.generators.face"
log = logging.getLogger("biomint")


@dataclass
class Config:
    """Hydra group `face` (conf/face/none.yaml holds these defaults)."""

    checkpoint: Optional[str] = None       # stylegan2-ada .pkl / rosinality .pt / biomint .pt; null = skip
    identities: int = 50                   # distinct synthetic people
    images_per_identity: int = 4           # anchor + (K - 1) mated images
    truncation_psi: float = 0.7
    truncation_cutoff: Optional[int] = None
    embedder: str = "sface"                # sface (YuNet + SFace) or arcface (needs embedder_onnx)
    embedder_onnx: Optional[str] = None
    gate_threshold: float = 0.363          # reject a candidate this close (cosine) to an accepted one
    gate_block: int = 0                    # subjects gated against each other; 0 = all (module doc)
    max_candidates: int = 16               # candidates per identity before the subject is dropped
    boundaries: Optional[str] = None       # .npz from biomint-face-boundaries for this checkpoint
    edits: Dict[str, List[float]] = field(default_factory=dict)        # attr -> [low, high]
    edit_layers: Dict[str, List[int]] = field(default_factory=dict)   # attr -> [first, last) (W+)
    conditions: List[str] = field(default_factory=list)  # boundaries projected out of every edit
    mixing_strength_max: float = 0.5       # fine-layer style mixing strength ~ U(0, max)
    mixing_from_layer: Optional[int] = None
    random_noise: bool = True
    similarity_floor: float = 0.363        # mated image vs anchor cosine
    max_retries: int = 3
    shrink: float = 0.5
    device: str = "auto"
    fp16: bool = True                      # half precision in the checkpoint's fp16 blocks on CUDA
    max_drop_fraction: float = 0.2         # more dropped samples than this share fail the run (exit 1)
    class_index: Optional[int] = None      # a conditional checkpoint's class (one-hot label); null if unconditional


PARAMS_TYPE = pa.struct([
    ("anchor", pa.bool_()), ("identity_candidate", pa.int32()),
    ("gate_max_similarity", pa.float64()), ("truncation_psi", pa.float64()),
    ("edit_attributes", pa.list_(pa.string())), ("edit_magnitudes", pa.list_(pa.float64())),
    ("edit_scale", pa.float64()), ("mixing_source_seed", pa.uint64()),
    ("mixing_strength", pa.float64()), ("noise_seed", pa.uint64()), ("similarity", pa.float64()),
    ("retries", pa.int32()), ("yaw", pa.float64()), ("pitch", pa.float64()), ("roll", pa.float64()),
    ("checkpoint_sha256", pa.string()), ("aligned_path", pa.string()),
])


def typed(config: Any) -> Config:
    """Config from a dataclass, DictConfig or plain dict (tests and `check` pass any of them)."""
    if isinstance(config, Config):
        c = dataclasses.replace(config)
    else:
        try:
            c = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), config))
        except Exception as e:  # omegaconf raises several types for unknown keys / bad values
            raise ConfigError(f"face config is not valid: {str(e).splitlines()[0]}") from None
    for key in ("checkpoint", "boundaries", "embedder_onnx"):
        if getattr(c, key):
            setattr(c, key, os.path.expanduser(getattr(c, key)))
    return c


OFF = {"checkpoint": None}   # the config values that skip this stage (repair turns unrecorded stages off)


def skip_reason(config: Any) -> str | None:
    if typed(config).checkpoint is None:
        return ("face.checkpoint is null, so no faces are minted; set face.checkpoint=<path to a "
                "stylegan2-ada-pytorch .pkl or rosinality .pt> to add them")
    return None


def check(config: Any) -> None:
    c = typed(config)
    for key, low in (("identities", 1), ("images_per_identity", 1), ("gate_block", 0),
                     ("max_candidates", 1), ("max_retries", 0)):
        if getattr(c, key) < low:
            raise ConfigError(f"face.{key}={getattr(c, key)} is not allowed: it must be >= {low}")
    for key in ("gate_threshold", "similarity_floor"):
        if not -1.0 <= getattr(c, key) <= 1.0:
            raise ConfigError(f"face.{key}={getattr(c, key)} is not allowed: a cosine in [-1, 1]")
    for key in ("truncation_psi", "max_drop_fraction"):
        if not 0.0 <= getattr(c, key) <= 1.0:
            raise ConfigError(f"face.{key}={getattr(c, key)} is not allowed: it must be in [0, 1]")
    for name, rng in c.edits.items():
        if len(rng) != 2 or rng[0] > rng[1]:
            raise ConfigError(f"face.edits.{name}={list(rng)} is not allowed: give [low, high]")
    if c.edits and not c.boundaries:
        raise ConfigError("face.edits needs face.boundaries: fit them with biomint-face-boundaries")

    if not Path(c.checkpoint).is_file():
        raise CheckpointError(
            f"face.checkpoint={c.checkpoint} does not exist; put a stylegan2-ada-pytorch .pkl "
            f"(e.g. FFHQ 1024x1024) or a rosinality .pt there, or set face.checkpoint=null to "
            f"skip faces.")
    if c.boundaries and not Path(c.boundaries).is_file():
        raise ConfigError(f"face.boundaries={c.boundaries} does not exist; fit them with "
                          f"biomint-face-boundaries --checkpoint {c.checkpoint} --out {c.boundaries}")
    # Load everything once here, so a bad checkpoint, boundary file or embedder is one
    # sentence and exit 2 before any file is written (not a failing shard).
    try:
        _tools(c, "cpu")
    except (FileNotFoundError, ValueError) as e:
        if isinstance(e, (CheckpointError, ConfigError)):
            raise
        raise ConfigError(f"face.embedder={c.embedder}: {e}") from None


def max_drop_fraction(config: Any) -> float:
    return typed(config).max_drop_fraction


# (words of a drop reason, its likely cause when many samples are dropped for it)
_NOT_FACES = "is face.checkpoint a face generator (StyleGAN2 or StyleGAN3 trained on faces)? a random or non-face model draws"
DROP_CAUSES = (("no face the detector finds", f"{_NOT_FACES} no face the detector finds"),
               ("too close to an earlier identity", f"{_NOT_FACES} look-alikes the gate takes for one person; "
                "with a face model, raise face.gate_threshold or face.max_candidates"),
               ("below_floor", "mated images drift from their anchor: lower face.edits, face.mixing_strength_max "
                "or face.similarity_floor"),
               ("no_face", "the edits or the style mixing lose the face (lower face.edits or "
                "face.mixing_strength_max), or face.checkpoint draws no faces and its anchors were chance detections"))


def drop_cause(reason: str) -> str | None:
    return next((cause for words, cause in DROP_CAUSES if words in reason), None)


def subject_count(config: Any) -> int:
    return typed(config).identities


def expected_rows(config: Any, start: int, stop: int) -> int:
    c = typed(config)
    return max(0, min(stop, c.identities) - start) * c.images_per_identity


def sample_id(subject: int, k: int) -> str:
    return f"face-{subject:08d}-{k:02d}"


@functools.lru_cache(maxsize=2)
def _generator(path: str, device: str):
    from generators.face import load_generator

    return load_generator(path, device)


@functools.lru_cache(maxsize=2)
def _embedder(name: str, onnx: Optional[str], device: str):
    from evaluation.face_embedding import make_face_embedder

    kwargs = {"device": device} if name == "arcface" else {}
    return make_face_embedder(name, onnx_path=onnx, **kwargs)


@dataclass
class _Tools:
    config: Config
    device: str
    generator: Any
    embedder: Any
    directions: dict
    sha: str


def _tools(config: Config, device: str) -> _Tools:
    from generators.face import class_vector, load_boundaries

    generator = _generator(config.checkpoint, device)  # first: a bad checkpoint is the news
    try:
        class_vector(generator, config.class_index)
    except ValueError as e:
        raise ConfigError(f"face.checkpoint={config.checkpoint}: {e}".replace("class_index", "face.class_index")
                          ) from None
    sha = _sha(config.checkpoint)
    directions: dict = {}
    if config.boundaries:
        try:
            bs = load_boundaries(config.boundaries, checkpoint_sha256=sha)
            directions = {n: bs.conditioned(n, list(config.conditions)) for n in config.edits}
        except (ValueError, FileNotFoundError) as e:
            raise ConfigError(str(e)) from None
    return _Tools(config, device, generator, _embedder(config.embedder, config.embedder_onnx, device),
                  directions, sha)


@functools.lru_cache(maxsize=4)
def _sha(path: str) -> str:
    from generators.face import checkpoint_sha256

    return checkpoint_sha256(path)


@dataclass
class _BlockState:
    """Progress of one gate block: its gate (accepted embeddings) and, per processed subject,
    ((z, candidate, gate decision) or None, (candidates tried, duplicates, faceless)).
    Only these small records are kept; images are re-rendered when needed."""

    gate: Any
    done: dict
    next_subject: int


# Per worker process: the last gate blocks, so consecutive shards of one block extend it
# instead of running it again from its first subject (same result: the gate is sequential).
_BLOCKS: collections.OrderedDict[tuple, _BlockState] = collections.OrderedDict()
_BLOCKS_KEPT = 2


def _gate_block(c: Config) -> int:
    return c.gate_block if c.gate_block > 0 else max(c.identities, 1)


def _identity_settings(c: Config):
    from generators.face import IdentitySettings

    return IdentitySettings(c.truncation_psi, c.truncation_cutoff, c.max_candidates,
                            candidate_batch=1, fp16=c.fp16, class_index=c.class_index)


def _block_state(t: _Tools, seed: int, block: int) -> _BlockState:
    from generators.face import IdentityGate

    c = t.config
    key = (t.sha, seed, block, _gate_block(c), c.gate_threshold, c.truncation_psi,
           c.truncation_cutoff, c.max_candidates, c.embedder, c.embedder_onnx, t.device, c.fp16, c.class_index)
    state = _BLOCKS.pop(key, None) or _BlockState(
        IdentityGate(threshold=c.gate_threshold, device=t.device), {}, block * _gate_block(c))
    _BLOCKS[key] = state
    while len(_BLOCKS) > _BLOCKS_KEPT:
        _BLOCKS.popitem(last=False)
    return state


def _select_identities(t: _Tools, seed: int, start: int, stop: int) -> dict[int, tuple]:
    """{subject: (identity or None, (tried, duplicates, faceless))} for subjects [start, stop).

    Each subject is gated against the accepted identities of all earlier subjects of its
    gate block, so a block is processed in order from its first subject."""
    from generators.face import identity_from_latent, select_identity

    c, g = t.config, _gate_block(t.config)
    settings = _identity_settings(c)
    out: dict[int, tuple] = {}
    for block in range(start // g, (max(stop, start + 1) - 1) // g + 1):
        state = _block_state(t, seed, block)
        while state.next_subject < min((block + 1) * g, stop):
            s, gate = state.next_subject, state.gate
            dup, noface = gate.rejected_duplicate, gate.rejected_no_face
            rng = np.random.default_rng(subject_seed_sequence(seed, STAGE_ID, s))
            ident, tried = select_identity(t.generator, t.embedder, gate, rng, settings, t.device)
            counts = (tried, gate.rejected_duplicate - dup, gate.rejected_no_face - noface)
            state.done[s] = ((ident.z, ident.candidate, ident.gate) if ident else None, counts)
            if start <= s < stop:
                out[s] = (ident, counts)
            state.next_subject += 1
        for s in range(max(start, block * g), min(stop, (block + 1) * g)):
            if s not in out:  # processed by an earlier call of this worker: rebuild from z
                slim, counts = state.done[s]
                ident = identity_from_latent(t.generator, t.embedder, *slim, settings,
                                             t.device) if slim else None
                out[s] = (ident, counts)
    return out


def _mated_settings(c: Config):
    from generators.face import EditRange, MatedSettings

    ranges = {n: EditRange(float(lo), float(hi), *(c.edit_layers.get(n) or [0, None]))
              for n, (lo, hi) in c.edits.items()}
    return MatedSettings(edit_ranges=ranges, mixing_strength_max=c.mixing_strength_max,
                         mixing_from_layer=c.mixing_from_layer, random_noise=c.random_noise,
                         similarity_floor=c.similarity_floor, max_retries=c.max_retries,
                         shrink=c.shrink, truncation_psi=c.truncation_psi,
                         truncation_cutoff=c.truncation_cutoff, fp16=c.fp16, class_index=c.class_index)


def _samples(t: _Tools, seed: int, subject: int, ident) -> list[tuple[int, int, Any]]:
    """[(k, seed, MatedImage-like)] for k = 0..K-1 (k = 0 is the anchor)."""
    from generators.face import MatedImage, generate_mated

    anchor = MatedImage(True, "accepted", ident.image, ident.aligned, ident.landmarks, 1.0, dict(
        edit_attributes=[], edit_magnitudes=[], edit_scale=0.0, mixing_source_seed=0,
        mixing_strength=0.0, noise_seed=0, similarity=1.0, retries=0))
    out = [(0, derived_seed(subject_seed_sequence(seed, STAGE_ID, subject)), anchor)]
    ks = range(1, t.config.images_per_identity)
    sss = [sample_seed_sequence(seed, STAGE_ID, subject, k) for k in ks]
    mated = generate_mated(t.generator, t.embedder, ident, t.directions,
                           [np.random.default_rng(ss) for ss in sss], _mated_settings(t.config), t.device)
    return out + [(k, derived_seed(ss), m) for k, ss, m in zip(ks, sss, mated)]


def run_shard(shard, config: Any, context: StageContext) -> list[dict]:
    from generators.face.labellers import head_pose_scores

    c = typed(config)
    t = _tools(c, context.device)
    rows: list[dict] = []
    stop = min(shard.stop, c.identities)
    selected = _select_identities(t, context.seed, shard.start, stop)
    for subject in range(shard.start, stop):
        ident, (tried, duplicates, faceless) = selected[subject]
        if ident is None:
            # Which rejection it was tells what to change (drop_cause): the model, or the gate.
            why = ", ".join(part for n, part in ((faceless, f"{faceless} with no face the detector finds"),
                                                 (duplicates, f"{duplicates} too close to an earlier identity")) if n)
            reason = f"no distinct face in {tried} candidates" + (why and f": {why}")
            for k in range(c.images_per_identity):
                context.record_dropped(sample_id(subject, k), reason)
            continue
        for k, seed, m in _samples(t, context.seed, subject, ident):
            sid = sample_id(subject, k)
            if not m.accepted:
                why = (f"similarity {m.similarity:.3f} to the anchor < floor {c.similarity_floor}"
                       if m.reason == "below_floor" else "no face found")
                context.record_dropped(sid, f"{m.reason}: {why} after {m.params['retries']} retries")
                continue
            pose = head_pose_scores(m.landmarks[None])
            rows.append(_write(context, c, t, subject, k, seed, ident, m, pose))
    gate = {"subjects": [shard.start, stop], "images": len(rows), "dropped": len(context.dropped),
            "candidates": sum(n[0] for _, n in selected.values()),
            "rejected_duplicate": sum(n[1] for _, n in selected.values()),
            "rejected_no_face": sum(n[2] for _, n in selected.values())}
    # The shard's gate counts, next to its ground truth (the shard stats file is the runner's).
    context.write(f"truth/{MODALITY}/_gate/{shard.name}.json", json.dumps(gate, sort_keys=True).encode())
    log.info("face subjects %d-%d: %d images, %d dropped; gate rejected %d duplicate and %d "
             "faceless candidates", shard.start, stop - 1, len(rows), len(context.dropped),
             gate["rejected_duplicate"], gate["rejected_no_face"])
    return rows


def _write(context: StageContext, c: Config, t: _Tools, subject: int, k: int, seed: int,
           ident, m, pose: dict) -> dict:
    sid = sample_id(subject, k)
    image_path = f"{relative_sample_dir('images', MODALITY, subject)}/{sid}.png"
    sha = context.write(image_path, image_png_bytes(m.image))
    truth_dir = relative_sample_dir("truth", MODALITY, subject)
    aligned_path = f"{truth_dir}/{sid}.aligned112.png"
    context.write(aligned_path, image_png_bytes(np.ascontiguousarray(m.aligned)))
    truth_path = f"{truth_dir}/{sid}.json"
    truth = {"landmarks_5": np.asarray(m.landmarks, float).round(3).tolist(),
             "landmark_order": ["left_eye", "right_eye", "nose", "left_mouth", "right_mouth"],
             "aligned_112": context.location(aligned_path), "similarity_to_anchor": m.similarity,
             "identity_latents": f"{truth_dir}/identity.npz"}
    if k == 0:  # the identity itself: z, truncated ws [num_ws, w_dim], anchor embedding
        buffer = io.BytesIO()
        np.savez(buffer, z=ident.z, ws=ident.ws, embedding=ident.embedding)
        context.write(f"{truth_dir}/identity.npz", buffer.getvalue())
    context.write(truth_path, json.dumps(truth, sort_keys=True).encode())
    gate_sim = ident.gate.max_similarity
    params = dict(m.params, anchor=k == 0, identity_candidate=int(ident.candidate),
                  gate_max_similarity=float(gate_sim) if np.isfinite(gate_sim) else None,
                  truncation_psi=float(c.truncation_psi), yaw=float(pose["yaw"][0]),
                  pitch=float(pose["pitch"][0]), roll=float(pose["roll"][0]),
                  checkpoint_sha256=t.sha, aligned_path=aligned_path)
    h, w = m.image.shape[:2]
    return {"sample_id": sid, "subject_id": subject, "modality": MODALITY, "finger_position": None,
            "impression_type": None, "impression": k, "path": image_path, "width": w, "height": h, "dpi": None,
            "sha256": sha, "seed": seed, "generator": GENERATOR,
            "generator_version": current_generator_version(), "params": params, "truth_path": truth_path}


def regenerate(row: dict, config: Any, context: StageContext) -> bytes:
    """PNG bytes of one row: replays the subject's gate block, then that sample."""
    c = typed(config)
    t = _tools(c, context.device)
    subject, k = int(row["subject_id"]), int(row["impression"])
    ident = _select_identities(t, context.seed, subject, subject + 1)[subject][0]
    if ident is None:
        raise ConfigError(f"subject {subject} has no accepted identity under this config")
    return image_png_bytes(_samples(t, context.seed, subject, ident)[k][2].image)


def current_generator_version() -> str:
    import generators.face as face

    return generator_version(str(Path(face.__file__).parent))
