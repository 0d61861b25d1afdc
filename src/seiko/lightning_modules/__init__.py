"""LightningModules: one system per domain (pretraining + reward fine-tuning)."""

from seiko.lightning_modules.base import (
    DiffusionModule,
    SamplerConfig,
    ScheduleConfig,
    SequenceDiffusion,
    straight_through_one_hot,
)
from seiko.lightning_modules.biosequences import DNADiffusion, ProteinDiffusion, RNADiffusion
from seiko.lightning_modules.images import ImageDiffusion, UNetDenoiser
from seiko.lightning_modules.latent import LatentSequenceDiffusion, SequenceAutoencoderModule
from seiko.lightning_modules.molecules import LatentMoleculeDiffusion, MoleculeDiffusion
from seiko.lightning_modules.stable_diffusion import StableDiffusion

__all__ = [
    "DNADiffusion",
    "DiffusionModule",
    "ImageDiffusion",
    "LatentMoleculeDiffusion",
    "LatentSequenceDiffusion",
    "MoleculeDiffusion",
    "ProteinDiffusion",
    "RNADiffusion",
    "SamplerConfig",
    "ScheduleConfig",
    "SequenceAutoencoderModule",
    "SequenceDiffusion",
    "StableDiffusion",
    "UNetDenoiser",
    "straight_through_one_hot",
]
