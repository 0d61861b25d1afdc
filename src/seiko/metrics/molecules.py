"""Metrics of generated molecules (SMILES), with RDKit.

Validity, uniqueness and novelty are the generic design metrics over canonical SMILES (two spellings
of one molecule are one design; a SMILES RDKit cannot parse is infeasible). Internal diversity is
1 - the mean pairwise Tanimoto similarity of Morgan fingerprints.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from rdkit import Chem
from rdkit.Chem import rdFingerprintGenerator
from rdkit.rdBase import BlockLogs
from torch import Tensor

from seiko.chemistry import canonical_smiles
from seiko.metrics._typed_lists import TypedListStateMetric
from seiko.metrics.designs import Novelty, Uniqueness, Validity

# Morgan radius 2 (ECFP4-like), 2048 bits: the fingerprint of MOSES' and GuacaMol's similarities.
MORGAN_RADIUS = 2
FINGERPRINT_BITS = 2048
# Module-level rather than an attribute so that the metric stays deep-copyable and picklable.
_MORGAN = rdFingerprintGenerator.GetMorganGenerator(radius=MORGAN_RADIUS, fpSize=FINGERPRINT_BITS)
# The similarity matrix is built in row blocks of at most this many entries (64 MiB in float32).
SIMILARITY_BLOCK_ENTRIES = 2**24


class MoleculeValidity(Validity):
    """Fraction of SMILES that RDKit parses (``None`` counts as invalid); see :class:`Validity`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(canonicalize=canonical_smiles, **kwargs)


class MoleculeUniqueness(Uniqueness):
    """Fraction of distinct canonical SMILES among the valid ones; see :class:`Uniqueness`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(canonicalize=canonical_smiles, **kwargs)


class MoleculeNovelty(Novelty):
    """Fraction of distinct valid molecules not in a reference set, compared as canonical SMILES.

    Args:
        reference: reference SMILES (the pretraining data, say); canonicalised here, so any spelling
            works, but every one must be valid.
        kwargs: torchmetrics ``Metric`` options.
    """

    def __init__(self, reference: Iterable[str], **kwargs: Any) -> None:
        super().__init__(reference, canonicalize=canonical_smiles, **kwargs)


class InternalDiversity(TypedListStateMetric):
    """1 - mean pairwise Tanimoto similarity of the valid molecules' Morgan fingerprints.

    Fingerprints are Morgan, radius 2, 2048 bits (``rdFingerprintGenerator``). The mean runs over
    the N(N-1)/2 distinct pairs of the N valid molecules; duplicates stay in, so a model that
    repeats itself scores low. (MOSES' IntDiv_1 also averages over the N self-pairs, which lowers it
    by a factor (N-1)/N.) Two empty fingerprints have similarity 0, as in RDKit. NaN with fewer than
    two valid molecules.

    DDP: each rank updates with its own molecules; fingerprints (packed to 256 bytes each) are
    gathered, so pairs across ranks count.

    Args:
        kwargs: torchmetrics ``Metric`` options.

    Example:
        >>> metric = InternalDiversity()
        >>> metric.update(["CCO", "CCO", "not a smiles"])
        >>> float(metric.compute())
        0.0
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._add_typed_list_state("fingerprints", torch.uint8, (FINGERPRINT_BITS // 8,))

    def update(self, smiles: Sequence[str | None]) -> None:
        """Records the fingerprints of the valid molecules.

        Args:
            smiles: N SMILES, ``None`` where infeasible; invalid SMILES are skipped.
        """
        packed = []
        for i, s in enumerate(smiles):
            if s is None:
                continue
            if not isinstance(s, str):
                raise TypeError(f"smiles {i} must be a str or None, got {type(s).__name__}: {s!r}")
            with BlockLogs():
                mol = Chem.MolFromSmiles(s)
            if mol is not None and mol.GetNumAtoms() > 0:
                packed.append(np.packbits(_MORGAN.GetFingerprintAsNumPy(mol)))
        if packed:
            self.fingerprints.append(torch.from_numpy(np.stack(packed)).to(self.device))

    def compute(self) -> Tensor:
        """() internal diversity."""
        bits = _unpack_bits(self._gathered("fingerprints"))
        n = bits.shape[0]
        if n < 2:
            return torch.tensor(float("nan"))
        counts = bits.sum(dim=1)
        total = torch.zeros((), dtype=torch.float64, device=bits.device)
        block = max(1, SIMILARITY_BLOCK_ENTRIES // n)
        for start in range(0, n, block):
            rows = slice(start, start + block)
            intersection = bits[rows] @ bits.T
            union = counts[rows, None] + counts[None, :] - intersection
            total += torch.where(union > 0, intersection / union.clamp(min=1), 0.0).sum().double()
        # Self-pairs have similarity 1 (0 for an empty fingerprint); remove them from the sum.
        self_similarity = (counts > 0).sum()
        mean_similarity = (total - self_similarity) / (n * (n - 1))
        return (1.0 - mean_similarity).float()


def _unpack_bits(packed: Tensor) -> Tensor:
    """(N, B/8) uint8 packed fingerprints -> (N, B) float32 bits (exact counts up to 2**24)."""
    shifts = torch.arange(7, -1, -1, device=packed.device, dtype=torch.uint8)
    bits = (packed.unsqueeze(-1) >> shifts) & 1
    return bits.reshape(packed.shape[0], -1).float()
