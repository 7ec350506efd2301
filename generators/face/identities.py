"""Identity anchors: one z per subject from its own rng, kept only if the distinctness gate agrees.

A subject's candidates are drawn in order from the subject's numpy Generator (seeding rule,
CONVENTIONS §2), rendered with truncation and the checkpoint's constant noise, embedded, and
offered to the gate; the first accepted candidate is the identity. Same rng + same gate state
-> same identity, on any device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from generators.face.generator import Generator, images_to_uint8
from generators.face.identity_gate import FaceEmbedderLike, GateDecision, IdentityGate


@dataclass(frozen=True)
class IdentitySettings:
    truncation_psi: float = 0.7             # pull towards the average face (fewer artefacts)
    truncation_cutoff: int | None = None    # truncate only the first N layers (None = all)
    max_candidates: int = 16                # give up on a subject after this many rejections
    candidate_batch: int = 1                # candidates per forward pass (1: an anchor re-renders
                                            # bit-exactly from its z alone, see identity_from_latent)
    fp16: bool = True                       # half precision for the checkpoint's fp16 blocks (CUDA)
    class_index: int | None = None          # a conditional generator's class (one-hot c); None if unconditional

    def __post_init__(self) -> None:
        if not 0.0 <= self.truncation_psi <= 1.0:
            raise ValueError(f"truncation_psi must be in [0, 1], got {self.truncation_psi}")
        if self.max_candidates < 1 or self.candidate_batch < 1:
            raise ValueError("max_candidates and candidate_batch must be >= 1")


@dataclass
class Identity:
    """An accepted anchor face."""

    z: np.ndarray                 # float32 [z_dim]
    ws: np.ndarray                # float32 [num_ws, w_dim] after truncation
    image: np.ndarray             # uint8 [R, R, 3]
    embedding: np.ndarray         # float32 [D], L2-normalised
    landmarks: np.ndarray         # float32 [5, 2]
    aligned: np.ndarray           # uint8 [112, 112, 3]
    candidate: int                # index of the accepted candidate in the subject's sequence
    gate: GateDecision


def class_vector(generator: Generator, class_index: int | None) -> np.ndarray | None:
    """The conditioning label c [c_dim] float32 of `class_index` (one-hot, the label format of
    NVIDIA's conditional training sets), or None for an unconditional generator. ValueError
    when a conditional generator gets no class, an unconditional one gets one, or the class
    is out of range."""
    c_dim = int(getattr(generator, "c_dim", 0))
    if c_dim == 0:
        if class_index is not None:
            raise ValueError(f"class_index={class_index} was given, but this generator is unconditional "
                             "(c_dim=0); leave it unset")
        return None
    if class_index is None:
        raise ValueError(f"this generator is conditional on {c_dim} classes (c_dim={c_dim}); "
                         f"choose one with class_index=0..{c_dim - 1}")
    if not 0 <= int(class_index) < c_dim:
        raise ValueError(f"class_index={class_index} is out of range for this generator's {c_dim} classes "
                         f"(0..{c_dim - 1})")
    c = np.zeros(c_dim, np.float32)
    c[int(class_index)] = 1.0
    return c


@torch.no_grad()
def map_latents(generator: Generator, z: np.ndarray, psi: float, cutoff: int | None,
                device: torch.device, c: np.ndarray | None = None) -> np.ndarray:
    """z [B, z_dim] (and for a conditional generator its label c [c_dim], the same for every
    row) -> ws [B, num_ws, w_dim] (float32 numpy)."""
    zt = torch.as_tensor(z, dtype=torch.float32, device=device)
    ct = None if c is None else torch.as_tensor(np.broadcast_to(c, (len(z), len(c))).copy(), device=device)
    return generator.mapping(zt, ct, truncation_psi=psi, truncation_cutoff=cutoff).cpu().numpy()


@torch.no_grad()
def render(generator: Generator, ws: np.ndarray, device: torch.device, noise_mode: str = "const",
           noise_generators: list[torch.Generator] | None = None,
           fp16: bool = True) -> np.ndarray:
    """ws [B, num_ws, w_dim] -> uint8 images [B, R, R, 3]. fp16 only matters on CUDA."""
    wt = torch.as_tensor(ws, dtype=torch.float32, device=device)
    img = generator.synthesis(wt, noise_mode=noise_mode, generator=noise_generators,
                              force_fp32=not fp16)
    return images_to_uint8(img)


def select_identity(generator: Generator, embedder: FaceEmbedderLike, gate: IdentityGate,
                    rng: np.random.Generator, settings: IdentitySettings,
                    device: str | torch.device = "cpu") -> tuple[Identity | None, int]:
    """Draw candidates from `rng` until the gate accepts one.

    Returns (identity or None when `max_candidates` were all rejected, candidates tried).
    Accepted identities are added to `gate`; rejections are counted there.
    """
    device = torch.device(device)
    c = class_vector(generator, settings.class_index)
    tried = 0
    while tried < settings.max_candidates:
        n = min(settings.candidate_batch, settings.max_candidates - tried)
        z = rng.standard_normal((n, generator.z_dim)).astype(np.float32)
        ws = map_latents(generator, z, settings.truncation_psi, settings.truncation_cutoff, device, c)
        images = render(generator, ws, device, fp16=settings.fp16)
        result: Any = embedder.embed(list(images))
        for i in range(n):
            decision = gate.offer(result.embeddings[i], bool(result.found[i]))
            if decision.accepted:
                return Identity(z[i], ws[i], images[i], result.embeddings[i].astype(np.float32),
                                result.landmarks[i].astype(np.float32), result.aligned[i],
                                tried + i, decision), tried + i + 1
        tried += n
    return None, tried


def identity_from_latent(generator: Generator, embedder: FaceEmbedderLike, z: np.ndarray,
                         candidate: int, gate: GateDecision, settings: IdentitySettings,
                         device: str | torch.device = "cpu") -> Identity:
    """Rebuild an accepted identity from its z [z_dim] (same pixels as `select_identity` made
    with candidate_batch=1: the same batch-of-one mapping and synthesis)."""
    device = torch.device(device)
    ws = map_latents(generator, np.asarray(z, np.float32)[None], settings.truncation_psi,
                     settings.truncation_cutoff, device, class_vector(generator, settings.class_index))
    images = render(generator, ws, device, fp16=settings.fp16)
    result: Any = embedder.embed(list(images))
    if not bool(result.found[0]):
        raise RuntimeError("the face of an accepted identity was not found again on re-rendering")
    return Identity(np.asarray(z, np.float32), ws[0], images[0],
                    result.embeddings[0].astype(np.float32), result.landmarks[0].astype(np.float32),
                    result.aligned[0], candidate, gate)
