"""Exploration bonuses: how a fitted reward ensemble becomes the optimistic reward r̂ + ĝ.

Each bonus says how many ensemble members it needs and builds, once per round, a differentiable
``nn.Module`` reward (B, *input) -> (B,) that the fine-tuning objective maximises:

* ``UCBBonus``: r̂(x) + β·sqrt(φ(x)ᵀ Σ⁻¹ φ(x)), Σ = Σ_i φ(x_i)φ(x_i)ᵀ + λI over every measured
  design (Uehara et al. 2024, Alg. 1 with the linear-bandit bonus of their Sec. 5.1), φ the
  penultimate-layer features of the reward network. ``covariance="normalized"`` uses
  Σ = (1/N) Σ_i φφᵀ + λI instead: the Gram matrix averaged over the N designs, so β and λ keep
  their scale as data accumulates (then the bonus no longer shrinks like 1/sqrt(N) by itself).
  The width sqrt(φᵀΣ⁻¹φ) has no units (features), while r̂ is in the oracle's units, so a β tuned
  on one task means little on another; ``scale="reward_std"`` multiplies the bonus by the std of
  the measured rewards the network was fitted on (its target normalisation), which makes β a
  number of reward standard deviations per unit of width. Measured on the MNIST task (docs/
  images.md): at ``beta: 0.05`` and the default scale the bonus was 2 % of the rewards' spread.
* ``BootstrapBonus``: an ensemble trained on bootstrap resamples; optimism = max over members
  (the paper's choice) or mean + β·std.
* ``ThompsonBonus``: one member drawn at random each round (a sample from the bootstrap
  posterior), used as the reward for that round.
* ``Greedy``: the ensemble mean, no bonus (the baseline SEIKO must beat). The non-adaptive
  baseline is ``Greedy`` with the whole budget spent in round one (``queries_per_round=[budget]``).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from seiko.rewards.ensemble import RewardEnsemble


class Bonus:
    """What the exploration callback needs of a bonus: an ensemble size and ``build``.

    Attributes:
        members: how many reward networks to fit.
    """

    members: int = 1

    def build(self, ensemble: RewardEnsemble, measured: Tensor | None, round: int) -> nn.Module:
        """The round's optimistic reward (B, *input) -> (B,) from the fitted ensemble and, for
        bonuses that need them, the measured designs (N, *input) in reward space."""
        raise NotImplementedError(f"{type(self).__name__} does not implement build()")


def _batched(fn, x: Tensor, batch_size: int = 1024) -> Tensor:
    return torch.cat([fn(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)])


class UCBReward(nn.Module):
    """r̂(x) + β·min(sqrt(φ(x)ᵀ Σ⁻¹ φ(x)), clip) with member 0's features and value."""

    def __init__(
        self, ensemble: RewardEnsemble, sigma_inv: Tensor, beta: float, clip: float | None
    ):
        super().__init__()
        self.member = ensemble.member(0)
        self.register_buffer("sigma_inv", sigma_inv)
        self.beta, self.clip = beta, clip

    def bonus(self, x: Tensor) -> Tensor:
        """(B, *input) -> (B,) the uncertainty bonus β·sqrt(φᵀΣ⁻¹φ) (clipped)."""
        phi = self.member.features(x)
        quad = torch.einsum("bf,fg,bg->b", phi, self.sigma_inv.to(phi.dtype), phi)
        width = quad.clamp_min(1e-12).sqrt()
        if self.clip is not None:
            width = width.clamp_max(self.clip)
        return self.beta * width

    def forward(self, x: Tensor) -> Tensor:
        return self.member(x) + self.bonus(x)


class UCBBonus(Bonus):
    """Upper confidence bound on the reward network's learned features.

    Args:
        beta: bonus scale β (0 gives the greedy reward of one network).
        ridge: λ of Σ = ΦᵀΦ + λI.
        clip: upper bound on sqrt(φᵀΣ⁻¹φ) (None: no clipping); keeps the bonus from dominating
            far from the data, where the features can be large.
        covariance: "gram" (the paper's Σ) or "normalized" (Gram matrix / N), see module docs.
        members: ensemble size to fit (member 0 gives the value and the features).
        scale: "none" (β·width, the paper's form) or "reward_std" (β·s·width with s the std of
            the measured rewards at this round's fit, so β is in reward standard deviations).
    """

    def __init__(
        self,
        beta: float = 1.0,
        ridge: float = 1.0,
        clip: float | None = None,
        covariance: Literal["gram", "normalized"] = "gram",
        members: int = 1,
        scale: Literal["none", "reward_std"] = "none",
    ) -> None:
        if beta < 0 or ridge <= 0 or members < 1:
            raise ValueError(
                f"UCBBonus needs beta >= 0, ridge > 0, members >= 1; got {beta}, {ridge}, {members}"
            )
        if clip is not None and clip <= 0:
            raise ValueError(f"clip must be positive or None, got {clip}")
        if covariance not in ("gram", "normalized"):
            raise ValueError(f"covariance={covariance!r} is not one of ('gram', 'normalized')")
        if scale not in ("none", "reward_std"):
            raise ValueError(f"scale={scale!r} is not one of ('none', 'reward_std')")
        self.beta, self.ridge, self.clip = beta, ridge, clip
        self.covariance, self.members, self.scale = covariance, members, scale

    def sigma(self, phi: Tensor) -> Tensor:
        """Σ for an (N, F) feature matrix, float64."""
        phi = phi.double()
        gram = phi.T @ phi
        if self.covariance == "normalized":
            gram = gram / max(phi.shape[0], 1)
        return gram + self.ridge * torch.eye(phi.shape[1], dtype=torch.float64, device=phi.device)

    def build(self, ensemble: RewardEnsemble, measured: Tensor, round: int) -> UCBReward:
        with torch.no_grad():
            phi = _batched(ensemble.member(0).features, measured)
        sigma_inv = torch.cholesky_inverse(torch.linalg.cholesky(self.sigma(phi))).float()
        beta = self.beta
        if self.scale == "reward_std":
            beta *= float(ensemble.target_std)
        return UCBReward(ensemble, sigma_inv, beta, self.clip)


class EnsembleReward(nn.Module):
    """Aggregate of the members: "mean", "max", or "mean+beta*std"."""

    def __init__(self, ensemble: RewardEnsemble, aggregate: str, beta: float = 0.0):
        super().__init__()
        self.ensemble, self.aggregate, self.beta = ensemble, aggregate, beta

    def forward(self, x: Tensor) -> Tensor:
        values = self.ensemble(x)  # (M, B)
        if self.aggregate == "max":
            return values.max(0).values
        if self.aggregate == "mean":
            return values.mean(0)
        spread = values.std(0) if values.shape[0] > 1 else torch.zeros_like(values[0])
        return values.mean(0) + self.beta * spread


class BootstrapBonus(Bonus):
    """Optimism from a bootstrap ensemble.

    Args:
        members: M, ensemble size (>= 2).
        aggregate: "max" over members (the paper's choice) or "mean+beta*std".
        beta: the std multiplier for "mean+beta*std".
    """

    def __init__(
        self,
        members: int = 4,
        aggregate: Literal["max", "mean+beta*std"] = "max",
        beta: float = 1.0,
    ) -> None:
        if members < 2:
            raise ValueError(f"BootstrapBonus needs members >= 2, got {members}")
        if aggregate not in ("max", "mean+beta*std"):
            raise ValueError(f"aggregate={aggregate!r} is not one of ('max', 'mean+beta*std')")
        self.members, self.aggregate, self.beta = members, aggregate, beta

    def build(self, ensemble: RewardEnsemble, measured: Tensor, round: int) -> EnsembleReward:
        return EnsembleReward(ensemble, self.aggregate, self.beta)


class ThompsonBonus(Bonus):
    """Thompson sampling: one bootstrap member, drawn at random each round, is the reward.

    Args:
        members: M, ensemble size (>= 2).
        seed: the draw of round r uses a generator seeded with (seed, r): resumable, reproducible.
    """

    def __init__(self, members: int = 4, seed: int = 0) -> None:
        if members < 2:
            raise ValueError(f"ThompsonBonus needs members >= 2, got {members}")
        self.members, self.seed = members, seed
        self.last_member: int | None = None

    def build(self, ensemble: RewardEnsemble, measured: Tensor, round: int) -> nn.Module:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + round)
        self.last_member = int(torch.randint(self.members, (1,), generator=generator))
        return ensemble.member(self.last_member)


class Greedy(Bonus):
    """No bonus: the ensemble mean (the baseline). ``members=1`` fits a single network."""

    def __init__(self, members: int = 1) -> None:
        if members < 1:
            raise ValueError(f"Greedy needs members >= 1, got {members}")
        self.members = members

    def build(self, ensemble: RewardEnsemble, measured: Tensor, round: int) -> EnsembleReward:
        return EnsembleReward(ensemble, "mean")


__all__ = [
    "Bonus",
    "BootstrapBonus",
    "EnsembleReward",
    "Greedy",
    "ThompsonBonus",
    "UCBBonus",
    "UCBReward",
]
