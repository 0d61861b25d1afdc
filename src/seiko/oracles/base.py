"""The oracle protocol: the expensive ground truth, never differentiated.

An oracle takes a list of decoded designs (strings, PIL images, ...) and returns a float tensor of
the same length, NaN for an infeasible design (an invalid SMILES, a sequence the tool rejects). It
never raises for one bad design. It has a ``name`` (recorded with every answer in the FeedbackStore)
and ``higher_is_better``.

An oracle may also offer ``measure(designs) -> Measurement``, which returns, besides the values,
the noise-free values when it knows them and the error text of each design it could not measure.
``seiko.oracles.measure`` asks an oracle through that method when it has one, and otherwise makes a
``Measurement`` from its plain answer.
"""

from __future__ import annotations

import importlib
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class Oracle(Protocol):
    """What every oracle provides.

    ``__call__(designs) -> Tensor``: an (N,) float tensor of values for N designs, NaN where a
    design is infeasible. It is annotated with ``Any`` on purpose: jsonargparse (LightningCLI)
    reads a protocol whose ``__call__`` returns a class as a *factory* of that class, and requires
    the annotations of an implementation to equal the protocol's. With ``Any`` any class that has a
    one-argument ``__call__`` is accepted as ``class_path`` for an argument typed ``Oracle``.
    """

    name: str
    higher_is_better: bool

    def __call__(self, designs: Any, /) -> Any:
        """(N,) float tensor of values for N designs, NaN where a design is infeasible."""
        ...


@dataclass(frozen=True)
class Measurement:
    """What an oracle said about a batch of N designs.

    Attributes:
        values: (N,) float64, the answers (with label noise if the oracle adds it), NaN for an
            infeasible or failed design.
        noise_free: (N,) float64 values without label noise, or None when unknown (a real
            measurement's noise is unknown; ``NoisyOracle`` knows it).
        errors: N entries, the error text of a design whose evaluation raised, else None.
    """

    values: Tensor
    noise_free: Tensor | None
    errors: list[str | None]

    def __post_init__(self) -> None:
        n = len(self.errors)
        if self.values.shape != (n,) or self.values.dtype != torch.float64:
            raise ValueError(
                f"Measurement.values must be a float64 tensor of shape ({n},), got "
                f"{self.values.dtype} of shape {tuple(self.values.shape)}"
            )
        if self.noise_free is not None and (
            self.noise_free.shape != (n,) or self.noise_free.dtype != torch.float64
        ):
            raise ValueError(
                f"Measurement.noise_free must be None or a float64 tensor of shape ({n},), got "
                f"{self.noise_free.dtype} of shape {tuple(self.noise_free.shape)}"
            )

    def __len__(self) -> int:
        return len(self.errors)


def error_text(error: BaseException) -> str:
    """How a failed evaluation is recorded: ``"ExceptionType: message"``."""
    return f"{type(error).__name__}: {error}"


def import_object(path: str) -> Any:
    """Import ``"package.module.attribute"`` (e.g. ``"mypkg.scores.qed"``).

    Raises:
        ValueError: the path is not dotted, or the module or attribute does not exist.
    """
    module_name, _, attribute = path.rpartition(".")
    if not module_name:
        raise ValueError(f"{path!r} is not a dotted import path like 'package.module.name'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"cannot import module {module_name!r} of {path!r}: {error}") from error
    try:
        return getattr(module, attribute)
    except AttributeError as error:
        raise ValueError(f"module {module_name!r} has no attribute {attribute!r}") from error


def as_float(oracle_name: str, value: Any, index: int) -> float:
    """One design's answer as a float (None -> NaN); a clear error for a non-numeric answer."""
    if value is None:
        return math.nan
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_complex():
        return float(value.item())
    raise ValueError(
        f"oracle {oracle_name!r} answered design {index} with a {type(value).__name__} "
        f"({value!r:.80}); expected a real number, or None / NaN for an infeasible design"
    )


class FunctionOracle:
    """An oracle from a plain per-design Python function (a user's own measurement).

    The function takes one design and returns a number (or None / NaN when infeasible). A design
    on which it raises is infeasible, with the error text kept (see ``measure``); an answer that
    is not a number is an error naming the oracle.

    In a LightningCLI YAML the function is given by its import path::

        oracle:
          class_path: seiko.oracles.FunctionOracle
          init_args:
            fn: mypkg.scores.my_score

    Args:
        fn: ``fn(design) -> float | None``, or its dotted import path ``"package.module.name"``.
        name: recorded with every answer; default: the function's name.
        higher_is_better: the direction of the objective.
    """

    def __init__(
        self,
        fn: Callable[[Any], float | None] | str,
        name: str | None = None,
        higher_is_better: bool = True,
    ) -> None:
        if isinstance(fn, str):
            fn = import_object(fn)
        if not callable(fn):
            raise TypeError(f"FunctionOracle needs a callable fn, got a {type(fn).__name__}")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", type(fn).__name__)
        self.higher_is_better = higher_is_better

    def __repr__(self) -> str:
        return f"FunctionOracle(name={self.name!r})"

    def measure(self, designs: Sequence[Any]) -> Measurement:
        """Evaluate each design once; one that raises is NaN with its error text."""
        values: list[float] = []
        errors: list[str | None] = []
        for index, design in enumerate(designs):
            try:
                value = self.fn(design)
            except Exception as error:  # one bad design must not sink the batch
                values.append(math.nan)
                errors.append(error_text(error))
                continue
            values.append(as_float(self.name, value, index))
            errors.append(None)
        return Measurement(torch.tensor(values, dtype=torch.float64), None, errors)

    def __call__(self, designs: Sequence[Any]) -> Tensor:
        """(N,) float64 values, NaN where a design is infeasible or ``fn`` raised."""
        return self.measure(designs).values
