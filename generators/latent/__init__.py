"""Latent fingerprints: a procedural simulator (exact identity and ground truth) and a
conditional diffusion model that redraws its latents.

    latent = make_latent(master, LatentSettings(), rng, overlap=other_master)
    model = load_model(SHIPPED_WEIGHTS)
    image = refine_latent(model, latent, steps=3, t0=0.2, seed=seed)

`master` is a generators.fingerprint MasterPrint, so a latent's mate is every plain and rolled
impression of the same finger. `enhance_latent` gives a real latent the conditions the model
takes (ridge map and mask), for fine-tuning on a lab's own latents.
"""
from generators.lazy_exports import lazy_exports
from pathlib import Path

from .settings import SURFACES, TECHNIQUES, VALUE_CLASSES, LatentSettings

# The simulator and the enhancer are resolved on first use (PEP 562): the settings alone (what
# configs and commands such as `biomint validate` need) must not import torch.
_WHERE = {"EnhanceSettings": "enhance", "Enhanced": "enhance", "enhance_latent": "enhance",
          "Latent": "simulator", "make_latent": "simulator", "measure_value_class": "simulator"}


__getattr__ = lazy_exports(__name__, _WHERE, globals())

# The checkpoint `make dataset` uses: trained by biomint-train-latent (weights/TRAINING.md).
SHIPPED_WEIGHTS = Path(__file__).parent / "weights"

__all__ = ["LatentSettings", "Latent", "make_latent", "measure_value_class", "VALUE_CLASSES", "SURFACES", "TECHNIQUES",
           "SHIPPED_WEIGHTS", "enhance_latent", "EnhanceSettings", "Enhanced"]
