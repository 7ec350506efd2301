"""A deterministic stand-in face recognizer for tests of the retry and stage logic.

Its "embedding" is the normalised centred pixels, so larger latent edits move a picture further
and similarity falls with edit size; the real SFace embedder is tested on real photos elsewhere.
"""
from dataclasses import dataclass

import numpy as np


@dataclass
class _Emb:
    embeddings: np.ndarray
    found: np.ndarray
    landmarks: np.ndarray
    aligned: np.ndarray


class PixelEmbedder:
    """Normalised centred pixels; fixed landmarks; an aligned thumbnail."""

    def embed(self, images):
        x = np.stack([i.astype(np.float32).ravel() for i in images])
        x -= x.mean(1, keepdims=True)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        n = len(images)
        lm = np.tile(np.array([[10, 12], [22, 12], [16, 18], [11, 24], [21, 24]], np.float32), (n, 1, 1))
        aligned = np.stack([np.resize(i, (112, 112, 3)) for i in images]).astype(np.uint8)
        return _Emb(x, np.ones(n, bool), lm, aligned)
