"""Test helpers: a quiet CPU Trainer (no logger, checkpoints, progress bar or model summary) and a
tiny DNA diffusion module on the DHS test subset."""

from __future__ import annotations

from typing import Any

import lightning as L

from seiko.datamodules import SequenceDataModule
from seiko.lightning_modules import SamplerConfig, ScheduleConfig
from seiko.lightning_modules.biosequences import DNADiffusion
from seiko.nets import SequenceDenoiser

QUIET = {
    "accelerator": "cpu",
    "logger": False,
    "enable_checkpointing": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
}


def quiet_trainer(**kwargs: Any) -> L.Trainer:
    """``L.Trainer(**QUIET, **kwargs)``; ``kwargs`` may override any of ``QUIET``."""
    return L.Trainer(**{**QUIET, **kwargs})


def tiny_dna(dhs: Any, mode: str, **kwargs: Any) -> tuple[DNADiffusion, SequenceDataModule]:
    """A 1-layer DNA diffusion module (50 timesteps, 3 sampler steps) in ``mode`` and its
    datamodule (batch 4) on the DHS table ``dhs``; ``kwargs`` go to ``DNADiffusion``."""
    L.seed_everything(0)
    data = SequenceDataModule(str(dhs), batch_size=4)
    model = DNADiffusion(
        SequenceDenoiser(4, 200, d_model=16, n_layers=1, n_heads=2),
        data.vocabulary,
        200,
        mode=mode,
        schedule=ScheduleConfig(num_train_timesteps=50),
        sampler=SamplerConfig(num_steps=3),
        **kwargs,
    )
    return model, data
