"""LightningModules: one system per domain (pretraining + reward fine-tuning)."""

from seiko.lightning_modules.base import (
    DiffusionModule,
    SamplerConfig,
    ScheduleConfig,
    SequenceDiffusion,
    straight_through_one_hot,
)
from seiko.lightning_modules.molecules import MoleculeDiffusion

__all__ = [
    "DiffusionModule",
    "MoleculeDiffusion",
    "SamplerConfig",
    "ScheduleConfig",
    "SequenceDiffusion",
    "straight_through_one_hot",
]
