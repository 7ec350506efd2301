"""Distinctness gate: accept a candidate identity only if it is not too close to any accepted one.

Faces are compared through an injected embedder (any object with `embed(list of uint8
[H, W, 3]) -> result` carrying `embeddings` [N, D] L2-normalised, `found` [N], `landmarks`
[N, 5, 2] and `aligned` [N, 112, 112, 3]; biomint's `evaluation.face_embedding` provides it;
generators/ does not import evaluation/). Similarities are blockwise matrix products in
torch, on the GPU when one is given, so the gate stays cheap with many accepted identities.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np
import torch


class FaceEmbedderLike(Protocol):
    def embed(self, images: Sequence[np.ndarray]) -> Any: ...


def max_cosine_blockwise(queries: np.ndarray, reference: np.ndarray, block: int = 8192,
                         device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """For each query row [M, D] its highest cosine to any reference row [N, D] and that row's index.

    Rows must be L2-normalised. Works through `block` reference rows at a time so the
    [M, block] similarity matrix bounds memory. Returns (max [M] float32, argmax [M] int64);
    with an empty reference: (-inf, -1).
    """
    m = queries.shape[0]
    best = torch.full((m,), float("-inf"), device=device)
    arg = torch.full((m,), -1, dtype=torch.int64, device=device)
    if m == 0 or reference.shape[0] == 0:
        return best.cpu().numpy(), arg.cpu().numpy()
    q = torch.as_tensor(np.asarray(queries, np.float32), device=device)
    for start in range(0, reference.shape[0], block):
        r = torch.as_tensor(np.asarray(reference[start:start + block], np.float32), device=device)
        sims = q @ r.T                                  # [M, b]
        val, idx = sims.max(dim=1)
        better = val > best
        best = torch.where(better, val, best)
        arg = torch.where(better, idx + start, arg)
    return best.cpu().numpy(), arg.cpu().numpy()


@dataclass
class GateDecision:
    accepted: bool
    reason: str                      # "accepted", "no_face", "duplicate"
    max_similarity: float            # highest cosine to an accepted identity (-inf if none)
    nearest: int                     # index (in acceptance order) of that identity, -1 if none


@dataclass
class IdentityGate:
    """Greedy gate: candidates are offered in a fixed order; state = accepted embeddings."""

    threshold: float                         # reject when cosine to an accepted one >= threshold
    device: str | torch.device = "cpu"
    block: int = 8192
    accepted: list[np.ndarray] = field(default_factory=list)
    rejected_duplicate: int = 0
    rejected_no_face: int = 0
    # `accepted` stacked into a buffer that doubles when full: every candidate is compared with
    # all accepted ones, and re-stacking the list per candidate would copy O(N^2) bytes.
    _buffer: np.ndarray | None = field(default=None, repr=False, compare=False)
    _filled: int = field(default=0, repr=False, compare=False)

    def _matrix(self) -> np.ndarray:
        """The accepted embeddings [N, D] (a view of the buffer)."""
        n = len(self.accepted)
        if n == 0:
            return np.zeros((0, 1), np.float32)
        if self._buffer is None or self._buffer.shape[0] < n:
            grown = np.empty((max(64, 2 * n), self.accepted[0].shape[-1]), np.float32)
            if self._buffer is not None:
                grown[: self._filled] = self._buffer[: self._filled]
            self._buffer = grown
        if self._filled < n:
            self._buffer[self._filled: n] = np.stack(self.accepted[self._filled: n])
            self._filled = n
        return self._buffer[:n]

    def check(self, embedding: np.ndarray, found: bool) -> GateDecision:
        """Decide on one candidate [D] without changing the gate."""
        if not found:
            return GateDecision(False, "no_face", float("-inf"), -1)
        best, arg = max_cosine_blockwise(embedding[None], self._matrix(), self.block, self.device)
        if best[0] >= self.threshold:
            return GateDecision(False, "duplicate", float(best[0]), int(arg[0]))
        return GateDecision(True, "accepted", float(best[0]), int(arg[0]))

    def offer(self, embedding: np.ndarray, found: bool) -> GateDecision:
        """Decide on one candidate and, if accepted, add it; counts rejections."""
        decision = self.check(embedding, found)
        if decision.accepted:
            self.accepted.append(np.asarray(embedding, np.float32))
        elif decision.reason == "no_face":
            self.rejected_no_face += 1
        else:
            self.rejected_duplicate += 1
        return decision

    def offer_batch(self, embeddings: np.ndarray, found: np.ndarray) -> list[GateDecision]:
        """Offer candidates [M, D] in order; later ones are also compared with earlier accepted ones.

        The comparison with the already accepted set is one blockwise product for the whole
        batch; only the (small) within-batch part is sequential.
        """
        emb = np.asarray(embeddings, np.float32)
        best, arg = max_cosine_blockwise(emb, self._matrix(), self.block, self.device)
        n_before = len(self.accepted)
        out: list[GateDecision] = []
        for i in range(len(emb)):
            if not found[i]:
                self.rejected_no_face += 1
                out.append(GateDecision(False, "no_face", float("-inf"), -1))
                continue
            b, a = float(best[i]), int(arg[i])
            if len(self.accepted) > n_before:
                new = np.stack(self.accepted[n_before:]) @ emb[i]
                j = int(np.argmax(new))
                if new[j] > b:
                    b, a = float(new[j]), n_before + j
            if b >= self.threshold:
                self.rejected_duplicate += 1
                out.append(GateDecision(False, "duplicate", b, a))
            else:
                self.accepted.append(emb[i])
                out.append(GateDecision(True, "accepted", b, a))
        return out
