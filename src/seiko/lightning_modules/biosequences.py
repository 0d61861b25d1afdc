"""DNA, RNA and protein sequences: continuous diffusion on one-hot letters.

A design is a string over the alphabet (``ALPHABETS`` in ``seiko.datamodules.sequences``: ACGT,
ACGU or the 20 standard amino acids). In model space it is the (L, V) one-hot matrix in {-1, +1}
of its letters, padded with ``pad_symbol`` when the data have one (V = alphabet + pad). ``decode``
takes the argmax letter per position and drops pads; ``encode`` checks every letter and names the
design, position and letter of a bad one, so ``decode(encode(s)) == s`` for every valid s. Both
plug into the online loop (``seiko.callbacks``) as ``MoleculeDiffusion`` does.

Class conditioning (e.g. the DHS cell type): ``labels`` is the label vocabulary in class order
(linked from ``SequenceDataModule.labels`` by the CLI and kept in the checkpoint); the denoiser then
needs ``num_classes=len(labels)`` (also linked). Pretraining batches carry the class as ``"cond"``;
``cond_dropout`` trains the null class as well, so the model also samples unconditionally.
``target_label`` is the class to design for: ``sample`` without ``cond``, the online loop's queries
and every fine-tuning chain then use that class; None samples the null class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn

from seiko.datamodules.sequences import ALPHABET_NAMES, ALPHABETS
from seiko.lightning_modules.base import SamplerConfig, ScheduleConfig, SequenceDiffusion
from seiko.lightning_modules.labels import ClassLabels, check_labels


def _check_vocabulary(owner: str, alphabet: str, vocabulary: list[str], pad: str | None) -> None:
    """The vocabulary must be exactly the alphabet's letters plus the pad symbol (if any)."""
    expected = set(ALPHABETS[alphabet]) | ({pad} if pad is not None else set())
    if len(vocabulary) != len(expected) or set(vocabulary) != expected:
        extra, lacking = sorted(set(vocabulary) - expected), sorted(expected - set(vocabulary))
        raise ValueError(
            f"{owner} needs the {ALPHABET_NAMES[alphabet]} alphabet {ALPHABETS[alphabet]!r}"
            f"{'' if pad is None else f' plus the pad symbol {pad!r}'}; the vocabulary "
            f"{vocabulary} has {extra} extra and lacks {lacking}"
        )


class _AlphabetDiffusion(ClassLabels, SequenceDiffusion):
    """``SequenceDiffusion`` over one biological alphabet, optionally class-conditional.

    Args:
        denoiser: e.g. ``seiko.nets.SequenceDenoiser`` (vocab_size, seq_len and num_classes
            linked from the datamodule by the CLI).
        vocabulary: the alphabet's letters (any order) plus ``pad_symbol``, in one-hot order.
        seq_len: L, the padded sequence length.
        pad_symbol: the padding letter (dropped by ``decode``), or None for fixed-length data.
        labels: the class names in class order, for a class-conditional denoiser; None:
            unconditional. Saved in the checkpoint.
        target_label: the class that sampling without ``cond``, the online loop and fine-tuning
            use (one of ``labels``); None: the null class (unconditional).
        Other arguments: see ``DiffusionModule``.
    """

    alphabet: ClassVar[str]

    def __init__(
        self,
        denoiser: nn.Module,
        vocabulary: list[str],
        seq_len: int,
        pad_symbol: str | None = None,
        labels: list[str] | None = None,
        target_label: str | None = None,
        mode: Literal["pretrain", "finetune", "guidance", "ppo"] = "pretrain",
        schedule: ScheduleConfig = ScheduleConfig(),
        sampler: SamplerConfig = SamplerConfig(),
        kl_weight: float = 0.1,
        learn_initial_noise: bool = False,
        cond_dropout: float = 0.0,
        pretrained_checkpoint: str | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
    ) -> None:
        owner = type(self).__name__
        _check_vocabulary(owner, self.alphabet, vocabulary, pad_symbol)
        check_labels(owner, denoiser, labels, target_label)
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
        self.letters = ALPHABETS[self.alphabet]
        self.labels = None if labels is None else list(labels)
        self.target_label = target_label

    # ------------------------------------------------------------------ designs
    def encode(self, designs: Sequence[str]) -> Tensor:
        """Strings -> (B, L, V) one-hot in {-1, +1}, padded.

        Raises:
            ValueError: a letter outside the alphabet (naming the design, the position counted
                from 1 and the letter), or a design longer than ``seq_len`` (or, without a pad
                symbol, shorter).
        """
        for n, design in enumerate(designs):
            for position, letter in enumerate(design, start=1):
                if letter not in self.letters:
                    raise ValueError(
                        f"design {n} ({design[:40]!r}), position {position}: letter {letter!r} "
                        f"is not in the {ALPHABET_NAMES[self.alphabet]} alphabet {self.letters!r}"
                    )
        return super().encode(designs)

    def finetune_loss(self, n: int, cond: Tensor | None = None) -> dict[str, Tensor]:
        """The fine-tuning objective; with ``target_label`` every chain runs on its class (the
        data batch's labels are ignored: they are not what is being designed)."""
        if self.target_label is not None:
            cond = self._target_cond(n)
        return super().finetune_loss(n, cond)


class DNADiffusion(_AlphabetDiffusion):
    """Continuous diffusion on one-hot DNA (A, C, G, T), optionally conditioned on a class such
    as the DHS cell type. See ``_AlphabetDiffusion`` for the arguments."""

    alphabet = "dna"


class RNADiffusion(_AlphabetDiffusion):
    """Continuous diffusion on one-hot RNA (A, C, G, U). See ``_AlphabetDiffusion``."""

    alphabet = "rna"


class ProteinDiffusion(_AlphabetDiffusion):
    """Continuous diffusion on one-hot proteins (the 20 standard amino acids). See
    ``_AlphabetDiffusion``."""

    alphabet = "protein"


__all__ = ["DNADiffusion", "ProteinDiffusion", "RNADiffusion"]
