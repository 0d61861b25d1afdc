"""The oracle protocol: the expensive ground truth, never differentiated.

An oracle takes a list of decoded designs (strings, PIL images, ...) and returns a float tensor of
the same length, NaN for an infeasible design (an invalid SMILES, a sequence the tool rejects). It
never raises for one bad design. It has a ``name`` (recorded with every answer in the FeedbackStore)
and ``higher_is_better``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class Oracle(Protocol):
    """What every oracle provides."""

    name: str
    higher_is_better: bool

    def __call__(self, designs: Sequence[Any]) -> Tensor:
        """(N,) float tensor of values, NaN where a design is infeasible."""
        ...


class FunctionOracle:
    """An oracle from a plain per-design Python function (a user's own measurement).

    The function takes one design and returns a number (or None / NaN when infeasible).

    Args:
        fn: ``fn(design) -> float | None``.
        name: recorded with every answer; default: the function's name.
        higher_is_better: the direction of the objective.
    """

    def __init__(
        self, fn: Callable[[Any], float | None], name: str | None = None, higher_is_better: bool = True
    ) -> None:
        self.fn = fn
        self.name = name or getattr(fn, "__name__", type(fn).__name__)
        self.higher_is_better = higher_is_better

    def __call__(self, designs: Sequence[Any]) -> Tensor:
        values = []
        for design in designs:
            value = self.fn(design)
            values.append(float("nan") if value is None else float(value))
        return torch.tensor(values, dtype=torch.float64)
