"""A sequence autoencoder: the latent space of latent diffusion for token sequences.

A bidirectional GRU encodes a token sequence (B, L) into a Gaussian posterior q(z | x) over a
``latent_dim``-vector; an autoregressive GRU decoder, conditioned on z at every step, gives
p(x | z) one token at a time (teacher forcing in training, greedy or sampled at generation). It is
trained as a beta-VAE (``seiko.lightning_modules.SequenceAutoencoderModule``): the token
cross-entropy plus beta times the KL of q(z | x) to N(0, I), which keeps the latent space smooth
enough for a diffusion model to cover it (Gomez-Bombarelli et al. 2018 for molecules as SMILES;
Rombach et al. 2022 for diffusion in an autoencoder's latent space).

The decoder learns the grammar (for SELFIES, which branch and ring symbols take which index
symbols, and where the string ends); the diffusion model then only has to learn where molecules
lie in a 32-to-128-dimensional space.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class SequenceAutoencoder(nn.Module):
    """GRU encoder / autoregressive GRU decoder over a fixed-length, padded token sequence.

    Args:
        vocab_size: V, the number of tokens (pad included); linked from the datamodule by the CLI.
        seq_len: L, the padded length; linked from the datamodule by the CLI.
        latent_dim: the size of z.
        embed_dim: token embedding width (shared by encoder and decoder).
        encoder_hidden: hidden size of each direction of the encoder GRU.
        decoder_hidden: hidden size of the decoder GRU.
        decoder_layers: number of stacked decoder GRU layers.
        dropout: dropout between decoder GRU layers.
    """

    def __init__(
        self,
        vocab_size: int,
        seq_len: int,
        latent_dim: int = 64,
        embed_dim: int = 64,
        encoder_hidden: int = 256,
        decoder_hidden: int = 384,
        decoder_layers: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if vocab_size < 2 or seq_len < 1 or latent_dim < 1:
            raise ValueError(
                f"need vocab_size >= 2, seq_len >= 1, latent_dim >= 1; got {vocab_size}, "
                f"{seq_len}, {latent_dim}"
            )
        self.vocab_size, self.seq_len, self.latent_dim = vocab_size, seq_len, latent_dim
        self.decoder_layers, self.decoder_hidden = decoder_layers, decoder_hidden
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.encoder = nn.GRU(embed_dim, encoder_hidden, batch_first=True, bidirectional=True)
        self.to_posterior = nn.Linear(2 * encoder_hidden, 2 * latent_dim)
        self.to_hidden = nn.Linear(latent_dim, decoder_layers * decoder_hidden)
        self.start = nn.Parameter(torch.zeros(embed_dim))
        self.decoder = nn.GRU(
            embed_dim + latent_dim,
            decoder_hidden,
            num_layers=decoder_layers,
            batch_first=True,
            dropout=dropout if decoder_layers > 1 else 0.0,
        )
        self.head = nn.Linear(decoder_hidden, vocab_size)

    def decoder_parameters(self) -> list[nn.Parameter]:
        """The decoder side's own parameters: the latent-to-state layer, the start token, the
        decoder GRU and the output head. Not the token embedding (the encoder reads it too), so
        training only these leaves every sequence's latent where it was."""
        parts = (self.to_hidden, self.decoder, self.head)
        return [self.start, *(p for part in parts for p in part.parameters())]

    # ------------------------------------------------------------------ encoder
    def _embed(self, x: Tensor) -> Tensor:
        """(B, L) token ids, or (B, L, V) token probabilities (differentiable) -> (B, L, E)."""
        if x.dtype in (torch.long, torch.int32, torch.int64):
            return self.embed(x)
        return x @ self.embed.weight

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior mean and log-variance, each (B, latent_dim).

        Args:
            x: (B, L) token ids, or (B, L, V) one-hot / probabilities (gradient flows through).
        """
        if x.shape[1] != self.seq_len:
            raise ValueError(f"expected {self.seq_len} tokens per sequence, got {x.shape[1]}")
        _, h = self.encoder(self._embed(x))  # h: (2, B, H), the two directions' last states
        mean, logvar = self.to_posterior(torch.cat([h[0], h[1]], dim=-1)).chunk(2, dim=-1)
        return mean, logvar.clamp(-12.0, 6.0)

    # ------------------------------------------------------------------ decoder
    def _initial_state(self, z: Tensor) -> Tensor:
        h = torch.tanh(self.to_hidden(z))  # (B, layers * H)
        return h.view(z.shape[0], self.decoder_layers, self.decoder_hidden).transpose(0, 1)

    def forward(self, z: Tensor, tokens: Tensor, input_dropout: float = 0.0) -> Tensor:
        """Teacher-forced logits (B, L, V) of ``tokens`` (B, L) given z (B, latent_dim).

        ``input_dropout`` replaces that fraction of the decoder's previous-token inputs by the
        start embedding ("word dropout", Bowman et al. 2016), so the decoder must use z.
        """
        b = tokens.shape[0]
        previous = self.embed(tokens[:, :-1])
        if input_dropout > 0 and self.training:
            keep = torch.rand(previous.shape[:2], device=z.device) >= input_dropout
            previous = torch.where(keep[..., None], previous, self.start)
        inputs = torch.cat([self.start.expand(b, 1, -1), previous], dim=1)
        inputs = torch.cat([inputs, z[:, None, :].expand(-1, self.seq_len, -1)], dim=-1)
        out, _ = self.decoder(inputs, self._initial_state(z))
        return self.head(out)

    @torch.no_grad()
    def generate(
        self,
        z: Tensor,
        temperature: float = 0.0,
        generator: torch.Generator | None = None,
        beam_width: int = 1,
    ) -> Tensor:
        """Token ids (B, L) decoded from z (B, latent_dim).

        ``temperature`` 0 decodes greedily (``beam_width`` 1) or by beam search (``beam_width``
        > 1: the most likely whole sequence among ``beam_width`` kept at each position, scored by
        the summed log-probability of all L tokens, pads included); > 0 samples each token at that
        temperature (no beam).
        """
        if beam_width < 1:
            raise ValueError(f"beam_width must be >= 1, got {beam_width}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if beam_width > 1 and temperature == 0:
            return self._beam_search(z, beam_width)
        b = z.shape[0]
        h = self._initial_state(z)
        token_in = self.start.expand(b, -1)
        out = torch.empty(b, self.seq_len, dtype=torch.long, device=z.device)
        for i in range(self.seq_len):
            step, h = self.decoder(torch.cat([token_in, z], dim=-1)[:, None, :], h)
            logits = self.head(step[:, 0])
            if temperature > 0:
                probs = torch.softmax(logits / temperature, dim=-1)
                out[:, i] = torch.multinomial(probs, 1, generator=generator)[:, 0]
            else:
                out[:, i] = logits.argmax(-1)
            token_in = self.embed(out[:, i])
        return out

    def _beam_search(self, z: Tensor, k: int) -> Tensor:
        b, v = z.shape[0], self.head.out_features
        zk = z.repeat_interleave(k, dim=0)  # (B*K, D): beam j of item i at row i*K + j
        h = self._initial_state(zk)
        token_in = self.start.expand(b * k, -1)
        scores = torch.full((b, k), float("-inf"), device=z.device)
        scores[:, 0] = 0.0  # all beams start identical: keep one, or the top-K would repeat it
        history = torch.empty(b, k, 0, dtype=torch.long, device=z.device)
        rows = torch.arange(b, device=z.device)[:, None]
        for _ in range(self.seq_len):
            step, h = self.decoder(torch.cat([token_in, zk], dim=-1)[:, None, :], h)
            log_probs = torch.log_softmax(self.head(step[:, 0]), dim=-1).view(b, k, v)
            scores, flat = (scores[..., None] + log_probs).view(b, k * v).topk(k, dim=-1)
            beam, token = flat // v, flat % v
            history = torch.cat([history[rows, beam], token[..., None]], dim=-1)
            h = h.reshape(h.shape[0], b, k, -1)[:, rows, beam].reshape(h.shape[0], b * k, -1)
            token_in = self.embed(token.reshape(-1))
        return history[:, 0]  # topk sorts: beam 0 is the most likely


__all__ = ["SequenceAutoencoder"]
