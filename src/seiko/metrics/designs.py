"""Generic metrics of a set of string designs: validity, uniqueness, novelty.

Designs are strings (SMILES, sequences); ``None`` marks an infeasible one (a decoder that
failed). An optional ``canonicalize`` function maps each design to its canonical form, or to
``None`` when it is infeasible, so that two spellings of one design count as one (see
``seiko.metrics.molecules``).

DDP: these are sample metrics, each rank updating with its own designs (the usual data-parallel
contract); ``compute`` gathers all ranks. Strings cannot be gathered by ``torch.distributed``, so
each design is kept as a 64-bit BLAKE2b hash of its canonical form: stable across processes
(Python's ``hash`` is salted per process) and, for a million designs, colliding with probability
~3e-8.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from seiko.metrics._typed_lists import TypedListStateMetric

Canonicalize = Callable[[str], str | None]


def feasible_designs(
    designs: Sequence[str | None], canonicalize: Canonicalize | None = None
) -> list[str]:
    """The feasible designs, canonicalised.

    Args:
        designs: (N,) strings, ``None`` where infeasible.
        canonicalize: maps a design to its canonical form, or ``None`` when it is infeasible.

    Returns:
        The canonical feasible designs, in order.

    Raises:
        TypeError: if a design is neither a string nor ``None``.
    """
    kept = []
    for i, design in enumerate(designs):
        if design is None:
            continue
        if not isinstance(design, str):
            raise TypeError(
                f"design {i} must be a str or None, got {type(design).__name__}: {design!r}"
            )
        canonical = canonicalize(design) if canonicalize is not None else design
        if canonical is not None:
            kept.append(canonical)
    return kept


def design_keys(designs: Iterable[str]) -> Tensor:
    """(N,) int64 BLAKE2b-64 hashes of the designs' UTF-8 bytes, identical in every process."""
    keys = [
        int.from_bytes(hashlib.blake2b(d.encode(), digest_size=8).digest(), "little", signed=True)
        for d in designs
    ]
    return torch.tensor(keys, dtype=torch.int64)


class Validity(Metric):
    """Fraction of designs that are feasible.

    ``update`` takes either oracle values (NaN = infeasible) or designs (``None`` = infeasible, or
    whatever ``canonicalize`` maps to ``None``). NaN before any update.

    Args:
        canonicalize: maps a design to its canonical form, or ``None`` when it is infeasible.
        kwargs: torchmetrics ``Metric`` options.

    Example:
        >>> metric = Validity()
        >>> metric.update(["ACGT", None, "AAAA", None])
        >>> float(metric.compute())
        0.5
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    def __init__(self, canonicalize: Canonicalize | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.canonicalize = canonicalize
        self.add_state("n_valid", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("n_total", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, designs: Tensor | Sequence[str | None]) -> None:
        """Counts feasible designs.

        Args:
            designs: (N,) oracle values, NaN where infeasible; or N designs, ``None`` where
                infeasible.
        """
        if isinstance(designs, Tensor):
            if designs.ndim != 1:
                raise ValueError(f"values must be a 1-D tensor, got shape {tuple(designs.shape)}")
            n_valid = int((~designs.isnan()).sum())
        else:
            n_valid = len(feasible_designs(designs, self.canonicalize))
        self.n_valid += n_valid
        self.n_total += len(designs)

    def compute(self) -> Tensor:
        """() fraction of feasible designs."""
        return _fraction(self.n_valid, self.n_total)


class Uniqueness(TypedListStateMetric):
    """Fraction of distinct designs among the feasible ones (GuacaMol's uniqueness).

    NaN while no design is feasible.

    Args:
        canonicalize: maps a design to its canonical form, or ``None`` when it is infeasible.
        kwargs: torchmetrics ``Metric`` options.

    Example:
        >>> metric = Uniqueness()
        >>> metric.update(["ACGT", "ACGT", "AAAA", None])
        >>> round(float(metric.compute()), 4)
        0.6667
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    def __init__(self, canonicalize: Canonicalize | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.canonicalize = canonicalize
        self._add_typed_list_state("keys", torch.int64)

    def update(self, designs: Sequence[str | None]) -> None:
        """Records designs.

        Args:
            designs: N designs, ``None`` where infeasible.
        """
        keys = design_keys(feasible_designs(designs, self.canonicalize))
        self.keys.append(keys.to(self.device))

    def compute(self) -> Tensor:
        """() fraction of distinct designs among the feasible ones."""
        keys = self._gathered("keys")
        return _fraction(torch.unique(keys).numel(), keys.numel())


class Novelty(TypedListStateMetric):
    """Fraction of the distinct feasible designs that are not in a reference set.

    As MOSES and GuacaMol define it: over *distinct* designs, so that repeating one novel design
    does not raise the score. NaN while no design is feasible.

    Args:
        reference: the reference designs (the pretraining data, say).
        canonicalize: maps a design (and each reference design) to its canonical form, or ``None``
            when it is infeasible.
        kwargs: torchmetrics ``Metric`` options.

    Raises:
        ValueError: if a reference design is infeasible under ``canonicalize``.

    Example:
        >>> metric = Novelty(reference=["AAAA", "CCCC"])
        >>> metric.update(["AAAA", "ACGT", "ACGT", None])
        >>> float(metric.compute())
        0.5
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    def __init__(
        self, reference: Iterable[str], canonicalize: Canonicalize | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.canonicalize = canonicalize
        reference = list(reference)
        canonical = feasible_designs(reference, canonicalize)
        if len(canonical) != len(reference):
            bad = next(r for r in reference if not feasible_designs([r], canonicalize))
            raise ValueError(
                f"{len(reference) - len(canonical)} of {len(reference)} reference designs are "
                f"infeasible, e.g. {bad!r}; filter them out first"
            )
        # A buffer, not a state: it is the same on every rank and moves with the metric's device.
        self.register_buffer(
            "reference_keys", torch.unique(design_keys(canonical)), persistent=False
        )
        self._add_typed_list_state("keys", torch.int64)

    def update(self, designs: Sequence[str | None]) -> None:
        """Records designs.

        Args:
            designs: N designs, ``None`` where infeasible.
        """
        keys = design_keys(feasible_designs(designs, self.canonicalize))
        self.keys.append(keys.to(self.device))

    def compute(self) -> Tensor:
        """() fraction of distinct feasible designs not in the reference set."""
        distinct = torch.unique(self._gathered("keys"))
        novel = ~torch.isin(distinct, self.reference_keys)
        return _fraction(int(novel.sum()), distinct.numel())


def _fraction(numerator: int | Tensor, denominator: int | Tensor) -> Tensor:
    """numerator / denominator as a float tensor; NaN when there is nothing to count."""
    numerator, denominator = int(numerator), int(denominator)
    return torch.tensor(numerator / denominator if denominator else math.nan)
