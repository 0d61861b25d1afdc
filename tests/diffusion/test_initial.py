"""The learned initial-noise distribution: its reparameterised sample and closed-form KL."""

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from seiko.diffusion import InitialNoise


def test_starts_at_the_prior():
    prior = InitialNoise((4, 3))
    assert prior(5).shape == (5, 4, 3)
    assert prior.kl("sum").item() == 0.0 and prior.kl("mean").item() == 0.0


def test_kl_matches_torch_distributions():
    prior = InitialNoise((4, 3))
    with torch.no_grad():
        prior.mean.normal_()
        prior.log_std.normal_(std=0.5)
    expected = kl_divergence(Normal(prior.mean, prior.log_std.exp()), Normal(0.0, 1.0))
    torch.testing.assert_close(prior.kl("sum"), expected.sum())
    torch.testing.assert_close(prior.kl("mean"), expected.mean())
    assert prior.kl("sum") > 0


def test_sample_is_reparameterised_and_differentiable():
    prior = InitialNoise((2, 3))
    with torch.no_grad():
        prior.mean.fill_(0.5)
        prior.log_std.fill_(-1.0)
    x = prior(6, generator=torch.Generator().manual_seed(4))
    z = torch.randn(6, 2, 3, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(x, 0.5 + torch.exp(torch.tensor(-1.0)) * z)
    (x * 2).sum().backward()
    torch.testing.assert_close(prior.mean.grad, torch.full((2, 3), 12.0))  # 6 samples x 2
    torch.testing.assert_close(prior.log_std.grad, 2 * (z * torch.exp(torch.tensor(-1.0))).sum(0))


def test_kl_gradient_pulls_towards_the_prior():
    prior = InitialNoise((3,))
    with torch.no_grad():
        prior.mean.fill_(1.0)
        prior.log_std.fill_(0.5)
    prior.kl("sum").backward()
    # d/dmu = mu, d/dlog_std = sigma^2 - 1: both positive here, so descent moves towards N(0, I).
    torch.testing.assert_close(prior.mean.grad, torch.ones(3))
    torch.testing.assert_close(prior.log_std.grad, torch.full((3,), torch.e - 1.0))


def test_empirical_moments():
    prior = InitialNoise((2,))
    with torch.no_grad():
        prior.mean.copy_(torch.tensor([1.0, -2.0]))
        prior.log_std.copy_(torch.tensor([0.0, -0.5]).log1p())
    with torch.no_grad():
        x = prior(200_000)
    torch.testing.assert_close(x.mean(0), prior.mean.detach(), atol=0.01, rtol=0)
    torch.testing.assert_close(x.std(0), prior.log_std.exp().detach(), atol=0.01, rtol=0)


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4)])
def test_parameters_have_the_design_shape(shape):
    prior = InitialNoise(shape)
    assert prior.mean.shape == shape and prior.log_std.shape == shape
    assert {name for name, _ in prior.named_parameters()} == {"mean", "log_std"}
