"""Face generator: StyleGAN2 networks (stylegan2-ada-pytorch names), safe checkpoint loading,
InterFaceGAN boundaries and edits, identity gate, mated images.

>>> g = load_generator("ffhq.pkl", device="cuda")          # restricted unpickler, no code runs
>>> ws = g.mapping(z, None, truncation_psi=0.7)           # z [B, 512] -> ws [B, 18, 512]
>>> img = g.synthesis(ws, noise_mode="const")              # [B, 3, 1024, 1024] in about [-1, 1]
"""

from generators.face.boundaries import (BoundarySet, FittedBoundary, fit_boundary, load_boundaries,
                                        project_conditional, save_boundaries)
from generators.face.checkpoint import checkpoint_sha256, load_generator, save_generator
from generators.face.editing import EditRange, apply_edits, mix_styles, sample_magnitudes
from generators.face.errors import CheckpointError
from generators.face.generator import Generator, images_to_uint8, pick_device
from generators.face.identities import (Identity, IdentitySettings, identity_from_latent, map_latents,
                                        render, select_identity)
from generators.face.identity_gate import GateDecision, IdentityGate, max_cosine_blockwise
from generators.face.mated import MatedImage, MatedSettings, fine_layer_start, generate_mated

__all__ = [
    "BoundarySet", "CheckpointError", "EditRange", "FittedBoundary", "GateDecision", "Generator",
    "Identity", "IdentityGate", "IdentitySettings", "MatedImage", "MatedSettings", "apply_edits",
    "checkpoint_sha256", "fine_layer_start", "fit_boundary", "generate_mated", "identity_from_latent",
    "images_to_uint8", "load_boundaries", "load_generator", "map_latents", "max_cosine_blockwise",
    "mix_styles", "pick_device", "project_conditional", "render", "sample_magnitudes",
    "save_boundaries", "save_generator", "select_identity",
]
