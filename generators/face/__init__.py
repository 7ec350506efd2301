"""Face generator: StyleGAN2 and StyleGAN3 (-T, -R) networks (NVIDIA's parameter names), safe
checkpoint loading, InterFaceGAN boundaries and edits, identity gate, mated images.

>>> g = load_generator("ffhq.pkl", device="cuda")          # restricted unpickler, no code runs
>>> ws = g.mapping(z, None, truncation_psi=0.7)           # z [B, 512] -> ws [B, 18, 512]
>>> img = g.synthesis(ws, noise_mode="const")              # [B, 3, 1024, 1024] in about [-1, 1]
"""

from generators.lazy_exports import lazy_exports

# Names resolved on first use (PEP 562): importing the package (e.g. for CheckpointError,
# which every biomint command's error handling needs) must not import torch, which costs
# seconds and which commands such as `biomint validate` never use.
_WHERE = {
    "BoundarySet": "boundaries", "FittedBoundary": "boundaries", "fit_boundary": "boundaries",
    "load_boundaries": "boundaries", "project_conditional": "boundaries", "save_boundaries": "boundaries",
    "checkpoint_sha256": "checkpoint", "load_generator": "checkpoint", "save_generator": "checkpoint",
    "EditRange": "editing", "apply_edits": "editing", "mix_styles": "editing", "sample_magnitudes": "editing",
    "CheckpointError": "errors",
    "Generator": "generator", "images_to_uint8": "generator", "pick_device": "generator",
    "Generator3": "stylegan3", "read_stylegan3": "stylegan3_checkpoint", "is_stylegan3": "stylegan3_checkpoint",
    "Identity": "identities", "IdentitySettings": "identities", "identity_from_latent": "identities",
    "map_latents": "identities", "class_vector": "identities", "render": "identities", "select_identity": "identities",
    "GateDecision": "identity_gate", "IdentityGate": "identity_gate", "max_cosine_blockwise": "identity_gate",
    "MatedImage": "mated", "MatedSettings": "mated", "fine_layer_start": "mated", "generate_mated": "mated",
}


__getattr__ = lazy_exports(__name__, _WHERE, globals())


__all__ = [
    "BoundarySet", "CheckpointError", "EditRange", "FittedBoundary", "GateDecision", "Generator", "Generator3",
    "Identity", "IdentityGate", "IdentitySettings", "MatedImage", "MatedSettings", "apply_edits",
    "checkpoint_sha256", "fine_layer_start", "fit_boundary", "generate_mated", "identity_from_latent",
    "class_vector", "images_to_uint8", "is_stylegan3", "load_boundaries", "load_generator", "map_latents", "max_cosine_blockwise",
    "mix_styles", "pick_device", "project_conditional", "read_stylegan3", "render", "sample_magnitudes",
    "save_boundaries", "save_generator", "select_identity",
]
