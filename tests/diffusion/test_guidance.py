"""Reward guidance: the shift against a hand computation, prediction types, the cheap variant."""

import pytest
import torch
from torch import Tensor, nn

from seiko.diffusion import GaussianSampler, NoiseSchedule, RewardGuidance

C = torch.tensor([0.5, -1.0, 2.0])


def reward(x0: Tensor) -> Tensor:
    return -0.5 * (x0 - C).pow(2).sum(-1)


class Linear(nn.Module):
    """eps(x, t) = W x (t ignored): a denoiser whose Jacobian is known."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.w = nn.Parameter(0.3 * torch.randn(3, 3))

    def forward(self, x: Tensor, t: Tensor, cond=None) -> Tensor:
        return x @ self.w.T


def test_epsilon_shift_equals_the_hand_computation():
    schedule = NoiseSchedule.create(num_train_timesteps=1000)
    net = Linear()
    x, t = torch.randn(4, 3), torch.full((4,), 600)
    a = float(schedule.alphas_cumprod[600])
    guided = RewardGuidance(reward, scale=0.7).wrap(net, schedule)(x, t)
    # x0_hat = (x - sqrt(1-a) W x) / sqrt(a); dr/dx0 = -(x0_hat - C);
    # dx0_hat/dx = (I - sqrt(1-a) W) / sqrt(a)
    eye = torch.eye(3)
    jac = (eye - (1 - a) ** 0.5 * net.w.detach()) / a**0.5
    x0 = x @ jac.T
    grad_x = -(x0 - C) @ jac
    expected = x @ net.w.detach().T - (1 - a) ** 0.5 * 0.7 * grad_x
    torch.testing.assert_close(guided, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("prediction_type", ["v_prediction", "sample"])
def test_every_prediction_type_gets_the_same_epsilon_shift(prediction_type):
    eps_schedule = NoiseSchedule.create(prediction_type="epsilon")
    other = NoiseSchedule.create(prediction_type=prediction_type)
    net = Linear()
    x, t = torch.randn(4, 3), torch.full((4,), 300)
    a = other.alpha(t)[:, None]

    def as_other(x_: Tensor, t_: Tensor, cond=None) -> Tensor:  # the same model, re-expressed
        eps = net(x_, t_)
        x0 = (x_ - (1 - a).sqrt() * eps) / a.sqrt()
        return x0 if prediction_type == "sample" else a.sqrt() * eps - (1 - a).sqrt() * x0

    guidance = RewardGuidance(reward, scale=1.3)
    eps_guided = guidance.wrap(net, eps_schedule)(x, t)
    out = guidance.wrap(as_other, other)(x, t)
    _, eps_from_other = other.split(out, x, a)
    torch.testing.assert_close(eps_from_other, eps_guided, rtol=1e-4, atol=1e-5)


def test_cheap_variant_is_exact_when_the_denoiser_ignores_its_input():
    schedule = NoiseSchedule.create()
    constant = torch.randn(4, 3)

    def net(x: Tensor, t: Tensor, cond=None) -> Tensor:
        return constant + 0 * x

    x, t = torch.randn(4, 3), torch.full((4,), 100)
    exact = RewardGuidance(reward, scale=1.0).wrap(net, schedule)(x, t)
    cheap = RewardGuidance(reward, scale=1.0, through_denoiser=False).wrap(net, schedule)(x, t)
    torch.testing.assert_close(cheap, exact)


class StandardNormal(nn.Module):
    """The exact denoiser of data ~ N(0, I): E[eps | x_t] = sqrt(1 - a_t) x_t."""

    def __init__(self, schedule: NoiseSchedule) -> None:
        super().__init__()
        self.schedule = schedule

    def forward(self, x: Tensor, t: Tensor, cond=None) -> Tensor:
        return (1 - self.schedule.alpha(t))[:, None].sqrt() * x


def test_guided_chain_reaches_higher_reward_with_the_same_noise():
    schedule = NoiseSchedule.create(num_train_timesteps=1000)
    sampler = GaussianSampler(schedule, num_steps=20)
    net = StandardNormal(schedule)
    x_T = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    noises = [torch.randn(64, 3, generator=torch.Generator().manual_seed(i)) for i in range(20)]
    plain = sampler(net, x_T, noises=noises).x0
    guided = sampler(net, x_T, noises=noises, guidance=RewardGuidance(reward, scale=2.0)).x0
    assert reward(guided).mean() > reward(plain).mean() + 0.5
    assert not guided.requires_grad
    with pytest.raises(ValueError, match="guidance is for sampling"):
        sampler(net, x_T, grad=True, guidance=RewardGuidance(reward))
    with pytest.raises(ValueError, match="scale must be >= 0"):
        RewardGuidance(reward, scale=-1.0)
