"""Noise schedules built from diffusers schedulers.

The forward process is q(x_t | x_0) = N(sqrt(a_t) x_0, (1 - a_t) I) with a_t = alphas_cumprod[t]
(Ho et al. 2020). We take the betas from diffusers' own schedulers, so "linear", "scaled_linear" and
"squaredcos_cap_v2" (Nichol & Dhariwal 2021) mean exactly what they mean there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

PredictionType = Literal["epsilon", "v_prediction", "sample"]
BetaSchedule = Literal["linear", "scaled_linear", "squaredcos_cap_v2"]
TimestepSpacing = Literal["leading", "trailing", "linspace"]

PREDICTION_TYPES: tuple[str, ...] = ("epsilon", "v_prediction", "sample")
BETA_SCHEDULES: tuple[str, ...] = ("linear", "scaled_linear", "squaredcos_cap_v2")


def _expand(coef: Tensor, like: Tensor) -> Tensor:
    """Reshape a (B,) coefficient so it broadcasts against a (B, ...) tensor."""
    return coef.reshape(coef.shape + (1,) * (like.dim() - coef.dim())).to(like.dtype)


@dataclass(frozen=True)
class NoiseSchedule:
    """A discrete-time Gaussian noise schedule.

    Attributes:
        alphas_cumprod: (T,) float64 cumulative products of (1 - beta_t).
        prediction_type: what the denoiser predicts: "epsilon", "v_prediction" or "sample" (x0).
        final_alpha_cumprod: a_{-1}, used by DDIM's last step (1.0: diffusers' set_alpha_to_one).
        clip_sample: if set, the predicted x0 is clamped to [-clip_sample, clip_sample] and epsilon
            is re-derived from the clamped x0 (diffusers' ``use_clipped_model_output=True``).
    """

    alphas_cumprod: Tensor
    prediction_type: PredictionType = "epsilon"
    final_alpha_cumprod: float = 1.0
    clip_sample: float | None = None

    def __post_init__(self) -> None:
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"prediction_type={self.prediction_type!r} is not one of {PREDICTION_TYPES}"
            )
        a = self.alphas_cumprod
        if a.dim() != 1 or a.numel() < 2:
            raise ValueError(f"alphas_cumprod must be a 1-D tensor of length >= 2, got {a.shape}")
        if not bool(((a > 0) & (a < 1)).all()) or not bool((a[1:] <= a[:-1]).all()):
            raise ValueError("alphas_cumprod must lie in (0, 1) and be non-increasing")
        if self.clip_sample is not None and self.clip_sample <= 0:
            raise ValueError(f"clip_sample must be positive or None, got {self.clip_sample}")

    @property
    def num_train_timesteps(self) -> int:
        return self.alphas_cumprod.numel()

    @classmethod
    def from_scheduler(cls, scheduler, clip_sample: float | None = None) -> NoiseSchedule:
        """Take the schedule of a diffusers ``DDPMScheduler``/``DDIMScheduler`` (or any scheduler
        with ``alphas_cumprod`` and a ``prediction_type`` config)."""
        config = scheduler.config
        final = getattr(scheduler, "final_alpha_cumprod", torch.tensor(1.0))
        if clip_sample is None and config.get("clip_sample", False):
            clip_sample = float(config.get("clip_sample_range", 1.0))
        return cls(
            alphas_cumprod=scheduler.alphas_cumprod.to(torch.float64).clone(),
            prediction_type=config.prediction_type,
            final_alpha_cumprod=float(final),
            clip_sample=clip_sample,
        )

    @classmethod
    def create(
        cls,
        num_train_timesteps: int = 1000,
        beta_schedule: BetaSchedule = "squaredcos_cap_v2",
        prediction_type: PredictionType = "epsilon",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        clip_sample: float | None = None,
    ) -> NoiseSchedule:
        """Build the schedule through diffusers' ``DDPMScheduler`` (so betas match it exactly)."""
        from diffusers import DDPMScheduler

        if beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta_schedule={beta_schedule!r} is not one of {BETA_SCHEDULES}")
        scheduler = DDPMScheduler(
            num_train_timesteps=num_train_timesteps,
            beta_schedule=beta_schedule,
            beta_start=beta_start,
            beta_end=beta_end,
            prediction_type=prediction_type,
            clip_sample=False,
        )
        return cls.from_scheduler(scheduler, clip_sample=clip_sample)

    def timesteps(self, num_steps: int, spacing: TimestepSpacing = "leading") -> list[int]:
        """Descending inference timesteps, computed as diffusers' ``set_timesteps`` does."""
        T = self.num_train_timesteps
        if not 1 <= num_steps <= T:
            raise ValueError(f"num_steps must be in [1, {T}], got {num_steps}")
        if spacing == "leading":
            ratio = T // num_steps
            ts = [i * ratio for i in range(num_steps)][::-1]
        elif spacing == "trailing":
            ratio = T / num_steps
            ts = [round(T - i * ratio) - 1 for i in range(num_steps)]
        elif spacing == "linspace":
            ts = torch.linspace(0, T - 1, num_steps, dtype=torch.float64).round().long()
            ts = ts.flip(0).tolist()
        else:
            raise ValueError(
                f"spacing={spacing!r} is not one of ('leading', 'trailing', 'linspace')"
            )
        return [int(t) for t in ts]

    def alpha(self, t: Tensor) -> Tensor:
        """a_t for a (B,) long tensor of timesteps, as float32 on t's device."""
        return self.alphas_cumprod.to(t.device)[t].float()

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """Sample q(x_t | x_0): sqrt(a_t) x0 + sqrt(1 - a_t) noise. ``t`` is (B,) long."""
        a = _expand(self.alpha(t), x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def target(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """The regression target of the denoising loss for this prediction type."""
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "sample":
            return x0
        a = _expand(self.alpha(t), x0)
        return a.sqrt() * noise - (1 - a).sqrt() * x0

    def split(
        self, model_output: Tensor, x_t: Tensor, a_t: float | Tensor
    ) -> tuple[Tensor, Tensor]:
        """Turn a model output into (pred_x0, pred_eps) at noise level a_t.

        Args:
            model_output: (B, ...) the denoiser's prediction (epsilon, v or x0).
            x_t: (B, ...) the noisy sample it was made from.
            a_t: alphas_cumprod at t: a float, or a tensor broadcastable against x_t.

        Returns:
            pred_x0 and pred_eps, both (B, ...); x0 clamped (and eps re-derived) if clip_sample.
        """
        if isinstance(a_t, Tensor):
            sa, sb = a_t.sqrt().to(x_t.dtype), (1 - a_t).sqrt().to(x_t.dtype)
        else:  # python floats keep the sampler's hot loop free of tiny tensor ops
            sa, sb = math.sqrt(a_t), math.sqrt(1 - a_t)
        if self.prediction_type == "epsilon":
            eps = model_output
            x0 = (x_t - sb * eps) / sa
        elif self.prediction_type == "sample":
            x0 = model_output
            eps = (x_t - sa * x0) / sb
        else:
            x0 = sa * x_t - sb * model_output
            eps = sa * model_output + sb * x_t
        if self.clip_sample is not None:
            x0 = x0.clamp(-self.clip_sample, self.clip_sample)
            eps = (x_t - sa * x0) / sb
        return x0, eps
