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
from seiko.metrics.sequences import (
    HammingDiversity,
    KmerSpectrumCorrelation,
    LevenshteinDiversity,
    NearestReferenceDistance,
    kmer_counts,
    levenshtein_distances,
)

__all__ = [
    "BestValue",
    "HammingDiversity",
    "InternalDiversity",
    "KmerSpectrumCorrelation",
    "LevenshteinDiversity",
    "MoleculeNovelty",
    "MoleculeUniqueness",
    "MoleculeValidity",
    "NearestReferenceDistance",
    "Novelty",
    "TopKAUC",
    "TopKMean",
    "Uniqueness",
    "Validity",
    "canonical_smiles",
    "kmer_counts",
    "levenshtein_distances",
    "running_top_k_mean",
    "top_k_auc",
]
