"""A learned initial-noise distribution p(x_T) = N(mu, diag(sigma^2)).

SEIKO's theory (Uehara et al. 2024, Sec. 4) fine-tunes the initial distribution as well as the
drift; its KL to the pretrained N(0, I) is closed-form:

    KL(N(mu, sigma^2) || N(0, 1)) = 1/2 * sum(sigma^2 + mu^2 - 1 - 2 log sigma).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seiko.diffusion.step import KLReduction


class InitialNoise(nn.Module):
    """Learnable mean and log-std of x_T; starts at N(0, I) so fine-tuning starts at the prior.

    Args:
        shape: the shape of one design, e.g. (L, V).
    """

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.mean = nn.Parameter(torch.zeros(self.shape))
        self.log_std = nn.Parameter(torch.zeros(self.shape))

    def forward(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Reparameterised sample x_T = mu + sigma * z, (n, *shape), differentiable in both."""
        z = torch.randn((n, *self.shape), generator=generator, device=self.mean.device)
        return self.mean + self.log_std.exp() * z

    def kl(self, reduction: KLReduction = "mean") -> Tensor:
        """Closed-form KL to N(0, I): a scalar (the same for every sample)."""
        per_dim = 0.5 * (torch.exp(2 * self.log_std) + self.mean**2 - 1 - 2 * self.log_std)
        return per_dim.sum() if reduction == "sum" else per_dim.mean()
