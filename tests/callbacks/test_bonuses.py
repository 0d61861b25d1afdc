"""Exploration bonuses: closed forms, shrinkage where data is dense, members, determinism."""

from __future__ import annotations

import pytest
import torch

from seiko.callbacks import BootstrapBonus, Greedy, OnlineExploration, ThompsonBonus, UCBBonus
from seiko.oracles import FunctionOracle
from seiko.rewards.ensemble import RewardEnsemble


def test_ucb_sigma_and_bonus_equal_the_closed_form_on_a_hand_made_phi():
    phi = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    bonus = UCBBonus(beta=2.0, ridge=0.5)
    # Σ = ΦᵀΦ + λI = [[2, 1], [1, 5]] + 0.5 I
    expected = torch.tensor([[2.5, 1.0], [1.0, 5.5]], dtype=torch.float64)
    torch.testing.assert_close(bonus.sigma(phi), expected)
    normalized = UCBBonus(ridge=0.5, covariance="normalized").sigma(phi)
    torch.testing.assert_close(
        normalized, torch.tensor([[2 / 3 + 0.5, 1 / 3], [1 / 3, 5 / 3 + 0.5]], dtype=torch.float64)
    )
    # the reward module's bonus is beta * sqrt(phi^T Σ^-1 phi) for the member's features
    ensemble = RewardEnsemble((6,), num_members=1, architecture="mlp", hidden=2, num_layers=1)
    x = torch.randn(5, 6)
    reward = bonus.build(ensemble, x, round=0)
    f = ensemble.member(0).features(x).double()
    sigma = bonus.sigma(f)
    by_hand = 2.0 * torch.sqrt(torch.einsum("bf,fg,bg->b", f, torch.linalg.inv(sigma), f))
    torch.testing.assert_close(reward.bonus(x).double(), by_hand, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(reward(x), ensemble.member(0)(x) + reward.bonus(x))


def test_ucb_bonus_shrinks_where_data_is_dense_and_can_be_clipped():
    torch.manual_seed(0)
    ensemble = RewardEnsemble((8,), num_members=1, architecture="mlp", hidden=16, num_layers=1)
    dense = torch.randn(400, 8) * 0.1  # many measured designs near the origin
    reward = UCBBonus(beta=1.0, ridge=1.0).build(ensemble, dense, round=0)
    near = reward.bonus(torch.randn(50, 8) * 0.1).mean()
    far = reward.bonus(torch.randn(50, 8) * 3.0 + 3.0).mean()
    assert far > 3 * near
    few = UCBBonus(beta=1.0, ridge=1.0).build(ensemble, dense[:10], round=0)
    assert few.bonus(dense[:50]).mean() > reward.bonus(dense[:50]).mean()  # more data, less bonus
    clipped = UCBBonus(beta=1.0, clip=0.01).build(ensemble, dense, round=0)
    assert clipped.bonus(torch.randn(20, 8) * 3).max() <= 0.01 + 1e-7


def test_ucb_bonus_in_reward_stds_scales_with_the_fitted_rewards_spread():
    from seiko.rewards import fit_ensemble

    torch.manual_seed(0)
    x, probe = torch.randn(80, 6), torch.randn(10, 6)
    y = x[:, 0]
    widths = {}
    for factor in (1.0, 100.0):
        torch.manual_seed(1)  # the same initial network for both scales
        ensemble = RewardEnsemble((6,), num_members=1, architecture="mlp", hidden=8, num_layers=1)
        report = fit_ensemble(ensemble, x, factor * y, epochs=2, val_fraction=0.0, seed=0)
        plain = UCBBonus(beta=0.5).build(ensemble, x, round=0)
        scaled = UCBBonus(beta=0.5, scale="reward_std").build(ensemble, x, round=0)
        # the same width, times the std of the targets the network was fitted on
        torch.testing.assert_close(scaled.bonus(probe), report.target_std * plain.bonus(probe))
        widths[factor] = scaled.bonus(probe)
    # rewards 100x larger (same data, same seed): a bonus 100x larger, as the reward itself is
    torch.testing.assert_close(widths[100.0], 100 * widths[1.0], rtol=1e-3, atol=1e-6)
    with pytest.raises(ValueError, match="scale='range' is not one of"):
        UCBBonus(scale="range")


def test_ucb_reward_is_differentiable_in_the_design():
    ensemble = RewardEnsemble((4, 3), num_members=1, hidden=8, channels=4)
    reward = UCBBonus().build(ensemble, torch.rand(20, 4, 3), round=0)
    x = torch.rand(3, 4, 3, requires_grad=True)
    reward(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_bootstrap_aggregates_and_thompson_draws_reproducibly():
    torch.manual_seed(0)
    ensemble = RewardEnsemble((5,), num_members=4, architecture="mlp", hidden=8, num_layers=1)
    x = torch.randn(7, 5)
    values = ensemble(x)
    torch.testing.assert_close(BootstrapBonus(4).build(ensemble, None, 0)(x), values.max(0).values)
    mean_std = BootstrapBonus(4, aggregate="mean+beta*std", beta=2.0).build(ensemble, None, 0)
    torch.testing.assert_close(mean_std(x), values.mean(0) + 2.0 * values.std(0))
    torch.testing.assert_close(Greedy(4).build(ensemble, None, 0)(x), values.mean(0))
    draws = [ThompsonBonus(4, seed=3).build(ensemble, None, r) for r in range(12)]
    again = [ThompsonBonus(4, seed=3).build(ensemble, None, r) for r in range(12)]
    assert [d.index for d in draws] == [d.index for d in again]
    assert len({d.index for d in draws}) > 1  # a real draw, not a fixed member
    torch.testing.assert_close(draws[0](x), values[draws[0].index])


def test_bad_bonus_arguments_are_rejected():
    with pytest.raises(ValueError, match="ridge"):
        UCBBonus(ridge=0.0)
    with pytest.raises(ValueError, match="covariance"):
        UCBBonus(covariance="diag")
    with pytest.raises(ValueError, match="members >= 2"):
        BootstrapBonus(members=1)
    with pytest.raises(ValueError, match="aggregate"):
        BootstrapBonus(aggregate="min")


def test_online_exploration_state_survives_a_checkpoint_round_trip():
    oracle = FunctionOracle(len)
    first = OnlineExploration(oracle, budget=10, queries_per_round=[5, 5])
    first.store_path = "/tmp/run/feedback.sqlite"
    with torch.no_grad():  # weights unlike a fresh initialisation
        for p in first._ensemble((4, 3)).parameters():
            p.add_(torch.randn_like(p))
    first.history = [{"round": 0.0, "feedback/queries": 5.0}]
    state = first.state_dict()
    second = OnlineExploration(oracle, budget=10, queries_per_round=[5, 5])
    second.load_state_dict(state)
    assert second.store_path == first.store_path and second.history == first.history
    restored = second._ensemble((4, 3))  # built lazily with the saved weights
    for key, value in first.ensemble.state_dict().items():
        torch.testing.assert_close(restored.state_dict()[key], value)
    with pytest.raises(ValueError, match="budget"):
        OnlineExploration(oracle, budget=0, queries_per_round=[1])
