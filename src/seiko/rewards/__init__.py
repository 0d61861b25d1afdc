"""Learned, differentiable reward models with uncertainty (ensembles, features, fitting).

``RewardEnsemble`` holds M small networks with stacked parameters and evaluates them as one
vectorised network: ``forward(x) -> (M, B)``, ``mean``/``std -> (B,)``, ``features -> (M, B, F)``
(for UCB), ``member(i)`` (for Thompson sampling). ``fit_ensemble`` trains it on every oracle answer
so far, warm-starting from the previous round, with bootstrap resamples, per-member early stopping
and a documented rule for infeasible designs (NaN targets; see ``seiko.rewards.fit``).
"""

from seiko.rewards.ensemble import RewardEnsemble, RewardMember
from seiko.rewards.features import SequenceClassifier, SequenceFeatures, load_features
from seiko.rewards.fit import FitReport, fit_ensemble, handle_infeasible
from seiko.rewards.latent_features import FingerprintRegressor, LatentFingerprintFeatures

__all__ = [
    "FingerprintRegressor",
    "FitReport",
    "LatentFingerprintFeatures",
    "RewardEnsemble",
    "RewardMember",
    "SequenceClassifier",
    "SequenceFeatures",
    "fit_ensemble",
    "handle_infeasible",
    "load_features",
]
