"""A Metric base whose growing ("cat") list states keep their dtype on every rank.

Why it exists: when a rank has seen no data, torchmetrics' DDP sync gathers a placeholder
``torch.tensor([], dtype=metric.dtype)`` (a float) for that rank's empty list state, while the
other ranks send, say, int64 hashes or uint8 fingerprints. ``all_gather`` then mixes dtypes: with
gloo the empty rank aborts ("Received data size doesn't match expected size. 8 vs 4"). Seeding
every list state with an empty tensor of the right dtype and trailing shape (and re-seeding it on
``reset``) means no rank is ever empty-handed, so the gather is always well-typed. An empty rank
is the common case for the oracle metrics, which rank 0 alone may update.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat


class TypedListStateMetric(Metric):
    """A ``Metric`` with list states of a fixed dtype and trailing shape, gathered with ``cat``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # name -> (dtype, trailing shape); dtype None means "the metric's float dtype" so that
        # ``set_dtype`` and the seed agree.
        self._typed_lists: dict[str, tuple[torch.dtype | None, tuple[int, ...]]] = {}

    def _add_typed_list_state(
        self, name: str, dtype: torch.dtype | None, trailing_shape: tuple[int, ...] = ()
    ) -> None:
        """Adds a ``cat``-reduced list state, seeded with an empty (0, *trailing_shape) tensor."""
        self.add_state(name, default=[], dist_reduce_fx="cat")
        self._typed_lists[name] = (dtype, trailing_shape)
        getattr(self, name).append(self._empty(name))

    def _empty(self, name: str) -> Tensor:
        dtype, trailing_shape = self._typed_lists[name]
        return torch.zeros((0, *trailing_shape), dtype=dtype or self.dtype, device=self.device)

    def _gathered(self, name: str) -> Tensor:
        """The state as one tensor (a list before sync, already concatenated after it)."""
        return dim_zero_cat(getattr(self, name))

    def reset(self) -> None:
        """Resets the states and re-seeds the typed list states."""
        super().reset()
        for name in self._typed_lists:
            getattr(self, name).append(self._empty(name))
