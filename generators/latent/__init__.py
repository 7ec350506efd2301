"""Latent fingerprints. Today: the procedural simulator (exact identity and ground truth).

    latent = make_latent(master, LatentSettings(), rng, overlap=other_master)

`master` is a generators.fingerprint MasterPrint, so a latent's mate is every plain and rolled
impression of the same finger. The conditional diffusion model that learns from these pairs
is issue 9's next part.
"""
from .settings import SURFACES, TECHNIQUES, VALUE_CLASSES, LatentSettings
from .simulator import Latent, make_latent, measure_value_class

__all__ = ["LatentSettings", "Latent", "make_latent", "measure_value_class", "VALUE_CLASSES", "SURFACES", "TECHNIQUES"]
