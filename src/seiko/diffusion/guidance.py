"""Reward-guided sampling: steer each reverse step with the gradient of a reward, no fine-tuning.

Classifier guidance (Dhariwal & Nichol 2021, section 4.2 and its DDIM form, eq. 14) with a reward
r in place of log p(y | x_t): the noise prediction is shifted to

    eps'(x_t) = eps(x_t) - sqrt(1 - a_t) * scale * grad_{x_t} r(x0_hat(x_t)),

where x0_hat(x_t) is the denoiser's own prediction of x0 (the reconstruction-guidance / DPS
choice: the reward is only defined on clean designs). The gradient passes through the denoiser
(``through_denoiser=True``, exact, one extra backward pass per step), or, cheaply, is taken at
x0_hat and mapped back by dx0_hat/dx_t ~ 1 / sqrt(a_t) (``False``: the denoiser's Jacobian is
left out). The shift is written into whatever the denoiser predicts (epsilon, v or x0), so a
guided denoiser is just another ``Denoiser`` for any chain, in every domain.

SEIKO (Uehara et al. 2024) compares fine-tuning against this family of methods: guidance needs
no training but pays a backward pass at every sampling step and leaves the model unchanged, so
its designs stay as close to the prior's manifold as the guidance scale allows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from seiko.diffusion.schedule import NoiseSchedule

Reward = Callable[[Tensor], Tensor]


@dataclass
class RewardGuidance:
    """Shift a denoiser's prediction up the gradient of a reward on its predicted x0.

    Attributes:
        reward: differentiable (B, ...) x0 -> (B,) reward (a learned reward plus bonus, say).
        scale: guidance strength (0: no guidance).
        through_denoiser: exact gradient through the denoiser (True) or the cheap approximation.
    """

    reward: Reward
    scale: float = 1.0
    through_denoiser: bool = True

    def __post_init__(self) -> None:
        if self.scale < 0:
            raise ValueError(f"guidance scale must be >= 0, got {self.scale}")

    def gradient(
        self, denoiser: Callable, schedule: NoiseSchedule, x: Tensor, t: Tensor, cond
    ) -> tuple[Tensor, Tensor]:
        """(the denoiser's output at x_t, grad_{x_t} of the reward), both detached, (B, ...)."""
        a_t = schedule.alpha(t).reshape(-1, *([1] * (x.dim() - 1)))
        with torch.enable_grad():
            if self.through_denoiser:
                x_in = x.detach().requires_grad_(True)
                out = denoiser(x_in, t, cond)
                x0, _ = schedule.split(out, x_in, a_t)
                (grad,) = torch.autograd.grad(self.reward(x0).sum(), x_in)
            else:
                out = denoiser(x, t, cond)
                x0, _ = schedule.split(out.detach(), x.detach(), a_t)
                x0 = x0.requires_grad_(True)
                (grad,) = torch.autograd.grad(self.reward(x0).sum(), x0)
                grad = grad / a_t.sqrt()
        return out.detach(), grad.detach()

    def wrap(self, denoiser: Callable, schedule: NoiseSchedule) -> Callable:
        """A denoiser with the same signature whose prediction carries the guidance shift."""

        def guided(x: Tensor, t: Tensor, cond=None) -> Tensor:
            out, grad = self.gradient(denoiser, schedule, x, t, cond)
            a_t = schedule.alpha(t).reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype)
            shift_eps = -(1 - a_t).sqrt() * self.scale * grad
            if schedule.prediction_type == "epsilon":
                return out + shift_eps
            if schedule.prediction_type == "v_prediction":
                return out + shift_eps / a_t.sqrt()
            return out - ((1 - a_t).sqrt() / a_t.sqrt()) * shift_eps  # "sample": x0 prediction

        return guided


__all__ = ["RewardGuidance"]
