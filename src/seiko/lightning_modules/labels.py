"""Class labels for a class-conditional diffusion module, and the class to design for.

Shared by ``DNADiffusion``/``RNADiffusion``/``ProteinDiffusion`` and ``ImageDiffusion``: ``labels``
is the label vocabulary in class order (linked from the datamodule by the CLI, with the
denoiser's ``num_classes``); ``target_label`` is the class that ``sample`` without ``cond`` and
the PPO trajectories use (None: the null class, i.e. unconditional sampling).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn


def check_labels(
    owner: str, denoiser: nn.Module, labels: list[str] | None, target_label: str | None
) -> None:
    """Raise a ValueError unless labels, the denoiser's classes and target_label agree."""
    if labels is not None and (not labels or len(set(labels)) != len(labels)):
        raise ValueError(f"labels must be a non-empty list without repeats, got {labels}")
    classes = getattr(denoiser, "num_classes", None)
    if classes != (None if labels is None else len(labels)):
        raise ValueError(
            f"{owner}: the denoiser has num_classes={classes} but labels={labels}; a "
            "conditional denoiser needs one class per label (the CLI links both from the data)"
        )
    if target_label is not None and (labels is None or target_label not in labels):
        raise ValueError(f"target_label {target_label!r} is not one of labels {labels}")


class ClassLabels:
    """Mixin for a ``DiffusionModule``: ``labels``, ``target_label``, ``label_ids`` and sampling
    of ``target_label``'s class when no ``cond`` is given. Call ``check_labels`` before the
    module's ``__init__`` and set ``self.labels`` / ``self.target_label`` after it."""

    labels: list[str] | None
    target_label: str | None

    def label_ids(self, names: Sequence[str]) -> Tensor:
        """Class names -> (B,) long class indices on the module's device (for ``sample``)."""
        if self.labels is None:
            raise ValueError(f"{type(self).__name__} is unconditional: it has no labels")
        unknown = [name for name in names if name not in self.labels]
        if unknown:
            raise ValueError(f"labels {unknown} are not among the model's labels {self.labels}")
        ids = [self.labels.index(name) for name in names]
        return torch.tensor(ids, dtype=torch.long, device=self.device)

    def _target_cond(self, n: int) -> Tensor | None:
        """(n,) indices of ``target_label``, or None without one."""
        return None if self.target_label is None else self.label_ids([self.target_label] * n)

    def sample(
        self,
        n: int,
        cond: Tensor | None = None,
        batch_size: int = 256,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Draw n designs; without ``cond``, of ``target_label``'s class (if set)."""
        cond = self._target_cond(n) if cond is None else cond
        return super().sample(n, cond=cond, batch_size=batch_size, generator=generator)

    def sample_trajectories(
        self, n: int, cond: Tensor | None = None, generator: torch.Generator | None = None
    ) -> dict[str, Any]:
        cond = self._target_cond(n) if cond is None else cond
        return super().sample_trajectories(n, cond=cond, generator=generator)


__all__ = ["ClassLabels", "check_labels"]
