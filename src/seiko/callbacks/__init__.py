"""Callbacks: the online loop's acquisition and exploration bonuses, precision, writers."""

from seiko.callbacks.bonuses import (
    Bonus,
    BootstrapBonus,
    EnsembleReward,
    Greedy,
    ThompsonBonus,
    UCBBonus,
    UCBReward,
)
from seiko.callbacks.exploration import OnlineExploration, RewardModelConfig
from seiko.callbacks.policy_gradient import OnlinePPO
from seiko.callbacks.precision import FrozenPrecision
from seiko.callbacks.reports import FeedbackReport
from seiko.callbacks.writers import DesignWriter

__all__ = [
    "Bonus",
    "BootstrapBonus",
    "DesignWriter",
    "EnsembleReward",
    "FeedbackReport",
    "FrozenPrecision",
    "Greedy",
    "OnlineExploration",
    "OnlinePPO",
    "RewardModelConfig",
    "ThompsonBonus",
    "UCBBonus",
    "UCBReward",
]
