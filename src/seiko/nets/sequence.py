"""A denoiser for one-hot sequences: a pre-norm transformer over positions.

Used by every sequence domain (SELFIES tokens, DNA, RNA, protein). Input and output are (B, L, V):
the noisy one-hot x_t in, the prediction (epsilon, v or x0, per the schedule) out.
"""

from __future__ import annotations

import torch
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import Tensor, nn


class TimeClassConditioned:
    """What the sequence denoisers share: the (B, L, V) input check and the time + class
    embedding. The host sets ``seq_len``, ``vocab_size``, ``num_classes``, ``time_proj``,
    ``time_embed`` and ``class_embed`` (None when unconditional)."""

    seq_len: int
    vocab_size: int
    num_classes: int | None

    def check_input(self, x: Tensor) -> None:
        if x.shape[1:] != (self.seq_len, self.vocab_size):
            raise ValueError(
                f"expected input of shape (B, {self.seq_len}, {self.vocab_size}), "
                f"got {tuple(x.shape)}"
            )

    def time_class_embedding(self, t: Tensor, cond: Tensor | None, dtype: torch.dtype) -> Tensor:
        """(B, E): the timestep embedding plus the class's; ``cond`` None or -1 is the null
        class ``num_classes``."""
        emb = self.time_embed(self.time_proj(t).to(dtype))
        if self.class_embed is not None:
            if cond is None:  # unconditional: the null class
                cond = t.new_full(t.shape, self.num_classes)
            cond = torch.where(cond < 0, self.num_classes, cond)  # -1 also means "no class"
            emb = emb + self.class_embed(cond)
        return emb


class SequenceDenoiser(TimeClassConditioned, nn.Module):
    """Transformer denoiser over sequence positions with a timestep embedding.

    Args:
        vocab_size: V, the alphabet size (one-hot width); linked from the datamodule by the CLI.
        seq_len: L, the sequence length; linked from the datamodule by the CLI.
        d_model: transformer width.
        n_layers: number of transformer blocks.
        n_heads: attention heads.
        ff_mult: feed-forward width as a multiple of d_model.
        dropout: dropout inside the blocks.
        num_classes: if set, the denoiser is class-conditional; class ``num_classes`` is the
            "no class" token used for classifier-free guidance and unconditional sampling.
    """

    def __init__(
        self,
        vocab_size: int,
        seq_len: int,
        d_model: int = 128,
        n_layers: int = 4,
        n_heads: int = 4,
        ff_mult: int = 4,
        dropout: float = 0.0,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        if vocab_size < 2 or seq_len < 1:
            raise ValueError(f"need vocab_size >= 2 and seq_len >= 1, got {vocab_size}, {seq_len}")
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.vocab_size, self.seq_len, self.num_classes = vocab_size, seq_len, num_classes
        self.embed = nn.Linear(vocab_size, d_model)
        self.position = nn.Parameter(torch.randn(1, seq_len, d_model) * 0.02)
        self.time_proj = Timesteps(d_model, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(d_model, d_model)
        self.class_embed = nn.Embedding(num_classes + 1, d_model) if num_classes else None
        block = nn.TransformerEncoderLayer(
            d_model,
            n_heads,
            ff_mult * d_model,
            dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(block, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        """Args: x (B, L, V) noisy one-hot; t (B,) long timesteps; cond (B,) long classes or None.

        Returns: (B, L, V) the prediction.
        """
        self.check_input(x)
        h = self.embed(x) + self.position
        h = h + self.time_class_embedding(t, cond, x.dtype)[:, None, :]
        return self.head(self.norm(self.blocks(h)))
