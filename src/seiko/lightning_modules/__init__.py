"""LightningModules: one system per domain (pretraining + reward fine-tuning)."""

from seiko.lightning_modules.base import (
    DiffusionModule,
    SamplerConfig,
    ScheduleConfig,
    SequenceDiffusion,
    straight_through_one_hot,
)

__all__ = [
    "DiffusionModule",
    "SamplerConfig",
    "ScheduleConfig",
    "SequenceDiffusion",
    "straight_through_one_hot",
]
