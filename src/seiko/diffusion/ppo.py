"""The clipped PPO objective of online policy-gradient fine-tuning (DDPO).

Black et al. 2024 ("Training diffusion models with reinforcement learning", DDPO-IS with
clipping): each reverse step is an action whose policy is the step's Gaussian. With advantages
A (per-batch normalised rewards, clipped to [-adv_clip, adv_clip]) and the ratio
rho_t = exp(log p_theta(x_{t-1} | x_t) - log p_old(x_{t-1} | x_t)) of the current model to the
one that sampled the trajectory, the loss per sample and step is

    max(-A * rho_t, -A * clip(rho_t, 1 - eps, 1 + eps)),

averaged over steps and samples. Fan et al. 2023 (DPOK) add a KL to the pretrained model; here
``kl_weight`` times the exact per-step KL (``GaussianSampler.log_prob``) does that.
"""

from __future__ import annotations

import torch
from torch import Tensor


def normalized_advantages(rewards: Tensor, clip: float = 5.0, eps: float = 1e-8) -> Tensor:
    """(B,) advantages: rewards standardised over the batch, clipped to [-clip, clip].

    An infeasible design (NaN reward) gets the lowest reward of the batch's feasible ones minus
    one standard deviation (so it is discouraged, never a NaN in the loss); an all-NaN batch gives
    zeros.
    """
    rewards = rewards.double()
    finite = torch.isfinite(rewards)
    if not finite.any():
        return torch.zeros_like(rewards, dtype=torch.float32)
    ok = rewards[finite]
    spread = float(ok.std(unbiased=False)) if ok.numel() > 1 else 0.0
    floor = float(ok.min()) - (spread if spread > 0 else 1.0)
    filled = torch.where(finite, rewards, torch.full_like(rewards, floor))
    centred = filled - filled.mean()
    scale = filled.std(unbiased=False)
    advantages = centred / (scale + eps) if scale > 0 else torch.zeros_like(centred)
    return advantages.clamp(-clip, clip).float()


def ppo_loss(
    log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, clip_range: float = 1e-4
) -> tuple[Tensor, dict[str, Tensor]]:
    """The clipped surrogate loss and diagnostics.

    Args:
        log_probs: (S, B) per-step log-probabilities under the current model (with grad).
        old_log_probs: (S, B) the same under the sampling model (no grad).
        advantages: (B,) per-sample advantages.
        clip_range: epsilon of the clip (DDPO: 1e-4).

    Returns:
        The scalar loss and {"clip_fraction", "approx_kl", "ratio_mean"} (detached scalars).
    """
    if log_probs.shape != old_log_probs.shape or log_probs.shape[-1:] != advantages.shape:
        raise ValueError(
            f"shapes disagree: log_probs {tuple(log_probs.shape)}, old_log_probs "
            f"{tuple(old_log_probs.shape)}, advantages {tuple(advantages.shape)}"
        )
    if clip_range <= 0:
        raise ValueError(f"clip_range must be > 0, got {clip_range}")
    ratio = torch.exp(log_probs - old_log_probs.detach())
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_range, 1.0 + clip_range)
    loss = torch.maximum(unclipped, clipped).mean()
    with torch.no_grad():
        diagnostics = {
            "clip_fraction": ((ratio - 1.0).abs() > clip_range).float().mean(),
            "approx_kl": 0.5 * (log_probs - old_log_probs).pow(2).mean(),
            "ratio_mean": ratio.mean(),
        }
    return loss, diagnostics


__all__ = ["normalized_advantages", "ppo_loss"]
