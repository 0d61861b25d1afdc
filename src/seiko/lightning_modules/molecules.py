"""Molecules as one-hot SELFIES token sequences.

A design is a canonical SMILES. In model space it is the (L, V) one-hot matrix in {-1, +1} of its
SELFIES tokens (``MoleculeDataModule`` builds the vocabulary). ``decode`` takes the argmax token per
position, joins the tokens into a SELFIES string, decodes it with ``selfies`` and canonicalises the
molecule with RDKit; a design that is not a valid non-empty molecule decodes to "" (every oracle in
``seiko.oracles.molecules`` gives NaN for ""). ``encode`` takes SMILES (any spelling), so
``decode(encode(smiles))`` is the canonical SMILES of every molecule SELFIES can express.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import selfies as sf
import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn

from seiko.datamodules.molecules import PAD_SYMBOL, decode_selfies, encode_smiles
from seiko.lightning_modules.base import SamplerConfig, ScheduleConfig, SequenceDiffusion
from seiko.lightning_modules.latent import LatentSequenceDiffusion


def _check_selfies_vocabulary(vocabulary: list[str]) -> None:
    # A vocabulary of letters (a DNA config pointed at a molecule class) would join into strings
    # SELFIES silently reads as nothing: refuse anything that is not one SELFIES token each.
    not_tokens = [s for s in vocabulary if list(sf.split_selfies(s)) != [s]]
    if not_tokens:
        raise ValueError(
            f"vocabulary entries {not_tokens[:5]} are not single SELFIES tokens like '[C]'"
        )


def split_selfies_strict(design: str) -> list[str]:
    """SELFIES -> tokens; raises on text outside brackets (e.g. a SMILES given by mistake),
    which ``selfies.split_selfies`` would silently drop (\"CCO\" would become no tokens)."""
    tokens = list(sf.split_selfies(design))
    if "".join(tokens) != design:
        raise ValueError(
            f"{design[:40]!r} is not a SELFIES string (text outside [...] tokens); "
            "give SMILES to encode(), SELFIES to token_ids()"
        )
    return tokens


def _selfies_of(designs: Sequence[str]) -> list[str]:
    """Canonical SELFIES of SMILES (any spelling); a bad one raises naming its index."""
    selfies = []
    for n, smiles in enumerate(designs):
        try:
            selfies.append(encode_smiles(smiles)[1])
        except ValueError as err:
            raise ValueError(f"design {n}: {err}") from None
    return selfies


class MoleculeDiffusion(SequenceDiffusion):
    """Continuous diffusion on one-hot SELFIES tokens; designs are canonical SMILES.

    Args:
        denoiser: e.g. ``seiko.nets.SequenceDenoiser`` (vocab_size and seq_len linked from data).
        vocabulary: SELFIES tokens in one-hot order, pad included (linked from
            ``MoleculeDataModule``; saved in the checkpoint's hyper-parameters).
        seq_len: L, the padded number of tokens.
        pad_symbol: the padding token, "[nop]" (SELFIES' no-op) by default.
        Other arguments: see ``DiffusionModule``.
    """

    def __init__(
        self,
        denoiser: nn.Module,
        vocabulary: list[str],
        seq_len: int,
        pad_symbol: str | None = PAD_SYMBOL,
        mode: Literal["pretrain", "finetune", "guidance", "ppo"] = "pretrain",
        schedule: ScheduleConfig = ScheduleConfig(),
        sampler: SamplerConfig = SamplerConfig(),
        kl_weight: float = 0.1,
        learn_initial_noise: bool = False,
        cond_dropout: float = 0.0,
        pretrained_checkpoint: str | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
    ) -> None:
        _check_selfies_vocabulary(vocabulary)
        super().__init__(
            denoiser,
            vocabulary=vocabulary,
            seq_len=seq_len,
            pad_symbol=pad_symbol,
            mode=mode,
            schedule=schedule,
            sampler=sampler,
            kl_weight=kl_weight,
            learn_initial_noise=learn_initial_noise,
            cond_dropout=cond_dropout,
            pretrained_checkpoint=pretrained_checkpoint,
            optimizer=optimizer,
        )

    def tokenize(self, design: str) -> list[str]:
        """Split a SELFIES string into its tokens."""
        return split_selfies_strict(design)

    def detokenize(self, symbols: list[str]) -> str:
        return "".join(symbols)

    def decode(self, x: Tensor) -> list[str]:
        """(B, L, V) -> B canonical SMILES; "" for a design that is not a valid molecule."""
        return [decode_selfies(selfies) for selfies in super().decode(x)]

    def encode(self, designs: Sequence[str]) -> Tensor:
        """SMILES (any spelling) -> (B, L, V) one-hot in {-1, +1} of their canonical SELFIES.

        Raises:
            ValueError: a SMILES that does not parse or that SELFIES cannot express (naming its
                index), or one whose tokens do not fit the vocabulary or ``seq_len``.
        """
        return super().encode(_selfies_of(designs))


class LatentMoleculeDiffusion(LatentSequenceDiffusion):
    """Latent diffusion for molecules: a SELFIES autoencoder's latent space; designs are SMILES.

    ``decode`` decodes each latent to SELFIES tokens (greedy, up to the first pad), then to a
    canonical SMILES ("" if it is not a valid non-empty molecule). ``encode`` maps SMILES (any
    spelling) to the posterior mean of their canonical SELFIES, so the learned reward sees one
    point per molecule. See ``LatentSequenceDiffusion`` for the arguments.
    """

    def __init__(
        self,
        denoiser: nn.Module,
        autoencoder: nn.Module,
        vocabulary: list[str],
        seq_len: int,
        pad_symbol: str | None = PAD_SYMBOL,
        autoencoder_checkpoint: str | None = None,
        latent_scale: float | None = None,
        decode_temperature: float = 0.0,
        decode_beam_width: int = 1,
        cache_latents: bool = True,
        reward_projection: Literal["none", "straight_through"] = "none",
        mode: Literal["pretrain", "finetune", "guidance", "ppo"] = "pretrain",
        schedule: ScheduleConfig = ScheduleConfig(),
        sampler: SamplerConfig = SamplerConfig(),
        kl_weight: float = 0.1,
        learn_initial_noise: bool = False,
        cond_dropout: float = 0.0,
        pretrained_checkpoint: str | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        decoder_noise: float | None = None,
    ) -> None:
        _check_selfies_vocabulary(vocabulary)
        super().__init__(
            denoiser,
            autoencoder,
            vocabulary=vocabulary,
            seq_len=seq_len,
            pad_symbol=pad_symbol,
            autoencoder_checkpoint=autoencoder_checkpoint,
            latent_scale=latent_scale,
            decode_temperature=decode_temperature,
            decode_beam_width=decode_beam_width,
            cache_latents=cache_latents,
            reward_projection=reward_projection,
            mode=mode,
            schedule=schedule,
            sampler=sampler,
            kl_weight=kl_weight,
            learn_initial_noise=learn_initial_noise,
            cond_dropout=cond_dropout,
            pretrained_checkpoint=pretrained_checkpoint,
            optimizer=optimizer,
            decoder_noise=decoder_noise,
        )

    def tokenize(self, design: str) -> list[str]:
        """Split a SELFIES string into its tokens."""
        return split_selfies_strict(design)

    def decode(self, x: Tensor) -> list[str]:
        """(B, latent_dim) -> B canonical SMILES; "" for a design that is not a valid molecule."""
        return [decode_selfies(selfies) for selfies in super().decode(x)]

    def encode(self, designs: Sequence[str]) -> Tensor:
        """SMILES (any spelling) -> (B, latent_dim): the scaled posterior mean of their SELFIES."""
        return super().encode(_selfies_of(designs))


__all__ = ["LatentMoleculeDiffusion", "MoleculeDiffusion"]
