"""Mated images of one identity: sampled attribute edits + fine-layer style mixing + noise,
each checked against the identity anchor with the face embedder.

Per sample (its own numpy Generator, so a sample is reproducible from its seed alone):
  1. magnitudes ~ U(range) per attribute; a mixing source z and strength; a noise seed;
  2. ws = mix_styles(apply_edits(anchor_ws, directions, scale * magnitudes),
                     mapping(z_mix), fine_layer, scale * strength), rendered with random noise;
  3. similarity = cosine(embed(image), anchor embedding); below `similarity_floor` (or no face
     found) -> retry with scale *= shrink, up to `max_retries`; then drop and record.
Edits do not guarantee identity (InterFaceGAN moves along attribute directions that are
entangled with identity), hence the measured check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from generators.face.editing import EditRange, apply_edits, mix_styles, sample_magnitudes
from generators.face.generator import Generator
from generators.face.identities import Identity, class_vector, map_latents, render
from generators.face.identity_gate import FaceEmbedderLike


def fine_layer_start(generator: Generator) -> int:
    """First w index of the 64x64 block (StyleGAN's "fine" styles: colour, micro-texture),
    clamped so small test networks still have one fine layer. StyleGAN3 has no blocks: its
    layers' band limits grow geometrically, and the first w whose layer carries detail beyond
    what 64x64 holds (cutoff > 16 cycles per image, half of 64's Nyquist rate 32: where
    StyleGAN2's 64x64 block's upsampled content starts) is the same split."""
    cutoffs = getattr(getattr(generator, "synthesis", None), "w_cutoffs", None)
    if cutoffs:
        first = next((i for i, f in enumerate(cutoffs) if f > 16.0), len(cutoffs) - 1)
        return min(first, generator.num_ws - 1)
    return min(2 * int(math.log2(64)) - 5, generator.num_ws - 1)


@dataclass(frozen=True)
class MatedSettings:
    edit_ranges: dict[str, EditRange] = field(default_factory=dict)   # attribute -> range
    mixing_strength_max: float = 0.5        # fine-layer mixing strength ~ U(0, max)
    mixing_from_layer: int | None = None    # None = fine_layer_start(generator)
    random_noise: bool = True               # fresh per-layer noise per image
    similarity_floor: float = 0.363         # SFace's customary same-person cosine
    max_retries: int = 3                    # smaller-edit retries before dropping a sample
    shrink: float = 0.5                     # edit and mixing scale factor per retry
    truncation_psi: float = 0.7             # for the mixing source's w
    truncation_cutoff: int | None = None
    fp16: bool = True                       # half precision for fp16 blocks (CUDA only)
    class_index: int | None = None          # a conditional generator's class: the mixing source's too

    def __post_init__(self) -> None:
        if not 0.0 <= self.mixing_strength_max <= 1.0:
            raise ValueError(f"mixing_strength_max must be in [0, 1], got {self.mixing_strength_max}")
        if not -1.0 <= self.similarity_floor <= 1.0:
            raise ValueError(f"similarity_floor must be a cosine in [-1, 1], got {self.similarity_floor}")
        if self.max_retries < 0 or not 0.0 < self.shrink < 1.0:
            raise ValueError("max_retries must be >= 0 and shrink in (0, 1)")


@dataclass
class MatedImage:
    """One generated sample; `accepted` False means dropped (image is the last attempt)."""

    accepted: bool
    reason: str                          # "accepted", "no_face", "below_floor"
    image: np.ndarray                    # uint8 [R, R, 3]
    aligned: np.ndarray                  # uint8 [112, 112, 3]
    landmarks: np.ndarray                # float32 [5, 2]
    similarity: float                    # cosine to the anchor (nan if no face)
    params: dict[str, Any]               # edit magnitudes, mixing source, similarity, retries


@dataclass
class _Plan:
    magnitudes: dict[str, float]
    mix_seed: int
    strength: float
    noise_seed: int


def plan_sample(rng: np.random.Generator, settings: MatedSettings) -> _Plan:
    """Everything random about one sample, drawn in a fixed order from its own rng."""
    magnitudes = sample_magnitudes(rng, settings.edit_ranges)
    mix_seed = int(rng.integers(0, 2 ** 63 - 1))
    strength = float(rng.uniform(0.0, settings.mixing_strength_max))
    noise_seed = int(rng.integers(0, 2 ** 63 - 1))
    return _Plan(magnitudes, mix_seed, strength, noise_seed)


def sample_ws(generator: Generator, identity: Identity, plan: _Plan, scale: float,
              directions: dict[str, np.ndarray], settings: MatedSettings,
              device: torch.device) -> np.ndarray:
    """The edited, mixed ws [num_ws, w_dim] of one sample at edit `scale`."""
    ws = apply_edits(identity.ws, directions, {k: v * scale for k, v in plan.magnitudes.items()},
                     settings.edit_ranges)
    z_mix = np.random.default_rng(plan.mix_seed).standard_normal((1, generator.z_dim))
    ws_mix = map_latents(generator, z_mix.astype(np.float32), settings.truncation_psi,
                         settings.truncation_cutoff, device, class_vector(generator, settings.class_index))[0]
    first = settings.mixing_from_layer if settings.mixing_from_layer is not None \
        else fine_layer_start(generator)
    return mix_styles(ws, ws_mix, first, plan.strength * scale)


def similarity_to_anchor(embeddings: np.ndarray, found: np.ndarray, anchor: np.ndarray,
                         floor: float) -> list[tuple[bool, str, float]]:
    """(kept, reason, cosine) per row of embeddings [N, D] against the anchor [D].

    A sample is kept when a face was found and its cosine to the anchor is >= floor;
    reason is "accepted", "no_face" or "below_floor"; cosine is nan without a face.
    """
    out = []
    for e, f in zip(np.asarray(embeddings, np.float32), np.asarray(found, bool)):
        if not f:
            out.append((False, "no_face", float("nan")))
            continue
        sim = float(e @ np.asarray(anchor, np.float32))
        out.append((sim >= floor, "accepted" if sim >= floor else "below_floor", sim))
    return out


def generate_mated(generator: Generator, embedder: FaceEmbedderLike, identity: Identity,
                   directions: dict[str, np.ndarray], rngs: list[np.random.Generator],
                   settings: MatedSettings, device: str | torch.device = "cpu") -> list[MatedImage]:
    """One MatedImage per rng (batched: all pending samples of an attempt in one forward pass)."""
    device = torch.device(device)
    missing = sorted(set(settings.edit_ranges) - set(directions))
    if missing:
        raise ValueError(f"edit ranges name attributes without a boundary: {missing}")
    plans = [plan_sample(rng, settings) for rng in rngs]
    results: list[MatedImage | None] = [None] * len(plans)
    pending = list(range(len(plans)))
    for attempt in range(settings.max_retries + 1):
        if not pending:
            break
        scale = settings.shrink ** attempt
        ws = np.stack([sample_ws(generator, identity, plans[i], scale, directions, settings, device)
                       for i in pending])
        gens = [torch.Generator().manual_seed(plans[i].noise_seed) for i in pending]
        images = render(generator, ws, device, "random" if settings.random_noise else "const", gens,
                        fp16=settings.fp16)
        emb: Any = embedder.embed(list(images))
        still = []
        checks = similarity_to_anchor(emb.embeddings, emb.found, identity.embedding,
                                      settings.similarity_floor)
        for j, i in enumerate(pending):
            ok, reason, sim = checks[j]
            p = plans[i]
            params = dict(edit_attributes=sorted(p.magnitudes),
                          edit_magnitudes=[p.magnitudes[k] * scale for k in sorted(p.magnitudes)],
                          edit_scale=scale, mixing_source_seed=p.mix_seed,
                          mixing_strength=p.strength * scale, noise_seed=p.noise_seed,
                          similarity=sim, retries=attempt)
            results[i] = MatedImage(ok, reason, images[j], emb.aligned[j],
                                    emb.landmarks[j].astype(np.float32), sim, params)
            if not ok:
                still.append(i)
        pending = still
    return [r for r in results if r is not None]
