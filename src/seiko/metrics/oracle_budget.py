"""Metrics of the oracle history: top-k AUC at an oracle budget, top-k mean, best value.

They follow the PMO benchmark (Gao et al., "Sample Efficiency Matters: A Benchmark for Practical
Molecular Optimization", NeurIPS 2022 Datasets and Benchmarks): an optimiser is judged by the mean
of the best k values found so far, as a function of the number of oracle calls, and summarised by
the area under that curve up to the budget.

Values arrive in call order, NaN for an infeasible design. Unlike PMO, whose oracle refuses an
invalid SMILES without counting it, an infeasible design here *is* a call: in seiko's setting the
measurement (an assay, a docking run) was paid for. It never enters a top-k.

DDP: in seiko every rank holds the same oracle history (rank 0 queries, the values are broadcast),
so these metrics must not count a call once per rank. Each value is stored with its 0-based global
call index, and on ``compute`` a call seen by several ranks is counted once (the ranks must agree on
its value). So all of these work: every rank updating with the same values, rank 0 alone updating,
or each rank updating its own share with explicit ``call_index``. Ranks that update different values
without ``call_index`` are caught: their default indices collide with different values and
``compute`` raises.
"""

from __future__ import annotations

import heapq
import math
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from seiko.metrics._typed_lists import TypedListStateMetric


def running_top_k_mean(values: Tensor, k: int) -> Tensor:
    """The mean of the best ``k`` feasible values among the first ``i + 1`` calls, for every ``i``.

    With fewer than ``k`` feasible values so far it is the mean of those (as in PMO), and NaN while
    there is none.

    Args:
        values: (N,) oracle values in call order; NaN marks an infeasible design.
        k: how many of the best values to average; ``k = 1`` gives the running best.

    Returns:
        (N,) float64 running top-k mean, on the CPU.

    Raises:
        ValueError: if ``values`` is not 1-D or ``k < 1``.
    """
    _check_values(values)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    heap: list[
        float
    ] = []  # min-heap of the current top k, so the weakest one is replaced in O(log k)
    mean = math.nan
    out = []
    for value in values.tolist():
        if not math.isnan(value) and (len(heap) < k or value > heap[0]):
            if len(heap) < k:
                heapq.heappush(heap, value)
            else:
                heapq.heapreplace(heap, value)
            # Re-summed only when the top k changes (rare after the first calls): exact, no drift.
            mean = math.fsum(heap) / len(heap)
        out.append(mean)
    return torch.tensor(out, dtype=torch.float64)


def top_k_auc(values: Tensor, k: int, budget: int, log_every: int = 100) -> Tensor:
    """PMO's area under the top-k-mean curve up to an oracle budget, divided by the budget.

    The curve is recorded every ``log_every`` calls and after the last call, starting from the
    point (0 calls, 0). Where no design is feasible yet the curve is 0 (PMO scores an invalid
    molecule 0). The area is taken by the trapezoid rule; if fewer calls than ``budget`` were made,
    the last recorded value is held until the budget. Calls past the budget are not counted. The
    result is in the value scale: a method that found its final top-k at the first call scores that
    top-k mean.

    This is ``top_auc(buffer, k, finish=True, freq_log=log_every, max_oracle_calls=budget)`` of
    PMO (github.com/wenhao-gao/mol_opt, ``main/optimizer.py``), except that infeasible designs are
    calls.

    Args:
        values: (N,) oracle values in call order; NaN marks an infeasible design.
        k: the top-k to average (PMO reports k = 1, 10, 100).
        budget: the oracle budget (PMO: 10,000).
        log_every: the recording interval in calls (PMO: 100).

    Returns:
        () float64 AUC, on the CPU.

    Raises:
        ValueError: if ``values`` is not 1-D, or ``k``, ``budget`` or ``log_every`` is < 1.
    """
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    if log_every < 1:
        raise ValueError(f"log_every must be >= 1, got {log_every}")
    values = values[:budget]
    curve = running_top_k_mean(values, k).nan_to_num(nan=0.0)
    n_calls = values.numel()
    calls = [0, *range(log_every, n_calls, log_every)]
    if n_calls > 0:
        calls.append(n_calls)
    recorded = torch.cat(
        [torch.zeros(1, dtype=torch.float64), curve[torch.tensor(calls[1:], dtype=torch.long) - 1]]
    )
    area = torch.trapezoid(recorded, torch.tensor(calls, dtype=torch.float64))
    area = area + (budget - n_calls) * recorded[-1]
    return area / budget


class TopKAUC(TypedListStateMetric):
    """Top-k AUC at an oracle budget (PMO), over the oracle values in call order.

    See :func:`top_k_auc` for the definition and the module docstring for DDP.

    Args:
        k: the top-k to average.
        budget: the oracle budget (required: PMO's 10,000 is far above a wet-lab budget); calls
            past it are not counted.
        log_every: the recording interval in calls.
        kwargs: torchmetrics ``Metric`` options (``sync_on_compute``, ``process_group``, ...).

    Example:
        >>> metric = TopKAUC(k=2, budget=4, log_every=2)
        >>> metric.update(torch.tensor([1.0, float("nan"), 3.0]))
        >>> float(metric.compute())  # points (0, 0), (2, 1), (3, 2), held to (4, 2): 4.5 / 4
        1.125
    """

    is_differentiable = False
    higher_is_better = True
    # The default call index continues from the calls already seen, so update needs the full state.
    full_state_update = True

    def __init__(self, k: int = 10, *, budget: int, log_every: int = 100, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name, value in (("k", k), ("budget", budget), ("log_every", log_every)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.k, self.budget, self.log_every = k, budget, log_every
        self._add_typed_list_state("values", None)
        self._add_typed_list_state("call_index", torch.int64)

    def update(self, values: Tensor, call_index: Tensor | None = None) -> None:
        """Records oracle values.

        Args:
            values: (B,) oracle values in call order; NaN marks an infeasible design.
            call_index: (B,) 0-based global call index of each value; default: continue after the
                largest index seen by this metric.
        """
        _append_calls(self, values, call_index)

    def compute(self) -> Tensor:
        """() float64 top-k AUC on the CPU, in the value scale."""
        values = _calls_in_order(self._gathered("values"), self._gathered("call_index"))
        return top_k_auc(values, self.k, self.budget, self.log_every)


class TopKMean(TypedListStateMetric):
    """Mean of the best ``k`` feasible oracle values so far (of all, if fewer than ``k``).

    NaN while no value is feasible. DDP as described in the module docstring.

    Args:
        k: how many of the best values to average.
        kwargs: torchmetrics ``Metric`` options.

    Example:
        >>> metric = TopKMean(k=2)
        >>> metric.update(torch.tensor([1.0, float("nan"), 3.0, 2.0]))
        >>> float(metric.compute())
        2.5
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = True  # as TopKAUC: the default call index depends on the state

    def __init__(self, k: int = 10, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k
        self._add_typed_list_state("values", None)
        self._add_typed_list_state("call_index", torch.int64)

    def update(self, values: Tensor, call_index: Tensor | None = None) -> None:
        """Records oracle values; arguments as :meth:`TopKAUC.update`."""
        _append_calls(self, values, call_index)

    def compute(self) -> Tensor:
        """() mean of the current top-k."""
        values = _calls_in_order(self._gathered("values"), self._gathered("call_index"))
        feasible = values[~values.isnan()]
        if feasible.numel() == 0:
            return torch.tensor(math.nan, dtype=values.dtype, device=values.device)
        return feasible.topk(min(self.k, feasible.numel())).values.mean()


class BestValue(Metric):
    """The best feasible oracle value so far; NaN while none is feasible.

    A max is the same however many ranks saw a value, so no call index is needed under DDP.

    Example:
        >>> metric = BestValue()
        >>> metric.update(torch.tensor([1.0, float("nan"), 3.0]))
        >>> float(metric.compute())
        3.0
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("best", default=torch.tensor(-math.inf), dist_reduce_fx="max")

    def update(self, values: Tensor) -> None:
        """Records oracle values.

        Args:
            values: (B,) oracle values; NaN marks an infeasible design.
        """
        _check_values(values)
        feasible = values[~values.isnan()]
        if feasible.numel() > 0:
            self.best = torch.maximum(self.best, feasible.max().to(self.best))

    def compute(self) -> Tensor:
        """() best value."""
        return self.best if self.best.isfinite() else torch.full_like(self.best, math.nan)


def _check_values(values: Tensor) -> None:
    if not isinstance(values, Tensor) or values.ndim != 1:
        shape = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
        raise ValueError(f"values must be a 1-D tensor, got {shape}")
    if values.isinf().any():
        # An infinite value would hold the top-k forever; infeasible designs are NaN, not -inf.
        bad = values[values.isinf()][0].item()
        raise ValueError(f"values must be finite or NaN (infeasible), got {bad}")


def _append_calls(metric: TypedListStateMetric, values: Tensor, call_index: Tensor | None) -> None:
    """Appends values and their call indices to ``metric.values`` / ``metric.call_index``."""
    _check_values(values)
    if call_index is None:
        seen = metric._gathered("call_index")
        start = int(seen.max()) + 1 if seen.numel() else 0
        call_index = torch.arange(start, start + values.numel(), device=metric.device)
    elif call_index.shape != values.shape:
        raise ValueError(
            f"call_index must have the shape of values {tuple(values.shape)}, "
            f"got {tuple(call_index.shape)}"
        )
    elif call_index.numel() and int(call_index.min()) < 0:
        raise ValueError(f"call_index must be >= 0, got {int(call_index.min())}")
    metric.values.append(values.to(device=metric.device, dtype=metric.dtype))
    metric.call_index.append(call_index.to(device=metric.device, dtype=torch.int64))


def _calls_in_order(values: Tensor, call_index: Tensor) -> Tensor:
    """The values sorted by call index, each call once.

    Args:
        values: (N,) values, possibly with repeated calls (one copy per rank that saw it).
        call_index: (N,) their 0-based call indices.

    Returns:
        (C,) the value of calls 0..C-1.

    Raises:
        ValueError: if copies of one call disagree, or a call index is missing.
    """
    order = torch.argsort(call_index, stable=True)
    call_index, values = call_index[order], values[order]
    first = torch.ones_like(call_index, dtype=torch.bool)
    first[1:] = call_index[1:] != call_index[:-1]
    # Every copy must match the first copy of its call (NaN matches NaN: infeasible on both ranks).
    reference = values[first][torch.cumsum(first, 0) - 1]
    agree = (values == reference) | (values.isnan() & reference.isnan())
    if not agree.all():
        bad = int((~agree).nonzero()[0])
        raise ValueError(
            f"call {int(call_index[bad])} was recorded with two values, {reference[bad].item()} "
            f"and {values[bad].item()}; when ranks update different calls, pass their global "
            "call_index"
        )
    calls, values = call_index[first], values[first]
    expected = torch.arange(calls.numel(), device=calls.device)
    if not torch.equal(calls, expected):
        missing = int(expected[calls != expected][0])
        raise ValueError(
            f"call {missing} is missing from the history (call indices are 0-based and contiguous)"
        )
    return values
