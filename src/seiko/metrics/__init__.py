"""torchmetrics Metrics: oracle-budget AUC, diversity, novelty, validity."""

from seiko.metrics.designs import Novelty, Uniqueness, Validity
from seiko.metrics.molecules import (
    InternalDiversity,
    MoleculeNovelty,
    MoleculeUniqueness,
    MoleculeValidity,
    canonical_smiles,
)
from seiko.metrics.oracle_budget import (
    BestValue,
    TopKAUC,
    TopKMean,
    running_top_k_mean,
    top_k_auc,
)
from seiko.metrics.sequences import HammingDiversity

__all__ = [
    "BestValue",
    "HammingDiversity",
    "InternalDiversity",
    "MoleculeNovelty",
    "MoleculeUniqueness",
    "MoleculeValidity",
    "Novelty",
    "TopKAUC",
    "TopKMean",
    "Uniqueness",
    "Validity",
    "canonical_smiles",
    "running_top_k_mean",
    "top_k_auc",
]
