"""One reverse-diffusion step as an explicit Gaussian, and the exact KL between two of them.

``posterior_step`` returns the mean and std of p(x_{t'} | x_t) = N(mean, std^2 I) for DDPM and
DDIM(eta), reproducing diffusers' ``DDPMScheduler.step`` (variance_type="fixed_small") and
``DDIMScheduler.step`` (with ``use_clipped_model_output=True`` when clipping) given the same model
output and noise. Because both denoisers being compared (fine-tuned and reference) share the step's
std, the KL between their step distributions at the same x_t is

    KL_t = ||mu_theta - mu_ref||^2 / (2 sigma_t^2)                 (summed over data dimensions)

(Uehara et al. 2024, eq. 8; Fan et al. 2023). With ``reduction="mean"`` the squared distance is
averaged instead of summed over the data dimensions, which is what the official SEIKO code does: the
value then does not grow with the design's size (L x V one-hot entries, or pixels), so one
``kl_weight`` carries across domains, but it is no longer the KL itself (it is the KL divided by the
number of dimensions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from seiko.diffusion.schedule import NoiseSchedule

SamplerKind = Literal["ddim", "ddpm"]
KLReduction = Literal["sum", "mean"]


@dataclass
class StepOutput:
    """Result of one reverse step.

    Attributes:
        sample: (B, ...) x_{t'} = mean + std * noise.
        mean: (B, ...) mean of the step's Gaussian.
        std: float, the step's standard deviation (0.0 for a deterministic step).
        pred_x0: (B, ...) the denoiser's prediction of x0 at this step.
    """

    sample: Tensor
    mean: Tensor
    std: float
    pred_x0: Tensor


@dataclass(frozen=True)
class StepCoefficients:
    """Scalars of one step t -> t_prev, precomputed once per chain (python floats: no tensor ops).

    The step's mean is ``c_x0 * pred_x0 + c_xt * x_t + c_eps * pred_eps`` for both kinds (DDPM:
    ``c_eps = 0``; DDIM: ``c_x0 = sqrt(alpha_prev)``, ``c_xt = 0``). Without clipping, pred_x0 and
    pred_eps are linear in (x_t, model_output), so the mean collapses to
    ``mean_x * x_t + mean_out * model_output``: two tensor ops per step instead of seven.
    """

    t: int
    t_prev: int
    alpha_t: float
    alpha_prev: float
    std: float
    c_x0: float
    c_xt: float
    c_eps: float
    mean_x: float
    mean_out: float


def step_coefficients(
    schedule: NoiseSchedule, t: int, t_prev: int, kind: SamplerKind, eta: float
) -> StepCoefficients:
    """Coefficients of the step from timestep ``t`` to ``t_prev`` (``t_prev < 0`` means x0).

    Args:
        schedule: the noise schedule (its prediction type fixes ``mean_x`` and ``mean_out``).
        t: the current timestep, in [0, T).
        t_prev: the next timestep; negative for the final step to x0.
        kind: "ddpm" (posterior q(x_{t'} | x_t, x0), fixed_small variance) or "ddim".
        eta: DDIM's stochasticity in [0, 1] (ignored by "ddpm").
    """
    if kind not in ("ddim", "ddpm"):
        raise ValueError(f"sampler kind={kind!r} is not one of ('ddim', 'ddpm')")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    a = schedule.alphas_cumprod
    if not 0 <= t < a.numel():
        raise ValueError(f"timestep {t} is outside [0, {a.numel() - 1}]")
    alpha_t = float(a[t])
    if kind == "ddpm":
        alpha_prev = float(a[t_prev]) if t_prev >= 0 else 1.0
        beta_cur = 1.0 - alpha_t / alpha_prev
        var = max((1.0 - alpha_prev) / (1.0 - alpha_t) * beta_cur, 1e-20)  # diffusers' clamp
        std = math.sqrt(var) if t > 0 else 0.0  # diffusers adds no noise at t == 0
        c_x0 = math.sqrt(alpha_prev) * beta_cur / (1.0 - alpha_t)
        c_xt = math.sqrt(alpha_t / alpha_prev) * (1.0 - alpha_prev) / (1.0 - alpha_t)
        c_eps = 0.0
    else:
        alpha_prev = float(a[t_prev]) if t_prev >= 0 else schedule.final_alpha_cumprod
        var = (1.0 - alpha_prev) / (1.0 - alpha_t) * (1.0 - alpha_t / alpha_prev)
        std = eta * math.sqrt(max(var, 0.0))
        c_x0, c_xt = math.sqrt(alpha_prev), 0.0
        c_eps = math.sqrt(max(1.0 - alpha_prev - std**2, 0.0))
    # pred_x0 = x0_x * x_t + x0_out * output and pred_eps = eps_x * x_t + eps_out * output.
    sa, sb = math.sqrt(alpha_t), math.sqrt(1.0 - alpha_t)
    if schedule.prediction_type == "epsilon":
        x0_x, x0_out, eps_x, eps_out = 1.0 / sa, -sb / sa, 0.0, 1.0
    elif schedule.prediction_type == "sample":
        x0_x, x0_out, eps_x, eps_out = 0.0, 1.0, 1.0 / sb, -sa / sb
    else:
        x0_x, x0_out, eps_x, eps_out = sa, -sb, sb, sa
    return StepCoefficients(
        t=t,
        t_prev=t_prev,
        alpha_t=alpha_t,
        alpha_prev=alpha_prev,
        std=std,
        c_x0=c_x0,
        c_xt=c_xt,
        c_eps=c_eps,
        mean_x=c_x0 * x0_x + c_xt + c_eps * eps_x,
        mean_out=c_x0 * x0_out + c_eps * eps_out,
    )


def step_mean(
    schedule: NoiseSchedule, coef: StepCoefficients, model_output: Tensor, x_t: Tensor
) -> Tensor:
    """Mean of the step's Gaussian, (B, ...), from the model output and x_t, both (B, ...)."""
    if schedule.clip_sample is None:
        return torch.add(model_output * coef.mean_out, x_t, alpha=coef.mean_x)
    # Clamping x0 is not linear: go through pred_x0 and the eps re-derived from it.
    pred_x0, pred_eps = schedule.split(model_output, x_t, coef.alpha_t)
    mean = coef.c_x0 * pred_x0
    if coef.c_xt:
        mean = mean + coef.c_xt * x_t
    if coef.c_eps:
        mean = mean + coef.c_eps * pred_eps
    return mean


def posterior_step(
    schedule: NoiseSchedule,
    model_output: Tensor,
    x_t: Tensor,
    t: int,
    t_prev: int,
    *,
    kind: SamplerKind = "ddim",
    eta: float = 1.0,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> StepOutput:
    """One reverse step x_t -> x_{t_prev}.

    Args:
        schedule: the noise schedule.
        model_output: (B, ...) the denoiser's output at (x_t, t).
        x_t: (B, ...) the current sample.
        t: current timestep; ``t_prev``: the next one (negative for the final step to x0).
        kind: "ddpm" (posterior q(x_{t'} | x_t, x0), fixed_small variance) or "ddim".
        eta: DDIM's stochasticity in [0, 1] (ignored by "ddpm").
        noise: (B, ...) standard normal noise; drawn with ``generator`` if not given.
    """
    coef = step_coefficients(schedule, t, t_prev, kind, eta)
    mean = step_mean(schedule, coef, model_output, x_t)
    pred_x0, _ = schedule.split(model_output, x_t, coef.alpha_t)
    if coef.std > 0:
        if noise is None:
            noise = torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
        sample = mean + coef.std * noise
    else:
        sample = mean
    return StepOutput(sample=sample, mean=mean, std=coef.std, pred_x0=pred_x0)


def gaussian_kl(
    mean_p: Tensor, mean_q: Tensor, std: float, reduction: KLReduction = "sum"
) -> Tensor:
    """KL(N(mean_p, std^2 I) || N(mean_q, std^2 I)) per sample, shape (B,).

    A deterministic step (``std == 0``) carries no KL term: the two step distributions are point
    masses, and the chain's KL is defined by its stochastic steps (DDIM with eta=0 has none).
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction={reduction!r} is not one of ('sum', 'mean')")
    if std <= 0:
        return mean_p.new_zeros(mean_p.shape[0])
    sq = (mean_p - mean_q).pow(2).flatten(1)
    sq = sq.sum(1) if reduction == "sum" else sq.mean(1)
    return sq / (2.0 * std**2)


def gaussian_log_prob(sample: Tensor, mean: Tensor, std: float) -> Tensor:
    """log N(sample; mean, std^2 I) summed over data dimensions (DDPO's log-likelihood).

    Args:
        sample: (B, ...) the point.
        mean: (B, ...) the Gaussian's mean.
        std: its standard deviation, > 0.

    Returns:
        (B,) the log-densities.
    """
    if std <= 0:
        raise ValueError("the log-probability of a deterministic step (std == 0) is undefined")
    d = sample[0].numel()
    sq = (sample - mean).pow(2).flatten(1).sum(1)
    return -sq / (2 * std**2) - d * (math.log(std) + 0.5 * math.log(2 * math.pi))
