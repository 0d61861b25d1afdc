"""``OracleLedger``: spends a hard, global oracle budget and never pays twice for a design.

This is what the exploration callbacks call each round (on rank 0 alone under DDP; the values are
then broadcast). The budget is counted from the ``FeedbackStore`` (its paid rows of this oracle),
so it holds across rounds, batch sizes and restarts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from seiko.oracles.base import Oracle
from seiko.oracles.store import FeedbackStore
from seiko.oracles.wrappers import load_oracle, measure


@dataclass(frozen=True)
class LedgerReport:
    """What one ``OracleLedger.measure`` call did (for logging under ``feedback/``).

    Attributes:
        requested: designs asked for, duplicates included.
        unique: distinct designs among them.
        reused: distinct designs answered from the store (earlier rounds, offline data).
        queried: distinct designs sent to the oracle and paid for now.
        infeasible: how many of the queried ones came back NaN.
        unmeasured: distinct designs left unmeasured because the budget ran out.
        unmeasured_mask: (requested,) bool, True where the returned NaN means "not measured"
            rather than "infeasible".
    """

    requested: int
    unique: int
    reused: int
    queried: int
    infeasible: int
    unmeasured: int
    unmeasured_mask: Tensor


class OracleLedger:
    """Answers designs from the store when it can and from the oracle while budget remains.

    Args:
        oracle: the oracle (any ``load_oracle`` spec); its ``name`` keys its rows in the store.
        store: where every answer is recorded.
        budget: the most paid queries of this oracle over the whole run, >= 0. Offline
            (warm-start) rows do not count.
    """

    def __init__(self, oracle: Oracle, store: FeedbackStore, budget: int) -> None:
        if budget < 0:
            raise ValueError(f"OracleLedger needs budget >= 0, got {budget}")
        self.oracle = load_oracle(oracle)
        self.store = store
        self._budget = int(budget)
        self.last_report: LedgerReport | None = None

    @property
    def budget(self) -> int:
        """The most paid queries of this oracle over the run."""
        return self._budget

    @property
    def spent(self) -> int:
        """Paid queries of this oracle so far, as recorded in the store."""
        return self.store.spent(self.oracle.name)

    @property
    def remaining(self) -> int:
        """Queries still affordable (0 when a reopened store already holds more than the budget)."""
        return max(0, self._budget - self.spent)

    def measure(
        self, designs: Sequence[Any], round: int, keys: Sequence[str] | None = None
    ) -> Tensor:
        """Values for ``designs``, paying the oracle only for new ones while budget remains.

        Designs already in the store (any round, or offline) cost nothing; a design repeated in
        the batch is measured once; new designs are queried in the order they first appear until
        the budget is spent, and the rest stay NaN (see ``last_report``). The oracle's answers
        are committed to the store before this returns.

        Args:
            designs: N designs as the oracle takes them.
            round: the round paying for the new queries.
            keys: N canonical strings identifying the designs in the store; default: the designs
                themselves, which must then be strings. Give keys when the oracle takes objects
                (e.g. PIL images) that the store cannot hold.

        Returns:
            (N,) float64 values aligned with ``designs``: NaN for an infeasible design or one
            left unmeasured (told apart by ``last_report.unmeasured_mask``).
        """
        keys = list(designs if keys is None else keys)
        if len(keys) != len(designs):
            raise ValueError(f"got {len(keys)} keys for {len(designs)} designs")
        for index, key in enumerate(keys):
            if not isinstance(key, str):
                raise ValueError(
                    f"design key {index} is a {type(key).__name__}; the store keys designs by "
                    f"canonical strings (pass keys= for designs that are not strings)"
                )
        first_index: dict[str, int] = {}  # distinct keys in order of first appearance
        for index, key in enumerate(keys):
            first_index.setdefault(key, index)
        known = self.store.lookup(first_index, oracle=self.oracle.name)
        new = [key for key in first_index if key not in known]
        paid = new[: self.remaining]
        skipped = set(new[len(paid) :])
        if paid:
            result = measure(self.oracle, [designs[first_index[key]] for key in paid])
            self.store.add(
                round,
                paid,
                result.values,
                noise_free=result.noise_free,
                errors=result.errors,
                oracle=self.oracle.name,
            )
            known.update(zip(paid, result.values.tolist(), strict=True))
        values = torch.tensor([known.get(key, math.nan) for key in keys], dtype=torch.float64)
        self.last_report = LedgerReport(
            requested=len(keys),
            unique=len(first_index),
            reused=len(first_index) - len(new),
            queried=len(paid),
            infeasible=sum(math.isnan(known[key]) for key in paid),
            unmeasured=len(skipped),
            unmeasured_mask=torch.tensor([key in skipped for key in keys], dtype=torch.bool),
        )
        return values
