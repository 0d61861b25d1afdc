"""fit_ensemble: learning, uncertainty, the NaN rule, warm start, normalisation, errors."""

from __future__ import annotations

import math

import pytest
import torch
from torchmetrics.functional.regression import spearman_corrcoef

from seiko.rewards import RewardEnsemble, fit_ensemble, handle_infeasible
from seiko.rewards.fit import _held_out

L, V = 10, 4
SMALL = dict(hidden=16, channels=8)


def letter_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, L, V) one-hot sequences whose letter-0 frequency varies, and their letter-0 count."""
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(n, 1, generator=g) * 0.8
    tokens = torch.where(
        torch.rand(n, L, generator=g) < p, 0, torch.randint(1, V, (n, L), generator=g)
    )
    return torch.nn.functional.one_hot(tokens, V).float(), (tokens == 0).sum(1).float()


@pytest.fixture(scope="module")
def fitted() -> tuple[RewardEnsemble, object]:
    """A CNN ensemble fitted on letter counts in an unusual scale (1000 + 50 * count)."""
    x, count = letter_data(300, seed=0)
    ensemble = RewardEnsemble((L, V), num_members=3, architecture="cnn", **SMALL)
    report = fit_ensemble(ensemble, x, 1000 + 50 * count, epochs=20, lr=1e-2, val_fraction=0.2)
    return ensemble, report


def test_fit_learns_a_learnable_function_in_the_original_scale(fitted):
    ensemble, report = fitted
    assert report.spearman > 0.8 and report.pearson > 0.8
    assert report.n_train + report.n_val == 300 and report.n_val > 30
    x, count = letter_data(200, seed=1)  # fresh designs
    y = 1000 + 50 * count
    with torch.no_grad():
        prediction = ensemble.mean(x)
    assert float(spearman_corrcoef(prediction, y)) > 0.8
    # the normalisation is stored and undone: predictions are in the targets' own units
    assert float(ensemble.target_mean) == pytest.approx(report.target_mean)
    assert float(ensemble.target_std) == pytest.approx(report.target_std)
    assert 1000 < report.target_mean < 1000 + 50 * L and 20 < report.target_std < 200
    assert (prediction - y).abs().mean() < 0.3 * y.std()
    assert int(ensemble.num_fits) == 1


def test_kept_weights_are_each_members_best_on_the_held_out_split(fitted):
    ensemble, report = fitted
    x, count = letter_data(300, seed=0)
    y = 1000 + 50 * count
    held_out = _held_out(300, 0.2, 0)
    with torch.no_grad():
        z = (ensemble(x[held_out]) - report.target_mean) / report.target_std
    val_loss = ((z - (y[held_out] - report.target_mean) / report.target_std) ** 2).mean(1)
    torch.testing.assert_close(val_loss, torch.tensor(report.val_loss), rtol=1e-4, atol=1e-6)
    assert all(0 < e <= report.epochs for e in report.best_epoch)
    metrics = report.metrics()
    assert metrics["reward_model/spearman"] == report.spearman
    assert "reward_model/floor" not in metrics


def test_fit_is_deterministic_given_its_seeds():
    x, y = letter_data(120, seed=2)
    states, reports = [], []
    for _ in range(2):
        ensemble = RewardEnsemble((L, V), num_members=2, architecture="mlp", **SMALL)
        reports.append(fit_ensemble(ensemble, x, y, epochs=3, seed=5))
        states.append(ensemble.state_dict())
    for key in states[0]:
        torch.testing.assert_close(states[0][key], states[1][key], rtol=0, atol=0)
    assert reports[0].val_loss == reports[1].val_loss


@pytest.mark.parametrize(("bootstrap", "identical"), [(True, False), (False, True)])
def test_bootstrap_resamples_make_identical_members_differ(bootstrap, identical):
    x, y = letter_data(100, seed=3)
    ensemble = RewardEnsemble((L, V), num_members=2, architecture="mlp", **SMALL)
    with torch.no_grad():
        for p in ensemble.parameters():
            p[1] = p[0]  # same init: only the data can make the members differ
    fit_ensemble(ensemble, x, y, bootstrap=bootstrap, epochs=3, val_fraction=0.0)
    values = ensemble(x)
    assert torch.allclose(values[0], values[1]) == identical


def test_std_is_larger_far_from_the_data():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(200, 2, generator=g) * 2 - 1
    y = x[:, 0] - 2 * x[:, 1] + 0.1 * torch.randn(200, generator=g)
    ensemble = RewardEnsemble((2,), num_members=5, architecture="mlp", hidden=16)
    fit_ensemble(ensemble, x, y, epochs=30, lr=1e-2, val_fraction=0.0)
    near = torch.rand(100, 2, generator=g) * 2 - 1
    direction = torch.nn.functional.normalize(torch.randn(100, 2, generator=g), dim=1)
    far = 20 * direction
    with torch.no_grad():
        assert ensemble.std(far).mean() > 5 * ensemble.std(near).mean()


def test_warm_start_keeps_the_function_when_the_normalisation_changes():
    x, y = letter_data(200, seed=4)
    ensemble = RewardEnsemble((L, V), num_members=2, architecture="mlp", **SMALL)
    first = fit_ensemble(ensemble, x[:100], y[:100], epochs=10, lr=3e-3)
    probe = letter_data(50, seed=5)[0]
    with torch.no_grad():
        before = ensemble(probe)
    # a grown dataset whose new targets are far higher: mean and std change
    grown_y = torch.cat([y[:100], y[100:] * 3 + 20])
    second = fit_ensemble(ensemble, x, grown_y, epochs=1, lr=1e-12)
    assert second.target_mean > first.target_mean + 5 and second.target_std > first.target_std
    with torch.no_grad():
        torch.testing.assert_close(ensemble(probe), before, rtol=1e-4, atol=1e-4)
    assert int(ensemble.num_fits) == 2


def test_refitting_never_ends_worse_on_the_held_out_split_than_it_started():
    x, y = letter_data(200, seed=6)
    ensemble = RewardEnsemble((L, V), num_members=2, architecture="mlp", **SMALL)
    first = fit_ensemble(ensemble, x, y, epochs=10, lr=3e-3, val_fraction=0.3)
    # a learning rate far too high: every epoch is worse, so the starting weights are kept
    second = fit_ensemble(ensemble, x, y, epochs=2, lr=1.0, val_fraction=0.3, patience=5)
    assert second.best_epoch == (0, 0)
    torch.testing.assert_close(torch.tensor(second.val_loss), torch.tensor(first.val_loss))


def test_frozen_ensemble_is_fitted_and_stays_frozen():
    x, y = letter_data(60, seed=7)
    ensemble = RewardEnsemble((L, V), num_members=2, architecture="mlp", **SMALL)
    ensemble.requires_grad_(False)
    before = ensemble.head.weight.clone()
    fit_ensemble(ensemble, x, y, epochs=2, val_fraction=0.0)
    assert not any(p.requires_grad for p in ensemble.parameters())
    assert not torch.equal(before, ensemble.head.weight)


def test_without_held_out_points_every_epoch_runs_and_scores_are_nan():
    x, y = letter_data(40, seed=8)
    ensemble = RewardEnsemble((L, V), num_members=2, architecture="mlp", **SMALL)
    report = fit_ensemble(ensemble, x, y, epochs=4, patience=1, val_fraction=0.0)
    assert report.epochs == 4 and report.best_epoch == (4, 4) and report.n_val == 0
    assert math.isnan(report.spearman) and all(math.isnan(v) for v in report.val_loss)


def test_held_out_split_is_stable_as_the_data_grows():
    small, grown = _held_out(100, 0.3, 5), _held_out(170, 0.3, 5)
    assert torch.equal(grown[:100], small)
    assert 15 < int(small.sum()) < 45


# ---------------------------------------------------------------- infeasible designs (NaN)
def test_floor_rule_replaces_nan_below_the_feasible_minimum():
    y = torch.tensor([1.0, 3.0, float("nan"), 5.0])
    keep, targets, floor = handle_infeasible(y, "floor", margin=2.0)
    expected = 1.0 - 2.0 * math.sqrt(8 / 3)  # min - margin * std (population) of {1, 3, 5}
    assert floor == pytest.approx(expected)
    assert keep.all() and targets[2] == pytest.approx(expected)
    assert torch.equal(targets[[0, 1, 3]], y[[0, 1, 3]])
    # constant feasible targets: the std is taken as 1
    assert handle_infeasible(torch.tensor([2.0, float("nan")]), margin=0.5)[2] == 1.5
    # nothing to replace
    assert handle_infeasible(torch.tensor([2.0, 4.0]))[2] is None


def test_drop_rule_leaves_nan_out():
    y = torch.tensor([1.0, float("nan"), 5.0])
    keep, targets, floor = handle_infeasible(y, "drop")
    assert keep.tolist() == [True, False, True] and floor is None


def test_floor_rule_teaches_the_model_that_infeasible_designs_are_bad():
    x, y = letter_data(300, seed=9)
    infeasible = x[:, 0, 1] == 1  # letter 1 first: rejected by the "oracle"
    y = torch.where(infeasible, float("nan"), y)
    ensemble = RewardEnsemble((L, V), num_members=2, architecture="mlp", **SMALL)
    report = fit_ensemble(ensemble, x, y, epochs=40, lr=3e-3)
    assert report.n_infeasible == int(infeasible.sum()) > 30
    assert report.n_train + report.n_val == 300  # infeasible points are trained on
    assert report.floor < float(y[~infeasible].min())
    x_new, _ = letter_data(300, seed=10)
    bad = x_new[:, 0, 1] == 1
    with torch.no_grad():
        prediction = ensemble.mean(x_new)
    assert prediction[bad].mean() < prediction[~bad].quantile(0.1)

    dropped = RewardEnsemble((L, V), num_members=2, architecture="mlp", **SMALL)
    report = fit_ensemble(dropped, x, y, epochs=2, infeasible="drop")
    assert report.n_train + report.n_val == int((~infeasible).sum()) and report.floor is None


# ---------------------------------------------------------------- errors
def _ensemble() -> RewardEnsemble:
    return RewardEnsemble((L, V), num_members=2, architecture="mlp", **SMALL)


@pytest.mark.parametrize(
    ("x", "y", "kwargs", "message"),
    [
        (torch.zeros(0, L, V), torch.zeros(0), {}, "the dataset is empty"),
        (torch.zeros(5, V, L), torch.zeros(5), {}, r"x has shape \(5, 4, 10\).*\(N, 10, 4\)"),
        (torch.zeros(5, L, V), torch.zeros(4), {}, r"y must have shape \(5,\)"),
        (torch.zeros(5, L, V), torch.zeros(5, 1), {}, r"got \(5, 1\)"),
        (torch.zeros(3, L, V), torch.full((3,), float("nan")), {}, "all 3 targets are NaN"),
        (torch.zeros(3, L, V), torch.tensor([1.0, float("inf"), 2.0]), {}, "not inf"),
        (torch.full((3, L, V), float("nan")), torch.zeros(3), {}, "x contains NaN"),
        (torch.zeros(3, L, V), torch.zeros(3), {"infeasible": "zero"}, "infeasible='zero'"),
        (torch.zeros(3, L, V), torch.zeros(3), {"margin": -1.0}, "margin must be >= 0"),
        (torch.zeros(3, L, V), torch.zeros(3), {"val_fraction": 1.0}, r"val_fraction must be in"),
        (torch.zeros(3, L, V), torch.zeros(3), {"epochs": 0}, "epochs must be >= 1, got 0"),
        (torch.zeros(3, L, V), torch.zeros(3), {"lr": 0.0}, "need lr > 0"),
        (torch.zeros(3, L, V), torch.zeros(3), {"val_fraction": 0.999}, "no training points"),
    ],
)
def test_bad_data_and_arguments_are_reported(x, y, kwargs, message):
    with pytest.raises(ValueError, match=message):
        fit_ensemble(_ensemble(), x, y, **kwargs)


def test_a_first_fit_never_keeps_the_random_initial_weights():
    # Held-out targets anti-correlated with the training targets: every epoch of training makes
    # the held-out loss worse than the near-constant random initial function. A refit would keep
    # its starting weights then; a first fit must not (they are random, not a fitted model).
    x, y = letter_data(200, seed=8)
    held_out = _held_out(200, 0.3, 0)
    y = torch.where(held_out, -y, y)
    ensemble = RewardEnsemble((L, V), num_members=2, architecture="mlp", **SMALL)
    start = [p.detach().clone() for p in ensemble.parameters()]
    first = fit_ensemble(ensemble, x, y, epochs=5, lr=3e-3, val_fraction=0.3, patience=2)
    assert all(e >= 1 for e in first.best_epoch)
    assert any(not torch.equal(p, q) for p, q in zip(ensemble.parameters(), start, strict=True))
    # the same data on a refit: training only hurts, so the starting weights are kept
    second = fit_ensemble(ensemble, x, y, epochs=5, lr=3e-3, val_fraction=0.3, patience=2)
    assert second.best_epoch == (0, 0)
    torch.testing.assert_close(torch.tensor(second.val_loss), torch.tensor(first.val_loss))
