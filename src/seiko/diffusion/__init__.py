"""The diffusion maths, free of Lightning: schedules, one sampler step, the chain, the KL."""

from seiko.diffusion.chain import ChainOutput, Denoiser, GaussianSampler
from seiko.diffusion.guidance import RewardGuidance
from seiko.diffusion.initial import InitialNoise
from seiko.diffusion.schedule import NoiseSchedule
from seiko.diffusion.step import (
    StepOutput,
    gaussian_kl,
    gaussian_log_prob,
    posterior_step,
    step_coefficients,
)

__all__ = [
    "ChainOutput",
    "Denoiser",
    "GaussianSampler",
    "InitialNoise",
    "NoiseSchedule",
    "RewardGuidance",
    "StepOutput",
    "gaussian_kl",
    "gaussian_log_prob",
    "posterior_step",
    "step_coefficients",
]
