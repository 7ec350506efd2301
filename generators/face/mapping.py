"""Mapping network z -> w (StyleGAN, Karras et al. 2019, section 2), names as in `G_ema.mapping`.

State dict: fc{i}.weight / fc{i}.bias for i < num_layers, embed.* when c_dim > 0, w_avg [w_dim].
"""

from __future__ import annotations

import torch

from generators.face.layers import FullyConnectedLayer


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale each row to unit mean square (StyleGAN's "pixel norm" on the latent)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


class MappingNetwork(torch.nn.Module):
    """MLP of `num_layers` equalised-lr layers (lr multiplier 0.01), broadcast to num_ws copies."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int, num_layers: int = 8,
                 embed_features: int | None = None, layer_features: int | None = None,
                 lr_multiplier: float = 0.01, w_avg_beta: float | None = 0.995,
                 activation: str = "lrelu") -> None:
        super().__init__()
        if activation != "lrelu":
            raise ValueError(f"mapping activation {activation!r} is not supported (only 'lrelu')")
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        embed_features = (w_dim if embed_features is None else embed_features) if c_dim > 0 else 0
        layer_features = w_dim if layer_features is None else layer_features
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            setattr(self, f"fc{idx}", FullyConnectedLayer(
                features[idx], features[idx + 1], lrelu=True, lr_multiplier=lr_multiplier))
        # Truncation needs the average w; real checkpoints always carry it.
        self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None,
                truncation_psi: float = 1.0, truncation_cutoff: int | None = None) -> torch.Tensor:
        """z [B, z_dim] (and c [B, c_dim]) -> ws [B, num_ws, w_dim].

        Truncation (Karras et al. 2019, eq. in section 3): w' = w_avg + psi * (w - w_avg),
        applied to the first `truncation_cutoff` layers only when a cutoff is given.
        """
        x = None
        if self.z_dim > 0:
            x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            if c is None:
                raise ValueError(f"this generator is conditional (c_dim={self.c_dim}); pass c")
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1) if x is not None else y
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        ws = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            return truncate(ws, self.w_avg, truncation_psi, truncation_cutoff)
        return ws


def truncate(ws: torch.Tensor, w_avg: torch.Tensor, psi: float,
             cutoff: int | None = None) -> torch.Tensor:
    """Pull ws [B, L, w_dim] towards w_avg [w_dim] by psi on layers < cutoff (all if None)."""
    out = ws.clone()
    cut = ws.shape[1] if cutoff is None else cutoff
    out[:, :cut] = w_avg.lerp(ws[:, :cut], psi)
    return out
