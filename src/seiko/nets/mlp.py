"""A denoiser for vectors (a latent code): a residual MLP with a timestep embedding."""

from __future__ import annotations

import torch
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import Tensor, nn


class _Block(nn.Module):
    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.film = nn.Linear(width, 2 * width)  # scale and shift from the time/class embedding
        self.mlp = nn.Sequential(
            nn.Linear(width, 2 * width), nn.SiLU(), nn.Dropout(dropout), nn.Linear(2 * width, width)
        )

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        scale, shift = self.film(emb).chunk(2, dim=-1)
        return h + self.mlp(self.norm(h) * (1 + scale) + shift)


class VectorDenoiser(nn.Module):
    """Residual MLP denoiser for x (B, dim), e.g. the latent of ``SequenceAutoencoder``.

    Args:
        dim: the vector's size (the autoencoder's latent_dim; linked by the CLI).
        width: hidden width.
        n_layers: number of residual blocks.
        dropout: dropout inside the blocks.
        num_classes: as in ``SequenceDenoiser`` (class ``num_classes`` / -1 = no class).
    """

    def __init__(
        self,
        dim: int,
        width: int = 512,
        n_layers: int = 4,
        dropout: float = 0.0,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        if dim < 1 or width < 1 or n_layers < 1:
            raise ValueError(f"need dim, width, n_layers >= 1; got {dim}, {width}, {n_layers}")
        self.dim, self.num_classes = dim, num_classes
        self.input = nn.Linear(dim, width)
        self.time_proj = Timesteps(width, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(width, width)
        self.class_embed = nn.Embedding(num_classes + 1, width) if num_classes else None
        self.blocks = nn.ModuleList(_Block(width, dropout) for _ in range(n_layers))
        self.norm = nn.LayerNorm(width)
        self.output = nn.Linear(width, dim)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        """Args: x (B, dim); t (B,) long timesteps; cond (B,) long classes or None -> (B, dim)."""
        if x.shape[1:] != (self.dim,):
            raise ValueError(f"expected input of shape (B, {self.dim}), got {tuple(x.shape)}")
        emb = self.time_embed(self.time_proj(t).to(x.dtype))
        if self.class_embed is not None:
            if cond is None:
                cond = t.new_full(t.shape, self.num_classes)
            emb = emb + self.class_embed(torch.where(cond < 0, self.num_classes, cond))
        emb = nn.functional.silu(emb)
        h = self.input(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.output(self.norm(h))


__all__ = ["VectorDenoiser"]
