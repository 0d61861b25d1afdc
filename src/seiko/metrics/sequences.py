"""Metrics of generated sequences (DNA, RNA, protein)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric


class HammingDiversity(Metric):
    """Mean pairwise normalised Hamming distance of equal-length sequences.

    The mean of d(a, b) = (number of positions where a and b differ) / L over the N(N-1)/2 distinct
    pairs of the N feasible sequences (duplicates stay in). It needs no pairwise pass: at a position
    where letter c occurs n_c times, the pairs that differ there number (N^2 - sum_c n_c^2) / 2, so

        diversity = (L N^2 - sum_{position, c} n_c^2) / (L N (N - 1)).

    The states are these per-position letter counts, (L, A) summed over ranks, so DDP is exact and
    the memory does not grow with N. NaN with fewer than two sequences.

    Args:
        alphabet: the allowed letters, e.g. ``"ACGT"``.
        length: the sequence length L.
        kwargs: torchmetrics ``Metric`` options.

    Raises:
        ValueError: if the alphabet is empty or repeats a letter, or ``length < 1``.

    Example:
        >>> metric = HammingDiversity(alphabet="ACGT", length=4)
        >>> metric.update(["AAAA", "AACC", None])
        >>> float(metric.compute())
        0.5
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    def __init__(self, alphabet: str, length: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not alphabet or len(set(alphabet)) != len(alphabet):
            raise ValueError(
                f"alphabet must be non-empty letters without repeats, got {alphabet!r}"
            )
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        self.alphabet, self.length = alphabet, length
        self._letter_index = {letter: i for i, letter in enumerate(alphabet)}
        self.add_state(
            "letter_counts",
            default=torch.zeros(length, len(alphabet), dtype=torch.long),
            dist_reduce_fx="sum",
        )
        self.add_state("n_sequences", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, sequences: Sequence[str | None]) -> None:
        """Counts the letters of each feasible sequence at each position.

        Args:
            sequences: N sequences of length L, ``None`` where infeasible.

        Raises:
            ValueError: naming the sequence, if one has the wrong length or a letter outside the
                alphabet.
        """
        codes = []
        for i, sequence in enumerate(sequences):
            if sequence is None:
                continue
            if len(sequence) != self.length:
                raise ValueError(f"sequence {i} has length {len(sequence)}, expected {self.length}")
            try:
                codes.append([self._letter_index[letter] for letter in sequence])
            except KeyError as err:
                raise ValueError(
                    f"sequence {i} has letter {err.args[0]!r}, not in alphabet {self.alphabet!r}"
                ) from None
        if not codes:
            return
        one_hot = torch.nn.functional.one_hot(torch.tensor(codes), len(self.alphabet))
        self.letter_counts += one_hot.sum(dim=0).to(self.letter_counts.device)
        self.n_sequences += len(codes)

    def compute(self) -> Tensor:
        """() mean pairwise normalised Hamming distance."""
        n = int(self.n_sequences)
        if n < 2:
            return torch.tensor(math.nan)
        squares = (self.letter_counts.double() ** 2).sum()
        return ((self.length * n**2 - squares) / (self.length * n * (n - 1))).float()
