"""Online PPO pieces: trajectory log-probabilities against a hand computation, the clipped loss."""

import math

import pytest
import torch

from seiko.diffusion import GaussianSampler, NoiseSchedule
from seiko.diffusion.ppo import normalized_advantages, ppo_loss
from seiko.nets import VectorDenoiser


def test_log_prob_of_a_trajectory_equals_the_gaussian_density_by_hand():
    torch.manual_seed(0)
    schedule = NoiseSchedule.create(num_train_timesteps=100)
    sampler = GaussianSampler(schedule, num_steps=5, eta=1.0)
    net = VectorDenoiser(3, width=8, n_layers=1)
    torch.nn.init.normal_(net.output.weight, std=0.1)
    out = sampler(net, torch.randn(4, 3), return_trajectory=True)
    steps = sampler.stochastic_steps()
    assert steps == [0, 1, 2, 3]  # DDIM's last step (to a_prev = 1) is deterministic
    log_probs, kls = sampler.log_prob(net, out.trajectory)
    assert log_probs.shape == kls.shape == (4, 4) and torch.equal(kls, torch.zeros(4, 4))
    for row, i in enumerate(steps):
        coef, x = sampler.coefficients[i], out.trajectory[i]
        t = torch.full((4,), coef.t)
        mean = coef.mean_x * x + coef.mean_out * net(x, t)
        var = coef.std**2
        d = 3
        by_hand = -((out.trajectory[i + 1] - mean) ** 2).sum(-1) / (2 * var) - 0.5 * d * math.log(
            2 * math.pi * var
        )
        torch.testing.assert_close(log_probs[row], by_hand, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="deterministic step"):
        sampler.log_prob(net, out.trajectory, steps=[4])
    with pytest.raises(ValueError, match="trajectory has 2 tensors"):
        sampler.log_prob(net, out.trajectory[:2])


def test_log_prob_carries_gradient_and_the_kl_to_a_reference():
    torch.manual_seed(0)
    sampler = GaussianSampler(NoiseSchedule.create(num_train_timesteps=100), num_steps=4)
    net, ref = VectorDenoiser(3, width=8, n_layers=1), VectorDenoiser(3, width=8, n_layers=1)
    torch.nn.init.normal_(ref.output.weight, std=0.1)
    out = sampler(net, torch.randn(2, 3), return_trajectory=True)
    log_probs, kls = sampler.log_prob(net, out.trajectory, reference=ref)
    log_probs.sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    assert (kls > 0).all() and kls.requires_grad


def test_checkpointed_log_prob_keeps_values_and_gradients_and_recomputes_each_step():
    import dataclasses

    torch.manual_seed(0)
    sampler = GaussianSampler(NoiseSchedule.create(num_train_timesteps=100), num_steps=4)
    net = VectorDenoiser(3, width=8, n_layers=1)
    torch.nn.init.normal_(net.output.weight, std=0.1)
    out = sampler(net, torch.randn(2, 3), return_trajectory=True)
    grads, values = [], []
    for checkpoint in (False, True):
        net.zero_grad(set_to_none=True)
        chain = dataclasses.replace(sampler, checkpoint=checkpoint)
        calls: list[bool] = []
        hook = net.register_forward_pre_hook(
            lambda *args, calls=calls: calls.append(torch.is_grad_enabled())
        )
        log_probs, _ = chain.log_prob(net, out.trajectory)
        log_probs.sum().backward()
        hook.remove()
        values.append(log_probs.detach())
        grads.append([p.grad.clone() for p in net.parameters()])
        # one call per stochastic step; checkpointed, each is recomputed in the backward pass
        steps = len(chain.stochastic_steps())
        assert steps == 3 and calls == [True] * (2 * steps if checkpoint else steps)
    torch.testing.assert_close(values[0], values[1], rtol=0, atol=0)
    for plain, checkpointed in zip(*grads, strict=True):
        torch.testing.assert_close(plain, checkpointed, rtol=1e-6, atol=1e-7)


def test_clipped_loss_equals_the_hand_computed_value():
    log_probs = torch.tensor([[0.00, -0.3], [-0.2, 0.01]], requires_grad=True)
    old = torch.zeros(2, 2)
    advantages = torch.tensor([1.0, -2.0])
    loss, info = ppo_loss(log_probs, old, advantages, clip_range=0.1)
    # columns are samples (A = 1, -2); per element max(-A r, -A clip(r, 0.9, 1.1))
    r = [1.0, math.exp(-0.3), math.exp(-0.2), math.exp(0.01)]
    a = [1.0, -2.0, 1.0, -2.0]
    clipped = [min(max(x, 0.9), 1.1) for x in r]
    expected = sum(max(-ai * ri, -ai * ci) for ai, ri, ci in zip(a, r, clipped, strict=True)) / 4
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert float(info["clip_fraction"]) == pytest.approx(0.5)  # 0.74 and 0.82 are outside
    loss.backward()
    # The clip stops the gradient where it is the pessimistic term: A = -2 with r = 0.74 < 0.9
    # (-A*0.9 > -A*r); with A = 1 and r = 0.82 the unclipped term is the larger and keeps it.
    assert log_probs.grad[0, 1] == 0 and log_probs.grad[1, 0] != 0
    with pytest.raises(ValueError, match="shapes disagree"):
        ppo_loss(log_probs, old, torch.ones(3))


def test_advantages_are_standardised_clipped_and_nan_safe():
    adv = normalized_advantages(torch.tensor([1.0, 2.0, 3.0, float("nan")]), clip=1.2)
    assert torch.isfinite(adv).all() and adv.max() <= 1.2 and adv.min() >= -1.2
    assert adv[3] == adv.min()  # the infeasible design is the least encouraged
    plain = normalized_advantages(torch.tensor([1.0, 3.0]))
    torch.testing.assert_close(plain, torch.tensor([-1.0, 1.0]))
    assert torch.equal(normalized_advantages(torch.full((3,), float("nan"))), torch.zeros(3))
